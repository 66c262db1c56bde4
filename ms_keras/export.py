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
import shutil
import tempfile

import keras
import numpy as np
from absl import app
from absl import flags

from ms_keras import data as data_lib
from ms_keras import experiment
from ms_keras import flags as ms_flags
from ms_keras import run_dir
from ms_keras import runtime
from ms_keras import serving
from ms_keras.models import MultiTaskModel
from ms_keras.sparsity import slim as slim_lib
from ms_keras.sparsity.stats import SparsityMeter

FORMATS = ("saved_model", "tflite")
REPORT_FILE = "export_report.json"

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
    "tolerance", 1e-4, "Largest absolute output difference allowed between "
    "the trained model and a float artefact.", lower_bound=0.0)


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



class VerificationError(ValueError):
    """An artefact's outputs differ from the trained model's."""


def _backbone_figures(network, slim):
    """Conv-kernel parameters and FLOPs of the backbone: dense, slim."""
    dense_stats = SparsityMeter(network.backbone).measure()
    slim_backbone = slim.backbone if isinstance(slim, MultiTaskModel) else slim
    slim_stats = SparsityMeter(slim_backbone).measure()
    return {
        "parameters_dense": dense_stats["parameters"],
        "parameters_nonzero": dense_stats["nonzero_parameters"],
        "parameters_structural": dense_stats["structural_parameters"],
        "parameters_slim": slim_stats["parameters"],
        "flops_dense": dense_stats["flops"],
        "flops_slim": slim_stats["flops"],
        "flops_speedup": dense_stats["flops"] / slim_stats["flops"],
    }


def _latency_pair(dense, slim, images, batch_sizes, repeats, formats,
                  workdir, label):
    """Median latency (ms) per format, dense and slim, per batch size."""
    results = {}
    if "saved_model" in formats:
        runners = {}
        for name, model in (("dense", dense), ("slim", slim)):
            path = os.path.join(workdir, f"{label}_{name}_saved_model")
            serving.write_saved_model(model, path)
            runners[name] = serving.SavedModelRunner(path)
        results["saved_model"] = {
            name: {str(b): serving.median_latency_ms(run, images[:b], repeats)
                   for b in batch_sizes}
            for name, run in runners.items()}
    if "tflite" in formats:
        results["tflite"] = {
            name: {str(b): serving.median_latency_ms(
                serving.TfliteRunner(serving.tflite_bytes(model, b)),
                images[:b], repeats) for b in batch_sizes}
            for name, model in (("dense", dense), ("slim", slim))}
    for timings in results.values():
        timings["speedup"] = {b: timings["dense"][b] / timings["slim"][b]
                              for b in timings["dense"]}
    return results


def _verify(name, reference, outputs, tolerance, report):
    difference = serving.max_abs_difference(reference, outputs)
    report["max_abs_difference"][name] = difference
    if tolerance is not None and difference > tolerance:
        raise VerificationError(
            f"{name} differs from the trained model by {difference:.3g} "
            f"(> --tolerance={tolerance}); nothing was written.")


def export_run(network, images, output_dir, task_names=None,
               formats=FORMATS, dynamic_range=False, batch_sizes=(1, 8),
               repeats=20, tolerance=1e-4):
    """Exports `network` slimmed; returns the report.

    Args:
        network: the trained multi-task model (best weights).
        images: float32 `(n, h, w, 3)` validation images, n >= the largest
            batch size.
        output_dir: destination; must not exist yet.
        task_names: heads to export (None: all; `[]`: the backbone alone).
        formats: subset of `FORMATS`.
        dynamic_range: also write a dynamic-range quantized TFLite file
            (reported, not held to `tolerance`).
        batch_sizes: batch sizes of the latency measurement.
        repeats: timed runs per latency figure (median reported).
        tolerance: largest absolute output difference allowed between the
            trained model and a float artefact.

    Raises:
        VerificationError: when an artefact is off by more than `tolerance`.
    """
    if len(images) < max(batch_sizes):
        raise ValueError(
            f"Need at least {max(batch_sizes)} images for the latency "
            f"measurement; got {len(images)}.")
    dense = slim_lib.dense_model(network, task_names)
    slim = slim_lib.slim_multitask_model(network, task_names)
    reference = serving.keras_runner(dense)(images)
    report = {"tasks": sorted(reference) if task_names != [] else [],
              "formats": list(formats),
              "backbone": _backbone_figures(network, slim),
              "parameters": {"dense": dense.count_params(),
                             "slim": slim.count_params()},
              "max_abs_difference": {}, "tolerance": tolerance,
              "verified_on_images": int(len(images))}
    parent = os.path.dirname(os.path.abspath(output_dir))
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=".tmp-export-", dir=parent)
    scratch = tempfile.mkdtemp(prefix=".tmp-latency-", dir=parent)
    try:
        _verify("keras_slim", reference, serving.keras_runner(slim)(images),
                tolerance, report)
        if "saved_model" in formats:
            path = os.path.join(staging, serving.SAVED_MODEL_DIR)
            serving.write_saved_model(slim, path)
            _verify("saved_model", reference,
                    serving.SavedModelRunner(path)(images), tolerance, report)
        if "tflite" in formats:
            content = serving.tflite_bytes(slim, batch_size=1)
            with open(os.path.join(staging, serving.TFLITE_FILE), "wb") as f:
                f.write(content)
            _verify("tflite", reference,
                    serving.run_per_image(serving.TfliteRunner(content),
                                          images), tolerance, report)
            if dynamic_range:
                quantized = serving.tflite_bytes(slim, 1, dynamic_range=True)
                path = os.path.join(staging,
                                    serving.TFLITE_DYNAMIC_RANGE_FILE)
                with open(path, "wb") as f:
                    f.write(quantized)
                _verify("tflite_dynamic_range", reference,
                        serving.run_per_image(
                            serving.TfliteRunner(quantized), images),
                        None, report)
        report["latency_ms"] = _latency_pair(
            dense, slim, images, batch_sizes, repeats, formats, scratch,
            "model")
        # The backbone alone: what the FLOP speed-up is about (heads are
        # never slimmed).
        report["backbone"]["latency_ms"] = report["latency_ms"] if (
            task_names == []) else _latency_pair(
                slim_lib.dense_model(network, []),
                slim_lib.slim_multitask_model(network, []), images,
                batch_sizes, repeats, formats, scratch, "backbone")
        run_dir.write_json(os.path.join(staging, REPORT_FILE), report)
        run_dir.publish_permissions(staging)
        os.replace(staging, output_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        shutil.rmtree(scratch, ignore_errors=True)
    return report


def validation_images(config, count):
    """`count` validation images of the run's dataset, float32 NHWC."""
    batches = data_lib.load(config.data, config.data.spec.tasks[:1],
                            "validation", count, training=False)
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
    try:
        config = experiment.load_config(model_dir)
    except ValueError as e:
        raise ValueError(f"--model_dir={e}") from None
    config = config.replace(data=dataclasses.replace(config.data,
                                                     **(data or {})))
    if not os.path.exists(run_dir.path(model_dir, run_dir.MODEL_FILE)):
        raise ValueError(f"--model_dir={model_dir} holds no finished run "
                         f"({run_dir.MODEL_FILE} is missing).")
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
    return export_run(network, images, output_dir, task_names=tasks,
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
