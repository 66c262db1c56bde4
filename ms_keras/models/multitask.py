"""The multi-task model: one shared backbone, one head per task."""

import keras

from ms_keras import keras_compat
from ms_keras import task_kinds
from ms_keras import tasks as tasks_lib
from ms_keras.models.backbone import BACKBONES
from ms_keras.models.backbone import build_backbone
from ms_keras.models.heads import DEFAULT_ASPP_RATES
from ms_keras.models.heads import build_aspp_head
from ms_keras.models.heads import build_mlp_head


@keras.saving.register_keras_serializable(package="ms_keras")
class MultiTaskModel(keras.Model):
    """Hard parameter sharing: `heads[task](backbone(images))` for each task.

    The backbone and every head are functional models; they are reached as
    attributes (`model.backbone`, `model.heads["depth"]`), never by layer
    names. `call` returns a dict keyed by task name. The model saves and
    reloads whole (`model.save("m.keras")`, `keras.saving.load_model`), also
    after `sparsity.slim` has replaced the backbone by a slimmer one.

    Args:
        backbone: a `keras.Model` from images to features.
        heads: `{task name: keras.Model}` from features to that task's
            output; the order of the dict is the order of the outputs.

    Example:

    >>> model = build_multitask_model("synthetic_nyu", [1, 2], "resnet_tiny",
    ...                               (64, 64))
    >>> sorted(model(keras.ops.zeros((1, 64, 64, 3))))
    ['depth', 'segmentation']
    """

    def __init__(self, backbone, heads, **kwargs):
        super().__init__(**kwargs)
        if not heads:
            raise ValueError("`heads` must hold at least one task's head.")
        self.backbone = backbone
        self.heads = dict(heads)
        # Its parts are built functional models, so it is built too.
        self.built = True

    def replace_parts(self, backbone=None, heads=None):
        """Puts in another backbone and/or heads (same inputs and outputs)
        in place; the replaced ones stop being part of the model (its
        weights, what it saves).

        Args:
            backbone: the new backbone, or None to keep the current one.
            heads: `{task: head}` replacing those tasks' heads.
        """
        heads = dict(heads or {})
        unknown = sorted(set(heads) - set(self.heads))
        if unknown:
            raise ValueError(f"No head to replace for {unknown}; the model's "
                             f"tasks are {list(self.heads)}.")
        replaced = [self.heads[task] for task in heads]
        if backbone is not None:
            replaced.append(self.backbone)
            self.backbone = backbone
        self.heads = {task: heads.get(task, head)
                      for task, head in self.heads.items()}
        # The weights keep their order: backbone, then the heads.
        keras_compat.set_leading_sublayers(
            self, [self.backbone, *self.heads.values()], dropped=replaced)

    @property
    def task_names(self):
        return tuple(self.heads)

    @property
    def image_shape(self):
        """`(height, width, 3)` of the images the backbone takes."""
        return tuple(self.backbone.input.shape[1:])

    def build(self, input_shape=None):
        # The backbone and the heads are functional models, built already.
        self.built = True

    def call(self, images, training=False):
        features = self.backbone(images, training=training)
        return {name: head(features, training=training)
                for name, head in self.heads.items()}

    def get_config(self):
        config = super().get_config()
        config.update({
            "backbone": keras.saving.serialize_keras_object(self.backbone),
            "heads": {name: keras.saving.serialize_keras_object(head)
                      for name, head in self.heads.items()},
        })
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        backbone = keras.saving.deserialize_keras_object(config.pop("backbone"))
        heads = {name: keras.saving.deserialize_keras_object(head)
                 for name, head in config.pop("heads").items()}
        return cls(backbone, heads, **config)


def build_head(task, feature_shape, image_size, filters, aspp_rates,
               activation):
    """Builds the head that serves `task`: its kind's (`task_kinds`)."""
    kind = task_kinds.kind_of(task)
    if kind.head == task_kinds.ASPP_HEAD:
        return build_aspp_head(feature_shape, task, image_size, filters,
                               aspp_rates, activation,
                               unit_output=kind.unit_output)
    return build_mlp_head(feature_shape, task, filters, activation)


def build_multitask_model(dataset, tasks, backbone, image_size,
                          activation="relu", head_filters=None,
                          aspp_rates=DEFAULT_ASPP_RATES,
                          normalization="imagenet"):
    """Builds the hard-parameter-sharing multi-task model.

    Args:
        dataset: a `DatasetSpec` or a dataset name.
        tasks: task numbers or names (see `tasks.parse_tasks`), or TaskSpecs.
        backbone: backbone name (`resnet50_d8`, `resnet18_d8`, `resnet_tiny`).
        image_size: `(height, width)`, positive multiples of 8.
        activation: activation used throughout (`relu` or `gelu`).
        head_filters: width of the heads; None uses the backbone's default.
        aspp_rates: dilation rates of the ASPP branches.
        normalization: the backbone's input normalisation (`imagenet`, or
            `caffe` for keras.applications ResNet50 weights).

    Returns:
        A built `MultiTaskModel` taking `(batch, h, w, 3)` images in [0, 1].

    Raises:
        ValueError: for an unknown backbone or task.
    """
    if isinstance(dataset, str):
        dataset = tasks_lib.get_dataset(dataset)
    if all(isinstance(t, tasks_lib.TaskSpec) for t in tasks):
        task_specs = tuple(tasks)
    else:
        task_specs = tasks_lib.parse_tasks(dataset, tasks)
    if backbone not in BACKBONES:
        raise ValueError(
            f"Unknown backbone '{backbone}'. Allowed: {', '.join(BACKBONES)}")
    filters = head_filters or BACKBONES[backbone].head_filters
    trunk = build_backbone(backbone, image_size, activation, normalization)
    feature_shape = tuple(trunk.output.shape[1:])
    heads = {task.name: build_head(task, feature_shape, image_size, filters,
                                   aspp_rates, activation)
             for task in task_specs}
    return MultiTaskModel(trunk, heads, name="multitask")
