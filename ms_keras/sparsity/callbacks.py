"""Callbacks that report the backbone's sparsity during `fit`, and the
pruning schedule that grows a sparsity pattern.

The prox and the patterns themselves are applied inside the trainers' steps
(`sparsity.proximal`), right after each optimizer update.
"""

import os

import keras
import numpy as np
import tensorflow as tf

from ms_keras import config as config_lib
from ms_keras.sparsity import control as control_lib
from ms_keras.sparsity import reference as reference_lib
from ms_keras.sparsity import pruning as pruning_lib
from ms_keras.sparsity import structure as structure_lib
from ms_keras.sparsity.stats import SparsityMeter


class SparsitySummaries(keras.callbacks.Callback):
    """Writes the sparsity profile to TensorBoard while training.

    Every `every_n_steps` optimizer steps it writes, under `<log_dir>/train`:
    `lambda` (if there is one), `sparsity/parameter`, `sparsity/group` and
    `sparsity/<layer>/active_channels` for every backbone conv: the paper's
    sparsity profiles (Fig. 6 and 7); with a sparsity controller also
    `sparsity/budget` (the budget in force) and, in tolerance mode,
    `sparsity/quality_gap` (percent). The figures are computed as tensor ops
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
        controller: the trainer's `control.SparsityController`, or None.
    """

    def __init__(self, log_dir, backbone, lam=None, every_n_steps=1,
                 controller=None):
        super().__init__()
        if every_n_steps < 1:
            raise ValueError(
                "`every_n_steps` must be >= 1. Received: "
                f"every_n_steps={every_n_steps}")
        self.log_dir = log_dir
        self.backbone = backbone
        self.lam = lam
        self.every_n_steps = int(every_n_steps)
        self.controller = controller
        self._write = None
        self._writer = None
        self._meter = None

    def on_train_begin(self, logs=None):
        self._meter = SparsityMeter(self.backbone)
        self._writer = tf.summary.create_file_writer(
            os.path.join(self.log_dir, "train"))
        meter, lam, writer = self._meter, self.lam, self._writer
        controller = self.controller

        @tf.function
        def write(step):
            figures = meter.step_figures()
            with writer.as_default(step=step):
                if lam is not None:
                    tf.summary.scalar("lambda", lam.value())
                if controller is not None:
                    tf.summary.scalar("sparsity/budget",
                                      controller.budget_now(step))
                    if controller.mode == config_lib.TOLERANCE:
                        tf.summary.scalar("sparsity/quality_gap",
                                          100.0 * controller.gap())
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

    Before each optimizer step it asks `target(step)` for the budget in
    force (percent of the parameters, or with `measure` of what it measures,
    e.g. `pruning.FlopsMeasure`); when that exceeds what the mask already
    prunes, it prunes more groups, lowest `score` first (`pruning.select`),
    into the trainer's `KernelMasks`, which hold them at zero from then on
    (weights, gradients and the optimizer's moments). Pruned groups stay
    pruned. At the end of each epoch it logs `pruning_sparsity` (the mask's
    parameter sparsity) and `pruning_target_reached` (1 once the final
    budget is in force), which model selection uses to skip epochs before
    it.

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
        measure: optional `pruned groups -> percent` the budget is in
            (default: the parameter sparsity).
    """

    def __init__(self, backbone, masks, target, final_percent, scores,
                 measure=None):
        super().__init__()
        self.backbone = backbone
        self.masks = masks
        self.target = target
        self.final_percent = float(final_percent)
        self.scores = scores
        self.measure = measure
        self._groups = pruning_lib.groups_of(backbone)
        self._in_force = 0.0

    def measured(self):
        """What the mask holds, in the budget's measure (percent)."""
        if self.measure is None:
            return pruning_lib.parameter_percent(self.masks.masks())
        return self.measure(pruning_lib.pruned_groups(self.masks.masks()))

    def on_train_begin(self, logs=None):
        # A resumed run's masks were restored with its weights.
        self._in_force = self.measured()

    def on_train_batch_begin(self, batch, logs=None):
        wanted = self.target(int(keras.ops.convert_to_numpy(self.model.optimizer.iterations)))
        if wanted <= self._in_force + 1e-9:
            return
        kernels = structure_lib.group_kernels(self.backbone)
        current = self.masks.masks()
        chosen = pruning_lib.select(self._groups, self.scores(kernels),
                                    wanted,
                                    pruning_lib.pruned_groups(current),
                                    self.measure)
        masks = pruning_lib.masks_for(self.backbone, chosen)
        self.masks.set_masks({name: masks[name] & current[name]
                              for name in masks})
        self.masks.apply(self.model.optimizer)
        # What the schedule asked for, even when the groups' sizes make the
        # mask land a little below it: asked once, not again every step.
        self._in_force = max(wanted, self.measured())

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        logs["pruning_sparsity"] = pruning_lib.parameter_percent(
            self.masks.masks())
        # From what the mask holds, not from `target(iterations)`: a round
        # that starts at the next epoch's first step is not in force yet.
        logs["pruning_target_reached"] = float(
            self._in_force >= self.final_percent - 1e-9)


class SparsityConstraint(keras.callbacks.Callback):
    """Says at every epoch end whether a controlled run meets its constraint.

    It adds to the epoch logs `sparsity_flops_speedup` and
    `constraint_holds` (1 or 0), and in tolerance mode `val_quality_gap`:
    the worst task's validation loss over the finished dense reference's,
    minus 1, in percent. A budget holds once the backbone is within
    `control.PARAMETER_SLACK` points (or `control.FLOPS_SLACK` speed-up) of
    it; a tolerance once `val_quality_gap` is at most the tolerance. Model selection keeps only epochs that hold
    (`AtomicBestCheckpoint(eligible="constraint_holds")`). Place it after
    the validation logs are complete and before the checkpoint.

    Example:

    >>> constraint = SparsityConstraint(network.backbone, "budget",
    ...                                 target_sparsity=44.0)
    >>> trainer.fit(batches, validation_data=val,
    ...             callbacks=[constraint, checkpoint])

    Args:
        backbone: the sparsified backbone.
        mode: `budget` or `tolerance`.
        target_sparsity: the parameter budget (percent), or None.
        target_flops_speedup: the FLOPs budget, or None.
        quality_tolerance: the tolerance (percent) in tolerance mode.
        reference: the finished dense reference's validation loss per task
            (tolerance mode).
        task_names: the tasks, in the reference's order.
    """

    def __init__(self, backbone, mode, target_sparsity=None,
                 target_flops_speedup=None, quality_tolerance=None,
                 reference=None, task_names=()):
        super().__init__()
        if mode not in (config_lib.BUDGET, config_lib.TOLERANCE):
            raise ValueError(
                f"`mode` must be '{config_lib.BUDGET}' or "
                f"'{config_lib.TOLERANCE}'. Received: mode={mode}")
        if mode == config_lib.TOLERANCE and reference is None:
            raise ValueError("Tolerance mode needs the `reference` curve.")
        self.backbone = backbone
        self.mode = mode
        self.target_sparsity = target_sparsity
        self.target_flops_speedup = target_flops_speedup
        self.quality_tolerance = quality_tolerance
        self.reference = reference
        self.task_names = tuple(task_names)
        self._meter = None

    def on_train_begin(self, logs=None):
        self._meter = SparsityMeter(self.backbone)

    def quality_gap(self, logs):
        """`val_quality_gap` (percent) of an epoch's logs."""
        missing = [t for t in self.task_names if f"val_{t}_loss" not in logs]
        if missing:
            raise ValueError(
                "SparsityConstraint needs the validation losses of "
                f"{missing}; run `fit` with validation data.")
        losses = [logs[f"val_{t}_loss"] for t in self.task_names]
        return 100.0 * reference_lib.quality_gap(losses, self.reference)

    def holds(self, figures, gap=None):
        """Whether measured `figures` (and a quality gap) meet the
        constraint."""
        if self.mode == config_lib.TOLERANCE:
            return gap <= self.quality_tolerance
        if self.target_flops_speedup is not None:
            return abs(figures["flops_speedup"] - self.target_flops_speedup
                       ) <= control_lib.FLOPS_SLACK
        return abs(figures["parameter_percent"] - self.target_sparsity
                   ) <= control_lib.PARAMETER_SLACK

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        figures = self._meter.measure()
        logs.setdefault("sparsity_parameter", figures["parameter_percent"])
        logs["sparsity_flops_speedup"] = figures["flops_speedup"]
        gap = None
        if self.mode == config_lib.TOLERANCE:
            gap = self.quality_gap(logs)
            logs["val_quality_gap"] = gap
        logs["constraint_holds"] = float(self.holds(figures, gap))


class QualityChecks(keras.callbacks.Callback):
    """Feeds a tolerance-mode controller the model's validation task losses
    `checks_per_epoch` times an epoch.

    A check runs `task_losses(images, targets)` in inference mode over the
    validation split (or its first `validation_steps` batches, as Keras'
    validation does) and averages each task's loss over the batches that
    label it; at an epoch's end it takes Keras' own `val_<task>_loss`
    instead of evaluating again. `SparsityController.observe` then moves
    the sparsity setpoint. Whole-split losses, not per-step probes: a max
    over tasks of small-batch estimates is biased upward by their noise.

    Example:

    >>> checks = QualityChecks(trainer.controller, val_batches,
    ...                        trainer.validation_task_losses, 75, 4)
    >>> trainer.fit(batches, validation_data=val_batches, callbacks=[checks])

    Args:
        controller: the trainer's `control.SparsityController`.
        validation_data: batched `(images, {task: target})` validation data.
        task_losses: `(images, targets) -> (losses, labelled)` per task.
        task_names: the tasks, in the controller's order.
        steps_per_epoch: optimizer steps per epoch.
        checks_per_epoch: quality checks per epoch (the last at its end).
        validation_steps: batches per check (None: the whole split).
    """

    def __init__(self, controller, validation_data, task_losses, task_names,
                 steps_per_epoch, checks_per_epoch, validation_steps=None):
        super().__init__()
        if validation_data is None:
            raise ValueError(
                "sparsity_control='tolerance' compares validation losses "
                "with a dense reference: fit() needs `validation_data`.")
        self.controller = controller
        self.validation_data = validation_data
        self.task_names = tuple(task_names)
        self.steps_per_epoch = int(steps_per_epoch)
        self.every = max(1, self.steps_per_epoch // max(1, int(
            checks_per_epoch)))
        self.validation_steps = validation_steps
        self._task_losses = tf.function(task_losses)

    def evaluate(self):
        """Each task's mean loss over the validation batches (numpy)."""
        data = self.validation_data
        if self.validation_steps:
            data = data.take(self.validation_steps)
        sums = counts = 0.0
        for images, targets in data:
            losses, labelled = self._task_losses(images, targets)
            sums = sums + np.asarray(losses) * np.asarray(labelled)
            counts = counts + np.asarray(labelled)
        return sums / np.maximum(counts, 1.0)

    def _observe(self, losses):
        step = int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))
        self.controller.observe(np.asarray(losses, np.float32), step)

    def on_train_batch_end(self, batch, logs=None):
        step = int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))
        if step % self.every == 0 and step % self.steps_per_epoch:
            self._observe(self.evaluate())

    def on_epoch_end(self, epoch, logs=None):
        losses = [(logs or {}).get(f"val_{t}_loss") for t in self.task_names]
        self._observe(self.evaluate() if None in losses else losses)
