"""Task metrics: the paper's (Table 2) and the standard NYUv2 set.

All are `keras.metrics.Metric`s that accumulate over batches and skip invalid
pixels. Each task's metrics are named `<task>_<metric>` so that Keras logs and
TensorBoard keep tasks apart; `group_results` turns logs back into
`{task: {metric: value}}`.
"""

import math

import keras
from keras import ops

from ms_keras import tasks as tasks_lib

ANGLE_THRESHOLDS = (11.25, 22.5, 30.0)
_ANGLE_BIN_DEGREES = 0.0625  # divides every threshold exactly


def _normal_is_valid(normals):
    return ops.sum(ops.abs(normals), axis=-1) > 0


def _depth_is_valid(depth):
    return depth[..., 0] > tasks_lib.INVALID_DEPTH


def _angle_degrees(normals_true, normals_pred):
    pred = ops.normalize(normals_pred, axis=-1, epsilon=1e-12)
    true = ops.normalize(ops.cast(normals_true, pred.dtype), axis=-1,
                         epsilon=1e-12)
    cosine = ops.clip(ops.sum(pred * true, axis=-1), -1.0, 1.0)
    return ops.arccos(cosine) * (180.0 / math.pi)


def _absolute_relative_error(depth_true, depth_pred):
    depth_true = ops.cast(depth_true, depth_pred.dtype)
    safe = ops.maximum(depth_true, 1e-6)
    return ops.mean(ops.abs(depth_pred - depth_true) / safe, axis=-1)


class _ValidPixelsOnly:
    """Mixin: a metric that only counts pixels whose target is valid.

    Subclasses set `_valid`, a function of `y_true` returning the per-pixel
    mask used as sample weight.
    """

    _valid = None

    def update_state(self, y_true, y_pred, sample_weight=None):
        return super().update_state(y_true, y_pred,
                                    sample_weight=type(self)._valid(y_true))

    def get_config(self):
        return {"name": self.name}


@keras.saving.register_keras_serializable(package="ms_keras")
class SegmentationMeanIoU(keras.metrics.MeanIoU):
    """Mean IoU from an accumulated confusion matrix; label 255 is ignored.

    Takes logits (argmax is applied). Classes that appear in neither labels nor
    predictions are left out of the mean.
    """

    def __init__(self, num_classes, name="miou", dtype=None):
        super().__init__(num_classes, name=name, dtype=dtype,
                         ignore_class=tasks_lib.IGNORE_LABEL,
                         sparse_y_pred=False)

    def get_config(self):
        return {"num_classes": self.num_classes, "name": self.name}


def _labelled(labels):
    return ops.not_equal(ops.cast(labels, "int32"), tasks_lib.IGNORE_LABEL)


@keras.saving.register_keras_serializable(package="ms_keras")
class PixelAccuracy(_ValidPixelsOnly, keras.metrics.SparseCategoricalAccuracy):
    """Fraction of labelled pixels whose argmax class is right (255 ignored)."""

    _valid = _labelled

    def __init__(self, name="pixel_accuracy", dtype=None):
        super().__init__(name=name, dtype=dtype)


@keras.saving.register_keras_serializable(package="ms_keras")
class DepthMeanAbsoluteError(_ValidPixelsOnly,
                             keras.metrics.MeanAbsoluteError):
    """Mean absolute depth error in metres over valid (non-zero) pixels."""

    _valid = _depth_is_valid

    def __init__(self, name="mae", dtype=None):
        super().__init__(name=name, dtype=dtype)


@keras.saving.register_keras_serializable(package="ms_keras")
class DepthAbsoluteRelativeError(_ValidPixelsOnly,
                                 keras.metrics.MeanMetricWrapper):
    """Mean of `|pred - true| / true` over valid depth pixels."""

    _valid = _depth_is_valid

    def __init__(self, name="abs_rel", dtype=None):
        super().__init__(_absolute_relative_error, name=name, dtype=dtype)


@keras.saving.register_keras_serializable(package="ms_keras")
class NormalCosineSimilarity(_ValidPixelsOnly,
                             keras.metrics.CosineSimilarity):
    """Mean per-pixel cosine similarity over pixels with a valid normal."""

    _valid = _normal_is_valid

    def __init__(self, name="cosine_similarity", dtype=None):
        super().__init__(name=name, dtype=dtype, axis=-1)


@keras.saving.register_keras_serializable(package="ms_keras")
class NormalAngleMean(_ValidPixelsOnly, keras.metrics.MeanMetricWrapper):
    """Mean angle (degrees) between predicted and true normals."""

    _valid = _normal_is_valid

    def __init__(self, name="angle_mean", dtype=None):
        super().__init__(_angle_degrees, name=name, dtype=dtype)


@keras.saving.register_keras_serializable(package="ms_keras")
class NormalAngleHistogram(keras.metrics.Metric):
    """Median angle error and % of pixels within 11.25/22.5/30 degrees.

    Angles are accumulated in a histogram of 1/16-degree bins, so the
    thresholds are exact and the median is exact to within 1/32 degree (linear
    interpolation inside the median's bin) without storing every pixel.
    `result()` returns a dict `{<prefix>angle_median, <prefix>within_11.25,
    <prefix>within_22.5, <prefix>within_30}`.

    Args:
        prefix: prepended to every key of the result (e.g. `normals_`).
    """

    def __init__(self, prefix="", name="angle_histogram", dtype=None):
        super().__init__(name=name, dtype=dtype)
        self.prefix = prefix
        self.num_bins = int(round(180.0 / _ANGLE_BIN_DEGREES))
        self.counts = self.add_variable(
            shape=(self.num_bins,), initializer="zeros", name="counts",
            dtype="float64")

    def update_state(self, y_true, y_pred, sample_weight=None):
        angles = ops.reshape(_angle_degrees(y_true, y_pred), (-1,))
        valid = ops.reshape(_normal_is_valid(y_true), (-1,))
        bins = ops.clip(ops.cast(ops.floor(angles / _ANGLE_BIN_DEGREES),
                                 "int32"), 0, self.num_bins - 1)
        counts = ops.segment_sum(ops.cast(valid, "float64"), bins,
                                 num_segments=self.num_bins)
        self.counts.assign_add(counts)

    def result(self):
        total = ops.maximum(ops.sum(self.counts), 1.0)
        cumulative = ops.cumsum(self.counts) / total
        results = {}
        for threshold in ANGLE_THRESHOLDS:
            index = int(round(threshold / _ANGLE_BIN_DEGREES))
            key = f"{self.prefix}within_{threshold:g}"
            results[key] = ops.cast(100.0 * cumulative[index - 1], "float32")
        # First bin whose cumulative share reaches one half, then interpolate.
        median_bin = ops.argmax(ops.cast(cumulative >= 0.5, "int32"))
        below = ops.where(median_bin > 0,
                          ops.take(cumulative, ops.maximum(median_bin - 1, 0)),
                          0.0)
        share = ops.take(self.counts, median_bin) / total
        inside = (0.5 - below) / ops.maximum(share, 1e-12)
        median = (ops.cast(median_bin, "float64") + inside) * _ANGLE_BIN_DEGREES
        results[f"{self.prefix}angle_median"] = ops.cast(median, "float32")
        return results

    def reset_state(self):
        self.counts.assign(ops.zeros_like(self.counts))

    def get_config(self):
        return {"prefix": self.prefix, "name": self.name}


@keras.saving.register_keras_serializable(package="ms_keras")
class BalancedAccuracy(keras.metrics.Metric):
    """Mean of the true-positive and true-negative rates of a binary
    attribute predicted as a logit (positive above `threshold`).

    Unlike accuracy it is 0.5 for a model that always predicts the majority
    class, whatever the class balance.

    Args:
        threshold: logit above which the prediction is positive.
        name: metric name.
    """

    def __init__(self, threshold=0.0, name="balanced_accuracy", dtype=None):
        super().__init__(name=name, dtype=dtype)
        self.threshold = float(threshold)
        self.counts = self.add_variable(shape=(4,), initializer="zeros",
                                        name="counts")

    def update_state(self, y_true, y_pred, sample_weight=None):
        positive = keras.ops.cast(
            keras.ops.reshape(y_true, [-1]) > 0.5, "float32")
        predicted = keras.ops.cast(
            keras.ops.reshape(y_pred, [-1]) > self.threshold, "float32")
        self.counts.assign_add(keras.ops.stack([
            keras.ops.sum(positive * predicted),
            keras.ops.sum(positive * (1 - predicted)),
            keras.ops.sum((1 - positive) * (1 - predicted)),
            keras.ops.sum((1 - positive) * predicted)]))

    def result(self):
        tp, fn, tn, fp = (self.counts[i] for i in range(4))
        rates = []
        for hits, misses in ((tp, fn), (tn, fp)):
            total = hits + misses
            rates.append(keras.ops.where(total > 0, hits / keras.ops.maximum(
                total, 1.0), 1.0))
        return (rates[0] + rates[1]) / 2.0

    def reset_state(self):
        self.counts.assign(keras.ops.zeros((4,)))

    def get_config(self):
        return {"threshold": self.threshold, "name": self.name}


_HIGHER_IS_BETTER = ("acc", "auc", "iou", "precision", "recall", "cos",
                     "f1", "r2")


def custom_primary_metric(task):
    """`(metric name, higher is better)` of a user's task without its own
    `primary`: its first metric (higher is better for accuracy-like names),
    else its loss (lower is better)."""
    names = [_metric_name(m) for m in task.metrics]
    if not names:
        return "loss", False
    return names[0], any(key in names[0].lower() for key in _HIGHER_IS_BETTER)


def _metric_name(metric):
    if isinstance(metric, str):
        return metric
    if isinstance(metric, keras.metrics.Metric):
        return metric.name
    return getattr(metric, "__name__", type(metric).__name__)


def _custom_metric(task, metric):
    """A fresh metric named `<task>_<name>` from a name, an instance or a
    function."""
    name = f"{task.name}_{_metric_name(metric)}"
    if isinstance(metric, keras.metrics.Metric):
        config = {**metric.get_config(), "name": name}
        return metric.__class__.from_config(config)
    if isinstance(metric, str):
        found = keras.metrics.get(metric)
        if isinstance(found, type):
            return found(name=name)
        if isinstance(found, keras.metrics.Metric):
            return found.__class__.from_config({**found.get_config(),
                                                "name": name})
        return keras.metrics.MeanMetricWrapper(found, name=name)
    if callable(metric):
        return keras.metrics.MeanMetricWrapper(metric, name=name)
    raise ValueError(
        f"Task '{task.name}': a metric must be a Keras metric name, a "
        f"keras.metrics.Metric or a function. Received: {metric!r}")


def custom_task_metrics(task):
    """Fresh metrics of a user's task, each named `<task>_<metric>`."""
    return [_custom_metric(task, metric) for metric in task.metrics]


def group_results(logs, task_names, prefix=""):
    """Groups flat logs `{<prefix><task>_<metric>: v}` by task.

    Keys that belong to no task (e.g. the total `loss`) are dropped.

    Returns:
        `{task: {metric: value}}`, including each task's `loss`.
    """
    grouped = {name: {} for name in task_names}
    by_length = sorted(task_names, key=len, reverse=True)
    for key, value in logs.items():
        for name in by_length:
            head = f"{prefix}{name}_"
            if key.startswith(head):
                grouped[name][key[len(head):]] = float(value)
                break
    return grouped
