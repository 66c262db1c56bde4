"""Layers whose second derivatives are exact.

The meta-gradient differentiates through the inner loop's gradient, so every op
on the forward path needs a correct second derivative. Three stock Keras/TF
pieces fail that: `tf.image.resize` (bilinear) has no registered second
derivative, Keras `BatchNormalization` computes the batch variance with
`tf.nn.moments`, which stops the gradient through the mean, and under XLA
the second derivative of max pooling (`MaxPoolGradGrad`) packs each value
into 16 bits to find its window's maximum (a 0.3 % error in a meta-gradient
measured here). The layers here replace them with plain differentiable ops.
"""

import keras
import numpy as np
import tensorflow as tf
from keras import ops


def bilinear_matrix(in_size, out_size):
    """Interpolation matrix A (out_size x in_size) of half-pixel bilinear resize.

    `A @ x` resizes a signal of length `in_size` to `out_size` exactly as
    `tf.image.resize(..., method="bilinear", antialias=False)` does.
    """
    scale = in_size / out_size
    centres = (np.arange(out_size) + 0.5) * scale - 0.5
    centres = np.clip(centres, 0.0, in_size - 1)
    lower = np.floor(centres).astype(np.int64)
    upper = np.minimum(lower + 1, in_size - 1)
    frac = centres - lower
    matrix = np.zeros((out_size, in_size), np.float64)
    rows = np.arange(out_size)
    np.add.at(matrix, (rows, lower), 1.0 - frac)
    np.add.at(matrix, (rows, upper), frac)
    return matrix


class _ToSize(keras.layers.Layer):
    """A layer producing `(batch, *size, channels)` maps; holds `size`."""

    def __init__(self, size, **kwargs):
        super().__init__(**kwargs)
        self.size = tuple(int(s) for s in size)
        if len(self.size) != 2 or min(self.size) <= 0:
            raise ValueError(
                f"`size` must be two positive integers. Received: size={size}")

    def compute_output_shape(self, input_shape):
        return (input_shape[0], *self.size, input_shape[3])

    def get_config(self):
        config = super().get_config()
        config.update({"size": self.size})
        return config


@keras.saving.register_keras_serializable(package="ms_keras")
class BilinearResize(_ToSize):
    """Bilinear resize of NHWC maps as two matrix contractions.

    Equal in value to `tf.image.resize(x, size, "bilinear")` but built from
    `einsum` with constant interpolation matrices, so gradients of every order
    are exact. The input's spatial size must be static.

    Args:
        size: `(height, width)` of the output.
    """

    def build(self, input_shape):
        in_h, in_w = input_shape[1], input_shape[2]
        if in_h is None or in_w is None:
            raise ValueError(
                "BilinearResize needs a static spatial input shape. "
                f"Received: input_shape={input_shape}"
            )
        self._rows = bilinear_matrix(in_h, self.size[0])
        self._cols = bilinear_matrix(in_w, self.size[1])

    def call(self, inputs):
        rows = ops.convert_to_tensor(self._rows, dtype=inputs.dtype)
        cols = ops.convert_to_tensor(self._cols, dtype=inputs.dtype)
        resized = ops.einsum("oh,bhwc->bowc", rows, inputs)
        return ops.einsum("pw,bowc->bopc", cols, resized)


@keras.saving.register_keras_serializable(package="ms_keras")
class SpatialBroadcast(_ToSize):
    """Broadcasts a `(batch, 1, 1, channels)` map to `(batch, h, w, channels)`.

    Used for the image-pooling branch of ASPP instead of a resize, whose second
    derivative TF does not implement.

    Args:
        size: `(height, width)` of the output.
    """

    def call(self, inputs):
        shape = ops.shape(inputs)
        return ops.broadcast_to(inputs, (shape[0], *self.size, shape[3]))


@keras.saving.register_keras_serializable(package="ms_keras")
class ExactBatchNormalization(keras.layers.Layer):
    """Batch normalization over NHWC channels with exact higher derivatives.

    In training mode the batch mean and the biased batch variance normalise
    the batch with gradients of every order flowing through both: for float32
    inputs through TensorFlow's fused kernel (`FusedBatchNormV3`, whose
    registered gradient of the gradient is exact; one op instead of a dozen,
    which makes the differentiated meta-step far smaller), otherwise through
    plain reductions (`mean((x - mean(x))**2)`). The moving statistics take
    one exponential-average update per call, outside the gradient. In inference mode the moving
    statistics are used, as they are when the layer is frozen
    (`trainable=False`), like Keras' own batch norm. Semantics otherwise match
    `keras.layers.BatchNormalization(axis=-1)`.

    Args:
        momentum: moving-average momentum of the statistics.
        epsilon: added to the variance before the square root.
        center: whether to learn an offset `beta`.
        scale: whether to learn a scale `gamma`.
    """

    def __init__(self, momentum=0.9, epsilon=1e-5, center=True, scale=True,
                 **kwargs):
        super().__init__(**kwargs)
        if not 0.0 <= momentum < 1.0:
            raise ValueError(
                f"`momentum` must be in [0, 1). Received: momentum={momentum}"
            )
        self.momentum = float(momentum)
        self.epsilon = float(epsilon)
        self.center = center
        self.scale = scale

    def build(self, input_shape):
        channels = input_shape[-1]
        self.gamma = self.add_weight(
            shape=(channels,), initializer="ones", name="gamma",
            trainable=True) if self.scale else None
        self.beta = self.add_weight(
            shape=(channels,), initializer="zeros", name="beta",
            trainable=True) if self.center else None
        # Under tf.distribute a replica's assignment is averaged over the
        # replicas (with "none" each would silently keep its own).
        self.moving_mean = self.add_weight(
            shape=(channels,), initializer="zeros", name="moving_mean",
            trainable=False, aggregation="mean")
        self.moving_variance = self.add_weight(
            shape=(channels,), initializer="ones", name="moving_variance",
            trainable=False, aggregation="mean")

    def _affine(self, dtype, channels):
        gamma = (ops.cast(self.gamma, dtype) if self.gamma is not None
                 else ops.ones((channels,), dtype))
        beta = (ops.cast(self.beta, dtype) if self.beta is not None
                else ops.zeros((channels,), dtype))
        return gamma, beta

    def _normalise_fused(self, inputs):
        """Training-mode batch norm through the fused kernel (float32, NHWC)."""
        gamma, beta = self._affine(inputs.dtype, inputs.shape[-1])
        outputs, mean, unbiased = tf.compat.v1.nn.fused_batch_norm(
            inputs, gamma, beta, epsilon=self.epsilon, is_training=True)
        count = ops.cast(ops.size(inputs) // inputs.shape[-1], inputs.dtype)
        # The kernel returns the Bessel-corrected variance; the moving
        # average, like the normalisation, uses the biased one.
        return outputs, mean, unbiased * (count - 1.0) / count

    def _normalise_plain(self, inputs, axes):
        """Training-mode batch norm from plain reductions (any dtype)."""
        mean = ops.mean(inputs, axis=axes)
        variance = ops.mean(ops.square(inputs - mean), axis=axes)
        return self._scale_shift(inputs, mean, variance), mean, variance

    def _scale_shift(self, inputs, mean, variance):
        outputs = (inputs - mean) * ops.rsqrt(variance + self.epsilon)
        if self.gamma is not None:
            outputs = outputs * ops.cast(self.gamma, inputs.dtype)
        if self.beta is not None:
            outputs = outputs + ops.cast(self.beta, inputs.dtype)
        return outputs

    def call(self, inputs, training=False, mask=None):
        # `mask` is accepted (and ignored) as Keras' BatchNormalization does,
        # so a functional graph built with it can take this layer instead.
        if inputs.dtype in ("float16", "bfloat16"):
            # Mixed precision: statistics in float32, as Keras' own.
            outputs = self.call(ops.cast(inputs, "float32"), training)
            return ops.cast(outputs, inputs.dtype)
        axes = list(range(len(inputs.shape) - 1))
        if not (training and self.trainable):
            return self._scale_shift(
                inputs, ops.cast(self.moving_mean, inputs.dtype),
                ops.cast(self.moving_variance, inputs.dtype))
        if inputs.dtype == "float32" and len(inputs.shape) == 4:
            outputs, mean, variance = self._normalise_fused(inputs)
        else:
            outputs, mean, variance = self._normalise_plain(inputs, axes)
        keep = self.momentum
        self.moving_mean.assign(
            keep * self.moving_mean + (1.0 - keep) * ops.stop_gradient(
                ops.cast(mean, self.moving_mean.dtype)))
        self.moving_variance.assign(
            keep * self.moving_variance + (1.0 - keep) * ops.stop_gradient(
                ops.cast(variance, self.moving_variance.dtype)))
        return outputs

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update({
            "momentum": self.momentum,
            "epsilon": self.epsilon,
            "center": self.center,
            "scale": self.scale,
        })
        return config


def _at_least_0(size):
    """max(size, 0) of a static int or a dynamic scalar."""
    return max(size, 0) if isinstance(size, int) else tf.maximum(size, 0)


@keras.saving.register_keras_serializable(package="ms_keras")
class ExactMaxPooling2D(keras.layers.MaxPooling2D):
    """`keras.layers.MaxPooling2D` (NHWC) as the maximum of its shifted,
    strided windows: the same outputs and gradient, with a second derivative
    that is exact also under XLA (`jit_compile`).

    Arguments as `keras.layers.MaxPooling2D` (`data_format="channels_last"`).
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.data_format != "channels_last":
            raise ValueError(
                "ExactMaxPooling2D pools NHWC inputs. Received: "
                f"data_format={self.data_format}")

    def call(self, inputs):
        (pool_h, pool_w), (stride_h, stride_w) = self.pool_size, self.strides
        # Static sizes where known (the output keeps its static shape),
        # else dynamic ones (a traced step may not know the batch's).
        height, width = (
            static if static is not None else dynamic
            for static, dynamic in zip(inputs.shape[1:3],
                                       tf.unstack(tf.shape(inputs))[1:3]))
        if self.padding == "same":
            out_h = (height + stride_h - 1) // stride_h
            out_w = (width + stride_w - 1) // stride_w
            pad_h = _at_least_0((out_h - 1) * stride_h + pool_h - height)
            pad_w = _at_least_0((out_w - 1) * stride_w + pool_w - width)
            # The lowest finite value: never a window's maximum, and no
            # infinity in the derivatives.
            lowest = float(np.finfo(inputs.dtype.as_numpy_dtype).min)
            inputs = tf.pad(inputs, [[0, 0], [pad_h // 2, pad_h - pad_h // 2],
                                     [pad_w // 2, pad_w - pad_w // 2],
                                     [0, 0]], constant_values=lowest)
        else:
            out_h = (height - pool_h) // stride_h + 1
            out_w = (width - pool_w) // stride_w + 1
        last_h, last_w = stride_h * (out_h - 1) + 1, stride_w * (out_w - 1) + 1
        result = None
        for row in range(pool_h):
            for column in range(pool_w):
                window = inputs[:, row:row + last_h:stride_h,
                                column:column + last_w:stride_w]
                result = (window if result is None
                          else tf.maximum(result, window))
        return result
