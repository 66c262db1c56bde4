"""Physical channel removal: a sparse backbone becomes a smaller dense one.

Channel c of a channel space (see `structure.py`) is dead when every conv
reading the space has a zero input group c. A dead channel's filter in every
conv producing the space, its batch-norm channels, and the readers' zero input
slices are removed: whatever value the channel carried (a batch-norm offset
makes it non-zero) was multiplied by zero, so the slim model computes the same
function. Heads are copied unchanged (the backbone output is never slimmed).
"""

import keras

from ms_keras.models import MultiTaskModel
from ms_keras.sparsity import groups as groups_lib
from ms_keras.sparsity import structure as structure_lib


def _slim_layer(layer, outputs):
    """A fresh copy of `layer` at its slimmed width (weights set later)."""
    config = layer.get_config()
    if groups_lib.conv_kind(layer) in ("conv", "separable"):
        config["filters"] = int(outputs[layer.name].size)
    if isinstance(layer, keras.layers.Reshape):  # (C,) <-> (1, 1, C) only
        config["target_shape"] = (*config["target_shape"][:-1],
                                  int(outputs[layer.name].size))
    return layer.__class__.from_config(config)


def _slim_weights(layer, inputs, outputs):
    """The original layer's weights restricted to the kept channels."""
    weights = layer.get_weights()
    kind = groups_lib.conv_kind(layer)
    if not weights or kind is None and not isinstance(
            layer, structure_lib.CHANNELWISE):
        return weights
    rows, cols = inputs.get(layer.name), outputs[layer.name]
    if kind == "conv":
        return ([weights[0][:, :, rows, :][..., cols]]
                + [bias[cols] for bias in weights[1:]])
    if kind == "separable":
        depthwise, pointwise, *bias = weights
        return ([depthwise[:, :, rows, :],
                 pointwise[:, :, rows, :][..., cols]]
                + [b[cols] for b in bias])
    if kind == "depthwise":
        return [weights[0][:, :, cols, :]] + [b[cols] for b in weights[1:]]
    # Channel-wise layers (batch norm): every per-channel weight.
    channels = layer.output.shape[-1]
    return [w[..., cols] if w.ndim and w.shape[-1] == channels else w
            for w in weights]


def slim_backbone(backbone):
    """Builds the slim dense copy of a (sparse) functional backbone.

    Args:
        backbone: the backbone model (see `structure.SUPPORTED`).

    Returns:
        A new functional `keras.Model` with the same input and output shapes,
        the same layer names, and only live channels inside.

    Raises:
        ValueError: for layers the channel analysis does not support.

    Usage:

    >>> slim = slim_backbone(model.backbone)
    >>> slim.count_params() <= model.backbone.count_params()
    """
    structure = structure_lib.analyse(backbone)
    inputs, outputs = structure_lib.kept_channels(
        structure, structure_lib.group_kernels(backbone))
    slim = keras.models.clone_model(
        backbone, clone_function=lambda layer: _slim_layer(layer, outputs))
    for layer in backbone.layers:
        if layer.weights:
            slim.get_layer(layer.name).set_weights(
                _slim_weights(layer, inputs, outputs))
    return slim


def _copy(model):
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    return copy


def _heads(network, task_names):
    names = list(network.heads) if task_names is None else list(task_names)
    unknown = [name for name in names if name not in network.heads]
    if unknown:
        raise ValueError(
            f"The model has no task {unknown}; it has {sorted(network.heads)}.")
    return names


def slim_multitask_model(network, task_names=None):
    """A slim copy of a multi-task model (or of its backbone alone).

    Args:
        network: a `MultiTaskModel`.
        task_names: heads to keep (default: all); an empty list returns the
            slim backbone alone (images -> features).

    Returns:
        A `MultiTaskModel` with the slim backbone and copies of the heads, or
        the slim backbone model.

    Raises:
        ValueError: for a task the model has no head for.
    """
    names = _heads(network, task_names)
    backbone = slim_backbone(network.backbone)
    if not names:
        return backbone
    return MultiTaskModel(backbone,
                          {name: _copy(network.heads[name]) for name in names},
                          name="slim_multitask")


def dense_model(network, task_names=None):
    """The trained (masked) model restricted to `task_names`, unslimmed.

    Shares the weights of `network`; the reference the slim model and the
    exports are compared against.
    """
    names = _heads(network, task_names)
    if not names:
        return network.backbone
    return MultiTaskModel(network.backbone,
                          {name: network.heads[name] for name in names},
                          name="multitask")
