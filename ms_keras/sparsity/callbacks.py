"""Callbacks that edit or report the backbone's sparsity during `fit`."""

import os

import keras
import numpy as np
import tensorflow as tf

from ms_keras.models import backbone_of
from ms_keras.sparsity import groups as groups_lib
from ms_keras.sparsity import prox as prox_lib
from ms_keras.sparsity.stats import SparsityMeter


def _backbone(trainer, who):
    network = getattr(trainer, "network", None)
    if network is None:
        raise ValueError(
            f"{who} needs a trainer with a `network` attribute (a model from "
            f"build_multitask_model). Received: {type(trainer).__name__}")
    return backbone_of(network)


def _require_one_step_per_execution(trainer, who):
    steps = getattr(trainer, "steps_per_execution", 1) or 1
    if int(steps) != 1:
        raise ValueError(
            f"{who} must run after every optimizer update, but the model was "
            f"compiled with steps_per_execution={int(steps)}; compile with "
            "steps_per_execution=1.")


class ProximalGroupLasso(keras.callbacks.Callback):
    """Applies the proximal step of the sparsity penalty after every update.

    After each optimizer (meta-)update the backbone's conv kernels go through
    the proximal operator (Eq. 8) with the optimizer's *current* learning rate
    and the trainer's current lambda: group soft-thresholding at
    `lr * lam * sqrt(n_g)` for `channel`, element soft-thresholding at
    `lr * lam` for `unstructured`. Heads are never touched.

    Example:

    >>> trainer.fit(batches, callbacks=[ProximalGroupLasso("channel")])

    Args:
        kind: `channel` or `unstructured`.
    """

    def __init__(self, kind=groups_lib.CHANNEL):
        super().__init__()
        if kind not in (groups_lib.CHANNEL, groups_lib.UNSTRUCTURED):
            raise ValueError(
                f"`kind` must be 'channel' or 'unstructured'. Received: {kind}")
        self.kind = kind
        self._step = None

    def on_train_begin(self, logs=None):
        who = "ProximalGroupLasso"
        backbone = _backbone(self.model, who)
        lam = getattr(self.model, "lam", None)
        if lam is None:
            raise ValueError(
                f"{who} needs the trainer's sparsity strength `lam`; the "
                "trainer was built without sparsity.")
        _require_one_step_per_execution(self.model, who)
        kernels = [k.variable for k in groups_lib.penalised_kernels(backbone)]
        kind = self.kind

        @tf.function
        def step(learning_rate):
            strength = lam.value()
            for kernel in kernels:
                kernel.assign(prox_lib.prox(kernel, learning_rate, strength,
                                            kind))

        self._step = step

    def on_train_batch_end(self, batch, logs=None):
        learning_rate = self.model.optimizer.learning_rate
        self._step(tf.convert_to_tensor(learning_rate, tf.float32))


class SparsitySummaries(keras.callbacks.Callback):
    """Writes the sparsity profile to TensorBoard while training.

    Every `every_n_steps` optimizer steps it writes, under `<log_dir>/train`:
    `lambda` (if the trainer has one), `sparsity/parameter`,
    `sparsity/group` and `sparsity/<layer>/active_channels` for every backbone
    conv: the paper's sparsity profiles (Fig. 6 and 7). At the end of each
    epoch the global figures are also added to the epoch logs
    (`sparsity_parameter`, `sparsity_group`, `lambda`).

    Example:

    >>> trainer.fit(batches, callbacks=[SparsitySummaries("runs/a")])

    Args:
        log_dir: the run's TensorBoard directory (`train/` is appended).
        every_n_steps: summary period in optimizer steps.
    """

    def __init__(self, log_dir, every_n_steps=1):
        super().__init__()
        if every_n_steps < 1:
            raise ValueError(
                "`every_n_steps` must be >= 1. Received: "
                f"every_n_steps={every_n_steps}")
        self.log_dir = log_dir
        self.every_n_steps = int(every_n_steps)
        self._meter = None
        self._writer = None

    def on_train_begin(self, logs=None):
        self._meter = SparsityMeter(_backbone(self.model, "SparsitySummaries"))
        self._writer = tf.summary.create_file_writer(
            os.path.join(self.log_dir, "train"))

    def _lambda(self):
        lam = getattr(self.model, "lam", None)
        return None if lam is None else float(lam.value())

    def on_train_batch_end(self, batch, logs=None):
        step = int(self.model.optimizer.iterations.numpy())
        if step % self.every_n_steps:
            return
        stats = self._meter.measure()
        with self._writer.as_default(step=step):
            lam = self._lambda()
            if lam is not None:
                tf.summary.scalar("lambda", lam)
            tf.summary.scalar("sparsity/parameter", stats["parameter_percent"])
            tf.summary.scalar("sparsity/group", stats["group_percent"])
            for name, layer in stats["per_layer"].items():
                tf.summary.scalar(f"sparsity/{name}/active_channels",
                                  layer["active_channels"])

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        stats = self._meter.measure()
        logs["sparsity_parameter"] = stats["parameter_percent"]
        logs["sparsity_group"] = stats["group_percent"]
        lam = self._lambda()
        if lam is not None:
            logs["lambda"] = lam

    def on_train_end(self, logs=None):
        if self._writer is not None:
            self._writer.flush()


class KeepSparsityPattern(keras.callbacks.Callback):
    """Keeps zeroed backbone weights at zero while fine-tuning (meta-testing).

    After every optimizer update each backbone conv kernel is multiplied by
    its mask, so the sparsity pattern learned in meta-training is kept.

    Example:

    >>> trainer.fit(batches, callbacks=[KeepSparsityPattern(masks)])

    Args:
        masks: `{conv layer name: bool array shaped like its kernel}`.
    """

    def __init__(self, masks):
        super().__init__()
        self.masks = masks
        self._step = None

    def on_train_begin(self, logs=None):
        who = "KeepSparsityPattern"
        backbone = _backbone(self.model, who)
        _require_one_step_per_execution(self.model, who)
        layers = groups_lib.conv_layers(backbone)
        missing = sorted({layer.name for layer in layers} - set(self.masks))
        if missing:
            raise ValueError(
                f"{who}: the masks have no entry for backbone layers "
                f"{missing[:3]}{'...' if len(missing) > 3 else ''}.")
        pairs = []
        for layer in layers:
            mask = np.asarray(self.masks[layer.name])
            if mask.shape != tuple(layer.kernel.shape):
                raise ValueError(
                    f"{who}: mask of '{layer.name}' has shape {mask.shape}, "
                    f"the kernel {tuple(layer.kernel.shape)}.")
            pairs.append((layer.kernel,
                          tf.constant(mask, layer.kernel.dtype)))

        @tf.function
        def step():
            for kernel, mask in pairs:
                kernel.assign(kernel * mask)

        self._step = step
        step()

    def on_train_batch_end(self, batch, logs=None):
        self._step()
