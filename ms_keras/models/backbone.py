"""Dilated ResNet backbones with output stride 8.

The last two stages keep their resolution and dilate their 3x3 convolutions by
2 and 4 instead of striding (as DeepLab and the paper's dilated ResNet-50 do).
Layer names follow `stage{s}_block{b}_{conv,bn}{i}` so that sparsity tools can
find the producer/consumer pairs inside each residual block.
"""

import dataclasses

import keras
import numpy as np

from ms_keras.models.layers import ExactBatchNormalization
from ms_keras.models.layers import ExactMaxPooling2D

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# keras.applications' ResNet50 expects Caffe preprocessing: pixels in 0-255
# minus these channel means (in RGB order here; BGR there).
CAFFE_MEANS = tuple(m / 255.0 for m in (123.68, 116.779, 103.939))
# Input normalisations of [0, 1] RGB images: (mean, standard deviation).
NORMALIZATIONS = {"imagenet": (IMAGENET_MEAN, IMAGENET_STD),
                  "caffe": (CAFFE_MEANS, (1 / 255.0,) * 3)}


@dataclasses.dataclass(frozen=True)
class BackboneConfig:
    """Shape of a dilated ResNet.

    Attributes:
        block: `basic` (two 3x3 convs) or `bottleneck` (1x1, 3x3, 1x1 x4).
        blocks_per_stage: number of residual blocks in stages 2-5.
        widths: inner width of the blocks of each stage.
        stem_filters: filters of the 7x7 stem convolution.
        head_filters: default width of the ASPP heads attached to it.
        keras_layout: the layout of `keras.applications.ResNet50`, whose
            weights it can load (`load_resnet50_weights`): symmetric padding
            before the stem conv and pool, and a strided block's stride on
            its first 1x1 conv (ResNet v1) instead of its 3x3 conv.
    """

    block: str
    blocks_per_stage: tuple
    widths: tuple
    stem_filters: int
    head_filters: int
    keras_layout: bool = False

    @property
    def expansion(self):
        return 4 if self.block == "bottleneck" else 1


BACKBONES = {
    "resnet50_d8": BackboneConfig("bottleneck", (3, 4, 6, 3),
                                  (64, 128, 256, 512), 64, 256,
                                  keras_layout=True),
    "resnet18_d8": BackboneConfig("basic", (2, 2, 2, 2),
                                  (64, 128, 256, 512), 64, 128),
    "resnet_tiny": BackboneConfig("basic", (1, 1, 1, 1),
                                  (8, 16, 24, 32), 8, 16),
}

# Stages 2-5: stride of the first block and dilation of the stage.
_STAGE_STRIDES = (1, 2, 1, 1)
_STAGE_DILATIONS = (1, 1, 2, 4)


def _conv(filters, kernel_size, name, strides=1, dilation_rate=1):
    return keras.layers.Conv2D(
        filters, kernel_size, strides=strides, dilation_rate=dilation_rate,
        padding="same", use_bias=False, kernel_initializer="he_normal",
        name=name)


def _conv_bn(x, filters, kernel_size, name, index, activation, strides=1,
             dilation_rate=1):
    x = _conv(filters, kernel_size, f"{name}_conv{index}", strides,
              dilation_rate)(x)
    x = ExactBatchNormalization(name=f"{name}_bn{index}")(x)
    if activation is not None:
        x = keras.layers.Activation(activation, name=f"{name}_act{index}")(x)
    return x


def _residual_block(x, config, width, strides, dilation, name, activation):
    out_channels = width * config.expansion
    shortcut = x
    if strides != 1 or x.shape[-1] != out_channels:
        shortcut = _conv(out_channels, 1, f"{name}_shortcut_conv",
                         strides=strides)(x)
        shortcut = ExactBatchNormalization(name=f"{name}_shortcut_bn")(shortcut)
    if config.block == "bottleneck":
        first, second = (strides, 1) if config.keras_layout else (1, strides)
        y = _conv_bn(x, width, 1, name, 1, activation, first)
        y = _conv_bn(y, width, 3, name, 2, activation, second, dilation)
        y = _conv_bn(y, out_channels, 1, name, 3, None)
    else:
        y = _conv_bn(x, width, 3, name, 1, activation, strides, dilation)
        y = _conv_bn(y, width, 3, name, 2, None, 1, dilation)
    y = keras.layers.Add(name=f"{name}_add")([y, shortcut])
    return keras.layers.Activation(activation, name=f"{name}_out")(y)


def build_backbone(name, image_size, activation="relu",
                   normalization="imagenet"):
    """Builds a dilated ResNet as a functional `keras.Model` named `backbone`.

    The model takes images in [0, 1] (NHWC), normalises them with the ImageNet
    statistics, and returns a feature map at 1/8 of the input resolution.

    Args:
        name: one of `BACKBONES` (`resnet50_d8`, `resnet18_d8`, `resnet_tiny`).
        image_size: `(height, width)`, each a positive multiple of 8.
        activation: activation of the blocks (`relu`; `gelu` gives smooth
            second derivatives for gradient checks).
        normalization: `imagenet` (mean and standard deviation of ImageNet)
            or `caffe` (what `keras.applications.ResNet50` weights expect).

    Returns:
        A `keras.Model`.

    Raises:
        ValueError: for an unknown backbone or an image size that is not a
            positive multiple of 8.
    """
    if name not in BACKBONES:
        raise ValueError(
            f"Unknown backbone '{name}'. Allowed: {', '.join(BACKBONES)}")
    height, width = (int(s) for s in image_size)
    if height <= 0 or width <= 0 or height % 8 or width % 8:
        raise ValueError(
            "`image_size` must be two positive multiples of 8 (output stride "
            f"8). Received: image_size={tuple(image_size)}")
    config = BACKBONES[name]
    images = keras.Input((height, width, 3), name="image")
    if normalization not in NORMALIZATIONS:
        raise ValueError(
            f"`normalization` must be one of {', '.join(NORMALIZATIONS)}. "
            f"Received: normalization={normalization}")
    mean, std = NORMALIZATIONS[normalization]
    x = keras.layers.Normalization(
        mean=mean, variance=[s * s for s in std],
        name="input_normalization")(images)
    if config.keras_layout:
        x = keras.layers.ZeroPadding2D(3, name="stem_pad")(x)
        x = keras.layers.Conv2D(
            config.stem_filters, 7, strides=2, use_bias=False,
            kernel_initializer="he_normal", name="stem_conv")(x)
    else:
        x = _conv(config.stem_filters, 7, "stem_conv", strides=2)(x)
    x = ExactBatchNormalization(name="stem_bn")(x)
    x = keras.layers.Activation(activation, name="stem_act")(x)
    if config.keras_layout:
        x = keras.layers.ZeroPadding2D(1, name="stem_pool_pad")(x)
        x = ExactMaxPooling2D(3, strides=2, name="stem_pool")(x)
    else:
        x = ExactMaxPooling2D(3, strides=2, padding="same",
                              name="stem_pool")(x)
    previous_dilation = 1
    for stage, (blocks, width, stride, dilation) in enumerate(
            zip(config.blocks_per_stage, config.widths, _STAGE_STRIDES,
                _STAGE_DILATIONS), start=2):
        for block in range(1, blocks + 1):
            # As in torchvision's dilated ResNet, the first block of a dilated
            # stage still uses the previous stage's dilation.
            block_dilation = previous_dilation if block == 1 else dilation
            x = _residual_block(
                x, config, width, stride if block == 1 else 1, block_dilation,
                f"stage{stage}_block{block}", activation)
        previous_dilation = dilation
    return keras.Model(images, x, name="backbone")




def load_resnet50_weights(backbone, path):
    """Loads a `keras.applications.ResNet50` weights file into `resnet50_d8`.

    The file is what `keras.applications.ResNet50(include_top=False,
    weights=...).save_weights(path)` writes (ImageNet weights: download them
    with keras on a machine with internet, `keras.applications.ResNet50(
    weights="imagenet", include_top=False).save_weights(
    "resnet50.weights.h5")`). Every conv and batch norm is copied by
    position in the network; a conv's bias (ours have none: batch norm
    follows) is folded into the next batch norm's moving mean, the input
    stem conv's input channels are reordered from BGR, and the backbone must
    have been built with `normalization="caffe"` (Keras' preprocessing of
    [0, 1] RGB images). Stages 2 and
    3 then compute Keras' features exactly; stages 4 and 5 are dilated
    instead of strided (output stride 8), as DeepLab does with them.

    Raises:
        ValueError: for a file that is not a ResNet50 weights file, or a
            backbone that is not `resnet50_d8`.
    """
    if "stage5_block3_conv3" not in [layer.name for layer in backbone.layers]:
        raise ValueError(
            "--backbone_weights loads keras.applications ResNet50 weights "
            "into the resnet50_d8 backbone only.")
    if not np.allclose(backbone.get_layer("input_normalization").mean,
                       np.reshape(CAFFE_MEANS, (1, 1, 1, 3))):
        raise ValueError(
            "ResNet50 weights expect Caffe preprocessing: build the backbone "
            "with normalization='caffe'.")
    height, width = backbone.input.shape[1:3]
    reference = keras.applications.ResNet50(
        include_top=False, weights=None, input_shape=(height, width, 3))
    try:
        reference.load_weights(path)
    except (OSError, ValueError) as e:
        raise ValueError(
            f"--backbone_weights={path}: not a keras.applications ResNet50 "
            f"weights file ({str(e).splitlines()[0][:200]}).") from None
    ours = {layer.name: layer for layer in backbone.layers}
    biases = {}
    for source in reference.layers:
        name = _our_name(source.name)
        if name is None or not source.weights:
            continue
        target = ours[name]
        if isinstance(source, keras.layers.Conv2D):
            kernel, bias = source.get_weights()
            if name == "stem_conv":
                kernel = kernel[:, :, ::-1, :]  # BGR -> RGB inputs
            target.set_weights([kernel])
            biases[name.replace("conv", "bn")] = bias
        else:
            gamma, beta, mean, variance = source.get_weights()
            target.set_weights([gamma, beta, mean - biases.get(name, 0.0),
                                variance])
            target.epsilon = float(source.epsilon)


def _our_name(name):
    """`conv3_block2_1_conv` -> `stage3_block2_conv1`; stem names too."""
    if name in ("conv1_conv", "conv1_bn"):
        return "stem_" + name.split("_")[1]
    parts = name.split("_")
    if len(parts) != 4 or not parts[0].startswith("conv"):
        return None
    stage, block, index, kind = parts
    prefix = f"stage{stage[4:]}_{block}"
    if index == "0":
        return f"{prefix}_shortcut_{kind}"
    return f"{prefix}_{kind}{index}"
