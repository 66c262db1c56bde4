"""Callbacks that report the backbone's sparsity during `fit`, and the
pruning schedule that grows a sparsity pattern.

The prox and the patterns themselves are applied inside the trainers' steps
(`sparsity.proximal`), right after each optimizer update.
"""

import os

import keras
import numpy as np
import tensorflow as tf

from ms_keras.sparsity import groups as groups_lib
from ms_keras.sparsity import pruning as pruning_lib
from ms_keras.sparsity.stats import SparsityMeter


class SparsitySummaries(keras.callbacks.Callback):
    """Writes the sparsity profile to TensorBoard while training.

    Every `every_n_steps` optimizer steps it writes, under `<log_dir>/train`:
    `lambda` (if there is one), `sparsity/parameter`, `sparsity/group` and
    `sparsity/<layer>/active_channels` for every backbone conv: the paper's
    sparsity profiles (Fig. 6 and 7). The figures are computed as tensor ops
    on the device (the channel structure is analysed once). At the end of
    each epoch the global figures are also added to the epoch logs
    (`sparsity_parameter`, `sparsity_group`, `lambda`).

    Example:

    >>> summaries = SparsitySummaries("runs/a", network.backbone, trainer.lam)
    >>> trainer.fit(batches, callbacks=[summaries])

    Args:
        log_dir: the run's TensorBoard directory (`train/` is appended).
        backbone: the backbone whose sparsity is reported.
        lam: the `SparsityStrength`, or None.
        every_n_steps: summary period in optimizer steps.
    """

    def __init__(self, log_dir, backbone, lam=None, every_n_steps=1):
        super().__init__()
        if every_n_steps < 1:
            raise ValueError(
                "`every_n_steps` must be >= 1. Received: "
                f"every_n_steps={every_n_steps}")
        self.log_dir = log_dir
        self.backbone = backbone
        self.lam = lam
        self.every_n_steps = int(every_n_steps)
        self._write = None
        self._writer = None
        self._meter = None

    def on_train_begin(self, logs=None):
        self._meter = SparsityMeter(self.backbone)
        self._writer = tf.summary.create_file_writer(
            os.path.join(self.log_dir, "train"))
        meter, lam, writer = self._meter, self.lam, self._writer

        @tf.function
        def write(step):
            figures = meter.step_figures()
            with writer.as_default(step=step):
                if lam is not None:
                    tf.summary.scalar("lambda", lam.value())
                tf.summary.scalar("sparsity/parameter",
                                  figures["parameter_percent"])
                tf.summary.scalar("sparsity/group", figures["group_percent"])
                for name, count in figures["active_channels"].items():
                    tf.summary.scalar(f"sparsity/{name}/active_channels",
                                      count)

        self._write = write

    def on_train_batch_end(self, batch, logs=None):
        step = self.model.optimizer.iterations
        if int(keras.ops.convert_to_numpy(step)) % self.every_n_steps == 0:
            self._write(step)

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        figures = self._meter.step_figures()
        logs["sparsity_parameter"] = float(figures["parameter_percent"])
        logs["sparsity_group"] = float(figures["group_percent"])
        if self.lam is not None:
            logs["lambda"] = float(self.lam.value())

    def on_train_end(self, logs=None):
        if self._writer is not None:
            self._writer.flush()


class PruningSchedule(keras.callbacks.Callback):
    """Prunes input-channel groups to a budget that follows a schedule.

    Before each optimizer step it asks `target(step)` for the parameter
    sparsity in force; when that exceeds what the mask already prunes, it
    prunes more groups, lowest `score` first (`pruning.select`), into the
    trainer's `KernelMasks`, which hold them at zero from then on (weights,
    gradients and the optimizer's moments). Pruned groups stay pruned. At
    the end of each epoch it logs `pruning_sparsity` (the mask's parameter
    sparsity) and `pruning_target_reached` (1 once the final budget is in
    force), which model selection uses to skip epochs before it.

    Example:

    >>> schedule = PruningSchedule(network.backbone, trainer.masks,
    ...                            lambda step: 44.0, 44.0, scores)
    >>> trainer.fit(batches, callbacks=[schedule])

    Args:
        backbone: the backbone whose groups are pruned.
        masks: the trainer's `sparsity.proximal.KernelMasks`.
        target: `step -> percent` in force at that step.
        final_percent: the budget at the end of the schedule.
        scores: `{conv name: numpy kernel} -> {(layer, channel): score}`.
    """

    def __init__(self, backbone, masks, target, final_percent, scores):
        super().__init__()
        self.backbone = backbone
        self.masks = masks
        self.target = target
        self.final_percent = float(final_percent)
        self.scores = scores
        self._groups = pruning_lib.groups_of(backbone)
        self._in_force = 0.0

    def on_train_begin(self, logs=None):
        # A resumed run's masks were restored with its weights.
        self._in_force = pruning_lib.parameter_percent(self.masks.masks())

    def on_train_batch_begin(self, batch, logs=None):
        wanted = self.target(int(keras.ops.convert_to_numpy(self.model.optimizer.iterations)))
        if wanted <= self._in_force + 1e-9:
            return
        kernels = {layer.name: np.asarray(layer.kernel)
                   for layer in groups_lib.conv_layers(self.backbone)}
        current = self.masks.masks()
        chosen = pruning_lib.select(self._groups, self.scores(kernels),
                                    wanted,
                                    pruning_lib.pruned_groups(current))
        masks = pruning_lib.masks_for(self.backbone, chosen)
        self.masks.set_masks({name: masks[name] & current[name]
                              for name in masks})
        self.masks.apply(self.model.optimizer)
        # What the schedule asked for, even when the groups' sizes make the
        # mask land a little below it: asked once, not again every step.
        self._in_force = max(wanted, pruning_lib.parameter_percent(
            self.masks.masks()))

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        logs["pruning_sparsity"] = pruning_lib.parameter_percent(
            self.masks.masks())
        # From what the mask holds, not from `target(iterations)`: a round
        # that starts at the next epoch's first step is not in force yet.
        logs["pruning_target_reached"] = float(
            self._in_force >= self.final_percent - 1e-9)
