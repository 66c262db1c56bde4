"""The sparsity strength lambda, kept positive with a softplus.

`lam = softplus(beta * raw) / beta` with `raw` a weight that is meta-learned
(or frozen for fixed-lambda experiments).
"""

import keras
import numpy as np
import tensorflow as tf

def inverse_softplus(value, beta=1.0):
    """`raw` such that `softplus(beta * raw) / beta == value` (value > 0)."""
    if value <= 0:
        raise ValueError(f"lambda must be positive. Received: {value}")
    return float(np.log(np.expm1(beta * value)) / beta)


@keras.saving.register_keras_serializable(package="ms_keras")
class SparsityStrength(keras.layers.Layer):
    """Holds lambda as a raw weight behind a softplus.

    Args:
        initial_value: starting lambda (> 0). The paper draws its own from
            U[0.1, 1], in the units of its SGD prox; with the prox in Adam's
            metric lambda is a per-weight gradient size and 1e-3 is of the
            right order (README, sparsity control).
        beta: softplus sharpness.
        learnable: whether `raw` is a trainable weight (lambda follows its
            meta-gradient) or not (fixed-lambda baselines, and the
            controlled modes, which assign it).

    Example:

    >>> lam = SparsityStrength(initial_value=1e-4, learnable=False)
    >>> float(lam.value())  # ~1e-4
    """

    def __init__(self, initial_value, beta=1.0, learnable=True, **kwargs):
        super().__init__(**kwargs)
        if beta <= 0:
            raise ValueError(f"`beta` must be positive. Received: beta={beta}")
        if initial_value is None or initial_value <= 0:
            raise ValueError(
                "`initial_value` must be positive. Received: "
                f"initial_value={initial_value}")
        self.initial_value = float(initial_value)
        self.beta = float(beta)
        self.learnable = bool(learnable)
        # Nothing to infer from inputs: the one weight is created right away.
        self.build()

    def build(self, input_shape=None):
        self.raw = self.add_weight(
            shape=(), name="raw", trainable=self.learnable,
            initializer=keras.initializers.Constant(
                inverse_softplus(self.initial_value, self.beta)))

    def value(self):
        """Current lambda (a scalar tensor, differentiable in `raw`)."""
        return tf.math.softplus(self.beta * self.raw) / self.beta

    def derivative(self):
        """`d lam / d raw = sigmoid(beta * raw)`: turns a gradient with
        respect to `raw` into one per unit lambda."""
        return tf.math.sigmoid(self.beta * self.raw)

    def call(self, inputs=None):
        return self.value()

    def get_config(self):
        config = super().get_config()
        config.update({"initial_value": self.initial_value,
                       "beta": self.beta, "learnable": self.learnable})
        return config
