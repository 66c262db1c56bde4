"""The outer proximal step (Alg. 3, Eq. 8) and fixed sparsity patterns,
applied to variables right after the optimizer's update.

With plain SGD the proximal step of the penalty `lam * R` at step size `lr`
soft-thresholds group g at `lr * lam * sqrt(n_g)` (Eq. 8). Adam does not take
steps of size `lr * gradient`: it divides each coordinate by
`sqrt(v_hat) + eps`, so a group moves about `lr * sqrt(n_g)` per step whatever
its gradient, and a Euclidean threshold of `lr * lam * sqrt(n_g)` eats a fixed
fraction of every step (at lam = 0.5, half of it). Three ways to fit the prox
to the optimizer (`PROX_STEPS`):

- `adam_metric`: the proximal step in Adam's own metric. Each group's
  threshold is scaled like Adam's step, `alpha_t * lam * sqrt(n_g) / d_g`
  with `alpha_t` Adam's bias-corrected step size and `d_g` the mean of
  `sqrt(v) + eps` over the group (the diagonal metric, averaged so the group
  prox keeps its closed form). A group then dies when its gradient is small
  against `lam * sqrt(n_g)`, the group-lasso optimality condition, as in
  SGD's inner loop: inner and outer prox judge groups on one scale.
- `reset_moments`: the Euclidean threshold, and the optimizer's moments of
  every zeroed group reset, so that momentum does not regrow it.
- `adam_metric_reset`: both. A zeroed group restarts Adam from fresh
  moments, where Adam's threshold in its metric is ~10x its step (its first
  velocity is only `(1 - beta_2) g^2`): a group dies when its gradient is
  below `lam * sqrt(n_g)` but revives only when it is well above. The
  hysteresis stops groups at the boundary from dying and reviving at random.
- `plain`: the Euclidean threshold alone (the behaviour before 0.2).

With SGD, `adam_metric` is the Euclidean step (its metric is the identity).

Every backbone conv is followed by batch norm, so the network computes the
same function whatever a kernel's norm, while the penalty falls with it: the
prox alone shrinks whole layers for free (in a measured run the penalty R
fell 13x at 14 % sparsity), raising Adam's relative step until groups die
and revive at random. With `preserve_norm` the prox keeps each such kernel's
norm (a projected proximal step on the sphere the loss cannot tell apart
from any other radius): a group is zeroed when it is small against the
others, and lambda keeps one meaning through training.
"""

import keras
import numpy as np
import tensorflow as tf

from ms_keras import config as config_lib
from ms_keras import keras_compat
from ms_keras.sparsity import groups as groups_lib
from ms_keras.sparsity import prox as prox_lib

_IN_ADAM_METRIC = (config_lib.ADAM_METRIC, config_lib.ADAM_METRIC_RESET)
_RESETS = (config_lib.RESET_MOMENTS, config_lib.ADAM_METRIC_RESET)


def _adam_scale(optimizer, kernel, kind):
    """Per-group (or per-weight) `alpha_t / d` of Adam's diagonal metric."""
    velocity = keras_compat.adam_velocity(optimizer, kernel)
    # At least one step: a skipped first step (mixed_float16's overflow)
    # leaves the count at 0, where Adam's bias correction is 0 / 0.
    step = tf.cast(tf.maximum(optimizer.iterations, 1), kernel.dtype)
    # as_dtype: a Python float through tf.cast would pass through float32.
    beta_1 = prox_lib.as_dtype(optimizer.beta_1, kernel.dtype)
    beta_2 = prox_lib.as_dtype(optimizer.beta_2, kernel.dtype)
    alpha = tf.sqrt(1.0 - beta_2 ** step) / (1.0 - beta_1 ** step)
    metric = tf.sqrt(tf.cast(velocity, kernel.dtype)) + prox_lib.as_dtype(
        optimizer.epsilon, kernel.dtype)
    if kind == config_lib.CHANNEL:
        metric = tf.reduce_mean(metric, axis=(0, 1, 3))
    return alpha / metric


class OuterProx:
    """Applies the sparsity prox to the backbone kernels after an update.

    Example:

    >>> prox = OuterProx(network.backbone, "channel", "adam_metric")
    >>> optimizer.apply(grads, variables)
    >>> prox.apply(optimizer, lam.value())

    Args:
        backbone: the backbone whose conv kernels are penalised.
        kind: `channel` or `unstructured`.
        step: one of `config_lib.PROX_STEPS`.
        preserve_norm: rescale each kernel followed by batch norm to the norm
            it had before the prox (the function is unchanged by it).
    """

    def __init__(self, backbone, kind=config_lib.CHANNEL,
                 step=config_lib.ADAM_METRIC_RESET, preserve_norm=True):
        if kind not in (config_lib.CHANNEL, config_lib.UNSTRUCTURED):
            raise ValueError(
                f"`kind` must be 'channel' or 'unstructured'. Received: {kind}")
        if step not in config_lib.PROX_STEPS:
            raise ValueError(
                f"`step` must be one of {config_lib.PROX_STEPS}. Received: "
                f"step={step}")
        self.kind = kind
        self.step = step
        self.preserve_norm = bool(preserve_norm)
        penalised = groups_lib.penalised_kernels(backbone)
        self.kernels = [k.variable for k in penalised]
        self._rescaled = [self.preserve_norm and k.scale_invariant
                          for k in penalised]

    def thresholds(self, optimizer, lam, kernel):
        """The threshold of every group of `kernel` (a vector, or a
        kernel-shaped tensor for unstructured sparsity)."""
        lr = prox_lib.as_dtype(optimizer.learning_rate, kernel.dtype)
        base = lr * prox_lib.as_dtype(lam, kernel.dtype)
        if self.kind == config_lib.CHANNEL:
            base = base * tf.sqrt(tf.cast(prox_lib.group_size(kernel),
                                          kernel.dtype))
            shape = (kernel.shape[2],)
        else:
            shape = kernel.shape
        inner = keras_compat.base_optimizer(optimizer)
        if self.step in _IN_ADAM_METRIC and isinstance(
                inner, keras.optimizers.Adam):
            return base * _adam_scale(inner, kernel, self.kind)
        return tf.broadcast_to(base, shape)

    def apply(self, optimizer, lam):
        """Thresholds every kernel in place; returns the mean threshold
        over groups (for the summaries)."""
        means = []
        for kernel, rescaled in zip(self.kernels, self._rescaled):
            threshold = self.thresholds(optimizer, lam, kernel)
            if self.kind == config_lib.CHANNEL:
                value = prox_lib.group_soft_threshold(kernel, threshold)
                alive = tf.cast(prox_lib.group_norms(value) > 0,
                                kernel.dtype)[None, None, :, None]
            else:
                value = prox_lib.soft_threshold(kernel, threshold)
                alive = tf.cast(value != 0, kernel.dtype)
            if rescaled:
                value = prox_lib.rescale_to_norm(value, tf.norm(kernel))
            kernel.assign(value)
            if self.step in _RESETS:
                for slot in keras_compat.optimizer_slots(optimizer, kernel):
                    slot.assign(slot * tf.cast(alive, slot.dtype))
            means.append(tf.reduce_mean(tf.cast(threshold, tf.float32)))
        return tf.reduce_mean(tf.stack(means))


class _Untracked:
    """A plain holder Keras does not look into (no weight tracking)."""

    def __init__(self, **values):
        self.__dict__.update(values)


class KernelMasks(keras.layers.Layer):
    """Holds a sparsity pattern: masked weights stay exactly zero.

    The mask applies to the gradients before the optimizer's update (so
    Adam's moments of a masked weight never grow), to the weights after it,
    and, whenever the pattern changes, to the optimizer's moments (a weight
    pruned from a trained run carries moments that would move it). A masked
    group never revives. The masks are non-trainable weights of this layer:
    a trainer holding it saves them with its checkpoints, so a pattern that
    grows during training (pruning schedules) survives a resume.

    Args:
        backbone: the backbone holding the conv kernels.
        masks: optional `{conv layer name: bool array shaped like its
            kernel}` (default: nothing masked).

    Raises:
        ValueError: for a conv without a mask or a mask of the wrong shape.
    """

    def __init__(self, backbone, masks=None, **kwargs):
        super().__init__(trainable=False, **kwargs)
        layers = groups_lib.conv_layers(backbone)
        kernels = [groups_lib.group_kernel(layer) for layer in layers]
        # The convs belong to the backbone: kept out of Keras' tracking so
        # that this layer's weights are the masks alone.
        self._convs = _Untracked(names=[layer.name for layer in layers],
                                 kernels=kernels)
        self.mask_variables = [
            self.add_weight(shape=kernel.shape, initializer="ones",
                            trainable=False, name=f"{layer.name}_mask",
                            dtype=kernel.dtype)
            for layer, kernel in zip(layers, kernels)]
        self._masks_of = _Untracked(masks={
            id(k): m for k, m in zip(self._convs.kernels,
                                     self.mask_variables)})
        if masks is not None:
            self.set_masks(masks)

    def set_masks(self, masks):
        """Replaces the pattern (`{conv name: bool array}`)."""
        names = self._convs.names
        missing = sorted(set(names) - set(masks))
        if missing:
            raise ValueError(
                f"The masks have no entry for backbone layers "
                f"{missing[:3]}{'...' if len(missing) > 3 else ''}.")
        for name, variable in zip(names, self.mask_variables):
            mask = masks[name]
            if tuple(mask.shape) != tuple(variable.shape):
                raise ValueError(
                    f"The mask of '{name}' has shape {tuple(mask.shape)}, "
                    f"its kernel {tuple(variable.shape)}.")
            variable.assign(tf.cast(mask, variable.dtype))

    def masks(self):
        """`{conv name: bool numpy mask}` of the current pattern."""
        return {name: np.asarray(variable) != 0
                for name, variable in zip(self._convs.names,
                                          self.mask_variables)}

    def mask_gradients(self, gradients, variables):
        """Gradients with the masked weights' entries set to zero."""
        masks = self._masks_of.masks
        return [g if g is None or id(v) not in masks
                else g * tf.cast(masks[id(v)], g.dtype)
                for g, v in zip(gradients, variables)]

    def apply(self, optimizer=None):
        """Zeroes the masked weights (and, with `optimizer`, their moments)."""
        for kernel, mask in zip(self._convs.kernels, self.mask_variables):
            kernel.assign(kernel * tf.cast(mask, kernel.dtype))
            if optimizer is not None and optimizer.built:
                for slot in keras_compat.optimizer_slots(optimizer, kernel):
                    slot.assign(slot * tf.cast(mask, slot.dtype))
