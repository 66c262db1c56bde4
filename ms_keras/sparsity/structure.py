"""Channel spaces of a backbone: which channels a zeroed group makes dead.

Every Conv2D output opens a *channel space*; channel-wise layers (batch norm,
activations, pooling, input normalisation) carry it unchanged and an `Add`
merges the spaces of its inputs (a residual stream). Channel c of a space is
*dead* when every Conv2D that reads the space has a zero input group c and
nothing else reads it (the backbone output, read by the heads, is always
alive). A dead channel frees the filter c of every conv producing the space
and the matching batch-norm channels: whatever value it carries is multiplied
by zero in every reader. FLOP counting (`stats.py`) and physical channel
removal (`slim.py`) share this analysis.
"""

import dataclasses

import keras
import numpy as np

from ms_keras import keras_compat
from ms_keras.models.layers import ExactBatchNormalization

# Layers that act on each channel independently and keep the channel count.
_CHANNELWISE = (ExactBatchNormalization, keras.layers.BatchNormalization,
                keras.layers.Activation, keras.layers.ReLU,
                keras.layers.MaxPooling2D, keras.layers.AveragePooling2D,
                keras.layers.Normalization, keras.layers.Identity)


@dataclasses.dataclass
class ConvInfo:
    """A backbone convolution and the spaces it reads and writes."""

    name: str
    input_space: int
    output_space: int
    kernel_shape: tuple
    output_hw: tuple

    def dense_flops(self):
        kh, kw, cin, cout = self.kernel_shape
        return 2 * kh * kw * cin * cout * self.output_hw[0] * self.output_hw[1]


@dataclasses.dataclass
class BackboneStructure:
    """Channel spaces of a backbone.

    Attributes:
        convs: ConvInfo per Conv2D layer name, in build order.
        layer_space: space id of every layer's output.
        space_channels: channel count of every space.
        space_readers: conv names reading each space.
        pinned_spaces: spaces read by something other than a conv (the
            backbone output, an unsupported layer); all their channels live.
    """

    convs: dict
    layer_space: dict
    space_channels: dict
    space_readers: dict
    pinned_spaces: set

    def alive_channels(self, kernels):
        """Boolean mask of live channels per space.

        Args:
            kernels: `{conv name: HWIO numpy kernel}` of every backbone conv.
        """
        alive = {}
        for space, channels in self.space_channels.items():
            if space in self.pinned_spaces or not self.space_readers[space]:
                alive[space] = np.ones(channels, bool)
                continue
            used = np.zeros(channels, bool)
            for reader in self.space_readers[space]:
                used |= np.any(kernels[reader] != 0, axis=(0, 1, 3))
            alive[space] = used
        return alive


class _Spaces:
    """Union-find over space ids (an Add merges the spaces it adds)."""

    def __init__(self):
        self.parent = {}

    def new(self):
        space = len(self.parent)
        self.parent[space] = space
        return space

    def find(self, space):
        while self.parent[space] != space:
            self.parent[space] = self.parent[self.parent[space]]
            space = self.parent[space]
        return space

    def union(self, a, b):
        a, b = self.find(a), self.find(b)
        if a != b:
            self.parent[b] = a
        return a


def analyse(backbone):
    """Builds the BackboneStructure of a functional backbone model.

    Raises:
        ValueError: for a layer kind whose channel semantics are unknown
            (anything but convs, channel-wise layers and `Add`).
    """
    spaces = _Spaces()
    raw_space = {}
    raw_readers = {}
    pinned = []
    convs = {}
    channels = {}
    for layer in backbone.layers:
        if isinstance(layer, keras.layers.InputLayer):
            raw_space[layer.name] = spaces.new()
            channels[raw_space[layer.name]] = layer.output.shape[-1]
            continue
        parents = keras_compat.inbound_layers(layer)
        inputs = [raw_space[p.name] for p in parents]
        if isinstance(layer, keras.layers.Conv2D):
            if layer.groups != 1:
                raise ValueError(
                    f"Layer '{layer.name}': grouped convolutions are not "
                    "supported by the channel analysis.")
            out = spaces.new()
            channels[out] = layer.filters
            raw_readers.setdefault(inputs[0], []).append(layer.name)
            convs[layer.name] = ConvInfo(
                layer.name, inputs[0], out, tuple(layer.kernel.shape),
                tuple(layer.output.shape[1:3]))
        elif isinstance(layer, _CHANNELWISE):
            out = inputs[0]
        elif isinstance(layer, keras.layers.Add):
            out = inputs[0]
            for other in inputs[1:]:
                out = spaces.union(out, other)
        else:
            raise ValueError(
                f"Layer '{layer.name}' ({type(layer).__name__}) has no known "
                "channel semantics; the sparsity structure supports Conv2D, "
                "channel-wise layers and Add.")
        raw_space[layer.name] = out
    pinned.append(raw_space[keras_compat.producer(backbone.output).name])
    # Resolve merged spaces to their representatives.
    layer_space = {name: spaces.find(s) for name, s in raw_space.items()}
    space_channels = {}
    for space, count in channels.items():
        space_channels[spaces.find(space)] = count
    readers = {space: [] for space in space_channels}
    for space, names in raw_readers.items():
        readers[spaces.find(space)].extend(names)
    for info in convs.values():
        info.input_space = spaces.find(info.input_space)
        info.output_space = spaces.find(info.output_space)
    input_space = {layer_space[layer.name] for layer in backbone.layers
                   if isinstance(layer, keras.layers.InputLayer)}
    return BackboneStructure(
        convs=convs, layer_space=layer_space, space_channels=space_channels,
        space_readers=readers,
        pinned_spaces={spaces.find(s) for s in pinned} | input_space)


def kept_channels(structure, kernels):
    """Indices of the channels each space keeps after slimming.

    The live channels; a space whose every channel is dead keeps one (its
    readers' weights for it are zero, so the function is unchanged) so that
    every layer keeps a positive width and a slim model stays an ordinary
    Keras graph.

    Args:
        structure: the backbone's `BackboneStructure` (`analyse`).
        kernels: `{conv name: HWIO numpy kernel}` of every backbone conv.

    Returns:
        `{space id: int index array}`.
    """
    kept = {}
    for space, alive in structure.alive_channels(kernels).items():
        indices = np.flatnonzero(alive)
        kept[space] = indices if indices.size else np.array([0])
    return kept
