"""Training callbacks shared by every mode."""

import os

import keras
import numpy as np

from ms_keras.training import artifacts


class AtomicBestCheckpoint(keras.callbacks.Callback):
    """Saves the weights with the best monitored value, atomically.

    Like `keras.callbacks.ModelCheckpoint(save_best_only=True,
    save_weights_only=True)`, but the file is written to a temporary path and
    renamed, so a crash never leaves a half-written best checkpoint.

    Example:

    >>> checkpoint = AtomicBestCheckpoint("run/checkpoints/best.weights.h5")
    >>> trainer.fit(batches, validation_data=val, callbacks=[checkpoint])

    Args:
        filepath: destination, ending in `.weights.h5`.
        monitor: the log to minimise (`val_loss` by default).
    """

    def __init__(self, filepath, monitor="val_loss"):
        super().__init__()
        if not filepath.endswith(".weights.h5"):
            raise ValueError(
                "`filepath` must end in `.weights.h5`. "
                f"Received: filepath={filepath}")
        self.filepath = filepath
        self.monitor = monitor
        self.best = np.inf
        self._record = os.path.splitext(filepath)[0] + ".json"

    def on_train_begin(self, logs=None):
        # A resumed run must not replace its best checkpoint with a worse one.
        if os.path.exists(self._record) and os.path.exists(self.filepath):
            self.best = artifacts.read_json(self._record)["best"]

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        if value is None:
            raise ValueError(
                f"AtomicBestCheckpoint monitors '{self.monitor}', which the "
                f"logs do not contain (have: {sorted(logs or {})}).")
        if value < self.best:
            self.best = float(value)
            artifacts.atomic_write(self.filepath, self.model.save_weights)
            artifacts.write_json(self._record, {"best": self.best,
                                                "monitor": self.monitor,
                                                "epoch": epoch + 1})
