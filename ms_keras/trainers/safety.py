"""A guard that stops training at the first NaN or Inf (backups to resume
from: `trainers.backup`)."""

import math

import keras
import numpy as np


class NonFiniteError(RuntimeError):
    """Training produced a NaN or Inf; nothing was saved from that step."""


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
        # With dynamic loss scaling (mixed_float16) an overflowing gradient
        # is the scale's to handle: the step is skipped, the scale halved.
        scaled = isinstance(self.model.optimizer,
                            keras.optimizers.LossScaleOptimizer)
        if norm is not None and not scaled and not math.isfinite(float(norm)):
            bad = next((v.path for v in self.model.trainable_variables
                        if not np.all(np.isfinite(np.asarray(v)))),
                       "a gradient")
            raise NonFiniteError(
                f"step {step}: the gradient of {bad} is not finite (global "
                f"norm {float(norm)}); training stopped, the last good backup "
                "and the best checkpoint are kept.")
