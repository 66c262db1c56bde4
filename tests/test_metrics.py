import numpy as np
from absl.testing import absltest

from ms_keras import metrics
from ms_keras import task_kinds
from ms_keras import tasks


def _accumulate(metric, batches):
    for y_true, y_pred in batches:
        metric.update_state(y_true, y_pred)
    return metric.result()


class MetricsAgainstNumpyTest(absltest.TestCase):
    """Each metric accumulated over two batches equals numpy on all data."""

    def setUp(self):
        self.rng = np.random.default_rng(0)

    def _split(self, *arrays):
        return [tuple(a[:2] for a in arrays), tuple(a[2:] for a in arrays)]

    def test_segmentation_miou_and_pixel_accuracy(self):
        labels = self.rng.integers(0, 4, size=(4, 8, 8))
        labels[self.rng.random(labels.shape) < 0.2] = 255
        logits = self.rng.normal(size=(4, 8, 8, 5)).astype(np.float32)
        pred = logits.argmax(-1)
        valid = labels != 255
        ious = []
        for c in range(5):
            inter = np.sum((pred == c) & (labels == c) & valid)
            union = np.sum(((pred == c) | (labels == c)) & valid)
            if union:
                ious.append(inter / union)
        batches = self._split(labels, logits)
        miou = _accumulate(metrics.SegmentationMeanIoU(5), batches)
        self.assertAlmostEqual(float(miou), np.mean(ious), places=5)
        accuracy = _accumulate(metrics.PixelAccuracy(), batches)
        self.assertAlmostEqual(float(accuracy),
                               np.mean(pred[valid] == labels[valid]), places=5)

    def test_depth_mae_and_abs_rel_skip_invalid(self):
        truth = self.rng.uniform(0.5, 5, size=(4, 6, 6, 1))
        truth[self.rng.random(truth.shape) < 0.3] = 0.0
        pred = truth + self.rng.normal(0, 0.5, size=truth.shape)
        valid = truth > 0
        batches = self._split(truth, pred)
        mae = _accumulate(metrics.DepthMeanAbsoluteError(), batches)
        self.assertAlmostEqual(float(mae),
                               np.mean(np.abs(pred - truth)[valid]), places=5)
        rel = _accumulate(metrics.DepthAbsoluteRelativeError(), batches)
        self.assertAlmostEqual(
            float(rel), np.mean(np.abs(pred - truth)[valid] / truth[valid]),
            places=5)

    def test_normal_metrics(self):
        truth = self.rng.normal(size=(4, 6, 6, 3))
        truth /= np.linalg.norm(truth, axis=-1, keepdims=True)
        truth[self.rng.random(truth.shape[:-1]) < 0.25] = 0.0
        pred = truth + self.rng.normal(0, 0.6, size=truth.shape)
        valid = np.abs(truth).sum(-1) > 0
        unit = pred / np.linalg.norm(pred, axis=-1, keepdims=True)
        cos = np.sum(unit * truth, -1)[valid]
        angles = np.degrees(np.arccos(np.clip(cos, -1, 1)))
        batches = self._split(truth, pred)
        self.assertAlmostEqual(
            float(_accumulate(metrics.NormalCosineSimilarity(), batches)),
            cos.mean(), places=5)
        self.assertAlmostEqual(
            float(_accumulate(metrics.NormalAngleMean(), batches)),
            angles.mean(), places=3)
        histogram = _accumulate(metrics.NormalAngleHistogram(prefix="n_"),
                                batches)
        self.assertAlmostEqual(float(histogram["n_angle_median"]),
                               np.median(angles), delta=0.07)
        for threshold in (11.25, 22.5, 30):
            self.assertAlmostEqual(
                float(histogram[f"n_within_{threshold:g}"]),
                100 * np.mean(angles < threshold), places=3)

    def test_edge_mae_and_attribute_accuracy(self):
        spec = tasks.get_dataset("nyu").task("edges")
        edges = (self.rng.random((4, 5, 5, 1)) < 0.2).astype(np.float32)
        pred = self.rng.normal(0.2, 0.3, size=edges.shape)
        (mae,) = task_kinds.task_metrics(spec)
        self.assertEqual(mae.name, "edges_mae")
        self.assertAlmostEqual(
            float(_accumulate(mae, self._split(edges, pred))),
            np.mean(np.abs(pred - edges)), places=5)
        attr = tasks.get_dataset("celeba").task("smiling")
        labels = (self.rng.random((4, 1)) < 0.5).astype(np.float32)
        logits = self.rng.normal(size=(4, 1))
        accuracy, _ = task_kinds.task_metrics(attr)
        self.assertAlmostEqual(
            float(_accumulate(accuracy, self._split(labels, logits))),
            np.mean((logits > 0) == (labels > 0.5)), places=6)

    def test_balanced_accuracy_is_the_mean_of_both_class_rates(self):
        attr = tasks.get_dataset("celeba").task("smiling")
        labels = (self.rng.random((40, 1)) < 0.2).astype(np.float32)
        logits = self.rng.normal(size=(40, 1)) + 2.0 * (labels - 0.5)
        _, balanced = task_kinds.task_metrics(attr)
        self.assertEqual(balanced.name, "smiling_balanced_accuracy")
        positive, predicted = labels[:, 0] > 0.5, logits[:, 0] > 0
        expected = 0.5 * (np.mean(predicted[positive])
                          + np.mean(~predicted[~positive]))
        batches = [(labels[:20], logits[:20]), (labels[20:], logits[20:])]
        self.assertAlmostEqual(float(_accumulate(balanced, batches)),
                               expected, places=6)
        # Always predicting the majority class scores one half.
        majority = metrics.BalancedAccuracy()
        majority.update_state(labels, -np.ones_like(logits))
        self.assertAlmostEqual(float(majority.result()), 0.5, places=6)

    def test_group_results_prefers_the_longest_task_name(self):
        logs = {"val_a_loss": 1.0, "val_a_b_loss": 2.0, "val_loss": 3.0,
                "val_a_b_mae": 4.0}
        grouped = metrics.group_results(logs, ["a", "a_b"], prefix="val_")
        self.assertEqual(grouped, {"a": {"loss": 1.0},
                                   "a_b": {"loss": 2.0, "mae": 4.0}})


if __name__ == "__main__":
    absltest.main()


def test_every_kind_logs_its_primary_metric_and_its_loss_is_finite():
    """A kind's primary metric (model selection, delta_m, the summaries)
    must be one its metrics log, and its loss must accept its targets."""
    rng = np.random.default_rng(0)
    targets = {
        tasks.SEGMENTATION: (rng.integers(0, 3, (2, 4, 4)), (2, 4, 4, 3)),
        tasks.DEPTH: (rng.uniform(1, 3, (2, 4, 4, 1)), (2, 4, 4, 1)),
        tasks.NORMALS: (np.tile([0.0, 0.0, 1.0], (2, 4, 4, 1)), (2, 4, 4, 3)),
        tasks.EDGES: (rng.integers(0, 2, (2, 4, 4, 1)), (2, 4, 4, 1)),
        tasks.ATTRIBUTE: (rng.integers(0, 2, (2, 1)), (2, 1)),
    }
    assert set(task_kinds.KINDS) == set(targets)
    for name, kind in task_kinds.KINDS.items():
        task = tasks.TaskSpec(1, "t", name, targets[name][1][-1])
        logged = {m.name for m in task_kinds.task_metrics(task)}
        metric, _ = task_kinds.primary_metric(task)
        assert f"t_{metric}" in logged, (name, metric, logged)
        y_true = targets[name][0].astype(np.float32)
        y_pred = rng.normal(size=targets[name][1]).astype(np.float32)
        assert np.isfinite(float(task_kinds.task_loss(task, y_true, y_pred)))
