"""Which kernels are penalised and how they are grouped.

Every `Conv2D` of the backbone is penalised (heads never are), and the
pointwise kernel of every `SeparableConv2D`. For channel (group) sparsity,
group c of a kernel in Keras' HWIO layout is the input channel
`kernel[:, :, c, :]` (the paper's `theta(:, c, :, :)`), of size
`n_g = kh * kw * out_channels` (Eq. 12). For unstructured sparsity every
weight is its own group.
"""

import dataclasses

import keras

from ms_keras import keras_compat
from ms_keras.config import CHANNEL
from ms_keras.config import NONE
from ms_keras.config import UNSTRUCTURED
from ms_keras.models.layers import ExactBatchNormalization

_BATCH_NORMS = (ExactBatchNormalization, keras.layers.BatchNormalization)

KINDS = (NONE, CHANNEL, UNSTRUCTURED)


@dataclasses.dataclass(frozen=True)
class PenalisedKernel:
    """One penalised convolution kernel.

    Attributes:
        index: position of the kernel in `backbone.trainable_variables`.
        variable: the kernel variable (HWIO).
        scale_invariant: whether every reader of the conv's output is a
            batch norm, so that the network computes the same function
            whatever the kernel's norm (in training mode exactly).
    """

    index: int
    variable: object
    scale_invariant: bool = False


def conv_kind(layer):
    """`conv`, `separable`, `depthwise` or None: what kind of convolution
    `layer` is."""
    if isinstance(layer, keras.layers.SeparableConv2D):
        return "separable"
    if isinstance(layer, keras.layers.DepthwiseConv2D):
        return "depthwise"
    if isinstance(layer, keras.layers.Conv2D):
        return "conv"
    return None


def conv_layers(backbone):
    """The backbone's layers with input-channel groups (Conv2D and
    SeparableConv2D), in the order the model builds them."""
    return [layer for layer in backbone.layers
            if conv_kind(layer) in ("conv", "separable")]


def group_kernel(layer):
    """The HWIO kernel whose input channels are `layer`'s groups: a
    Conv2D's kernel, a SeparableConv2D's pointwise kernel."""
    if conv_kind(layer) == "separable":
        return layer.pointwise_kernel
    return layer.kernel


def _followed_by_batch_norm(layer):
    readers = keras_compat.outbound_layers(layer)
    return bool(readers) and all(
        isinstance(reader, _BATCH_NORMS) for reader in readers)


def penalised_kernels(backbone):
    """The kernels of every backbone Conv2D, with their variable indices.

    Raises:
        ValueError: when the backbone has no Conv2D layer.
    """
    positions = {id(v): i for i, v in enumerate(backbone.trainable_variables)}
    kernels = [PenalisedKernel(positions[id(group_kernel(layer))],
                               group_kernel(layer),
                               _followed_by_batch_norm(layer))
               for layer in conv_layers(backbone)
               if id(group_kernel(layer)) in positions]
    if not kernels:
        raise ValueError(
            f"Model '{backbone.name}' has no trainable Conv2D kernel to "
            "penalise.")
    return kernels
