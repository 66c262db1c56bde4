"""What the trainers need to take a user's model, tasks and data directly.

`MetaSparsityTrainer(model, tasks, **options)` builds its sparsity from the
option names of the config (`sparsity_control`, `lambda_init`, ...), swaps
Keras' batch norm for the exact one when second-order meta-gradients are
asked for, and `fit` turns a plain `(images, {task: target})` dataset into
meta-batches of episodes. In tolerance mode without a `reference` it trains
the dense reference itself first (same model, data and steps).
"""

import dataclasses

import keras
import numpy as np
from absl import logging

from ms_keras import config as config_lib
from ms_keras.meta import episodes as episodes_lib
from ms_keras.models.layers import ExactBatchNormalization
from ms_keras.models.layers import ExactMaxPooling2D
from ms_keras.sparsity import callbacks as sparsity_callbacks
from ms_keras.sparsity import control as control_lib
from ms_keras.sparsity import reference as reference_lib
from ms_keras.sparsity import proximal
from ms_keras.sparsity.lam import SparsityStrength
from ms_keras.trainers import checkpoint as checkpoint_lib


def build_sparsity(backbone, sparsity, meta, reference=None, num_tasks=1):
    """`(lam, prox, controller)` of a sparse meta-training run.

    Args:
        backbone: the backbone the prox acts on.
        sparsity: its `config.SparsityConfig`.
        meta: the run's `config.MetaConfig` (a sparse run's control is
            `tolerance` unless it states another).
        reference: the dense reference's `control.ReferenceCurve`
            (tolerance mode), or None.
        num_tasks: the tasks the controller compares.

    The controller of `budget` and `tolerance` modes learns the run's
    length at `fit` (`SparsityController.total_steps`).
    """
    control = meta.sparsity_control or config_lib.TOLERANCE
    lam = SparsityStrength(meta.lambda_init or config_lib.DEFAULT_LAMBDA_INIT,
                           beta=sparsity.lambda_beta,
                           learnable=control == config_lib.PAPER, name="lam")
    prox = proximal.OuterProx(backbone, sparsity.kind, sparsity.prox_step,
                              sparsity.preserve_norm)
    controller = None
    if control != config_lib.PAPER:
        tolerance = meta.quality_tolerance
        if control == config_lib.TOLERANCE and tolerance is None:
            tolerance = config_lib.DEFAULT_QUALITY_TOLERANCE
        controller = control_lib.SparsityController(
            dataclasses.replace(meta, sparsity_control=control,
                                quality_tolerance=tolerance),
            reference=reference, num_tasks=num_tasks, name="controller")
    return lam, prox, controller


def _inexact(layer):
    """Whether second derivatives through `layer` are approximate."""
    return (isinstance(layer, keras.layers.BatchNormalization)
            or (type(layer) is keras.layers.MaxPooling2D
                and layer.data_format == "channels_last"))


def _exact(layer):
    if isinstance(layer, keras.layers.MaxPooling2D):
        return ExactMaxPooling2D.from_config(layer.get_config())
    if not isinstance(layer, keras.layers.BatchNormalization):
        return None
    if layer.axis not in (-1, [-1], [3], 3, (-1,), (3,)):
        raise ValueError(
            f"Layer '{layer.name}' normalises axis {layer.axis}; the exact "
            "batch norm normalises the channel axis of NHWC inputs (-1).")
    return ExactBatchNormalization(
        momentum=layer.momentum, epsilon=layer.epsilon, center=layer.center,
        scale=layer.scale, name=layer.name, trainable=layer.trainable)


def swap_inexact_layers(model):
    """A functional model with every `keras.layers.BatchNormalization`
    replaced by `ExactBatchNormalization` (same weights and statistics) and
    every NHWC `keras.layers.MaxPooling2D` by `ExactMaxPooling2D`.

    Keras' batch norm computes its moments with `tf.nn.moments`, whose
    second derivative is not exact, and XLA's second derivative of max
    pooling is approximate (`models.layers`): second-order meta-gradients
    through them would be silently approximate.

    Returns:
        `(model, names)`: the model (itself when nothing was swapped) and
        the names of the swapped layers.
    """
    names = [layer.name for layer in model.layers if _inexact(layer)]
    if not names:
        return model, []
    swapped = keras.models.clone_model(
        model, clone_function=lambda layer: (
            _exact(layer) if _inexact(layer)
            else layer.__class__.from_config(layer.get_config())))
    for layer in model.layers:
        if layer.weights:
            target = swapped.get_layer(layer.name)
            if isinstance(layer, keras.layers.BatchNormalization):
                values = {w.name: w.numpy() for w in layer.weights}
                target.set_weights([values[w.name] for w in target.weights])
            else:
                target.set_weights(layer.get_weights())
    return swapped, names


def exact_second_order(network):
    """Swaps the batch norms and max pools of `network`'s backbone and
    heads in place (`swap_inexact_layers`); returns the swapped layers'
    names (also logged)."""
    backbone, swapped = swap_inexact_layers(network.backbone)
    heads = {}
    for task, head in network.heads.items():
        heads[task], names = swap_inexact_layers(head)
        swapped += [f"{task}/{name}" for name in names]
    network.replace_parts(backbone, heads)
    if swapped:
        logging.warning(
            "Second-order meta-gradients: %d Keras BatchNormalization / "
            "MaxPooling2D layers swapped for their exact versions (%s).",
            len(swapped), ", ".join(swapped[:5])
            + (", ..." if len(swapped) > 5 else ""))
    return swapped


def is_meta_batch(dataset):
    """Whether a dataset already yields meta-batches (dicts of episodes)."""
    spec = getattr(dataset, "element_spec", None)
    return isinstance(spec, dict) and "support_images" in spec


def meta_batches_from(dataset, num_tasks, meta_batch_size=1,
                      episode_sampler=config_lib.ALL_TASKS, seed=0):
    """Meta-batches from one `(images, {task: target})` dataset.

    Consecutive batches alternate as support and query, so the two of an
    episode never share an example (the built-in path draws them from
    disjoint halves of the training split instead).

    Args:
        dataset: a batched `tf.data.Dataset`; repeated here.
        num_tasks: the tasks of the trainer.
        meta_batch_size: episodes per meta-step.
        episode_sampler: see `episodes.episode_table`.
        seed: seed of the episode draws.
    """
    repeated = dataset.repeat()
    support, query = repeated.shard(2, 0), repeated.shard(2, 1)
    table = episodes_lib.episode_table(episode_sampler, num_tasks)
    return episodes_lib.meta_batches(support, query, table, meta_batch_size,
                                     seed)


def steps_of(dataset, steps_per_epoch, meta_batch_size):
    """Meta-steps per epoch: given, else one pass over a finite dataset."""
    if steps_per_epoch:
        return int(steps_per_epoch)
    count = int(dataset.cardinality())
    if count <= 0:
        raise ValueError(
            "fit() on an infinite (or unknown-length) dataset needs "
            "`steps_per_epoch`.")
    return max(1, count // (2 * meta_batch_size))


def train_dense_reference(trainer, dataset, validation_data, epochs, steps,
                          verbose):
    """Trains the dense reference of a tolerance-mode trainer: its network
    from its initial weights as plain multi-task learning, same data,
    optimizer and optimizer steps; returns its `control.ReferenceCurve`."""
    from ms_keras.trainers.multitask import MultiTaskTrainer  # noqa: PLC0415

    if validation_data is None:
        raise ValueError(
            "sparsity_control='tolerance' compares validation losses with a "
            "dense reference: fit() needs `validation_data`.")
    network = trainer.network
    dense = network.__class__.from_config(network.get_config())
    dense.set_weights(trainer.initial_network_weights)
    reference = MultiTaskTrainer(dense, trainer.task_specs,
                                 trainer.loss_weighting_kind)
    optimizer = trainer.optimizer.__class__.from_config(
        trainer.optimizer.get_config())
    reference.compile(optimizer=optimizer)
    history = reference.fit(dataset.repeat(), epochs=epochs,
                            steps_per_epoch=steps,
                            validation_data=validation_data, verbose=verbose)
    names = [t.name for t in trainer.task_specs]
    losses = np.array([history.history[f"val_{n}_loss"] for n in names]).T
    return reference_lib.ReferenceCurve(
        np.arange(1, len(losses) + 1) / epochs, losses)


class KeepBestEligible(keras.callbacks.Callback):
    """Keeps, in memory, the weights of the epoch a controlled run selects
    (the sparsest that meets a tolerance, the best on a budget) and restores
    them when training ends, like `EarlyStopping(restore_best_weights=True)`.

    Args:
        monitor, mode, eligible, fallback, tie: as
            `checkpoint.EpochRanking`.
    """

    def __init__(self, monitor, mode, eligible, fallback=None, tie=None):
        super().__init__()
        self.ranking = checkpoint_lib.EpochRanking(monitor, mode, eligible,
                                                   fallback, tie)
        self.best_epoch = None
        self._weights = None

    def on_epoch_end(self, epoch, logs=None):
        if self.ranking.consider(logs or {}, "KeepBestEligible"):
            self.best_epoch = epoch + 1
            self._weights = [np.copy(v) for v in self.model.get_weights()]

    def on_train_end(self, logs=None):
        if self._weights is not None:
            self.model.set_weights(self._weights)


def selection_callbacks(trainer):
    """The constraint check and the in-memory selection of a controlled
    `fit` on a plain dataset."""
    controller = trainer.controller
    tolerance = controller.mode == config_lib.TOLERANCE
    constraint = sparsity_callbacks.SparsityConstraint(
        trainer.network.backbone, controller.mode,
        target_sparsity=controller.target_sparsity,
        target_flops_speedup=controller.target_flops_speedup,
        quality_tolerance=controller.quality_tolerance,
        reference=controller.reference.final if tolerance else None,
        task_names=trainer.task_names)
    if tolerance:
        keep = KeepBestEligible(**checkpoint_lib.TOLERANCE_SELECTION)
    else:
        keep = KeepBestEligible("val_task_losses", "min", "constraint_holds")
    return [constraint, keep]
