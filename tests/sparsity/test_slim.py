import keras
import numpy as np
import pytest

from ms_keras.models.layers import ExactBatchNormalization
from ms_keras.sparsity import slim
from ms_keras.sparsity.stats import SparsityMeter


def residual_backbone(seed=0):
    """stem conv -> BN -> block (conv1 BN relu conv2 BN, identity add) ->
    out conv, with random non-zero batch-norm offsets and statistics."""
    keras.utils.set_random_seed(seed)
    image = keras.Input((8, 8, 3), name="image")
    x = keras.layers.Conv2D(4, 3, padding="same", use_bias=False,
                            name="stem_conv")(image)
    x = ExactBatchNormalization(name="stem_bn")(x)
    y = keras.layers.Conv2D(6, 1, use_bias=False, name="b_conv1")(x)
    y = ExactBatchNormalization(name="b_bn1")(y)
    y = keras.layers.Activation("relu", name="b_act1")(y)
    y = keras.layers.Conv2D(4, 3, padding="same", use_bias=False,
                            name="b_conv2")(y)
    y = ExactBatchNormalization(name="b_bn2")(y)
    y = keras.layers.Add(name="b_add")([y, x])
    y = keras.layers.Activation("relu", name="b_out")(y)
    out = keras.layers.Conv2D(5, 1, use_bias=False, name="out_conv")(y)
    model = keras.Model(image, out, name="backbone")
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, ExactBatchNormalization):
            n = layer.gamma.shape[0]
            layer.set_weights([rng.uniform(0.5, 2, n), rng.normal(0, 1, n),
                               rng.normal(0, 1, n), rng.uniform(0.5, 2, n)])
    return model


def zero_groups(model, layer_name, channels):
    layer = model.get_layer(layer_name)
    kernel = np.asarray(layer.kernel)
    kernel[:, :, channels, :] = 0
    layer.kernel.assign(kernel)


def assert_same_function(dense, slim_model):
    images = np.random.default_rng(1).uniform(size=(3, 8, 8, 3)).astype(
        np.float32)
    np.testing.assert_allclose(slim_model(images, training=False),
                               dense(images, training=False), atol=1e-5)


def test_dead_channels_are_removed_with_non_zero_bn_offsets():
    dense = residual_backbone()
    zero_groups(dense, "b_conv2", [0, 2, 5])
    smaller = slim.slim_backbone(dense)
    assert smaller.get_layer("b_conv1").filters == 3
    assert smaller.get_layer("b_conv2").kernel.shape == (3, 3, 3, 4)
    assert smaller.get_layer("b_bn1").gamma.shape == (3,)
    assert_same_function(dense, smaller)
    stats = SparsityMeter(dense).measure()
    assert SparsityMeter(smaller).measure()["parameters"] == (
        stats["structural_parameters"])


def test_a_model_with_nothing_zeroed_exports_unchanged():
    dense = residual_backbone()
    smaller = slim.slim_backbone(dense)
    assert smaller.count_params() == dense.count_params()
    for a, b in zip(dense.get_weights(), smaller.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert_same_function(dense, smaller)


def test_a_block_whose_inner_width_goes_to_zero_keeps_one_channel():
    dense = residual_backbone()
    zero_groups(dense, "b_conv2", list(range(6)))
    smaller = slim.slim_backbone(dense)
    assert smaller.get_layer("b_conv1").filters == 1
    assert_same_function(dense, smaller)


def test_residual_stream_channels_die_only_when_every_reader_ignores_them():
    dense = residual_backbone()
    zero_groups(dense, "b_conv1", [1])
    smaller = slim.slim_backbone(dense)
    assert smaller.get_layer("stem_conv").filters == 4  # out_conv reads it
    zero_groups(dense, "out_conv", [1])
    smaller = slim.slim_backbone(dense)
    assert smaller.get_layer("stem_conv").filters == 3
    assert smaller.get_layer("b_conv2").filters == 3
    assert smaller.get_layer("b_bn2").gamma.shape == (3,)
    assert_same_function(dense, smaller)


def test_multitask_slim_keeps_heads_and_can_drop_them():
    from ms_keras.models import build_multitask_model
    network = build_multitask_model("synthetic_celeba", [1, 2], "resnet_tiny",
                                    (32, 32))
    backbone = network.backbone
    zero_groups(backbone, "stage3_block1_conv2", [0, 1, 2])
    images = np.random.default_rng(0).uniform(size=(2, 32, 32, 3))
    slim_model = slim.slim_multitask_model(network)
    expected = network(images, training=False)
    got = slim_model(images, training=False)
    for name in expected:
        np.testing.assert_allclose(got[name], expected[name], atol=1e-5)
    features = slim.slim_multitask_model(network, [])(images)
    assert features.shape == (2, 4, 4, 32)
    with pytest.raises(ValueError, match="no task"):
        slim.slim_multitask_model(network, ["depth"])
