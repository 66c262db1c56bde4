"""The public API: meta-sparsity on your own model, tasks and data.

    import ms_keras as msk
    model = msk.MultiTaskModel(backbone, {"digit": head_a, "size": head_b})
    tasks = [msk.Task("digit", loss="sparse_categorical_crossentropy",
                      metrics=["sparse_categorical_accuracy"]),
             msk.Task("size", loss="mse", metrics=["mae"])]
    trainer = msk.MetaSparsityTrainer(model, tasks, sparsity_control="budget",
                                      target_sparsity=50)
    trainer.compile(optimizer="adam")
    trainer.fit(train_ds, validation_data=val_ds, epochs=4)
    print(msk.sparsity_report(model))
    slim = msk.slim_model(model)
    msk.export_model(slim, "out/", formats=("saved_model", "tflite"))

The binaries (`python -m ms_keras.train`, `.export`) run on the same
classes; README "Your own model" has a complete example.
"""

import os

import numpy as np

from ms_keras import exporting
from ms_keras.models import MultiTaskModel
from ms_keras.sparsity import slim as slim_lib
from ms_keras.sparsity.stats import SparsityMeter


def _backbone(model):
    return model.backbone if isinstance(model, MultiTaskModel) else model


def sparsity_report(model):
    """The sparsity of a model's backbone.

    Args:
        model: a `MultiTaskModel` (or a functional backbone).

    Returns:
        A dict: `parameter_percent` (zero weights of the backbone's conv
        kernels), `group_percent` (zeroed input-channel groups),
        `flops_speedup` (dense over the slim structure's FLOPs, what
        `slim_model` realises), `nonzero_flops_speedup`, `parameters`,
        `structural_parameters` (conv weights the slim model keeps),
        `compression_ratio` and `per_layer`.

    Raises:
        ValueError: for a backbone layer the channel analysis does not know.
    """
    return SparsityMeter(_backbone(model)).measure()


def slim_model(model):
    """A physically smaller copy of a sparse model, computing the same
    outputs: dead backbone channels are removed (`sparsity.slim`).

    Args:
        model: a `MultiTaskModel`.

    Returns:
        A new `MultiTaskModel`.
    """
    return slim_lib.slim_multitask_model(model)


def export_model(model, output_dir, formats=exporting.FORMATS, images=None,
                 tolerance=1e-4, dynamic_range=False, latency_repeats=20):
    """Writes a model's slim SavedModel and/or TFLite file, verified.

    The model is slimmed first (a slim model stays as it is), every artefact
    is checked against it on `images`, and the latency of dense and slim is
    measured. `output_dir` (which must not exist) gets `saved_model/`
    (`tf.saved_model.load(path).serve(images)` -> dict of outputs),
    `model.tflite` (batch 1) and `export_report.json`.

    Args:
        model: a `MultiTaskModel`.
        output_dir: destination (created only when every check passed).
        formats: `saved_model` and/or `tflite`.
        images: float32 `(n >= 8, h, w, 3)` images to verify on (default:
            uniform noise of the model's input size).
        tolerance: largest output difference allowed, relative to the
            outputs' scale (the largest absolute output, at least 1).
        dynamic_range: also write a dynamic-range quantized TFLite model.
        latency_repeats: timed runs per latency figure.

    Returns:
        The export report.

    Raises:
        ValueError: for an existing `output_dir`, an unknown format, or an
            artefact that differs by more than `tolerance` (then nothing is
            written).
    """
    unknown = sorted(set(formats) - set(exporting.FORMATS))
    if not formats or unknown:
        raise ValueError(
            f"`formats` must be one or both of {', '.join(exporting.FORMATS)}."
            f" Received: formats={tuple(formats)}")
    if os.path.exists(output_dir):
        raise ValueError(f"{output_dir} already exists; exports never "
                         "overwrite, choose a new directory.")
    if images is None:
        shape = tuple(_backbone(model).input.shape[1:])
        images = np.random.default_rng(0).uniform(
            size=(8, *shape)).astype(np.float32)
    return exporting.export_run(model, np.asarray(images, np.float32),
                                output_dir, formats=tuple(sorted(formats)),
                                dynamic_range=dynamic_range,
                                repeats=latency_repeats, tolerance=tolerance)
