"""Every object ms_keras registers with Keras survives a config round trip
(`get_config` -> `from_config`) and a `.keras` save/load, computing the same.
A newly registered class without an example here fails the test."""

import os

import keras
import numpy as np
import pytest

from ms_keras import export  # noqa: F401  (imports every module)
from ms_keras import finetune  # noqa: F401
from ms_keras import losses
from ms_keras import metrics
from ms_keras import train  # noqa: F401
from ms_keras.models import build_multitask_model
from ms_keras.models import layers
from ms_keras.sparsity import lam
from ms_keras.trainers.optimizers import FusedAdam

RNG = np.random.default_rng(0)
MAPS = RNG.uniform(size=(2, 4, 6, 3)).astype(np.float32)
LABELS = RNG.integers(0, 3, size=(2, 4, 6)).astype(np.int32)
DEPTH = RNG.uniform(0.5, 3, size=(2, 4, 6, 1)).astype(np.float32)
NORMALS = RNG.normal(size=(2, 4, 6, 3)).astype(np.float32)
NORMALS /= np.linalg.norm(NORMALS, axis=-1, keepdims=True)


def _examples():
    """Registered name -> (instance, call inputs)."""
    model = build_multitask_model("synthetic_nyu", [1, 2], "resnet_tiny",
                                  (16, 16), aspp_rates=(1,))
    return {
        "ms_keras>BilinearResize": (layers.BilinearResize((8, 12)), MAPS),
        "ms_keras>SpatialBroadcast": (layers.SpatialBroadcast((4, 6)),
                                      MAPS[:, :1, :1]),
        "ms_keras>ExactBatchNormalization": (
            layers.ExactBatchNormalization(momentum=0.8, epsilon=1e-3), MAPS),
        "ms_keras>ExactMaxPooling2D": (
            layers.ExactMaxPooling2D(3, strides=2, padding="same"), MAPS),
        "ms_keras>UncertaintyWeighting": (
            losses.UncertaintyWeighting(3), np.float32([1.0, 2.0, 0.5])),
        "ms_keras>EqualWeighting": (losses.EqualWeighting(3),
                                    np.float32([1.0, 2.0, 0.5])),
        "ms_keras>SparsityStrength": (lam.SparsityStrength(0.3, beta=2.0),
                                      None),
        "ms_keras>MultiTaskModel": (
            model, RNG.uniform(size=(2, 16, 16, 3)).astype(np.float32)),
        "ms_keras>SegmentationMeanIoU": (
            metrics.SegmentationMeanIoU(3), (LABELS, MAPS)),
        "ms_keras>PixelAccuracy": (metrics.PixelAccuracy(), (LABELS, MAPS)),
        "ms_keras>DepthMeanAbsoluteError": (
            metrics.DepthMeanAbsoluteError(), (DEPTH, DEPTH * 1.1)),
        "ms_keras>DepthAbsoluteRelativeError": (
            metrics.DepthAbsoluteRelativeError(), (DEPTH, DEPTH * 1.2)),
        "ms_keras>NormalCosineSimilarity": (
            metrics.NormalCosineSimilarity(), (NORMALS, MAPS)),
        "ms_keras>NormalAngleMean": (metrics.NormalAngleMean(),
                                     (NORMALS, MAPS)),
        "ms_keras>BalancedAccuracy": (
            metrics.BalancedAccuracy(threshold=0.1),
            (np.float32([[1], [0], [1], [0]]),
             np.float32([[0.5], [-1.0], [-0.2], [0.3]]))),
        "ms_keras>NormalAngleHistogram": (
            metrics.NormalAngleHistogram(prefix="normals_"),
            (NORMALS, MAPS)),
        "ms_keras>FusedAdam": (
            FusedAdam(0.02, beta_1=0.8, epsilon=1e-4, global_clipnorm=2.0),
            np.float32([[0.5, -0.1, 2.0], [1e-3, 3.0, -0.2]])),
    }


def _registered():
    return sorted(name for name in keras.saving.get_custom_objects()
                  if name.startswith("ms_keras>"))


def _outputs(obj, inputs):
    if isinstance(obj, keras.optimizers.Optimizer):
        # An optimizer's output: where its steps take a fresh variable.
        variable = keras.Variable(np.float32([1.0, -2.0, 3.0]))
        obj.build([variable])
        for gradient in inputs:
            obj.apply([gradient], [variable])
        return {"": np.asarray(variable)}
    if isinstance(obj, keras.metrics.Metric):
        obj.reset_state()
        obj.update_state(*inputs)
        result = obj.result()
    else:
        result = obj() if inputs is None else obj(inputs)
    if isinstance(result, dict):
        return {k: np.asarray(v) for k, v in result.items()}
    return {"": np.asarray(result)}


def test_every_registered_object_has_an_example():
    assert _registered() == sorted(_examples())


@pytest.mark.parametrize("name", sorted(_examples()))
def test_config_round_trip_computes_the_same(name, tmp_path):
    obj, inputs = _examples()[name]
    expected = _outputs(obj, inputs)
    clone = obj.__class__.from_config(obj.get_config())
    if not isinstance(obj, (keras.metrics.Metric,
                            keras.optimizers.Optimizer)):
        if inputs is not None and not clone.built:
            clone(inputs)
        clone.set_weights(obj.get_weights())
    for key, value in _outputs(clone, inputs).items():
        np.testing.assert_allclose(value, expected[key], rtol=1e-6)
    assert clone.get_config() == obj.get_config()


@pytest.mark.parametrize("name", ["ms_keras>MultiTaskModel"])
def test_keras_file_round_trip_computes_the_same(name, tmp_path):
    obj, inputs = _examples()[name]
    path = os.path.join(tmp_path, "object.keras")
    obj.save(path)
    restored = keras.saving.load_model(path)
    assert type(restored) is type(obj)
    for key, value in _outputs(restored, inputs).items():
        np.testing.assert_allclose(value, _outputs(obj, inputs)[key],
                                   rtol=1e-6)
