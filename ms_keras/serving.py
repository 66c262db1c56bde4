"""SavedModel and TFLite artefacts: writing, running, timing.

Both artefacts serve one signature: an image batch `(batch, h, w, 3)` float32
in [0, 1] in, a dict of task outputs (or the backbone features) out. The
SavedModel takes any batch size; a TFLite flatbuffer is converted for one
fixed batch size (TFLite cannot size the interpolation contractions of a
dynamic batch: with one, the interpreter refuses the model).
"""

import contextlib
import io
import statistics
import time
import warnings

import keras
import numpy as np
import tensorflow as tf

from ms_keras.models import MultiTaskModel

SAVED_MODEL_DIR = "saved_model"
TFLITE_FILE = "model.tflite"
TFLITE_DYNAMIC_RANGE_FILE = "model_dynamic_range.tflite"


def image_shape(model):
    """`(h, w, 3)` of the images a multi-task model or a backbone takes."""
    if isinstance(model, MultiTaskModel):
        return model.image_shape
    return tuple(model.input.shape[1:])


def write_saved_model(model, path):
    """Exports `model` with `model.export` (serving endpoint `serve`)."""
    signature = [tf.TensorSpec((None, *image_shape(model)), tf.float32,
                               name="image")]
    model.export(path, format="tf_saved_model", verbose=False,
                 input_signature=signature)


def tflite_bytes(model, batch_size=1, dynamic_range=False):
    """Converts a Keras model to a TFLite flatbuffer for one batch size.

    Args:
        model: a functional Keras model on images.
        batch_size: the flatbuffer's fixed batch size.
        dynamic_range: quantize weights to int8 (dynamic-range quantization).
    """
    images = keras.Input(image_shape(model), batch_size=batch_size,
                         name="image")
    fixed = keras.Model(images, model(images))
    converter = tf.lite.TFLiteConverter.from_keras_model(fixed)
    if dynamic_range:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    # The converter narrates its temporary SavedModel on stdout.
    with contextlib.redirect_stdout(io.StringIO()):
        return converter.convert()


def _as_dict(outputs):
    if isinstance(outputs, dict):
        return {k: np.asarray(v) for k, v in outputs.items()}
    return {"features": np.asarray(outputs)}


class SavedModelRunner:
    """Runs a SavedModel loaded with plain `tf.saved_model.load`."""

    def __init__(self, path):
        self._model = tf.saved_model.load(path)

    def __call__(self, images):
        return _as_dict(self._model.serve(tf.constant(images, tf.float32)))


class TfliteRunner:
    """Runs a TFLite flatbuffer through its `serving_default` signature.

    Uses `tf.lite.Interpreter`, which TensorFlow has announced it will move
    to the separate `ai_edge_litert` package; its deprecation warning is
    silenced here.

    Args:
        content: the flatbuffer bytes.
        num_threads: interpreter threads (None: TFLite's default).
    """

    def __init__(self, content, num_threads=None):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self._interpreter = tf.lite.Interpreter(
                model_content=content, num_threads=num_threads)
        self._runner = self._interpreter.get_signature_runner()
        self._single_output = len(
            self._interpreter.get_signature_list()["serving_default"][
                "outputs"]) == 1

    def __call__(self, images):
        outputs = self._runner(image=np.asarray(images, np.float32))
        if self._single_output:
            return {"features": next(iter(outputs.values()))}
        return dict(outputs)


def run_per_image(runner, images):
    """Runs a batch-1 runner over every image; stacks the outputs."""
    outputs = [runner(images[i:i + 1]) for i in range(len(images))]
    return {name: np.concatenate([o[name] for o in outputs])
            for name in outputs[0]}


def keras_runner(model):
    """A runner for an in-memory Keras model (inference mode)."""
    return lambda images: _as_dict(model(images, training=False))


def max_abs_difference(reference, outputs):
    """Largest absolute difference over every output, matched by name.

    Raises:
        ValueError: when the outputs' names or shapes differ.
    """
    if sorted(reference) != sorted(outputs):
        raise ValueError(
            f"Exported outputs {sorted(outputs)} differ from the model's "
            f"{sorted(reference)}.")
    worst = 0.0
    for name, expected in reference.items():
        got = np.asarray(outputs[name])
        if got.shape != expected.shape:
            raise ValueError(
                f"Output '{name}' has shape {got.shape}, expected "
                f"{expected.shape}.")
        worst = max(worst, float(np.max(np.abs(got - expected))))
    return worst


def median_latency_ms(run, images, repeats=20, warmup=3):
    """Median wall time of `run(images)` in milliseconds."""
    for _ in range(warmup):
        run(images)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run(images)
        times.append(1000.0 * (time.perf_counter() - start))
    return statistics.median(times)
