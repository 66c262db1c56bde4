"""Task heads: DeepLabv3 ASPP for dense tasks, a two-layer MLP for attributes."""

import keras

from ms_keras.config import DEFAULT_ASPP_RATES
from ms_keras.models.layers import BilinearResize
from ms_keras.models.layers import ExactBatchNormalization
from ms_keras.models.layers import SpatialBroadcast



def _conv_bn_act(x, filters, kernel_size, name, activation, dilation_rate=1):
    x = keras.layers.Conv2D(filters, kernel_size, padding="same",
                            dilation_rate=dilation_rate, use_bias=False,
                            kernel_initializer="he_normal",
                            name=f"{name}_conv")(x)
    x = ExactBatchNormalization(name=f"{name}_bn")(x)
    return keras.layers.Activation(activation, name=f"{name}_act")(x)


def build_aspp_head(feature_shape, task, image_size, filters=256,
                    rates=DEFAULT_ASPP_RATES, activation="relu",
                    unit_output=False):
    """Builds a DeepLabv3 head for a dense task as a functional `keras.Model`.

    ASPP (a 1x1 branch, one dilated 3x3 branch per rate and an image-pooling
    branch that is broadcast back instead of resized), a 1x1 projection, a 3x3
    conv and a 1x1 classifier; the output is bilinearly upsampled to
    `image_size` with `BilinearResize`.

    Args:
        feature_shape: `(h, w, channels)` of the backbone features.
        task: the `TaskSpec` served by this head (its name and
            `output_channels`).
        image_size: `(height, width)` of the output.
        filters: width of every ASPP branch and of the projection.
        rates: dilation rates of the 3x3 branches.
        activation: activation after each batch norm.
        unit_output: L2-normalise the output per pixel (normals).

    Returns:
        A `keras.Model` named `head_<task name>`.
    """
    if not rates or any(int(r) <= 0 for r in rates):
        raise ValueError(
            f"`rates` must be positive integers. Received: rates={rates}")
    name = f"head_{task.name}"
    features = keras.Input(feature_shape, name="features")
    branches = [_conv_bn_act(features, filters, 1, f"{name}_aspp0",
                             activation)]
    for i, rate in enumerate(rates, start=1):
        branches.append(_conv_bn_act(features, filters, 3, f"{name}_aspp{i}",
                                     activation, dilation_rate=int(rate)))
    pooled = keras.layers.GlobalAveragePooling2D(
        keepdims=True, name=f"{name}_pool")(features)
    pooled = _conv_bn_act(pooled, filters, 1, f"{name}_pool_proj", activation)
    branches.append(SpatialBroadcast(feature_shape[:2],
                                     name=f"{name}_pool_broadcast")(pooled))
    x = keras.layers.Concatenate(name=f"{name}_concat")(branches)
    x = _conv_bn_act(x, filters, 1, f"{name}_project", activation)
    x = _conv_bn_act(x, filters, 3, f"{name}_refine", activation)
    x = keras.layers.Conv2D(task.output_channels, 1, name=f"{name}_logits")(x)
    x = BilinearResize(image_size, name=f"{name}_upsample")(x)
    if unit_output:
        x = keras.layers.UnitNormalization(axis=-1, name=f"{name}_unit")(x)
    return keras.Model(features, x, name=name)


def build_mlp_head(feature_shape, task, hidden_units=256, activation="relu"):
    """Builds the two-layer MLP head of an image-level attribute.

    Global average pooling, a hidden dense layer and one output logit (no
    sigmoid: the loss and the accuracy work on logits).

    Args:
        feature_shape: `(h, w, channels)` of the backbone features.
        task: the attribute `TaskSpec`.
        hidden_units: width of the hidden layer.
        activation: activation of the hidden layer.

    Returns:
        A `keras.Model` named `head_<task name>` returning `(batch, 1)` logits.
    """
    name = f"head_{task.name}"
    features = keras.Input(feature_shape, name="features")
    x = keras.layers.GlobalAveragePooling2D(name=f"{name}_pool")(features)
    x = keras.layers.Dense(hidden_units, activation=activation,
                           name=f"{name}_hidden")(x)
    x = keras.layers.Dense(task.output_channels, name=f"{name}_logits")(x)
    return keras.Model(features, x, name=name)
