"""Second-order checks: Hessian-vector products against finite differences."""

import numpy as np
import tensorflow as tf


def _flat_dot(a, b):
    return tf.add_n([tf.reduce_sum(x * y) for x, y in zip(a, b)])


def hvp_and_finite_difference(loss_fn, variables, seed=0, eps=1e-5):
    """Returns (H v, central difference of the gradient along v) for random v.

    Args:
        loss_fn: callable returning a scalar that depends on `variables`.
        variables: float64 `tf.Variable`s.
    """
    rng = np.random.default_rng(seed)
    direction = [tf.constant(rng.normal(size=v.shape), v.dtype)
                 for v in variables]

    def gradient_at(shift):
        for v, d in zip(variables, direction):
            v.assign_add(shift * d)
        with tf.GradientTape() as tape:
            loss = loss_fn()
        grads = tape.gradient(loss, variables,
                              unconnected_gradients="zero")
        for v, d in zip(variables, direction):
            v.assign_sub(shift * d)
        return grads

    with tf.GradientTape() as outer:
        with tf.GradientTape() as inner:
            loss = loss_fn()
        grads = inner.gradient(loss, variables, unconnected_gradients="zero")
        along = _flat_dot(grads, direction)
    hvp = outer.gradient(along, variables, unconnected_gradients="zero")
    plus, minus = gradient_at(eps), gradient_at(-eps)
    fd = [(p - m) / (2 * eps) for p, m in zip(plus, minus)]
    return (np.concatenate([h.numpy().ravel() for h in hvp]),
            np.concatenate([f.numpy().ravel() for f in fd]))


def relative_error(a, b):
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-12))
