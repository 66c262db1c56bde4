"""Proximal operators and penalties: pure tensor maths, no Keras state.

Everything here is differentiable to any order where the maths is (with the
subgradient 0 at a zero group), so the inner loop can apply the prox to fast
weights and the meta-gradient can flow through it to lambda.
"""

import tensorflow as tf

from ms_keras.sparsity.groups import CHANNEL
from ms_keras.sparsity.groups import UNSTRUCTURED

_GROUP_AXES = (0, 1, 3)  # HWIO: everything but the input channel


def as_dtype(value, dtype):
    """`value` (tensor or Python number) as a tensor of `dtype`.

    Python numbers are converted directly, not through float32 as `tf.cast`
    would, so float64 maths stays float64.
    """
    if tf.is_tensor(value) or hasattr(value, "dtype"):
        return tf.cast(value, dtype)
    return tf.constant(value, dtype)


def _safe_norm(squared):
    """sqrt with a zero gradient (not NaN) where `squared` is 0."""
    positive = squared > 0
    safe = tf.where(positive, squared, tf.ones_like(squared))
    return tf.where(positive, tf.sqrt(safe), tf.zeros_like(squared))


def group_norms(kernel):
    """L2 norm of every input-channel group of an HWIO kernel, shape `(in,)`."""
    return _safe_norm(tf.reduce_sum(tf.square(kernel), axis=_GROUP_AXES))


def group_size(kernel):
    """`n_g = kh * kw * out_channels` of an HWIO kernel."""
    kh, kw, _, out = kernel.shape
    return kh * kw * out


def group_soft_threshold(kernel, threshold):
    """Group soft-thresholding of Eq. 8 with threshold `t` (scalar).

    Group c becomes `(1 - t / ||theta_c||) theta_c` if `||theta_c|| > t`,
    else 0.
    """
    norms = group_norms(kernel)
    threshold = as_dtype(threshold, kernel.dtype)
    keep = norms > threshold
    safe = tf.where(keep, norms, tf.ones_like(norms))
    scale = tf.where(keep, 1.0 - threshold / safe, tf.zeros_like(norms))
    return kernel * scale[None, None, :, None]


def soft_threshold(kernel, threshold):
    """Element-wise soft-thresholding (prox of the l1 norm)."""
    threshold = as_dtype(threshold, kernel.dtype)
    return tf.sign(kernel) * tf.nn.relu(tf.abs(kernel) - threshold)


def prox(kernel, learning_rate, lam, kind):
    """Proximal step of the penalty `kind` with step size `learning_rate`.

    `channel`: group soft-threshold at `learning_rate * lam * sqrt(n_g)`;
    `unstructured`: element soft-threshold at `learning_rate * lam`.
    """
    step = as_dtype(learning_rate, kernel.dtype) * as_dtype(lam, kernel.dtype)
    if kind == CHANNEL:
        return group_soft_threshold(
            kernel, step * tf.sqrt(tf.cast(group_size(kernel), kernel.dtype)))
    if kind == UNSTRUCTURED:
        return soft_threshold(kernel, step)
    raise ValueError(
        f"`kind` must be '{CHANNEL}' or '{UNSTRUCTURED}'. Received: {kind}")


def rescale_to_norm(kernel, norm):
    """`kernel` scaled to Frobenius norm `norm` (a zero kernel stays zero).

    The outer prox's `preserve_norm` uses it (`sparsity.proximal`); the
    inner loop does not rescale.
    """
    current = _safe_norm(tf.reduce_sum(tf.square(kernel)))
    positive = current > 0
    safe = tf.where(positive, current, tf.ones_like(current))
    ratio = tf.where(positive, tf.cast(norm, kernel.dtype) / safe,
                     tf.zeros_like(current))
    return kernel * ratio


def penalty(kernels, kind):
    """The regulariser R without lambda.

    `channel`: `sum_l sum_c sqrt(n_g) ||theta_c||` (Eq. 12);
    `unstructured`: `sum |theta|`.
    """
    terms = []
    for kernel in kernels:
        if kind == CHANNEL:
            size = tf.sqrt(tf.cast(group_size(kernel), kernel.dtype))
            terms.append(size * tf.reduce_sum(group_norms(kernel)))
        elif kind == UNSTRUCTURED:
            terms.append(tf.reduce_sum(tf.abs(kernel)))
        else:
            raise ValueError(
                f"`kind` must be '{CHANNEL}' or '{UNSTRUCTURED}'. "
                f"Received: {kind}")
    return tf.add_n(terms)
