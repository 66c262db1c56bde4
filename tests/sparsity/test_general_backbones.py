"""Backbones beyond the built-in ResNets: depthwise and separable convs,
padding, concatenation and squeeze-excite gates are analysed, counted and
slimmed exactly; layers the analysis does not know are refused."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from ms_keras.sparsity import groups as groups_lib
from ms_keras.sparsity import slim as slim_lib
from ms_keras.sparsity import structure
from ms_keras.sparsity.stats import SparsityMeter

L = keras.layers


def handmade_backbone(size=16):
    """Every supported kind of layer: a depthwise-separable branch and a
    padded branch concatenated, squeeze-excite on the result, a separable
    conv and a residual add."""
    keras.utils.set_random_seed(0)
    images = keras.Input((size, size, 3), name="image")
    x = L.Conv2D(8, 3, padding="same", name="stem")(images)
    x = L.BatchNormalization(name="stem_bn")(x)
    x = L.ReLU(6.0, name="stem_relu")(x)
    a = L.DepthwiseConv2D(3, padding="same", name="dw")(x)
    a = L.BatchNormalization(name="dw_bn")(a)
    a = L.Conv2D(6, 1, name="pw")(a)
    b = L.ZeroPadding2D(1, name="pad")(x)
    b = L.Conv2D(4, 3, name="branch")(b)
    c = L.Concatenate(name="concat")([a, b])
    s = L.GlobalAveragePooling2D(name="squeeze")(c)
    s = L.Reshape((1, 1, 10), name="unsqueeze")(s)
    s = L.Conv2D(3, 1, activation="relu", name="se_reduce")(s)
    s = L.Conv2D(10, 1, activation="sigmoid", name="se_expand")(s)
    c = L.Multiply(name="excite")([c, s])
    d = L.SeparableConv2D(8, 3, padding="same", name="sep")(c)
    d = L.BatchNormalization(name="sep_bn")(d)
    e = L.Add(name="add")([d, x])
    e = L.Dropout(0.1, name="drop")(e)
    out = L.Conv2D(12, 1, name="out")(e)
    return keras.Model(images, out, name="backbone")


def randomise_statistics(backbone, rng):
    """Non-trivial batch-norm statistics, so inference mode is exercised."""
    for layer in backbone.layers:
        if isinstance(layer, L.BatchNormalization):
            layer.moving_mean.assign(rng.normal(size=layer.moving_mean.shape))
            layer.moving_variance.assign(rng.uniform(
                0.5, 2.0, size=layer.moving_variance.shape))
            layer.beta.assign(rng.normal(size=layer.beta.shape))


def zero_groups(backbone, rng, rate):
    for layer in groups_lib.conv_layers(backbone):
        kernel = groups_lib.group_kernel(layer)
        keep = rng.uniform(size=kernel.shape[2]) >= rate
        kernel.assign(kernel * keep[None, None, :, None].astype(np.float32))


def slim_matches(backbone, size=16, tolerance=1e-4):
    images = np.random.default_rng(1).uniform(size=(2, size, size, 3))
    expected = backbone(images, training=False)
    slim = slim_lib.slim_backbone(backbone)
    np.testing.assert_allclose(slim(images, training=False), expected,
                               atol=tolerance, rtol=tolerance)
    return slim


@pytest.mark.parametrize("rate", [0.0, 0.4, 0.8, 1.0])
def test_a_handmade_backbone_slims_to_the_same_function(rate):
    backbone = handmade_backbone()
    rng = np.random.default_rng(2)
    randomise_statistics(backbone, rng)
    zero_groups(backbone, rng, rate)
    stats = SparsityMeter(backbone).measure()
    slim = slim_matches(backbone)
    kept = sum(int(np.prod(groups_lib.group_kernel(layer).shape))
               for layer in groups_lib.conv_layers(slim))
    assert kept == stats["structural_parameters"]
    if rate > 0:
        assert slim.count_params() < backbone.count_params()
    # The tensor-op FLOPs model counts what the meter counts.
    alive = np.concatenate([
        np.any(np.asarray(groups_lib.group_kernel(layer)) != 0,
               axis=(0, 1, 3)) for layer in groups_lib.conv_layers(backbone)])
    model = structure.FlopsModel(backbone)
    assert float(model.flops(tf.constant(alive))) == pytest.approx(
        stats["structural_flops"])
    assert model.dense_flops == stats["flops"]


def test_concatenated_and_gated_channels_die_together():
    backbone = handmade_backbone()
    info = structure.analyse(backbone)
    # Concatenate puts pw's and branch's channels side by side...
    concat = info.layer_nodes["concat"]
    np.testing.assert_array_equal(concat[:6], info.convs["pw"].output_nodes)
    np.testing.assert_array_equal(concat[6:],
                                  info.convs["branch"].output_nodes)
    # ...and the gate's channel c is the gated channel c.
    np.testing.assert_array_equal(info.convs["se_expand"].output_nodes,
                                  concat)
    # The depthwise conv carries the stem's channels; it reads no groups.
    np.testing.assert_array_equal(info.convs["dw"].output_nodes,
                                  info.convs["stem"].output_nodes)
    assert not info.convs["dw"].penalised
    # A concatenated channel dies when the separable conv and the
    # squeeze-excite reduction both ignore it.
    for name in ("sep", "se_reduce"):
        kernel = groups_lib.group_kernel(backbone.get_layer(name))
        value = np.asarray(kernel)
        value[:, :, 7, :] = 0
        kernel.assign(value)
    alive = info.alive_nodes(structure.group_kernels(backbone))
    assert not alive[concat[7]] and alive[concat[6]]
    stats = SparsityMeter(backbone).measure()
    assert stats["flops_speedup"] > 1.0


def test_keras_applications_backbones_slim_exactly():
    rng = np.random.default_rng(3)
    for make, size in (
            (lambda: keras.applications.MobileNetV2(
                input_shape=(32, 32, 3), alpha=0.35, include_top=False,
                weights=None), 32),
            (lambda: keras.applications.ResNet50(
                input_shape=(32, 32, 3), include_top=False, weights=None),
             32),
            (lambda: keras.applications.ResNet50V2(
                input_shape=(32, 32, 3), include_top=False, weights=None),
             32)):
        backbone = make()
        randomise_statistics(backbone, rng)
        zero_groups(backbone, rng, 0.5)
        stats = SparsityMeter(backbone).measure()
        slim = slim_matches(backbone, size, tolerance=1e-3)
        kept = sum(int(np.prod(groups_lib.group_kernel(layer).shape))
                   for layer in groups_lib.conv_layers(slim))
        assert kept == stats["structural_parameters"]
        assert stats["flops_speedup"] > 1.0


@pytest.mark.parametrize("make,message", [
    (lambda x: L.Conv2D(4, 3, groups=2, name="grouped")(x),
     "Layer 'grouped' (Conv2D) is a grouped convolution (groups=2)"),
    (lambda x: L.Dense(4, name="dense")(x),
     "Layer 'dense' (Dense) has no known channel semantics"),
    (lambda x: L.LSTM(4, name="lstm")(L.Reshape((16, 64))(x)),
     "has no known channel semantics"),
    (lambda x: L.DepthwiseConv2D(3, depth_multiplier=2, name="dw2")(x),
     "Layer 'dw2' (DepthwiseConv2D) has depth_multiplier=2"),
    (lambda x: L.Concatenate(axis=1, name="rows")([x, x]),
     "concatenates on axis 1"),
])
def test_a_layer_the_analysis_does_not_know_is_refused_in_one_line(
        make, message):
    images = keras.Input((16, 16, 3))
    x = L.Conv2D(4, 3, padding="same")(images)
    model = keras.Model(images, make(x))
    with pytest.raises(ValueError) as error:
        structure.analyse(model)
    text = str(error.value)
    assert message in text and "supports Conv2D" in text
    assert len(text.splitlines()) == 1
