"""Channels of a backbone: which ones a zeroed group makes dead.

Every channel a layer outputs is a *node*. A conv (`Conv2D`, or the
pointwise half of a `SeparableConv2D`) makes new nodes, one per filter, and
*reads* the nodes of its input: its input group c reads node c. Layers that
act on each channel alone (batch norm, activations, padding, pooling,
dropout, a depthwise conv with one filter per channel) pass their input's
nodes on. `Add` and `Multiply` (a per-channel gate, as in squeeze-excite)
combine their inputs channel by channel, so channel c of every input and of
the output is one node; `Concatenate` puts its inputs' nodes side by side.

A node is *dead* when every conv reading it has a zero input group for it
and nothing else reads it (the backbone output, read by the heads, and the
input image stay alive). A dead node frees the filter of every conv
producing it and its channel in every layer carrying it: whatever value it
carries (a batch-norm offset makes it non-zero) is multiplied by zero in
every reader. FLOP counting (`stats.py`, `FlopsModel`) and physical
channel removal (`slim.py`) share this analysis. A layer whose channel
semantics it does not know is refused in one line, never slimmed wrongly.
"""

import dataclasses

import keras
import numpy as np
import tensorflow as tf

from ms_keras import keras_compat
from ms_keras.models.layers import ExactBatchNormalization
from ms_keras.sparsity import groups as groups_lib

# Layers that act on each channel independently and keep the channel count
# (their weights, if any, are indexed by channel on their last axis).
CHANNELWISE = (
    ExactBatchNormalization, keras.layers.BatchNormalization,
    keras.layers.Activation, keras.layers.ReLU, keras.layers.LeakyReLU,
    keras.layers.ELU,
    keras.layers.MaxPooling2D, keras.layers.AveragePooling2D,
    keras.layers.GlobalAveragePooling2D, keras.layers.GlobalMaxPooling2D,
    keras.layers.ZeroPadding2D, keras.layers.Cropping2D,
    keras.layers.Dropout, keras.layers.SpatialDropout2D,
    keras.layers.GaussianNoise, keras.layers.Normalization,
    keras.layers.Rescaling, keras.layers.Identity)
# Layers whose inputs share their channels one to one.
ELEMENTWISE = (keras.layers.Add, keras.layers.Multiply,
               keras.layers.Subtract, keras.layers.Maximum,
               keras.layers.Minimum, keras.layers.Average)
SUPPORTED = ("Conv2D, SeparableConv2D and DepthwiseConv2D (one filter per "
             "channel), batch norm, activations, padding, cropping, pooling, "
             "dropout, Normalization, Rescaling, Add, Multiply (per-channel "
             "gates), Concatenate on the channel axis, Reshape between (C,) "
             "and (1, 1, C)")


@dataclasses.dataclass
class ConvInfo:
    """A conv-like backbone layer and the nodes it reads and writes.

    Attributes:
        name: the layer's name.
        kind: `conv` (Conv2D), `separable` (SeparableConv2D: depthwise, then
            a pointwise conv whose input groups are penalised) or
            `depthwise` (DepthwiseConv2D, channel by channel).
        input_nodes: node of every input channel.
        output_nodes: node of every output channel.
        kernel_size: `(kh, kw)` of its spatial kernel.
        output_hw: spatial size of its output.
    """

    name: str
    kind: str
    input_nodes: np.ndarray
    output_nodes: np.ndarray
    kernel_size: tuple
    output_hw: tuple

    @property
    def penalised(self):
        """Whether it reads input groups (its kernel is penalised)."""
        return self.kind != "depthwise"

    def flops(self, inputs=None, outputs=None):
        """Multiply-adds x 2 with `inputs` / `outputs` channels (default:
        all)."""
        cin = len(self.input_nodes) if inputs is None else inputs
        cout = len(self.output_nodes) if outputs is None else outputs
        pixels = self.output_hw[0] * self.output_hw[1]
        kh, kw = self.kernel_size
        if self.kind == "conv":
            return 2 * pixels * kh * kw * cin * cout
        if self.kind == "depthwise":
            return 2 * pixels * kh * kw * cout
        return 2 * pixels * (kh * kw * cin + cin * cout)

    def dense_flops(self):
        return self.flops()


@dataclasses.dataclass
class BackboneStructure:
    """The channel nodes of a backbone.

    Attributes:
        convs: ConvInfo per conv-like layer, in build order.
        layer_inputs: nodes of every layer's (first) input channels.
        layer_nodes: nodes of every layer's output channels.
        node_count: number of nodes.
        readers: per node, the `(penalised conv name, input channel)` pairs
            reading it.
        pinned: per node, whether something other than a penalised conv
            reads it (the backbone output, the input image).
    """

    convs: dict
    layer_inputs: dict
    layer_nodes: dict
    node_count: int
    readers: list
    pinned: np.ndarray

    def alive_nodes(self, kernels):
        """Boolean liveness of every node.

        Args:
            kernels: `{conv name: HWIO numpy kernel}` of every penalised conv
                (`groups.group_kernel`).
        """
        alive = self.pinned.copy()
        used = {name: np.any(kernel != 0, axis=(0, 1, 3))
                for name, kernel in kernels.items()}
        for node, readers in enumerate(self.readers):
            if not readers:
                alive[node] = True  # read by nothing we could drop
                continue
            alive[node] |= any(used[name][c] for name, c in readers)
        return alive

    def tensors(self):
        """The distinct node arrays of the layer outputs."""
        seen, found = set(), []
        for nodes in self.layer_nodes.values():
            key = tuple(int(n) for n in nodes)
            if key and key not in seen:
                seen.add(key)
                found.append(np.asarray(key))
        return found

    def kept_nodes(self, kernels):
        """The live nodes, plus the first node of every layer output that
        has none live: every layer keeps a positive width (its readers'
        weights for it are zero, so the function is unchanged) and a slim
        model stays an ordinary Keras graph."""
        alive = self.alive_nodes(kernels)
        kept = alive.copy()
        for nodes in self.tensors():
            if not alive[nodes].any():
                kept[nodes[0]] = True
        return kept


def _merge(parent, a, b):
    """Union-find over nodes (elementwise layers merge channels)."""
    a, b = _find(parent, a), _find(parent, b)
    if a != b:
        parent[b] = a


def _find(parent, node):
    while parent[node] != node:
        parent[node] = parent[parent[node]]
        node = parent[node]
    return node


def _refuse(layer, reason="has no known channel semantics"):
    raise ValueError(
        f"Layer '{layer.name}' ({type(layer).__name__}) {reason}; the "
        f"sparsity analysis supports {SUPPORTED}.")


def _channels(tensor):
    return int(tensor.shape[-1])


def _unit_reshape(layer):
    """A Reshape that only adds or drops unit spatial axes, `(C,)` <->
    `(1, 1, C)` (squeeze-excite blocks do this around their 1x1 convs)."""
    before = tuple(layer.input.shape[1:])
    after = tuple(layer.output.shape[1:])
    return (before[-1] == after[-1] and all(d == 1 for d in before[:-1])
            and all(d == 1 for d in after[:-1]))


def analyse(backbone):
    """Builds the BackboneStructure of a functional backbone model.

    Raises:
        ValueError: naming the first layer whose channel semantics are
            unknown (or not channel-preserving), its class and what is
            supported.
    """
    parent = []

    def new(count):
        start = len(parent)
        parent.extend(range(start, start + count))
        return np.arange(start, start + count)

    raw_inputs, raw_nodes, convs, reads, pinned_raw = {}, {}, {}, [], []
    for layer in backbone.layers:
        if isinstance(layer, keras.layers.InputLayer):
            raw_nodes[layer.name] = new(_channels(layer.output))
            pinned_raw.extend(raw_nodes[layer.name])
            continue
        parents = keras_compat.inbound_layers(layer)
        inputs = [raw_nodes[p.name] for p in parents]
        raw_inputs[layer.name] = inputs[0]
        kind = groups_lib.conv_kind(layer)
        if kind in ("conv", "separable"):
            if kind == "conv" and layer.groups != 1:
                _refuse(layer, f"is a grouped convolution (groups="
                        f"{layer.groups})")
            if kind == "separable" and layer.depth_multiplier != 1:
                _refuse(layer, f"has depth_multiplier="
                        f"{layer.depth_multiplier}")
            out = new(layer.filters)
            reads.append((layer.name, inputs[0]))
            convs[layer.name] = ConvInfo(
                layer.name, kind, inputs[0], out, tuple(layer.kernel_size),
                tuple(layer.output.shape[1:3]))
        elif kind == "depthwise":
            if layer.depth_multiplier != 1:
                _refuse(layer, f"has depth_multiplier="
                        f"{layer.depth_multiplier}")
            out = inputs[0]
            convs[layer.name] = ConvInfo(
                layer.name, kind, inputs[0], out, tuple(layer.kernel_size),
                tuple(layer.output.shape[1:3]))
        elif isinstance(layer, CHANNELWISE):
            out = inputs[0]
        elif isinstance(layer, ELEMENTWISE):
            out = inputs[0]
            for other in inputs[1:]:
                if len(other) != len(out):
                    _refuse(layer, "combines inputs of different channel "
                            "counts")
                for a, b in zip(out, other):
                    _merge(parent, a, b)
        elif isinstance(layer, keras.layers.Reshape) and _unit_reshape(
                layer):
            out = inputs[0]
        elif isinstance(layer, keras.layers.Concatenate):
            if layer.axis not in (-1, len(layer.output.shape) - 1):
                _refuse(layer, f"concatenates on axis {layer.axis}, not the "
                        "channel axis")
            out = np.concatenate(inputs)
        else:
            _refuse(layer)
        if len(out) != _channels(layer.output):
            _refuse(layer, "changes the channel count")
        raw_nodes[layer.name] = out
    output = keras_compat.producer(backbone.output).name
    pinned_raw.extend(raw_nodes[output])
    # Resolve merged nodes to dense ids 0..n-1.
    roots = np.array([_find(parent, n) for n in range(len(parent))])
    _, ids = np.unique(roots, return_inverse=True)
    count = int(ids.max()) + 1 if len(ids) else 0
    resolve = lambda nodes: ids[np.asarray(nodes, int)]
    for info in convs.values():
        info.input_nodes = resolve(info.input_nodes)
        info.output_nodes = resolve(info.output_nodes)
    readers = [[] for _ in range(count)]
    for name, nodes in reads:
        for channel, node in enumerate(resolve(nodes)):
            readers[node].append((name, channel))
    pinned = np.zeros(count, bool)
    pinned[resolve(pinned_raw)] = True
    return BackboneStructure(
        convs=convs,
        layer_inputs={k: resolve(v) for k, v in raw_inputs.items()},
        layer_nodes={k: resolve(v) for k, v in raw_nodes.items()},
        node_count=count, readers=readers, pinned=pinned)


def group_kernels(backbone):
    """`{conv name: numpy HWIO kernel}` of every penalised conv."""
    return {layer.name: np.asarray(groups_lib.group_kernel(layer))
            for layer in groups_lib.conv_layers(backbone)}


def kept_channels(structure, kernels):
    """Indices of the channels each layer keeps, input and output.

    Args:
        structure: the backbone's `BackboneStructure` (`analyse`).
        kernels: `{conv name: HWIO numpy kernel}` of every penalised conv.

    Returns:
        `(inputs, outputs)`: `{layer name: int index array}` each.
    """
    kept = structure.kept_nodes(kernels)
    select = lambda nodes: np.flatnonzero(kept[nodes])
    return ({name: select(nodes)
             for name, nodes in structure.layer_inputs.items()},
            {name: select(nodes)
             for name, nodes in structure.layer_nodes.items()})


class FlopsModel:
    """Structural FLOPs of a backbone for a set of live groups, as tensor
    ops: the count `stats.SparsityMeter.measure()["structural_flops"]` makes
    of the slim structure (`kept_channels`), for a flat boolean vector over
    the groups of `groups.conv_layers(backbone)`, concatenated in order.

    Args:
        backbone: the functional backbone.
    """

    def __init__(self, backbone):
        self.structure = structure = analyse(backbone)
        layers = groups_lib.conv_layers(backbone)
        sizes = [groups_lib.group_kernel(layer).shape[2] for layer in layers]
        offsets = dict(zip([layer.name for layer in layers],
                           np.cumsum([0] + sizes)))
        self.group_count = int(sum(sizes))
        group, node = [], []
        for n, readers in enumerate(structure.readers):
            for name, channel in readers:
                group.append(offsets[name] + channel)
                node.append(n)
        self._reader_group = np.array(group, np.int32)
        self._reader_node = np.array(node, np.int32)
        self._always = structure.pinned | np.array(
            [not r for r in structure.readers], bool)
        members, owner, first = [], [], []
        for t, nodes in enumerate(structure.tensors()):
            members.extend(nodes)
            owner.extend([t] * len(nodes))
            first.append(nodes[0])
        self._members = np.array(members, np.int32)
        self._owner = np.array(owner, np.int32)
        self._first = np.array(first, np.int32)
        self.convs = list(structure.convs.values())
        self.dense_flops = float(sum(c.dense_flops() for c in self.convs))

    def kept_nodes(self, alive_groups):
        """Kept nodes (bool tensor) for live groups (bool vector)."""
        count = self.structure.node_count
        used = tf.math.unsorted_segment_max(
            tf.cast(tf.gather(alive_groups, self._reader_group), tf.int32),
            self._reader_node, count) > 0
        alive = tf.logical_or(used, self._always)
        live = tf.math.unsorted_segment_max(
            tf.cast(tf.gather(alive, self._members), tf.int32), self._owner,
            len(self._first)) > 0
        forced = tf.scatter_nd(self._first[:, None],
                               tf.cast(tf.logical_not(live), tf.int32),
                               [count]) > 0
        return tf.logical_or(alive, forced)

    def flops(self, alive_groups):
        kept = tf.cast(self.kept_nodes(tf.convert_to_tensor(alive_groups)),
                       tf.float32)
        total = []
        for conv in self.convs:
            cin = tf.reduce_sum(tf.gather(kept, conv.input_nodes))
            cout = tf.reduce_sum(tf.gather(kept, conv.output_nodes))
            total.append(conv.flops(cin, cout))
        return tf.add_n(total)

    def speedup(self, alive_groups):
        return self.dense_flops / self.flops(alive_groups)

    def max_speedup(self):
        """The speed-up with every group zeroed: what no budget can pass."""
        return float(self.speedup(tf.zeros((self.group_count,), tf.bool)))
