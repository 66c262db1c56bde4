import keras
import numpy as np
import pytest

from ms_keras.models import build_backbone
from ms_keras.models.layers import ExactBatchNormalization
from ms_keras.sparsity import structure
from ms_keras.sparsity.stats import SparsityMeter


def bottleneck_backbone():
    """stem conv -> one residual block (conv1, conv2, identity add)."""
    image = keras.Input((8, 8, 3), name="image")
    stem = keras.layers.Conv2D(4, 3, padding="same", use_bias=False,
                               name="stem_conv")(image)
    x = ExactBatchNormalization(name="stem_bn")(stem)
    y = keras.layers.Conv2D(6, 1, use_bias=False, name="b_conv1")(x)
    y = ExactBatchNormalization(name="b_bn1")(y)
    y = keras.layers.Activation("relu")(y)
    y = keras.layers.Conv2D(4, 3, padding="same", use_bias=False,
                            name="b_conv2")(y)
    y = keras.layers.Add()([y, x])
    out = keras.layers.Conv2D(5, 1, use_bias=False, name="out_conv")(y)
    return keras.Model(image, out, name="backbone")


def test_channels_follow_convs_and_merge_at_adds():
    info = structure.analyse(bottleneck_backbone())
    convs = info.convs
    np.testing.assert_array_equal(convs["b_conv2"].input_nodes,
                                  convs["b_conv1"].output_nodes)
    # The residual stream: stem output merged with b_conv2's output.
    np.testing.assert_array_equal(convs["b_conv2"].output_nodes,
                                  convs["stem_conv"].output_nodes)
    stream = convs["stem_conv"].output_nodes
    assert sorted(name for name, _ in info.readers[stream[1]]) == [
        "b_conv1", "out_conv"]
    assert info.readers[stream[1]][0][1] == 1  # read as input channel 1
    assert info.pinned[convs["out_conv"].output_nodes].all()
    assert not info.pinned[stream].any()


def test_flops_count_zeroed_inputs_and_freed_producer_filters():
    backbone = bottleneck_backbone()
    meter = SparsityMeter(backbone)
    dense = meter.measure()
    assert dense["flops_speedup"] == 1.0
    assert dense["parameter_percent"] == 0.0
    conv2 = backbone.get_layer("b_conv2").kernel
    kernel = np.asarray(conv2)
    kernel[:, :, :3, :] = 0  # 3 of b_conv2's 6 input groups
    conv2.assign(kernel)
    stats = meter.measure()
    pixels = 64
    # b_conv2 reads 3 of 6 channels; b_conv1 loses the 3 filters they free.
    dense_flops = 2 * pixels * (9 * 3 * 4 + 1 * 4 * 6 + 9 * 6 * 4 + 4 * 5)
    sparse_flops = 2 * pixels * (9 * 3 * 4 + 1 * 4 * 3 + 9 * 3 * 4 + 4 * 5)
    assert stats["flops"] == dense_flops
    assert stats["nonzero_flops"] == sparse_flops
    assert stats["structural_flops"] == sparse_flops
    assert stats["flops_speedup"] == pytest.approx(dense_flops / sparse_flops)
    assert stats["structural_parameters"] == 9 * 3 * 4 + 4 * 3 + 9 * 3 * 4 + 20
    total = 9 * 3 * 4 + 4 * 6 + 9 * 6 * 4 + 4 * 5
    assert stats["parameter_percent"] == pytest.approx(100 * 108 / total)
    assert stats["group_percent"] == pytest.approx(100 * 3 / (3 + 4 + 6 + 4))
    assert stats["compression_ratio"] == pytest.approx(total / (total - 108))
    assert stats["per_layer"]["b_conv2"]["active_channels"] == 3


def test_stream_channel_dies_only_when_every_reader_ignores_it():
    backbone = bottleneck_backbone()
    meter = SparsityMeter(backbone)
    for name in ("b_conv1", "out_conv"):
        layer = backbone.get_layer(name)
        kernel = np.asarray(layer.kernel)
        kernel[:, :, 0, :] = 0
        layer.kernel.assign(kernel)
        info = structure.analyse(backbone)
        alive = info.alive_nodes(meter.kernels())
        stream = info.convs["stem_conv"].output_nodes
        assert alive[stream[0]] == (name == "b_conv1")


def test_resnet_backbones_are_analysable():
    for name in ("resnet_tiny", "resnet18_d8"):
        info = structure.analyse(build_backbone(name, (32, 32)))
        assert len(info.convs) == len(
            [l for l in build_backbone(name, (32, 32)).layers
             if isinstance(l, keras.layers.Conv2D)])


def test_unknown_layers_are_refused():
    image = keras.Input((4, 4, 3))
    x = keras.layers.Conv2D(2, 1, name="c")(image)
    x = keras.layers.Flatten()(x)
    with pytest.raises(ValueError, match="Flatten"):
        structure.analyse(keras.Model(image, x))
