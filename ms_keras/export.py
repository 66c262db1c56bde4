"""Exports a trained run as a slim SavedModel and TFLite model.

`python -m ms_keras.export --model_dir=<run> --output_dir=<dir>`

Dead backbone channels are removed physically (`sparsity/slim.py`); every
artefact is checked against the trained model on validation images and the
latency of dense vs slim is measured. Writes, into --output_dir:
`saved_model/` (loads with plain `tf.saved_model.load`; endpoint `serve`:
images in [0, 1] -> dict of task outputs), `model.tflite` (float32, batch 1),
optionally `model_dynamic_range.tflite`, and `export_report.json`. The
directory appears only after verification succeeds (it is written next to
the destination and renamed).

Examples:

    python -m ms_keras.export --model_dir=runs/meta --output_dir=runs/meta_export
    python -m ms_keras.export --model_dir=runs/meta --output_dir=runs/bb \
        --tasks=none --format=tflite      # the backbone alone, features out
"""

from ms_keras import quiet_tf  # noqa: F401  (must precede TensorFlow)

import dataclasses
import json
import os

import keras
import numpy as np
from absl import app
from absl import flags

from ms_keras import data as data_lib
from ms_keras import experiment
from ms_keras import exporting
from ms_keras import flags as ms_flags
from ms_keras import run_dir
from ms_keras import runtime
from ms_keras import tasks as tasks_lib

FORMATS = exporting.FORMATS
REPORT_FILE = exporting.REPORT_FILE
VerificationError = exporting.VerificationError

FLAGS = ms_flags.FLAGS
ms_flags.define_run_flags()
ms_flags.define_data_location_flags()
ms_flags.define_tasks_flag()
flags.DEFINE_string(
    "output_dir", None, "Destination directory (must not exist yet).")
flags.DEFINE_list(
    "format", list(FORMATS),
    "Artefacts to write, comma-separated: saved_model, tflite.")
flags.DEFINE_enum(
    "quantize", "none", ["none", "dynamic_range"],
    "Also write a dynamic-range quantized TFLite model (needs "
    "--format=tflite).")
flags.DEFINE_integer(
    "verify_images", 16, "Validation images the artefacts are checked on.",
    lower_bound=1)
ms_flags.define_int_list(
    "latency_batch_sizes", [1, 8], "Batch sizes of the latency figures.")
flags.DEFINE_integer(
    "latency_repeats", 50, "Timed runs per latency figure (median "
    "reported).", lower_bound=1)
flags.DEFINE_float(
    "tolerance", 1e-4, "Largest output difference allowed between the "
    "trained model and a float artefact, relative to the outputs' scale (the "
    "largest absolute output, at least 1).", lower_bound=0.0)


@flags.validator("format")
def _check_format(values):
    unknown = sorted(set(values) - set(FORMATS))
    if not values or unknown:
        raise flags.ValidationError(
            f"--format={','.join(values)}: expected one or both of "
            f"{', '.join(FORMATS)}")
    return True


@flags.validator("latency_batch_sizes")
def _check_batch_sizes(values):
    if not values or min(values) <= 0:
        raise flags.ValidationError(
            f"--latency_batch_sizes={','.join(map(str, values))}: expected "
            "positive integers")
    return True



def validation_images(config, count):
    """`count` validation images of the run's dataset, float32 NHWC."""
    first = tasks_lib.dataset_spec(config.data).tasks[:1]
    batches = data_lib.load(config.data, first, "validation", count,
                            training=False)
    images = np.concatenate([np.asarray(b[0]) for b in batches])[:count]
    if len(images) < count:
        images = np.resize(images, (count, *images.shape[1:]))
    return images.astype(np.float32)


def check_request(model_dir, output_dir, formats, quantize, tasks=None,
                  data=None):
    """Checks an export request; returns `(config, task names or None)`.

    Raises:
        ValueError: for an existing `output_dir`, a run without a model, a
            task the run lacks, unusable data files, or quantization without
            TFLite.
    """
    if quantize != "none" and "tflite" not in formats:
        raise ValueError(f"--quantize={quantize} needs --format to include "
                         "tflite.")
    if os.path.exists(output_dir):
        raise ValueError(f"--output_dir={output_dir} already exists; exports "
                         "never overwrite, choose a new directory.")
    config = experiment.load_config(model_dir, flag="model_dir")
    config = config.replace(data=dataclasses.replace(config.data,
                                                     **(data or {})))
    run_dir.Run(model_dir, "model_dir").require_finished(
        (run_dir.MODEL_FILE,))
    names = experiment.resolve_run_tasks(config, tasks, allow_none=True)
    data_lib.check_data_dir(config.data)
    return config, names


def run(config, output_dir, tasks=None, formats=FORMATS, quantize="none",
        verify_images=16, batch_sizes=(1, 8), repeats=50, tolerance=1e-4):
    """Exports the trained run `config` (see `check_request`).

    Returns:
        The export report (also `export_report.json`).

    Raises:
        VerificationError: when an artefact is off by more than `tolerance`
            (nothing is written then).
    """
    network = keras.saving.load_model(run_dir.path(config.model_dir,
                                                   run_dir.MODEL_FILE))
    images = validation_images(config, max(verify_images, max(batch_sizes)))
    return exporting.export_run(network, images, output_dir, task_names=tasks,
                      formats=sorted(set(formats)),
                      dynamic_range=quantize == "dynamic_range",
                      batch_sizes=tuple(batch_sizes), repeats=repeats,
                      tolerance=tolerance)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    runtime.start()
    try:
        config, tasks = check_request(
            FLAGS.model_dir, FLAGS.output_dir, FLAGS.format, FLAGS.quantize,
            FLAGS.tasks, data={name: FLAGS[name].value
                               for name in ("data_dir", "tfds_dir")
                               if ms_flags.set_by_user(name)})
    except ValueError as e:
        ms_flags.fail(e)
    try:
        report = run(config, FLAGS.output_dir, tasks, FLAGS.format,
                     FLAGS.quantize, FLAGS.verify_images,
                     FLAGS.latency_batch_sizes, FLAGS.latency_repeats,
                     FLAGS.tolerance)
    except VerificationError as e:
        ms_flags.fail(e)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    flags.mark_flags_as_required(["model_dir", "output_dir"])
    app.run(main, flags_parser=ms_flags.parse)
