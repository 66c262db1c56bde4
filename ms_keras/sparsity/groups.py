"""Which kernels are penalised and how they are grouped.

Every `Conv2D` of the backbone is penalised (heads never are). For channel
(group) sparsity, group c of a kernel in Keras' HWIO layout is the input
channel `kernel[:, :, c, :]` (the paper's `theta(:, c, :, :)`), of size
`n_g = kh * kw * out_channels` (Eq. 12). For unstructured sparsity every
weight is its own group.
"""

import dataclasses

import keras

CHANNEL = "channel"
UNSTRUCTURED = "unstructured"
NONE = "none"
KINDS = (NONE, CHANNEL, UNSTRUCTURED)


@dataclasses.dataclass(frozen=True)
class PenalisedKernel:
    """One penalised convolution kernel.

    Attributes:
        layer_name: name of the Conv2D layer in the backbone.
        index: position of the kernel in `backbone.trainable_variables`.
        variable: the kernel variable (HWIO).
    """

    layer_name: str
    index: int
    variable: object

    @property
    def num_groups(self):
        """Input channels of the kernel."""
        return int(self.variable.shape[2])

    @property
    def group_size(self):
        """`n_g = kh * kw * out_channels`."""
        kh, kw, _, out = self.variable.shape
        return int(kh * kw * out)


def conv_layers(backbone):
    """The backbone's Conv2D layers, in the order the model builds them."""
    return [layer for layer in backbone.layers
            if isinstance(layer, keras.layers.Conv2D)]


def penalised_kernels(backbone):
    """The kernels of every backbone Conv2D, with their variable indices.

    Raises:
        ValueError: when the backbone has no Conv2D layer.
    """
    positions = {id(v): i for i, v in enumerate(backbone.trainable_variables)}
    kernels = [PenalisedKernel(layer.name, positions[id(layer.kernel)],
                               layer.kernel)
               for layer in conv_layers(backbone)
               if id(layer.kernel) in positions]
    if not kernels:
        raise ValueError(
            f"Model '{backbone.name}' has no trainable Conv2D kernel to "
            "penalise.")
    return kernels
