"""Slim SavedModel and TFLite artefacts of a multi-task model, verified.

Dead backbone channels are removed physically (`sparsity/slim.py`); every
artefact is checked against the model it came from and the latency of
dense vs slim is measured. The destination appears only after verification
succeeds (it is written next to it and renamed). `python -m
ms_keras.export` does this for a finished run, `ms_keras.export_model` for
any `MultiTaskModel`.
"""

import os
import shutil
import tempfile

import numpy as np

from ms_keras import run_dir
from ms_keras import serving
from ms_keras.models import MultiTaskModel
from ms_keras.sparsity import slim as slim_lib
from ms_keras.sparsity.stats import SparsityMeter

FORMATS = ("saved_model", "tflite")
REPORT_FILE = "export_report.json"


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


def output_scale(reference):
    """What output differences are measured against: the largest absolute
    output, at least 1 (float32 artefacts differ in their last bits, so
    outputs in the hundreds differ by ~1e-4)."""
    return max(1.0, max(float(np.max(np.abs(v))) for v in reference.values()))


def _verify(name, reference, outputs, tolerance, report):
    difference = serving.max_abs_difference(reference, outputs)
    report["max_abs_difference"][name] = difference
    allowed = None if tolerance is None else tolerance * output_scale(
        reference)
    if allowed is not None and difference > allowed:
        raise VerificationError(
            f"{name} differs from the trained model by {difference:.3g} "
            f"(> --tolerance={tolerance} of the outputs' scale "
            f"{output_scale(reference):.3g}); nothing was written.")


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
        tolerance: largest output difference allowed between the trained
            model and a float artefact, relative to the outputs' scale
            (`output_scale`: the largest absolute output, at least 1).

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
              "output_scale": output_scale(reference),
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


