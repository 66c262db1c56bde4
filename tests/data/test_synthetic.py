import numpy as np
from absl.testing import absltest
from absl.testing import parameterized

from ms_keras.data import celeba_parts
from ms_keras.data import synthetic_celeba
from ms_keras.data import synthetic_nyu
from ms_keras.tasks import CELEBA_ATTRIBUTES
from ms_keras.tasks import CELEBA_PART_NAMES


def _dilate(mask, iterations):
    for _ in range(iterations):
        p = np.pad(mask, 1)
        mask = (p[1:-1, 1:-1] | p[:-2, 1:-1] | p[2:, 1:-1] | p[1:-1, :-2]
                | p[1:-1, 2:])
    return mask


class SyntheticNyuTest(parameterized.TestCase):

    def _scene(self, seed, holes=False, size=(48, 64)):
        return synthetic_nyu.render_scene(np.random.default_rng(seed), *size,
                                          holes=holes)

    @parameterized.parameters(0, 1, 2, 3)
    def test_normals_recomputed_from_depth_agree(self, seed):
        scene = self._scene(seed)
        recomputed = synthetic_nyu.normals_from_depth(scene["depth"])
        interior = ~_dilate(scene["edges"] > 0, 2)
        interior[:2] = interior[-2:] = False
        interior[:, :2] = interior[:, -2:] = False
        cosine = np.sum(recomputed * scene["normals"], axis=-1)[interior]
        self.assertGreater(interior.sum(), 100)
        self.assertGreater(np.median(cosine), 0.9999)
        self.assertGreater(np.mean(cosine > 0.99), 0.98)

    @parameterized.parameters(0, 1, 2)
    def test_segmentation_boundaries_lie_on_edges(self, seed):
        scene = self._scene(seed)
        labels, edges = scene["segmentation"], scene["edges"]
        vertical = labels[1:] != labels[:-1]
        horizontal = labels[:, 1:] != labels[:, :-1]
        self.assertTrue(np.all(edges[1:][vertical] & edges[:-1][vertical]))
        self.assertTrue(np.all(edges[:, 1:][horizontal]
                               & edges[:, :-1][horizontal]))

    def test_targets_have_the_documented_conventions(self):
        scene = self._scene(5, holes=True)
        self.assertEqual(scene["image"].dtype, np.uint8)
        self.assertEqual(scene["image"].shape, (48, 64, 3))
        self.assertLess(scene["segmentation"].max(), 6)
        valid = scene["depth"] > 0
        self.assertTrue(np.all(scene["depth"][valid] < 20))
        norms = np.linalg.norm(scene["normals"], axis=-1)
        np.testing.assert_allclose(norms[valid], 1.0, atol=1e-5)
        # Holes make depth and normals invalid together.
        np.testing.assert_array_equal(norms == 0, ~valid)
        self.assertTrue(set(np.unique(scene["edges"])) <= {0, 1})

    def test_holes_invalidate_some_pixels(self):
        invalid = [np.mean(self._scene(s, holes=True)["depth"] == 0)
                   for s in range(8)]
        self.assertGreater(max(invalid), 0.0)
        self.assertEqual(np.mean(self._scene(0)["depth"] == 0), 0.0)

    def test_same_seed_same_scene(self):
        a, b = self._scene(7, True), self._scene(7, True)
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])
        self.assertFalse(np.array_equal(a["image"],
                                        self._scene(8, True)["image"]))


class SyntheticCelebaTest(parameterized.TestCase):

    def _face(self, attributes, seed=0):
        """A face with the given attributes (others drawn as usual)."""
        rng = np.random.default_rng(seed)
        original = synthetic_celeba.sample_attributes
        synthetic_celeba.sample_attributes = lambda r: {
            **original(r), **attributes}
        try:
            return synthetic_celeba.render_face(rng, 96, 96)
        finally:
            synthetic_celeba.sample_attributes = original

    def _area(self, face, part):
        return int(np.sum(face["segmentation"] == CELEBA_PART_NAMES.index(part)))

    def test_labels_and_attributes_have_the_documented_layout(self):
        face = synthetic_celeba.render_face(np.random.default_rng(0), 64, 80)
        self.assertEqual(face["image"].shape, (64, 80, 3))
        self.assertLess(face["segmentation"].max(), 19)
        self.assertEqual(face["attributes"].shape, (len(CELEBA_ATTRIBUTES),))

    @parameterized.named_parameters(
        ("bushy_eyebrows_thicken_brows", "bushy_eyebrows", "l_brow"),
        ("big_lips_thicken_lips", "big_lips", "l_lip"),
        ("smiling_opens_the_mouth", "smiling", "mouth"),
    )
    def test_attribute_grows_its_part(self, attribute, part):
        off = self._face({attribute: False})
        on = self._face({attribute: True})
        self.assertGreater(self._area(on, part), self._area(off, part))

    def test_male_has_short_hair_and_wider_neck(self):
        female = self._face({"male": False})
        male = self._face({"male": True})
        self.assertLess(self._area(male, "hair"), self._area(female, "hair"))
        self.assertGreater(self._area(male, "neck"), self._area(female, "neck"))

    def test_lipstick_reddens_the_lips(self):
        face = self._face({"wearing_lipstick": True, "big_lips": True})
        lips = face["segmentation"] == CELEBA_PART_NAMES.index("u_lip")
        red = face["image"][lips].astype(float)
        self.assertGreater(np.mean(red[:, 0] - red[:, 1]), 100)

    def test_later_parts_are_painted_over_earlier_ones(self):
        skin = np.ones((4, 4), bool)
        hair = np.zeros((4, 4), bool)
        hair[0] = True
        labels = celeba_parts.paint_parts({"hair": hair, "skin": skin}, (4, 4))
        self.assertTrue(np.all(labels[0] == CELEBA_PART_NAMES.index("hair")))
        self.assertTrue(np.all(labels[1:] == CELEBA_PART_NAMES.index("skin")))

    def test_merge_maps_to_background_hair_skin(self):
        table = celeba_parts.merge_lookup()
        self.assertEqual(table[CELEBA_PART_NAMES.index("hair")], 1)
        self.assertEqual(table[CELEBA_PART_NAMES.index("nose")], 2)
        self.assertEqual(table[CELEBA_PART_NAMES.index("cloth")], 0)


if __name__ == "__main__":
    absltest.main()
