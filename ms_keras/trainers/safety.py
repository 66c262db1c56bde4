"""Surviving faults: atomic backups to resume from, and a guard that stops
training at the first NaN or Inf."""

import math
import os

import keras
import numpy as np

from ms_keras import run_dir


class NonFiniteError(RuntimeError):
    """Training produced a NaN or Inf; nothing was saved from that step."""


class AtomicBackupAndRestore(keras.callbacks.BackupAndRestore):
    """`keras.callbacks.BackupAndRestore` whose backups are written atomically.

    After every epoch the trainer's state (weights, both optimizers' slots,
    lambda, sparsity masks) and the epoch count are saved; re-running the
    same command after a crash (SIGKILL included) restores them and resumes
    from the last completed epoch. Each file is written to a temporary path
    and renamed, so a kill during the save leaves the previous backup whole.

    Example:

    >>> backup = AtomicBackupAndRestore("run/backup")
    >>> trainer.fit(batches, epochs=10, callbacks=[backup])

    Args:
        backup_dir: where the backup lives (removed when training ends).
    """

    def __init__(self, backup_dir):
        super().__init__(backup_dir, save_freq="epoch", delete_checkpoint=True,
                         double_checkpoint=False)

    def _save_model(self):
        os.makedirs(self.backup_dir, exist_ok=True)
        run_dir.atomic_write(self._weights_path, self.model.save_weights)
        run_dir.write_json(self._training_metadata_path,
                           {"epoch": self._current_epoch,
                            "batch": self._last_batch_seen})


def resumed_epoch(backup_dir):
    """The number of epochs a backup holds (0 when there is none)."""
    path = os.path.join(backup_dir, "training_metadata.json")
    if not os.path.exists(path):
        return 0
    try:
        return int(run_dir.read_json(path)["epoch"])
    except (OSError, ValueError, KeyError):
        return 0


class NonFiniteGuard(keras.callbacks.Callback):
    """Stops training at the first NaN or Inf, before anything is saved.

    After every step it checks each task's loss, lambda and the norm of the
    (meta-)gradient in the logs; at the first non-finite value it raises
    `NonFiniteError` naming the task (or the first variable whose value the
    update made non-finite) and the step. It runs before the epoch-end
    callbacks, so the backup and the best checkpoint keep the last good
    weights.

    Args:
        task_names: the trainer's tasks.
    """

    def __init__(self, task_names):
        super().__init__()
        self.task_names = tuple(task_names)

    def on_train_batch_end(self, batch, logs=None):
        logs = logs or {}
        step = int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))
        for name in self.task_names:
            value = logs.get(f"{name}_loss")
            if value is not None and not math.isfinite(float(value)):
                raise NonFiniteError(
                    f"step {step}: the {name} loss is {float(value)}; "
                    "training stopped, the last good backup and the best "
                    "checkpoint are kept.")
        lam = logs.get("lambda")
        if lam is not None and not math.isfinite(float(lam)):
            raise NonFiniteError(
                f"step {step}: lambda is {float(lam)}; training stopped, the "
                "last good backup and the best checkpoint are kept.")
        norm = logs.get("gradient_norm")
        if norm is not None and not math.isfinite(float(norm)):
            bad = next((v.path for v in self.model.trainable_variables
                        if not np.all(np.isfinite(np.asarray(v)))),
                       "a gradient")
            raise NonFiniteError(
                f"step {step}: the gradient of {bad} is not finite (global "
                f"norm {float(norm)}); training stopped, the last good backup "
                "and the best checkpoint are kept.")
