"""keras.applications ResNet50 weights in the dilated resnet50_d8."""

import keras
import numpy as np
import pytest

from ms_keras.models.backbone import build_backbone
from ms_keras.models.backbone import load_resnet50_weights
from tests.helpers import assert_flag_error


@pytest.fixture(scope="module")
def resnet50_file(tmp_path_factory):
    """A ResNet50 weights file with non-trivial biases and statistics."""
    keras.utils.set_random_seed(0)
    reference = keras.applications.ResNet50(include_top=False, weights=None,
                                            input_shape=(64, 64, 3))
    rng = np.random.default_rng(0)
    for layer in reference.layers:
        if isinstance(layer, keras.layers.Conv2D):
            kernel, bias = layer.get_weights()
            layer.set_weights([kernel, 0.1 * rng.normal(size=bias.shape)])
        if isinstance(layer, keras.layers.BatchNormalization):
            shape = layer.gamma.shape
            layer.set_weights([rng.uniform(0.5, 1.5, shape),
                               0.1 * rng.normal(size=shape),
                               0.1 * rng.normal(size=shape),
                               rng.uniform(0.5, 2.0, shape)])
    path = str(tmp_path_factory.mktemp("weights") / "resnet50.weights.h5")
    reference.save_weights(path)
    return reference, path


def test_the_dilated_backbone_computes_keras_features_before_dilation(
        resnet50_file):
    reference, path = resnet50_file
    ours = build_backbone("resnet50_d8", (64, 64), normalization="caffe")
    load_resnet50_weights(ours, path)
    images = np.random.default_rng(1).uniform(size=(2, 64, 64, 3)).astype(
        "float32")
    caffe = keras.applications.resnet.preprocess_input(images * 255.0)
    for theirs, mine in (("conv2_block3_out", "stage2_block3_out"),
                         ("conv3_block4_out", "stage3_block4_out")):
        expected = keras.Model(reference.input,
                               reference.get_layer(theirs).output)(caffe)
        got = keras.Model(ours.input, ours.get_layer(mine).output)(images)
        scale = float(np.abs(np.asarray(expected)).max())
        np.testing.assert_allclose(got, expected, atol=1e-5 * scale)


def test_a_file_of_another_architecture_fails_in_one_line(tmp_path):
    other = keras.applications.MobileNetV2(include_top=False, weights=None,
                                           input_shape=(64, 64, 3),
                                           alpha=0.35)
    path = str(tmp_path / "mobilenet.weights.h5")
    other.save_weights(path)
    ours = build_backbone("resnet50_d8", (64, 64), normalization="caffe")
    with pytest.raises(ValueError) as error:
        load_resnet50_weights(ours, path)
    text = str(error.value)
    assert text.startswith(f"--backbone_weights={path}: not a "
                           "keras.applications ResNet50 weights file")
    assert len(text.splitlines()) == 1


def test_the_weights_need_caffe_preprocessing(resnet50_file):
    ours = build_backbone("resnet50_d8", (64, 64))
    with pytest.raises(ValueError, match="Caffe preprocessing"):
        load_resnet50_weights(ours, resnet50_file[1])


def test_backbone_weights_belong_to_resnet50_d8(capsys):
    assert_flag_error("train", ["--backbone=resnet_tiny",
                                "--backbone_weights=/x.weights.h5"],
                      "--backbone_weights=/x.weights.h5 loads "
                      "keras.applications ResNet50 weights into "
                      "--backbone=resnet50_d8", capsys)


def test_a_missing_weights_file_fails_before_anything_is_written(
        tfds_dir, tmp_path, capsys):
    from tests.helpers import run_train
    model_dir = tmp_path / "run"
    with pytest.raises(SystemExit) as exit_info:
        run_train(tfds_dir, str(model_dir), backbone="resnet50_d8",
                  backbone_weights=str(tmp_path / "none.weights.h5"))
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 1 and len(err) == 1
    assert "none.weights.h5: no such file" in err[0]
    assert not model_dir.exists()
