"""The multi-task model: one shared backbone, one head per task."""

import keras

from ms_keras import tasks as tasks_lib
from ms_keras.models.backbone import BACKBONES
from ms_keras.models.backbone import build_backbone
from ms_keras.models.heads import DEFAULT_ASPP_RATES
from ms_keras.models.heads import build_aspp_head
from ms_keras.models.heads import build_mlp_head


def build_head(task, feature_shape, image_size, filters, aspp_rates,
               activation):
    """Builds the head that serves `task` (ASPP if dense, MLP otherwise)."""
    if task.is_dense:
        return build_aspp_head(feature_shape, task, image_size, filters,
                               aspp_rates, activation)
    return build_mlp_head(feature_shape, task, filters, activation)


def build_multitask_model(dataset, tasks, backbone, image_size,
                          activation="relu", head_filters=None,
                          aspp_rates=DEFAULT_ASPP_RATES):
    """Builds the hard-parameter-sharing multi-task model.

    Args:
        dataset: a `DatasetSpec` or a dataset name.
        tasks: task numbers or names (see `tasks.parse_tasks`), or TaskSpecs.
        backbone: backbone name (`resnet50_d8`, `resnet18_d8`, `resnet_tiny`).
        image_size: `(height, width)`, positive multiples of 8.
        activation: activation used throughout (`relu` or `gelu`).
        head_filters: width of the heads; None uses the backbone's default.
        aspp_rates: dilation rates of the ASPP branches.

    Returns:
        A functional `keras.Model` taking `(batch, h, w, 3)` images in [0, 1]
        and returning a dict keyed by task name. Its layers `backbone` and
        `head_<task>` are themselves models.

    Example:

    >>> model = build_multitask_model("synthetic_nyu", [1, 2], "resnet_tiny",
    ...                               (64, 64))
    >>> sorted(model.output_names)
    ['depth', 'segmentation']
    """
    if isinstance(dataset, str):
        dataset = tasks_lib.get_dataset(dataset)
    task_specs = tuple(
        t if isinstance(t, tasks_lib.TaskSpec) else None for t in tasks)
    if None in task_specs:
        task_specs = tasks_lib.parse_tasks(dataset, tasks)
    if backbone not in BACKBONES:
        raise ValueError(
            f"Unknown backbone '{backbone}'. Allowed: {', '.join(BACKBONES)}")
    filters = head_filters or BACKBONES[backbone].head_filters
    trunk = build_backbone(backbone, image_size, activation)
    feature_shape = tuple(trunk.output.shape[1:])
    images = keras.Input((*image_size, 3), name="image")
    features = trunk(images)
    outputs = {}
    for task in task_specs:
        head = build_head(task, feature_shape, image_size, filters,
                          aspp_rates, activation)
        outputs[task.name] = keras.layers.Identity(name=task.name)(
            head(features))
    return keras.Model(images, outputs, name="multitask")


def backbone_of(model):
    """Returns the shared backbone sub-model of a multi-task model."""
    return model.get_layer("backbone")


def head_of(model, task_name):
    """Returns the head sub-model serving `task_name`."""
    return model.get_layer(f"head_{task_name}")

