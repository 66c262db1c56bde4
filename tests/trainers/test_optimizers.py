"""`FusedAdam` follows `keras.optimizers.Adam` step for step."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from ms_keras import keras_compat
from ms_keras.trainers.optimizers import FusedAdam


def _variables(dtype="float32"):
    rng = np.random.default_rng(0)
    return [keras.Variable(rng.normal(size=shape), dtype=dtype, name=name)
            for name, shape in (("kernel", (3, 3, 4, 5)), ("bias", (5,)))]


def _gradients(step, dtype="float32"):
    rng = np.random.default_rng(step + 1)
    # Gradients of very different sizes per step, so that the bias
    # corrections and the epsilon matter.
    scale = 10.0 ** (step % 4 - 2)
    return [tf.constant(scale * rng.normal(size=shape).astype(dtype))
            for shape in ((3, 3, 4, 5), (5,))]


def _run(optimizer, steps=6, dtype="float32", compiled=True):
    variables = _variables(dtype)
    optimizer.build(variables)

    def apply(grads):
        optimizer.apply(grads, variables)

    if compiled:
        apply = tf.function(apply, autograph=False)
    for step in range(steps):
        apply(_gradients(step, dtype))
    slots = [s.numpy() for v in variables
             for s in keras_compat.optimizer_slots(optimizer, v)]
    return [v.numpy() for v in variables], slots


@pytest.mark.parametrize("options", [
    {"learning_rate": 0.01},
    {"learning_rate": 0.01, "beta_1": 0.5, "beta_2": 0.9, "epsilon": 1e-3},
    {"learning_rate": keras.optimizers.schedules.ExponentialDecay(
        0.01, decay_steps=2, decay_rate=0.5), "global_clipnorm": 1.0},
    {"learning_rate": 0.01, "amsgrad": True},
], ids=["default", "other_betas", "schedule_and_clipping", "amsgrad"])
@pytest.mark.parametrize("compiled", [True, False], ids=["graph", "eager"])
def test_matches_keras_adam(options, compiled):
    ours = _run(FusedAdam(**options), compiled=compiled)
    theirs = _run(keras.optimizers.Adam(**options), compiled=compiled)
    # The kernel forms 1 - beta_2 in float32 (0.99900001 -> 1.29e-5 off
    # 0.001), Keras in Python's float64 before casting; in float64 (below)
    # both round alike and agree to the last bits.
    for a, b in zip(ours[0] + ours[1], theirs[0] + theirs[1]):
        np.testing.assert_allclose(a, b, rtol=3e-5, atol=1e-7)


def _numpy_adam(steps, lr=0.01, beta_1=0.9, beta_2=0.999, epsilon=1e-7):
    """Adam in float64 numpy (Keras' rule), the variables after `steps`."""
    weights = [v.numpy() for v in _variables("float64")]
    moments = [np.zeros_like(w) for w in weights]
    velocities = [np.zeros_like(w) for w in weights]
    # Keras keeps the learning rate in a float32 variable.
    lr = float(np.float32(lr))
    for step in range(steps):
        alpha = lr * np.sqrt(1 - beta_2 ** (step + 1)) / (
            1 - beta_1 ** (step + 1))
        for i, grad in enumerate(_gradients(step, "float64")):
            grad = grad.numpy()
            moments[i] += (grad - moments[i]) * (1 - beta_1)
            velocities[i] += (grad ** 2 - velocities[i]) * (1 - beta_2)
            weights[i] -= alpha * moments[i] / (np.sqrt(velocities[i])
                                                + epsilon)
    return weights


def test_is_adam_to_float64_precision():
    # Keras' own Adam rounds beta_1 and beta_2 to float32 inside its bias
    # correction even for float64 variables (7e-8 off here); the fused
    # kernel gets them in the variable's dtype.
    weights, _ = _run(FusedAdam(0.01), dtype="float64")
    for ours, reference in zip(weights, _numpy_adam(6)):
        np.testing.assert_allclose(ours, reference, rtol=1e-12, atol=1e-14)


def test_updates_with_the_fused_kernel():
    variables = _variables()
    optimizer = FusedAdam(0.01)
    optimizer.build(variables)
    apply = tf.function(lambda grads: optimizer.apply(grads, variables),
                        autograph=False)
    graph = apply.get_concrete_function(_gradients(0)).graph
    ops = [op.type for op in graph.get_operations()]
    assert ops.count("ResourceApplyAdam") == len(variables)


def test_sparse_gradients_take_keras_update():
    def run(optimizer):
        embedding = keras.Variable(np.arange(12.0, dtype="float32")
                                   .reshape(4, 3))
        optimizer.build([embedding])
        for step in range(3):
            grad = tf.IndexedSlices(tf.ones((2, 3)) * (step + 1),
                                    tf.constant([0, 2]), tf.constant([4, 3]))
            optimizer.apply([grad], [embedding])
        return embedding.numpy()

    np.testing.assert_allclose(run(FusedAdam(0.1)),
                               run(keras.optimizers.Adam(0.1)), rtol=1e-6)


def test_serializes_as_itself():
    optimizer = FusedAdam(0.02, beta_1=0.8, epsilon=1e-4)
    restored = keras.optimizers.deserialize(
        keras.optimizers.serialize(optimizer))
    assert type(restored) is FusedAdam
    assert restored.get_config() == optimizer.get_config()
