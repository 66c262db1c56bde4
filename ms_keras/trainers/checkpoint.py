"""Model selection and run records: the best checkpoint (written
atomically), delta_m, and the training time."""

import os
import time

import keras

from ms_keras import metrics as metrics_lib
from ms_keras import run_dir
from ms_keras import task_kinds


# A tolerance run keeps its sparsest epoch that meets the tolerance (before
# any does, the one closest to it); epochs within one point of sparsity (a
# budget's landing band) count as equal and the smaller gap wins.
TOLERANCE_SELECTION = dict(
    monitor="sparsity_parameter", mode="max", eligible="constraint_holds",
    fallback=("val_quality_gap", "min"), tie=(1.0, "val_quality_gap", "min"))


class EpochRanking:
    """Which epoch a run keeps, one epoch at a time.

    The best `monitor` value among eligible epochs; before any epoch is
    eligible, the best `fallback` value (the one closest to meeting a
    constraint), so that a run that never meets it still keeps an epoch.

    Args:
        monitor: the log to rank by.
        mode: `min` or `max`: which direction is better.
        eligible: optional log key; once an epoch where it is non-zero has
            been seen, only such epochs are kept.
        fallback: optional `(monitor, mode)` that ranks the epochs before
            any is eligible, instead of `monitor`.
        tie: optional `(margin, monitor, mode)`: eligible epochs whose
            value is within `margin` of the best one seen count as equal
            and this second monitor decides between them. A tolerance run
            ranks by sparsity with `(1.0, "val_quality_gap", "min")`: of
            two epochs a fraction of a point apart in sparsity it keeps the
            one closer to the reference (a later, recovered epoch), not
            the one whose prox left a few more weights at zero.
    """

    def __init__(self, monitor, mode, eligible=None, fallback=None,
                 tie=None):
        for name, value in (("mode", mode),
                            ("fallback", (fallback or (None, mode))[1]),
                            ("tie", (tie or (0, None, mode))[2])):
            if value not in ("min", "max"):
                raise ValueError(
                    f"`{name}` must rank by 'min' or 'max'. Received: "
                    f"{name}={value}")
        self.monitor, self.mode = monitor, mode
        self.eligible = eligible
        self.fallback = fallback or (monitor, mode)
        self.tie = tie
        self.best = None
        self.best_eligible = False
        self.best_tie = None
        self.top = None

    def state(self):
        """What a resumed run needs to go on ranking (JSON-serialisable)."""
        return {"best": self.best, "eligible": self.best_eligible,
                "tie_value": self.best_tie, "top": self.top}

    def restore(self, state):
        self.best = state["best"]
        self.best_eligible = state.get("eligible", True)
        self.best_tie = state.get("tie_value")
        self.top = state.get("top", self.best)

    def ranking(self, eligible):
        """`(monitor, mode)` that ranks an epoch of this eligibility."""
        if eligible or not self.eligible:
            return self.monitor, self.mode
        return self.fallback

    def consider(self, logs, owner="EpochRanking"):
        """Whether the epoch of `logs` becomes the kept one (and, if so,
        records it)."""
        eligible = not self.eligible or bool(logs.get(self.eligible, 0.0))
        if self.best_eligible and not eligible:
            return False
        monitor, mode = self.ranking(eligible)
        value = logs.get(monitor)
        if value is None:
            raise ValueError(
                f"{owner} monitors '{monitor}', which the logs do not "
                f"contain (have: {sorted(logs)}).")
        value = float(value)
        sign = 1.0 if mode == "max" else -1.0
        tied = eligible and self.tie is not None
        tie_value = None
        if tied:
            tie_value = logs.get(self.tie[1])
            if tie_value is None:
                raise ValueError(
                    f"{owner} breaks ties by '{self.tie[1]}', which the "
                    f"logs do not contain (have: {sorted(logs)}).")
            tie_value = float(tie_value)
        if self.best is None or eligible != self.best_eligible:
            keep = True
        elif not tied:
            keep = sign * value > sign * self.best
        else:
            margin, _, tie_mode = self.tie
            top = max(sign * self.top, sign * value)
            tie_sign = 1.0 if tie_mode == "max" else -1.0
            # The kept epoch falls out of the tie only when this one is
            # better by more than the margin.
            keep = (sign * self.best < top - margin
                    or (sign * value >= top - margin
                        and (self.best_tie is None  # a record without one
                         or tie_sign * tie_value > tie_sign * self.best_tie)))
        if tied:
            self.top = value if self.top is None else sign * max(
                sign * self.top, sign * value)
        if keep:
            self.best, self.best_eligible = value, eligible
            self.best_tie = tie_value
            if not tied:
                self.top = value
        return keep


class AtomicBestCheckpoint(keras.callbacks.Callback):
    """Saves the weights of the epoch an `EpochRanking` keeps, atomically.

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
        monitor, mode, eligible, fallback, tie: as `EpochRanking` (a
            pruning run's eligible epochs have its budget in force, a
            controlled run's meet its constraint).
    """

    def __init__(self, filepath, monitor="val_loss", mode="min",
                 eligible=None, fallback=None, tie=None):
        super().__init__()
        if not filepath.endswith(".weights.h5"):
            raise ValueError(
                "`filepath` must end in `.weights.h5`. "
                f"Received: filepath={filepath}")
        self.ranking = EpochRanking(monitor, mode, eligible, fallback, tie)
        self.filepath = filepath
        self._record = os.path.splitext(filepath)[0] + ".json"

    @property
    def best(self):
        return self.ranking.best

    def on_train_begin(self, logs=None):
        # A resumed run must not replace its best checkpoint with a worse one.
        if os.path.exists(self._record) and os.path.exists(self.filepath):
            self.ranking.restore(run_dir.read_json(self._record))

    def on_epoch_end(self, epoch, logs=None):
        ranking = self.ranking
        if not ranking.consider(logs or {}, "AtomicBestCheckpoint"):
            return
        monitor, mode = ranking.ranking(ranking.best_eligible)
        run_dir.atomic_write(self.filepath, self.model.save_weights)
        run_dir.write_json(self._record, {**ranking.state(),
                                          "monitor": monitor, "mode": mode,
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
            metric, _ = task_kinds.primary_metric(task)
            if metric not in reference.get(task.name, {}):
                raise ValueError(
                    f"The delta_m reference has no validation {task.name} "
                    f"{metric}; it must have trained every task of this run.")

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        grouped = metrics_lib.group_results(
            logs, [t.name for t in self.task_specs], prefix="val_")
        logs["val_delta_m"] = task_kinds.delta_m(grouped, self.reference,
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
