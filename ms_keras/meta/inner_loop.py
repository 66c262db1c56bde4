"""The inner loop of Alg. 3 on fast weights: plain tensors, no assignment.

Fast weights are a flat list of tensors laid out like the meta parameters.
Nothing here assigns to a variable, so the meta-gradient can differentiate
through every step (second order) or through the prox only (first order).
"""

import numpy as np
import tensorflow as tf

from ms_keras.sparsity import prox as prox_lib


def clip_by_global_norm(grads, clip_norm):
    """Scales `grads` so that their global norm is at most `clip_norm`.

    Plain ops (no stop-gradient), so the meta-gradient differentiates
    through the clipping.
    """
    squared = tf.add_n([tf.reduce_sum(tf.square(g)) for g in grads])
    norm = tf.sqrt(squared)
    limit = prox_lib.as_dtype(clip_norm, norm.dtype)
    scale = limit / tf.maximum(norm, limit)
    return [g * tf.cast(scale, g.dtype) for g in grads]


def adapt(loss_fn, fast_weights, steps, learning_rate, first_order=False,
          post_step=None, outer_tape=None, clip_norm=0.0):
    """Runs `steps` SGD steps on `loss_fn` starting from `fast_weights`.

    Args:
        loss_fn: maps a list of fast weights to the scalar support loss.
        fast_weights: list of tensors (the meta parameters' values).
        steps: number of SGD steps (k >= 1).
        learning_rate: inner learning rate.
        first_order: stop the gradient through the inner gradients (FOMAML);
            `post_step` stays differentiable.
        post_step: optional map applied to the weights after every step (the
            differentiable prox).
        outer_tape: the tape computing the meta-gradient; with
            `first_order` it does not record the inner gradients (saving the
            memory of the second-order graph).
        clip_norm: if > 0, each inner gradient is scaled to at most this
            global norm (see `MetaSparsityTrainer`'s `inner_clip_norm`).

    Returns:
        The adapted fast weights.
    """
    weights = list(fast_weights)
    for _ in range(steps):
        with tf.GradientTape() as tape:
            tape.watch(weights)
            loss = loss_fn(weights)
        if first_order and outer_tape is not None:
            with outer_tape.stop_recording():
                grads = tape.gradient(
                    loss, weights,
                    unconnected_gradients=tf.UnconnectedGradients.ZERO)
        else:
            grads = tape.gradient(
                loss, weights,
                unconnected_gradients=tf.UnconnectedGradients.ZERO)
        if first_order:
            grads = [tf.stop_gradient(g) for g in grads]
        if clip_norm:
            grads = clip_by_global_norm(grads, clip_norm)
        weights = [w - prox_lib.as_dtype(learning_rate, w.dtype) * g
                   for w, g in zip(weights, grads)]
        if post_step is not None:
            weights = post_step(weights)
    return weights


def prox_at(weights, indices, learning_rate, lam, kind):
    """Applies the sparsity prox to the weights at `indices` (kernels)."""
    weights = list(weights)
    for index in indices:
        weights[index] = prox_lib.prox(weights[index], learning_rate, lam,
                                       kind)
    return weights


def straight_through_zeroed(before, after, indices, kind):
    """`after` (the prox's output) with a straight-through path for groups
    the prox zeroed.

    Forward values are those of `after`. For a group that `after` holds at
    zero the gradient with respect to `before` is the identity instead of
    the prox's zero Jacobian, so the weights of a group zeroed inside the
    inner loop still get a meta-gradient. Groups that survive keep the exact
    prox Jacobian (lambda's implicit gradient flows through them as before).

    Args:
        before: fast weights before the prox.
        after: fast weights after the prox.
        indices: positions of the HWIO kernels.
        kind: `channel` (groups are input channels) or `unstructured`
            (every weight is its own group).
    """
    after = list(after)
    for index in indices:
        if kind == prox_lib.CHANNEL:
            zeroed = tf.cast(prox_lib.group_norms(after[index]) == 0,
                             after[index].dtype)[None, None, :, None]
        else:
            zeroed = tf.cast(after[index] == 0, after[index].dtype)
        after[index] = after[index] + zeroed * (
            before[index] - tf.stop_gradient(before[index]))
    return after


def glorot_limit(kernel_shape):
    """Uniform Glorot bound of an HWIO kernel."""
    kh, kw, cin, cout = kernel_shape
    return float(np.sqrt(6.0 / (kh * kw * cin + kh * kw * cout)))


def regrow(weights, indices, probability, uniform):
    """Re-initialises zero input-channel groups with probability `probability`.

    Each zero group of each kernel at `indices` is, with that probability,
    replaced by Glorot-uniform values (Table 7 of the paper). The values are
    added to the (zero) group, so the meta-gradient still reaches the meta
    weights of a regrown group.

    Args:
        weights: list of fast weights.
        indices: positions of the HWIO kernels.
        probability: regrowth probability r_p.
        uniform: `uniform(shape, minval, maxval)` random draw (seeded by the
            caller).
    """
    weights = list(weights)
    for index in indices:
        kernel = weights[index]
        dead = prox_lib.group_norms(kernel) == 0
        chosen = uniform((kernel.shape[2],), 0.0, 1.0) < probability
        limit = glorot_limit(kernel.shape)
        fresh = tf.cast(uniform(kernel.shape, -limit, limit), kernel.dtype)
        mask = tf.cast(tf.logical_and(dead, chosen), kernel.dtype)
        weights[index] = kernel + fresh * mask[None, None, :, None]
    return weights
