"""Model selection and run records: the best checkpoint (written
atomically), delta_m, and the training time."""

import os
import time

import keras
import numpy as np

from ms_keras import metrics as metrics_lib
from ms_keras import run_dir


class AtomicBestCheckpoint(keras.callbacks.Callback):
    """Saves the weights with the best monitored value, atomically.

    Like `keras.callbacks.ModelCheckpoint(save_best_only=True,
    save_weights_only=True)`, but the file is written to a temporary path and
    renamed, so a crash never leaves a half-written best checkpoint. Next to
    it, `<name>.json` records the monitor, its best value and the epoch.

    Example:

    >>> checkpoint = AtomicBestCheckpoint("run/checkpoints/best.weights.h5",
    ...                                   "val_task_losses", "min")
    >>> trainer.fit(batches, validation_data=val, callbacks=[checkpoint])

    Args:
        filepath: destination, ending in `.weights.h5`.
        monitor: the log to follow (`val_loss` by default).
        mode: `min` or `max`: which direction is better.
        eligible: optional log key; once an epoch where it is non-zero has
            been seen, only such epochs are kept (a pruning run's epochs
            with its budget in force, a controlled run's epochs that meet
            its constraint). Until then the best epoch is kept anyway, so a
            run that never meets it still ends with a checkpoint, recorded
            with `"eligible": false`.
        fallback: optional `(monitor, mode)` that ranks the epochs before
            any is eligible (the one closest to meeting a constraint),
            instead of `monitor`.
    """

    def __init__(self, filepath, monitor="val_loss", mode="min",
                 eligible=None, fallback=None):
        super().__init__()
        if not filepath.endswith(".weights.h5"):
            raise ValueError(
                "`filepath` must end in `.weights.h5`. "
                f"Received: filepath={filepath}")
        if mode not in ("min", "max"):
            raise ValueError(
                f"`mode` must be 'min' or 'max'. Received: mode={mode}")
        if fallback is not None and fallback[1] not in ("min", "max"):
            raise ValueError(
                "`fallback` must be (monitor, 'min' or 'max'). Received: "
                f"fallback={fallback}")
        self.filepath = filepath
        self.monitor = monitor
        self.mode = mode
        self.eligible = eligible
        self.fallback = fallback or (monitor, mode)
        # Before any epoch, nothing eligible is kept: rank by the fallback.
        self.best = self._worst(eligible=False)
        self.best_eligible = False
        self._record = os.path.splitext(filepath)[0] + ".json"

    def _ranking(self, eligible):
        if eligible or not self.eligible:
            return self.monitor, self.mode
        return self.fallback

    def _worst(self, eligible=True):
        return np.inf if self._ranking(eligible)[1] == "min" else -np.inf

    def _better(self, value, eligible=True):
        if self._ranking(eligible)[1] == "min":
            return value < self.best
        return value > self.best

    def on_train_begin(self, logs=None):
        # A resumed run must not replace its best checkpoint with a worse one.
        if os.path.exists(self._record) and os.path.exists(self.filepath):
            record = run_dir.read_json(self._record)
            self.best = record["best"]
            self.best_eligible = record.get("eligible", True)

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        eligible = not self.eligible or bool(logs.get(self.eligible, 0.0))
        monitor, mode = self._ranking(eligible)
        value = logs.get(monitor)
        if value is None:
            raise ValueError(
                f"AtomicBestCheckpoint monitors '{monitor}', which the "
                f"logs do not contain (have: {sorted(logs)}).")
        if self.best_eligible and not eligible:
            return
        if eligible and not self.best_eligible:
            self.best = self._worst()
        if self._better(value, eligible):
            self.best = float(value)
            self.best_eligible = eligible
            run_dir.atomic_write(self.filepath, self.model.save_weights)
            run_dir.write_json(self._record, {"best": self.best,
                                              "monitor": monitor,
                                              "mode": mode,
                                              "eligible": eligible,
                                              "epoch": epoch + 1})


class DeltaMLogger(keras.callbacks.Callback):
    """Adds `val_delta_m` to the epoch logs: the mean relative change (%) of
    the tasks' primary validation metrics against a reference run's
    (`metrics.delta_m`); higher is better. Place it before the callbacks
    that monitor it.

    Example:

    >>> logger = DeltaMLogger(dense_run_validation, task_specs)
    >>> trainer.fit(batches, validation_data=val,
    ...             callbacks=[logger, AtomicBestCheckpoint(path,
    ...                                                     "val_delta_m", "max")])

    Args:
        reference: `{task: {metric: value}}` of the reference model.
        task_specs: the tasks compared.
    """

    def __init__(self, reference, task_specs):
        super().__init__()
        self.reference = reference
        self.task_specs = tuple(task_specs)
        for task in self.task_specs:
            metric, _ = metrics_lib.primary_metric(task)
            if metric not in reference.get(task.name, {}):
                raise ValueError(
                    f"The delta_m reference has no validation {task.name} "
                    f"{metric}; it must have trained every task of this run.")

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        grouped = metrics_lib.group_results(
            logs, [t.name for t in self.task_specs], prefix="val_")
        logs["val_delta_m"] = metrics_lib.delta_m(grouped, self.reference,
                                                  self.task_specs)


class TrainingTimer(keras.callbacks.Callback):
    """Records the wall-clock training time, summed over resumed sessions.

    At the end of every epoch it writes `{"train_seconds": s}` to `path`
    atomically; a resumed run starts from the recorded sum, so the figure is
    the time spent training the whole run (evaluation and export excluded).

    Args:
        path: the JSON record.
    """

    def __init__(self, path):
        super().__init__()
        self.path = path
        self._before = 0.0
        self._start = None

    def on_train_begin(self, logs=None):
        if os.path.exists(self.path):
            self._before = run_dir.read_json(self.path)["train_seconds"]
        self._start = time.perf_counter()

    @property
    def seconds(self):
        return self._before + time.perf_counter() - self._start

    def on_epoch_end(self, epoch, logs=None):
        run_dir.write_json(self.path, {"train_seconds": self.seconds})
