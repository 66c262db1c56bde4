"""Task kinds: everything a built-in kind of task needs, in one place.

A kind says where its targets come from in a stored example, how they follow
the image under augmentation, its loss, its metrics, the paper's primary
metric (Table 2) and its head. The data pipeline, the model builder, the
trainers and the reports ask this registry; none of them branches on a kind.
A user's task (`ms_keras.Task` of kind `custom`) brings its own loss and
metrics and is answered from them.

Adding a kind is one `TaskKind` entry here (and its loss and metrics in
`losses.py` / `metrics.py`).
"""

import dataclasses
from typing import Callable

import keras

from ms_keras import losses as losses_lib
from ms_keras import metrics as metrics_lib
from ms_keras import tasks as tasks_lib

ASPP_HEAD = "aspp"  # dense prediction at image resolution
MLP_HEAD = "mlp"  # one vector per image


@dataclasses.dataclass(frozen=True)
class TaskKind:
    """What one kind of task needs.

    Attributes:
        name: the kind (`tasks.SEGMENTATION`, ...).
        feature: the stored feature its targets are read from (see
            `data/features.py`).
        target_dtype: dtype of the targets.
        channel_axis: the stored feature lacks the trailing channel axis the
            targets have (`(h, w)` stored, `(h, w, 1)` target).
        dense: a pixel-level target: flipped, zoomed and cropped with the
            image, served by an ASPP head (else an MLP head).
        loss: `(y_true, y_pred) -> scalar`, second-differentiable.
        metrics: `(task, prefix) -> [keras.metrics.Metric]`, each named
            `<prefix><metric>`.
        primary: `(metric, higher is better)` of the paper's Table 2.
        flip_sign: per-channel signs applied under a horizontal flip
            (normals: the x component turns), or None.
        zoom_divides: the value is divided by the zoom factor (depth: a
            zoomed view is a closer camera).
        class_labels: the targets are class ids, which a dataset may remap
            (`Source.label_table`) and swap under a flip
            (`Source.mirror_table`).
        unit_output: the head's output is L2-normalised.
    """

    name: str
    feature: str
    target_dtype: str
    channel_axis: bool
    dense: bool
    loss: Callable
    metrics: Callable
    primary: tuple
    flip_sign: tuple = None
    zoom_divides: bool = False
    class_labels: bool = False
    unit_output: bool = False

    @property
    def head(self):
        """`ASPP_HEAD` for dense kinds, else `MLP_HEAD`."""
        return ASPP_HEAD if self.dense else MLP_HEAD


def _segmentation_metrics(task, prefix):
    return [metrics_lib.SegmentationMeanIoU(task.output_channels,
                                            name=prefix + "miou"),
            metrics_lib.PixelAccuracy(name=prefix + "pixel_accuracy")]


def _depth_metrics(task, prefix):
    return [metrics_lib.DepthMeanAbsoluteError(name=prefix + "mae"),
            metrics_lib.DepthAbsoluteRelativeError(name=prefix + "abs_rel")]


def _normals_metrics(task, prefix):
    return [metrics_lib.NormalCosineSimilarity(
                name=prefix + "cosine_similarity"),
            metrics_lib.NormalAngleMean(name=prefix + "angle_mean"),
            metrics_lib.NormalAngleHistogram(
                prefix=prefix, name=prefix + "angle_histogram")]


def _edges_metrics(task, prefix):
    return [keras.metrics.MeanAbsoluteError(name=prefix + "mae")]


def _attribute_metrics(task, prefix):
    # The head outputs a logit: threshold 0 is probability 1/2.
    return [keras.metrics.BinaryAccuracy(name=prefix + "accuracy",
                                         threshold=0.0),
            metrics_lib.BalancedAccuracy(name=prefix + "balanced_accuracy")]


KINDS = {kind.name: kind for kind in (
    TaskKind(tasks_lib.SEGMENTATION, "segmentation", "int32",
             channel_axis=False, dense=True,
             loss=losses_lib.segmentation_loss,
             metrics=_segmentation_metrics, primary=("miou", True),
             class_labels=True),
    TaskKind(tasks_lib.DEPTH, "depth", "float32", channel_axis=True,
             dense=True, loss=losses_lib.depth_loss, metrics=_depth_metrics,
             primary=("mae", False), zoom_divides=True),
    TaskKind(tasks_lib.NORMALS, "normals", "float32", channel_axis=False,
             dense=True, loss=losses_lib.normals_loss,
             metrics=_normals_metrics, primary=("cosine_similarity", True),
             flip_sign=(-1.0, 1.0, 1.0), unit_output=True),
    TaskKind(tasks_lib.EDGES, "edges", "float32", channel_axis=True,
             dense=True, loss=losses_lib.edges_loss, metrics=_edges_metrics,
             primary=("mae", False)),
    TaskKind(tasks_lib.ATTRIBUTE, "attributes", "float32",
             channel_axis=False, dense=False,
             loss=losses_lib.attribute_loss, metrics=_attribute_metrics,
             primary=("accuracy", True)),
)}


def kind_of(task):
    """The `TaskKind` of a built-in task.

    Raises:
        ValueError: for a user's (`custom`) task or an unknown kind.
    """
    if task.kind not in KINDS:
        raise ValueError(
            f"Task '{task.name}' is of kind '{task.kind}', which has no "
            f"built-in targets or head. Built-in kinds: {', '.join(KINDS)}")
    return KINDS[task.kind]


def task_loss(task, y_true, y_pred, weight=None):
    """The loss of `task` (a TaskSpec) on one batch.

    Args:
        task: the task (its own `loss`, else its kind's).
        y_true: targets.
        y_pred: the head's output.
        weight: optional `(batch,)`, 1 for labelled examples and 0 for
            missing ones (tasks with their own loss; a built-in kind marks a
            missing label with its invalid value, e.g. 255 or depth 0); the
            loss is the mean over the labelled examples, 0 if there are
            none.
    """
    if task.loss is not None:
        return losses_lib.custom_task_loss(task, y_true, y_pred, weight)
    if weight is not None:
        raise ValueError(
            f"Task '{task.name}' ({task.kind}): per-example label "
            "weights apply to custom tasks; mark a missing label with "
            "the kind's invalid value (README, your own model).")
    return kind_of(task).loss(y_true, y_pred)


def task_metrics(task):
    """Fresh metrics of `task`, each named `<task>_<metric>`."""
    if task.kind == tasks_lib.CUSTOM:
        return metrics_lib.custom_task_metrics(task)
    return kind_of(task).metrics(task, f"{task.name}_")


def primary_metric(task):
    """`(metric name, higher is better)` of `task`: its own `primary`, its
    kind's (Table 2), or a custom task's first metric (higher is better for
    accuracy-like names), else its loss (lower is better)."""
    if task.primary is not None:
        return tuple(task.primary)
    if task.kind in KINDS:
        return KINDS[task.kind].primary
    return metrics_lib.custom_primary_metric(task)


def delta_m(results, reference, task_specs):
    """Mean relative change (%) of the tasks' primary metrics against a
    reference (Maninis et al. 2019): positive when better.

    Args:
        results: `{task: {metric: value}}` of the model.
        reference: the same of the reference model.
        task_specs: the tasks to compare (both must have them).

    Raises:
        ValueError: when the reference lacks a task's metric.
    """
    changes = []
    for task in task_specs:
        metric, higher_is_better = primary_metric(task)
        try:
            base = float(reference[task.name][metric])
        except KeyError:
            raise ValueError(
                f"The reference has no {task.name} {metric}.") from None
        sign = 1.0 if higher_is_better else -1.0
        changes.append(sign * (results[task.name][metric] - base)
                       / abs(base))
    return 100.0 * sum(changes) / len(changes)
