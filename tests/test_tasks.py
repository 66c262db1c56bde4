from absl.testing import absltest
from absl.testing import parameterized

from ms_keras import tasks


class ParseTasksTest(parameterized.TestCase):

    def setUp(self):
        self.nyu = tasks.get_dataset("nyu")
        self.celeba = tasks.get_dataset("celeba")

    def test_numbers_and_names_mean_the_same(self):
        by_number = tasks.parse_tasks(self.nyu, ["1", "2", "3"])
        by_name = tasks.parse_tasks(self.nyu, ["segmentation", "depth",
                                               "normals"])
        self.assertEqual(by_number, by_name)
        self.assertEqual([t.number for t in by_number], [1, 2, 3])

    def test_celeba_numbering_follows_the_paper(self):
        names = [t.name for t in self.celeba.tasks]
        self.assertEqual(names, ["segmentation", "male", "smiling", "big_lips",
                                 "high_cheekbones", "wearing_lipstick",
                                 "bushy_eyebrows"])
        self.assertEqual(self.celeba.tasks[6].number, 7)
        self.assertEqual(self.celeba.tasks[0].output_channels, 19)

    @parameterized.named_parameters(
        ("number_out_of_range", ["5"], r"outside dataset 'nyu' \(tasks 1-4\)"),
        ("zero", ["0"], "outside dataset 'nyu'"),
        ("unknown_name", ["colour"], "Unknown task 'colour'"),
        ("duplicate", ["1", "segmentation"], "listed twice"),
        ("empty", [], "non-empty"),
        ("blank", [""], "non-empty"),
    )
    def test_bad_tasks_are_rejected_with_the_value(self, given, message):
        with self.assertRaisesRegex(ValueError, message):
            tasks.parse_tasks(self.nyu, given)

    def test_unknown_dataset_lists_the_allowed_ones(self):
        with self.assertRaisesRegex(ValueError, "Unknown dataset 'kitti'.*nyu"):
            tasks.get_dataset("kitti")

    def test_segmentation_classes_override(self):
        spec = tasks.get_dataset("celeba", segmentation_classes=3)
        self.assertEqual(spec.tasks[0].output_channels, 3)
        with self.assertRaisesRegex(ValueError, "segmentation_classes=1"):
            tasks.get_dataset("celeba", segmentation_classes=1)


if __name__ == "__main__":
    absltest.main()
