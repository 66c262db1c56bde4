"""Callbacks that report the backbone's sparsity during `fit`.

The prox and fixed sparsity patterns are applied inside the trainers' steps
(`sparsity.proximal`), right after each optimizer update.
"""

import os

import keras
import tensorflow as tf

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
        if int(step) % self.every_n_steps == 0:
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
