import os

import keras
import numpy as np
from absl.testing import parameterized

from ms_keras.models import MultiTaskModel
from ms_keras.models import build_backbone
from ms_keras.models import build_multitask_model


class MultitaskModelTest(parameterized.TestCase):

    def setUp(self):
        keras.utils.set_random_seed(0)
        self.images = np.random.default_rng(0).uniform(
            size=(2, 32, 48, 3)).astype(np.float32)

    def test_nyu_outputs_are_dense_at_input_size(self):
        model = build_multitask_model("synthetic_nyu", [1, 2, 3, 4],
                                      "resnet_tiny", (32, 48),
                                      aspp_rates=(1, 2))
        out = model(self.images)
        self.assertEqual(out["segmentation"].shape, (2, 32, 48, 6))
        self.assertEqual(out["depth"].shape, (2, 32, 48, 1))
        self.assertEqual(out["edges"].shape, (2, 32, 48, 1))
        np.testing.assert_allclose(
            np.linalg.norm(out["normals"], axis=-1), 1.0, atol=1e-5)

    def test_celeba_attributes_are_logits(self):
        model = build_multitask_model("synthetic_celeba", ["male", 1],
                                      "resnet_tiny", (32, 48))
        out = model(self.images)
        self.assertEqual(out["male"].shape, (2, 1))
        self.assertEqual(out["segmentation"].shape, (2, 32, 48, 19))

    @parameterized.named_parameters(
        ("tiny", "resnet_tiny", 32), ("r18", "resnet18_d8", 512))
    def test_backbone_has_output_stride_8(self, name, channels):
        trunk = build_backbone(name, (64, 40))
        self.assertEqual(tuple(trunk.output.shape[1:]), (8, 5, channels))

    def test_sub_models_are_attributes(self):
        model = build_multitask_model("synthetic_nyu", [2, 1], "resnet_tiny",
                                      (32, 32))
        self.assertIsInstance(model, MultiTaskModel)
        self.assertEqual(model.backbone.name, "backbone")
        self.assertEqual(list(model.heads), ["depth", "segmentation"])
        self.assertEqual(model.heads["depth"].name, "head_depth")
        self.assertEqual(model.image_shape, (32, 32, 3))

    def test_saved_model_reloads_with_identical_outputs(self):
        model = build_multitask_model("synthetic_nyu", [1, 3], "resnet_tiny",
                                      (32, 48), aspp_rates=(1, 2))
        path = os.path.join(self.create_tempdir().full_path, "m.keras")
        model.save(path)
        restored = keras.saving.load_model(path)
        self.assertIsInstance(restored, MultiTaskModel)
        self.assertEqual(list(restored.heads), ["segmentation", "normals"])
        for training in (False, True):
            expected = model(self.images, training=training)
            got = restored(self.images, training=training)
            for name in expected:
                np.testing.assert_allclose(got[name], expected[name],
                                           atol=1e-6)

    @parameterized.named_parameters(
        ("not_multiple_of_8", "resnet_tiny", (30, 32), "multiples of 8"),
        ("zero", "resnet_tiny", (0, 32), "multiples of 8"),
        ("unknown_backbone", "vgg", (32, 32), "Unknown backbone 'vgg'"),
    )
    def test_bad_arguments_are_rejected(self, backbone, size, message):
        with self.assertRaisesRegex(ValueError, message):
            build_multitask_model("synthetic_nyu", [1], backbone, size)
