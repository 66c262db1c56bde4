"""Sparsity measurements of a backbone: the paper's sparsity metrics.

Parameter sparsity (% of zero weights) and group sparsity (% of zero
input-channel groups) over every backbone conv kernel, compression ratio
(total / non-zero parameters) and speed-up (total / non-zero FLOPs, counting
a zeroed input group and the producer filters its dead channel frees, see
`structure.py`), plus per-layer active channels.
"""

import numpy as np

from ms_keras.sparsity import groups as groups_lib
from ms_keras.sparsity import structure as structure_lib


class SparsityMeter:
    """Measures the sparsity of a backbone; the structure is analysed once.

    Args:
        backbone: the functional backbone model.

    Example:

    >>> meter = SparsityMeter(backbone_of(model))
    >>> meter.measure()["parameter_percent"]
    """

    def __init__(self, backbone):
        self.backbone = backbone
        self.structure = structure_lib.analyse(backbone)
        self.layers = groups_lib.conv_layers(backbone)

    def kernels(self):
        """`{conv name: numpy HWIO kernel}` of every backbone conv."""
        return {layer.name: np.asarray(layer.kernel) for layer in self.layers}

    def measure(self):
        """Returns the sparsity statistics as a JSON-ready dict."""
        kernels = self.kernels()
        alive = self.structure.alive_channels(kernels)
        total = zeros = groups = zero_groups = 0
        dense_flops = sparse_flops = 0
        per_layer = {}
        for name, kernel in kernels.items():
            info = self.structure.convs[name]
            group_nonzero = np.any(kernel != 0, axis=(0, 1, 3))
            total += kernel.size
            zeros += int(np.sum(kernel == 0))
            groups += kernel.shape[2]
            zero_groups += int(np.sum(~group_nonzero))
            dense_flops += info.dense_flops()
            live_filters = kernel[..., alive[info.output_space]]
            pixels = info.output_hw[0] * info.output_hw[1]
            sparse_flops += 2 * pixels * int(np.count_nonzero(live_filters))
            per_layer[name] = {
                "active_channels": int(np.sum(group_nonzero)),
                "channels": int(kernel.shape[2]),
                "parameter_percent": 100.0 * float(np.mean(kernel == 0)),
            }
        nonzero = total - zeros
        return {
            "parameter_percent": 100.0 * zeros / total,
            "group_percent": 100.0 * zero_groups / groups,
            "compression_ratio": total / max(nonzero, 1),
            "flops_speedup": dense_flops / max(sparse_flops, 1),
            "parameters": int(total),
            "nonzero_parameters": int(nonzero),
            "flops": int(dense_flops),
            "nonzero_flops": int(sparse_flops),
            "per_layer": per_layer,
        }

    def masks(self):
        """`{conv name: bool kernel mask}` (True where a weight is non-zero)."""
        return {name: kernel != 0 for name, kernel in self.kernels().items()}
