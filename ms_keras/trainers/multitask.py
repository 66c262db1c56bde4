"""Single- and multi-task training (the paper's Alg. 1) as a `keras.Model`."""

import keras
import tensorflow as tf

from ms_keras import losses as losses_lib
from ms_keras import task_kinds
from ms_keras.sparsity import control as control_lib


def replica_scale(loss):
    """Divides a per-replica mean loss so that summed gradients average it."""
    return loss / tf.distribute.get_strategy().num_replicas_in_sync


def reducible(logs):
    """The step's logs as Keras can reduce them over the replicas.

    Under MultiWorkerMirroredStrategy Keras 3 averages each log over axis 0,
    which a scalar does not have (tensorflow/tensorflow#72388): give each a
    length-1 axis there, which the average removes.
    """
    if isinstance(tf.distribute.get_strategy(),
                  tf.distribute.MultiWorkerMirroredStrategy):
        return {name: tf.reshape(value, [1]) for name, value in logs.items()}
    return logs


def loss_dtype(dtype):
    """The dtype losses are computed in: float32 for a mixed-precision
    (16-bit) output, else the output's own (float64 in the exactness
    checks)."""
    dtype = tf.as_dtype(dtype)
    return tf.float32 if dtype in (tf.float16, tf.bfloat16) else dtype


def loss_scale(optimizer):
    """What a loss is multiplied by before it is differentiated: the
    dynamic loss scale of a `LossScaleOptimizer` (mixed_float16), else 1.
    The gradients are divided by it again (`LossScaleOptimizer.apply` does,
    and skips a step whose scaled gradients overflowed)."""
    if isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
        return tf.cast(optimizer.dynamic_scale, tf.float32)
    return tf.constant(1.0, tf.float32)


def gradients(tape, target, sources):
    """`tape.gradient`, with zeros for sources `target` does not depend on
    (a task absent from the batch leaves its head unconnected)."""
    found = tape.gradient(target, sources)
    return [tf.zeros(s.shape, s.dtype) if g is None else g
            for g, s in zip(found, sources)]


def task_losses(task_specs, targets, predictions):
    """`(losses, labelled)` vectors of a batch (see
    `MultiTaskTrainer.task_losses`)."""
    losses, labelled = [], []
    for task in task_specs:
        output = predictions[task.name]
        dtype = loss_dtype(output.dtype)
        output = tf.cast(output, dtype)
        if task.name not in targets:
            losses.append(tf.zeros((), dtype))
            labelled.append(tf.zeros((), dtype))
            continue
        weight = targets.get(f"{task.name}_weight")
        losses.append(tf.cast(task_kinds.task_loss(
            task, targets[task.name], output, weight), dtype))
        labelled.append(tf.ones((), dtype) if weight is None else
                        tf.cast(tf.reduce_sum(tf.cast(weight, dtype))
                                > 0, dtype))
    return tf.stack(losses), tf.stack(labelled)


def once_for_all_replicas(fn):
    """Runs `fn` once in cross-replica context and returns its result.

    Variable assignments made there are mirrored to every replica, as the
    optimizer's own updates are; in replica context a mirrored weight's
    assignment would be refused (or, with "none" aggregation, diverge).
    Without a strategy it simply calls `fn`.
    """
    context = tf.distribute.get_replica_context()
    if context is None:
        return fn()
    return context.merge_call(lambda strategy: fn())


class MultiTaskTrainer(keras.Model):
    """Trains a multi-task model on the weighted sum of its task losses.

    `train_step` computes every task's loss (Table 2), combines them with the
    loss weighting (uncertainty weighting, Eq. 2, or a plain sum) and applies
    one optimizer step to the network and the weighting's parameters, then
    the sparsity prox (fixed lambda) or a fixed sparsity pattern. Per-task
    losses, metrics and weights are logged as `<task>_<name>`;
    `task_losses` is the unweighted sum of the task losses, the model
    selection criterion free of the learned weighting.

    Args:
        network: a `MultiTaskModel`.
        task_specs: the TaskSpecs of its outputs, in order.
        loss_weighting: `uncertainty` or `equal`.
        lam: optional `SparsityStrength` (logged as `lambda`).
        prox: optional `sparsity.proximal.OuterProx`, applied with `lam`
            after every update.
        masks: optional `sparsity.proximal.KernelMasks`: a sparsity pattern
            that holds on the weights and their updates.
        controller: optional `sparsity.control.SparsityController`: sets
            lambda before every prox so that it meets a sparsity budget.

    Example:

    >>> trainer = MultiTaskTrainer(network, task_specs)
    >>> trainer.compile(optimizer=keras.optimizers.Adam(1e-3))
    >>> trainer.fit(train_batches, epochs=1, steps_per_epoch=10)
    """

    def __init__(self, network, task_specs, loss_weighting="uncertainty",
                 lam=None, prox=None, masks=None, controller=None, **kwargs):
        super().__init__(**kwargs)
        if not task_specs:
            raise ValueError("`task_specs` must name at least one task.")
        names = list(getattr(network, "heads", {}))
        missing = [t.name for t in task_specs if t.name not in names]
        if missing:
            raise ValueError(
                f"The network has no head for tasks {missing}; it must be a "
                f"MultiTaskModel with a head per task. Received heads: {names}")
        if prox is not None and lam is None:
            raise ValueError("A prox needs the sparsity strength `lam`.")
        if controller is not None and prox is None:
            raise ValueError("A sparsity controller needs a `prox` to steer.")
        self.network = network
        self.lam = lam
        self.prox = prox
        self.masks = masks
        self.controller = controller
        if controller is not None:
            controller.attach(prox, network.backbone)
        self.task_specs = tuple(task_specs)
        self.loss_weighting_kind = loss_weighting
        self.loss_weighting = losses_lib.build_loss_weighting(
            loss_weighting, len(task_specs))
        self.loss_weighting.build()
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.task_sum_tracker = keras.metrics.Mean(name="task_losses")
        self.task_loss_trackers = [
            keras.metrics.Mean(name=f"{t.name}_loss") for t in task_specs]
        self.task_metrics = [task_kinds.task_metrics(t)
                             for t in task_specs]
        self.threshold_tracker = keras.metrics.Mean(
            name="prox_outer_threshold")

    def build(self, input_shape=None):
        # The network and the loss weighting are built on construction.
        self.built = True

    def compile(self, optimizer="adam", **kwargs):
        """Like `keras.Model.compile`; the optimizer is built here, so that
        the first traced step creates no variables and the trainer is
        complete before `fit`."""
        super().compile(optimizer=optimizer, **kwargs)
        self.optimizer.build(self.optimizer_variables)

    @property
    def optimizer_variables(self):
        """The variables `optimizer` updates."""
        return self.trainable_variables

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        # Everything is built in __init__ and compile. Keras would otherwise
        # average a first batch over the replicas to build the model
        # symbolically, which MultiWorkerMirroredStrategy cannot do for a
        # nested batch.
        if self.optimizer is not None and self.optimizer.built:
            return
        super()._maybe_symbolic_build(iterator, data_batch)

    @property
    def task_names(self):
        return tuple(t.name for t in self.task_specs)

    @property
    def evaluation_metrics(self):
        """Trackers reported by `test_step`: losses and task metrics."""
        tracked = [self.loss_tracker, self.task_sum_tracker,
                   *self.task_loss_trackers]
        for task_metrics in self.task_metrics:
            tracked.extend(task_metrics)
        return tracked

    @property
    def metrics(self):
        return [*self.evaluation_metrics, self.threshold_tracker]

    def call(self, images, training=False):
        return self.network(images, training=training)

    def task_losses(self, targets, predictions):
        """Every task's loss and whether the batch labels it.

        A task absent from the batch's targets contributes no loss (its head
        gets no gradient); a custom task's `<name>_weight` target marks
        missing labels per example (`task_kinds.task_loss`).

        Returns:
            `(losses, labelled)`: vectors ordered like `task_specs`.
        """
        return task_losses(self.task_specs, targets, predictions)

    def update_metrics(self, total, task_losses, targets, predictions,
                       labelled=None):
        """Updates the loss trackers and the metrics of every task the
        batch labels."""
        self.loss_tracker.update_state(total)
        self.task_sum_tracker.update_state(tf.reduce_sum(task_losses))
        for i, task in enumerate(self.task_specs):
            if task.name not in targets:
                continue
            self.task_loss_trackers[i].update_state(
                task_losses[i], sample_weight=None if labelled is None
                else labelled[i])
            weight = targets.get(f"{task.name}_weight")
            prediction = predictions[task.name]
            prediction = tf.cast(prediction, loss_dtype(prediction.dtype))
            for metric in self.task_metrics[i]:
                metric.update_state(targets[task.name], prediction,
                                    sample_weight=weight)

    def logs(self, trackers, with_lambda=True):
        """Results of `trackers`, the task weights and (optionally) lambda."""
        logs = {}
        for metric in trackers:
            result = metric.result()
            if isinstance(result, dict):
                logs.update(result)
            else:
                logs[metric.name] = result
        weights = self.loss_weighting.task_weights()
        for i, name in enumerate(self.task_names):
            logs[f"{name}_weight"] = weights[i]
        if with_lambda and self.lam is not None:
            logs["lambda"] = self.lam.value()
        return logs

    def apply_update(self, gradients, variables, lam=None):
        """The optimizer's update, then the fixed pattern and the prox.

        Args:
            gradients: gradients aligned with `variables`, of the loss
                times `loss_scale(optimizer)`.
            variables: the variables the optimizer updates.
            lam: lambda of the prox (default: the current one).

        Returns:
            The global norm of the (masked) gradients, for the logs.
        """
        if self.masks is not None:
            gradients = self.masks.mask_gradients(gradients, variables)
        norm = tf.linalg.global_norm(
            [g for g in gradients if g is not None]) / tf.cast(
                loss_scale(self.optimizer), gradients[0].dtype)
        before = tf.identity(self.optimizer.iterations)
        self.optimizer.apply(gradients, variables)
        # False when dynamic loss scaling skipped the step (overflow).
        applied = self.optimizer.iterations > before
        if self.masks is not None:
            once_for_all_replicas(self.masks.apply)
        if self.prox is not None:
            lam = self.lam.value() if lam is None else lam
            threshold = once_for_all_replicas(
                lambda: self._prox_step(lam, applied))
            self.threshold_tracker.update_state(threshold)
        return norm

    def _prox_step(self, lam, applied=True):
        """The outer prox at `lam`, or at the lambda the controller solves
        for (which then becomes the current lambda); none (lambda 0) after
        a step the optimizer skipped."""
        if self.controller is not None:
            lam = self.controller.solve(self.optimizer)
            self.lam.raw.assign(tf.cast(control_lib.inverse_softplus(
                lam, self.lam.beta), self.lam.raw.dtype))
        lam = tf.where(applied, lam, tf.zeros_like(lam))
        return self.prox.apply(self.optimizer, lam)

    def train_step(self, data):
        images, targets, _ = keras.utils.unpack_x_y_sample_weight(data)
        with tf.GradientTape() as tape:
            predictions = self.network(images, training=True)
            task_losses, labelled = self.task_losses(targets, predictions)
            total = self.loss_weighting(task_losses, labelled)
            scaled = replica_scale(total) * tf.cast(
                loss_scale(self.optimizer), total.dtype)
        variables = self.trainable_variables
        norm = self.apply_update(gradients(tape, scaled, variables),
                                 variables)
        self.update_metrics(total, task_losses, targets, predictions,
                            labelled)
        trackers = self.evaluation_metrics
        if self.prox is not None:
            trackers = [*trackers, self.threshold_tracker]
        return reducible({**self.logs(trackers), "gradient_norm": norm})

    def test_step(self, data):
        images, targets, _ = keras.utils.unpack_x_y_sample_weight(data)
        predictions = self.network(images, training=False)
        task_losses, labelled = self.task_losses(targets, predictions)
        total = self.loss_weighting(task_losses, labelled)
        self.update_metrics(total, task_losses, targets, predictions,
                            labelled)
        return reducible(self.logs(self.evaluation_metrics,
                                   with_lambda=False))
