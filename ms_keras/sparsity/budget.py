"""Solving for lambda: the value at which the outer prox zeroes a budget.

After an optimizer update, the outer prox (Eq. 8, in Adam's metric) zeroes
group g exactly when lambda reaches `lambda_g = ||theta_g|| / t_g`, its norm
over its threshold per unit lambda. Ranking the groups by `lambda_g` turns a
budget (a share of the parameters, or a structural FLOPs speed-up) into the
smallest lambda that meets it: the Lagrange multiplier of "at least this
sparse" (`control.SparsityController`).
"""

import numpy as np
import tensorflow as tf

from ms_keras import config as config_lib
from ms_keras.sparsity import prox as prox_lib
from ms_keras.sparsity import structure as structure_lib


class GroupRanking:
    """The groups of the penalised kernels, their sizes and structure.

    `death_lambdas` gives, for every group, the lambda at which the outer
    prox zeroes it after this step's update: its norm over its threshold
    per unit lambda (`OuterProx.thresholds(optimizer, 1, kernel)`).

    Args:
        prox: the trainer's `sparsity.proximal.OuterProx`.
        backbone: the backbone the prox acts on.
    """

    def __init__(self, prox, backbone):
        self.prox = prox
        self.kind = prox.kind
        sizes = []
        for kernel in prox.kernels:
            if self.kind == config_lib.CHANNEL:
                sizes.append(np.full(kernel.shape[2],
                                     prox_lib.group_size(kernel)))
            else:
                sizes.append(np.ones(int(np.prod(kernel.shape))))
        self.sizes = np.concatenate(sizes).astype(np.float64)
        self.total = float(self.sizes.sum())
        self.structure = None
        if self.kind == config_lib.CHANNEL:
            self.structure = structure_lib.FlopsModel(backbone)
            if self.structure.group_count != len(self.sizes):
                raise ValueError(
                    "A FLOPs budget needs every backbone conv trainable: "
                    f"{len(self.sizes)} of {self.structure.group_count} "
                    "groups are.")

    def death_lambdas(self, optimizer):
        """Concatenated per-group lambdas at which the prox zeroes each."""
        values = []
        for kernel in self.prox.kernels:
            threshold = tf.cast(self.prox.thresholds(optimizer, 1.0, kernel),
                                tf.float32)
            value = tf.cast(kernel, tf.float32)
            if self.kind == config_lib.CHANNEL:
                norm = prox_lib.group_norms(value)
            else:
                norm = tf.abs(value)
            values.append(tf.reshape(norm / tf.maximum(threshold, 1e-30),
                                     [-1]))
        return tf.concat(values, axis=0)

    def lambda_for_parameters(self, lams, percent):
        """The lambda that zeroes the groups whose parameters come closest
        to `percent` of the penalised weights (smallest lambdas first)."""
        order = tf.argsort(lams)
        ranked = tf.gather(lams, order)
        counts = tf.cumsum(tf.gather(tf.constant(self.sizes, tf.float32),
                                     order))
        wanted = tf.cast(percent, tf.float32) / 100.0 * self.total
        # Zeroing k groups removes counts[k-1]; pick k with the closest sum.
        above = tf.searchsorted(counts, wanted[None], side="left")[0]
        above = tf.minimum(above, tf.size(counts) - 1)
        below = above - 1
        below_sum = tf.where(below >= 0, tf.gather(counts, tf.maximum(
            below, 0)), 0.0)
        take_above = (tf.gather(counts, above) - wanted) < (wanted - below_sum)
        last = tf.where(take_above, above, below)
        return tf.where(last >= 0, tf.gather(ranked, tf.maximum(last, 0)),
                        tf.zeros((), tf.float32))

    def lambda_for_speedup(self, lams, speedup):
        """The smallest lambda whose zeroed groups give a structural FLOPs
        speed-up of at least `speedup` (binary search over the ranking)."""
        structure = self.structure
        order = tf.argsort(lams)
        ranked = tf.gather(lams, order)
        rank = tf.scatter_nd(order[:, None], tf.range(tf.size(lams)),
                             tf.shape(lams))
        count = tf.size(lams)

        def reaches(k):
            return structure.speedup(rank >= k) >= speedup

        def body(low, high):
            middle = (low + high) // 2
            good = reaches(middle)
            return (tf.where(good, low, middle + 1),
                    tf.where(good, middle, high))

        # Smallest k in [0, count] with reaches(k); count if none does.
        _, k = tf.while_loop(lambda low, high: low < high, body,
                             (tf.constant(0), count))
        return tf.where(k > 0, tf.gather(ranked, tf.maximum(k - 1, 0)),
                        tf.zeros((), tf.float32))
