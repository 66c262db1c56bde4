"""Sparsity measurements of a backbone: the paper's sparsity metrics.

Parameter sparsity (% of zero weights) and group sparsity (% of zero
input-channel groups) over every backbone conv kernel, compression ratio
(total / non-zero parameters), per-layer active channels, and two FLOP
speed-ups:

- `flops_speedup`: dense FLOPs / FLOPs of the channel structure that is
  left when every dead channel is removed: a zeroed input group no longer
  costs its consumer anything and frees the producer filters computing it
  (`structure.py`). This is exactly what `slim.py` builds, so it is the
  speed-up a dense accelerator can realise.
- `nonzero_flops_speedup`: dense FLOPs / multiply-adds of non-zero weights of
  live filters; the paper's count, also meaningful for unstructured sparsity.
"""

import numpy as np
import tensorflow as tf

from ms_keras.sparsity import groups as groups_lib
from ms_keras.sparsity import structure as structure_lib


class SparsityMeter:
    """Measures the sparsity of a backbone; the structure is analysed once.

    Args:
        backbone: the functional backbone model.

    Example:

    >>> meter = SparsityMeter(model.backbone)
    >>> meter.measure()["parameter_percent"]
    """

    def __init__(self, backbone):
        self.backbone = backbone
        self.layers = groups_lib.conv_layers(backbone)
        self.structure = structure_lib.analyse(backbone)

    def kernels(self):
        """`{conv name: numpy HWIO kernel}` of every penalised conv."""
        return structure_lib.group_kernels(self.backbone)

    def step_figures(self):
        """The per-step figures as tensors, computed on the device.

        Returns:
            `{"parameter_percent": t, "group_percent": t, "active_channels":
            {conv name: t}}` (scalars), cheap enough to log every step.
        """
        zeros = groups = zero_groups = 0
        active = {}
        kernels = [groups_lib.group_kernel(layer) for layer in self.layers]
        for layer, kernel in zip(self.layers, kernels):
            nonzero_groups = tf.reduce_any(tf.not_equal(kernel, 0),
                                           axis=(0, 1, 3))
            zeros += tf.reduce_sum(tf.cast(tf.equal(kernel, 0), tf.int64))
            live = tf.reduce_sum(tf.cast(nonzero_groups, tf.int64))
            zero_groups += kernel.shape[2] - live
            groups += kernel.shape[2]
            active[layer.name] = live
        total = sum(int(np.prod(kernel.shape)) for kernel in kernels)
        return {
            "parameter_percent": 100.0 * tf.cast(zeros, tf.float32) / total,
            "group_percent": 100.0 * tf.cast(zero_groups, tf.float32) / groups,
            "active_channels": active,
        }

    def measure(self):
        """Returns the sparsity statistics as a JSON-ready dict."""
        kernels = self.kernels()
        structure = self.structure
        alive = structure.alive_nodes(kernels)
        kept = structure.kept_nodes(kernels)
        total = zeros = groups = zero_groups = structural = 0
        per_layer = {}
        for name, kernel in kernels.items():
            info = structure.convs[name]
            group_nonzero = np.any(kernel != 0, axis=(0, 1, 3))
            total += kernel.size
            zeros += int(np.sum(kernel == 0))
            groups += kernel.shape[2]
            zero_groups += int(np.sum(~group_nonzero))
            kh, kw = kernel.shape[:2]
            structural += (kh * kw * int(kept[info.input_nodes].sum())
                           * int(kept[info.output_nodes].sum()))
            per_layer[name] = {
                "active_channels": int(np.sum(group_nonzero)),
                "channels": int(kernel.shape[2]),
                "parameter_percent": 100.0 * float(np.mean(kernel == 0)),
            }
        dense_flops = slim_flops = sparse_flops = 0
        for name, info in structure.convs.items():
            dense_flops += info.dense_flops()
            slim_flops += info.flops(int(kept[info.input_nodes].sum()),
                                     int(kept[info.output_nodes].sum()))
            sparse_flops += self._nonzero_flops(info, kernels.get(name),
                                                alive)
        nonzero = total - zeros
        return {
            "parameter_percent": 100.0 * zeros / total,
            "group_percent": 100.0 * zero_groups / groups,
            "compression_ratio": total / max(nonzero, 1),
            "flops_speedup": dense_flops / slim_flops,
            "nonzero_flops_speedup": dense_flops / max(sparse_flops, 1),
            "parameters": int(total),
            "nonzero_parameters": int(nonzero),
            "structural_parameters": int(structural),
            "flops": int(dense_flops),
            "structural_flops": int(slim_flops),
            "nonzero_flops": int(sparse_flops),
            "per_layer": per_layer,
        }

    def _nonzero_flops(self, info, kernel, alive):
        """Multiply-adds x 2 of the non-zero weights of live filters."""
        pixels = info.output_hw[0] * info.output_hw[1]
        kh, kw = info.kernel_size
        live_inputs = int(alive[info.input_nodes].sum())
        if info.kind == "depthwise":
            return 2 * pixels * kh * kw * int(alive[info.output_nodes].sum())
        pointwise = 2 * pixels * int(np.count_nonzero(
            kernel[..., alive[info.output_nodes]]))
        if info.kind == "separable":
            return pointwise + 2 * pixels * kh * kw * live_inputs
        return pointwise

    def masks(self):
        """`{conv name: bool kernel mask}` (True where a weight is non-zero)."""
        return {name: kernel != 0 for name, kernel in self.kernels().items()}
