"""Exports a trained run as a slim SavedModel and TFLite model.

`python -m ms_keras.export --model_dir=<run> --output_dir=<dir>`

Dead backbone channels are removed physically (`sparsity/slim.py`); every
artefact is checked against the trained model on validation images and the
latency of dense vs slim is measured. Writes, into --output_dir:
`saved_model/` (loads with plain `tf.saved_model.load`; endpoint `serve`:
images in [0, 1] -> dict of task outputs), `model.tflite` (float32, batch 1),
optionally `model_dynamic_range.tflite`, and `export_report.json`. The
directory appears only after verification succeeds.

Examples:

    python -m ms_keras.export --model_dir=runs/meta --output_dir=runs/meta_export
    python -m ms_keras.export --model_dir=runs/meta --output_dir=runs/bb \
        --tasks=none --format=tflite      # the backbone alone, features out
"""

from ms_keras import quiet_tf  # noqa: F401  (must precede TensorFlow)

import json
import os

import keras
import numpy as np
from absl import app
from absl import flags

from ms_keras import common_flags
from ms_keras import data as data_lib
from ms_keras import exporter
from ms_keras.training import artifacts
from ms_keras.training import run_config

OUTPUT_DIR = flags.DEFINE_string(
    "output_dir", None, "Destination directory (must not exist yet).")
FORMAT = flags.DEFINE_list(
    "format", list(exporter.FORMATS),
    "Artefacts to write, comma-separated: saved_model, tflite.")
QUANTIZE = flags.DEFINE_enum(
    "quantize", "none", ["none", "dynamic_range"],
    "Also write a dynamic-range quantized TFLite model (needs "
    "--format=tflite).")
VERIFY_IMAGES = flags.DEFINE_integer(
    "verify_images", 16, "Validation images the artefacts are checked on.",
    lower_bound=1)
LATENCY_BATCH_SIZES = flags.DEFINE_list(
    "latency_batch_sizes", ["1", "8"], "Batch sizes of the latency figures.")
LATENCY_REPEATS = flags.DEFINE_integer(
    "latency_repeats", 50, "Timed runs per latency figure (median "
    "reported).", lower_bound=1)
TOLERANCE = flags.DEFINE_float(
    "tolerance", 1e-4, "Largest absolute output difference allowed between "
    "the trained model and a float artefact.", lower_bound=0.0)


common_flags.register_positive_ints("latency_batch_sizes")


@flags.validator("format")
def _check_format(values):
    unknown = sorted(set(values) - set(exporter.FORMATS))
    if not values or unknown:
        raise flags.ValidationError(
            f"--format={','.join(values)}: expected one or both of "
            f"{', '.join(exporter.FORMATS)}")
    return True


def validation_images(config, count):
    """`count` validation images of the run's dataset, float32 NHWC."""
    batches = data_lib.load(config.data, config.data.spec.tasks[:1],
                            "validation", count, training=False)
    images = np.concatenate([np.asarray(b[0]) for b in batches])[:count]
    if len(images) < count:
        images = np.resize(images, (count, *images.shape[1:]))
    return images.astype(np.float32)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    model_dir, output_dir = common_flags.MODEL_DIR.value, OUTPUT_DIR.value
    for name, value in (("model_dir", model_dir), ("output_dir", output_dir)):
        if not value:
            common_flags.fail(f"--{name} is required.")
    formats = sorted(set(FORMAT.value))
    batch_sizes = tuple(int(b) for b in LATENCY_BATCH_SIZES.value)
    try:
        if QUANTIZE.value != "none" and "tflite" not in formats:
            raise ValueError(
                f"--quantize={QUANTIZE.value} needs --format to include "
                "tflite.")
        if os.path.exists(output_dir):
            raise ValueError(
                f"--output_dir={output_dir} already exists; exports never "
                "overwrite, choose a new directory.")
        config = run_config.load(model_dir, data_dir=common_flags.DATA_DIR.value)
        if not os.path.exists(os.path.join(model_dir, artifacts.MODEL_FILE)):
            raise ValueError(
                f"--model_dir={model_dir} holds no finished run "
                f"({artifacts.MODEL_FILE} is missing).")
        tasks = run_config.resolve_tasks(config, common_flags.TASKS.value,
                                         allow_none=True)
        data_lib.check_data_dir(config.data)
    except ValueError as e:
        common_flags.fail(e)
    network = keras.saving.load_model(os.path.join(model_dir,
                                                   artifacts.MODEL_FILE))
    images = validation_images(config, max(VERIFY_IMAGES.value,
                                           max(batch_sizes)))
    try:
        report = exporter.export_run(
            network, images, output_dir, task_names=tasks, formats=formats,
            dynamic_range=QUANTIZE.value == "dynamic_range",
            batch_sizes=batch_sizes, repeats=LATENCY_REPEATS.value,
            tolerance=TOLERANCE.value)
    except exporter.VerificationError as e:
        common_flags.fail(e)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    app.run(main, flags_parser=common_flags.parse_flags)
