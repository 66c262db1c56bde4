"""Builds what an `ExperimentConfig` describes: the network, optimizers,
lambda, sparsity patterns, the trainer, the training stream and the pruning
schedule. Nothing here reads flags or writes files.
"""

import dataclasses

import keras
import numpy as np

from ms_keras import config as config_lib
from ms_keras import data as data_lib
from ms_keras import run_dir
from ms_keras import tasks as tasks_lib
from ms_keras.data import pipeline
from ms_keras.meta import episodes as episodes_lib
from ms_keras.models import build_multitask_model
from ms_keras.models.backbone import load_resnet50_weights
from ms_keras.sparsity import callbacks as sparsity_callbacks
from ms_keras.sparsity import reference as reference_lib
from ms_keras.sparsity import proximal
from ms_keras.sparsity import pruning as pruning_lib
from ms_keras.sparsity.lam import SparsityStrength
from ms_keras.trainers.meta_sparsity import MetaSparsityTrainer
from ms_keras.trainers.multitask import MultiTaskTrainer
from ms_keras.trainers import optimizers as optimizers_lib


def build_network(config, load_weights=False):
    """The `MultiTaskModel` of `config`; with `load_weights`, its backbone
    starts from `config.model.backbone_weights` (when set)."""
    model = config.model
    network = build_multitask_model(
        tasks_lib.dataset_spec(config.data), tasks_lib.task_specs(config),
        model.backbone, config.data.image_size, activation=model.activation,
        head_filters=model.head_filters or None,
        aspp_rates=model.aspp_rates,
        normalization="caffe" if model.backbone_weights else "imagenet")
    if load_weights and model.backbone_weights:
        load_resnet50_weights(network.backbone, model.backbone_weights)
    return network


def build_optimizer(training, steps):
    """The optimizer of the weights of a run of `steps` optimizer steps."""
    clip = ({"global_clipnorm": training.clip_norm} if training.clip_norm
            else {})
    learning_rate = training.learning_rate
    if training.learning_rate_schedule == "step":
        learning_rate = keras.optimizers.schedules.PiecewiseConstantDecay(
            [int(config_lib.STEP_DECAY_AT * steps)],
            [learning_rate, learning_rate / config_lib.STEP_DECAY])
    if training.learning_rate_schedule == "cosine":
        learning_rate = keras.optimizers.schedules.CosineDecay(
            learning_rate, decay_steps=steps)
    if training.optimizer == "sgd":
        return keras.optimizers.SGD(learning_rate,
                                    momentum=training.momentum, **clip)
    return optimizers_lib.FusedAdam(learning_rate, **clip)


def pruning_target(pruning):
    """The budget of a pruning run, in percent of the backbone weights (or
    of its structural FLOPs for a `target_flops_speedup`)."""
    if pruning.target_flops_speedup is not None:
        return pruning_lib.percent_for_speedup(pruning.target_flops_speedup)
    if pruning.target_sparsity is not None:
        return pruning.target_sparsity
    metrics = run_dir.Run(pruning.budget_from, "budget_from").metrics
    return float(metrics["sparsity"]["parameter_percent"])


def check_pruning(pruning):
    """Raises ValueError for a budget or mask source that cannot be used."""
    target = pruning_target(pruning)
    if not 0.0 < target < 100.0:
        raise ValueError(
            f"--budget_from={pruning.budget_from}: its parameter sparsity is "
            f"{target:.2f} %; a budget must be between 0 and 100 %.")
    if pruning.mask_from:
        sparsity = run_dir.Run(pruning.mask_from, "mask_from").metrics[
            "sparsity"]["group_percent"]
        if not sparsity:
            raise ValueError(
                f"--mask_from={pruning.mask_from} zeroes no group (0 % group "
                "sparsity): --pruning_mask=meta needs a sparse meta-sparsity "
                "run.")


def total_steps(config):
    return config.training.epochs * steps_per_epoch(config)


def pruning_schedule(config, backbone, masks):
    """The `PruningSchedule` callback of a pruning run."""
    pruning = config.pruning
    target = pruning_target(pruning)
    schedule = pruning_lib.schedule(
        pruning.method, target, total_steps(config), pruning.pruning_rounds,
        pruning.pruning_begin_step, pruning.pruning_end_step,
        pruning.pruning_frequency)
    scores = pruning_lib.scorer(
        pruning.pruning_mask, pruning_lib.groups_of(backbone),
        config.training.seed,
        run_dir.Run(pruning.mask_from, "mask_from").masks()
        if pruning.mask_from else None)
    measure = (pruning_lib.FlopsMeasure(backbone)
               if pruning.target_flops_speedup is not None else None)
    return sparsity_callbacks.PruningSchedule(backbone, masks, schedule,
                                              target, scores, measure)


def reference_run_dir(config):
    """The dense reference of a tolerance-mode run: `--reference_dir`, or the
    one the run trains itself (`<model_dir>/reference`)."""
    return (config.meta.reference_dir
            or run_dir.path(config.model_dir, run_dir.REFERENCE_DIR))


def reference_curve(path, task_names):
    """The `ReferenceCurve` of a finished dense run: its validation task
    losses at each epoch end, over the fraction of its planned training.

    Raises:
        ValueError: when `path` holds no finished dense run with every task.
    """
    reference = run_dir.Run(path, "reference_dir")
    metrics, recorded = reference.metrics, reference.config
    history = metrics.get("history", {})
    missing = [t for t in task_names if f"val_{t}_loss" not in history]
    if recorded.get("sparsity") or recorded.get("pruning"):
        raise ValueError(
            f"--reference_dir={path}: a sparse run; the reference must be "
            "dense (--mode=mtl or stl without --sparsity or --pruning).")
    if missing:
        raise ValueError(
            f"--reference_dir={path}: it did not train "
            f"{', '.join(missing)} (its tasks: "
            f"{', '.join(recorded.get('tasks', []))}); the reference must "
            "have every task of this run.")
    losses = np.array([history[f"val_{t}_loss"] for t in task_names]).T
    planned = recorded["training"]["epochs"]
    fractions = np.arange(1, len(losses) + 1) / planned
    try:
        return reference_lib.ReferenceCurve(fractions, losses)
    except ValueError as e:
        raise ValueError(f"--reference_dir={path}: {e}") from None


def reference_losses(path, task_names):
    """A finished dense reference's validation loss per task (at its kept
    checkpoint), ordered like `task_names`."""
    return reference_curve(path, task_names).final


def transfer_from(network, transfer):
    """Starts `network` from a finished run (meta-testing).

    Copies the source's backbone and the heads of the tasks both have; with
    `train_scope="new_heads"` those copied parts are frozen, so only the
    heads of new tasks train.

    Returns:
        The names of the copied heads' tasks.
    """
    source = run_dir.Run(transfer.from_dir, "from_dir").model()
    network.backbone.set_weights(source.backbone.get_weights())
    shared = [name for name in network.heads if name in source.heads]
    for name in shared:
        network.heads[name].set_weights(source.heads[name].get_weights())
    if transfer.train_scope == "new_heads":
        network.backbone.trainable = False
        for name in shared:
            network.heads[name].trainable = False
    return shared


def build_trainer(config, training=True):
    """A compiled, built trainer for `config`: the library's trainers,
    given the config's sections by field name, under the config's dtype
    policy (the global one is restored afterwards).

    Weights are freshly initialised (or from `--backbone_weights`), or start
    from `config.transfer`. With `training=False` (evaluation, export) no
    weights file is read: a tolerance-mode trainer is built without its
    dense reference, a backbone without its start.
    """
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(config.training.dtype_policy)
    try:
        return _build_trainer(config, training)
    finally:
        keras.config.set_dtype_policy(previous)


def _build_trainer(config, training):
    keras.utils.set_random_seed(config.training.seed)
    network = build_network(config, load_weights=training)
    if config.transfer:
        transfer_from(network, config.transfer)
    masks = None
    if config.transfer or config.pruning:
        masks = proximal.KernelMasks(
            network.backbone,
            run_dir.Run(config.transfer.from_dir, "from_dir").masks()
            if config.transfer else None,
            name="kernel_masks")
    specs = tasks_lib.task_specs(config)
    weighting = config.training.loss_weighting
    if config.meta is not None:
        reference = None
        if config.sparsity_control == config_lib.TOLERANCE and training:
            reference = reference_curve(reference_run_dir(config),
                                        config.tasks)
        sparsity = config.sparsity or config_lib.SparsityConfig()
        trainer = MetaSparsityTrainer(
            network, specs, weighting,
            sparsity=sparsity.kind if config.sparse else config_lib.NONE,
            masks=masks, reference=reference, seed=config.training.seed,
            **_fields(config.meta),
            **_fields(sparsity, skip=("kind", "lam")))
        if trainer.controller is not None:
            trainer.controller.total_steps = total_steps(config)
    else:
        lam = prox = None
        if config.sparse:
            lam = SparsityStrength(config.sparsity.lam,
                                   beta=config.sparsity.lambda_beta,
                                   learnable=False, name="lam")
            prox = proximal.OuterProx(
                network.backbone, config.sparsity.kind,
                config.sparsity.prox_step, config.sparsity.preserve_norm)
        trainer = MultiTaskTrainer(network, specs, weighting, lam=lam,
                                   prox=prox, masks=masks)
    trainer.compile(optimizer=build_optimizer(config.training,
                                              total_steps(config)),
                    jit_compile=config.runtime.jit_compile)
    if masks is not None:
        masks.apply()
    trainer(keras.ops.zeros((1, *config.data.image_size, 3)))
    return trainer


def _fields(section, skip=()):
    """`{field: value}` of a config section."""
    return {f.name: getattr(section, f.name)
            for f in dataclasses.fields(section) if f.name not in skip}


def training_batches(config):
    """The training stream: plain batches, or meta-batches of episodes.

    Meta-batches draw support and query batches from disjoint halves of the
    training split, with independent random streams.
    """
    batch_size, seed = config.training.batch_size, config.training.seed
    specs = tasks_lib.task_specs(config)
    if config.meta is None:
        return data_lib.load(config.data, specs, "train", batch_size,
                             training=True, seed=seed)
    support = data_lib.load(config.data, specs, "train[:50%]", batch_size,
                            training=True, seed=seed,
                            stream=pipeline.SUPPORT_STREAM)
    query = data_lib.load(config.data, specs, "train[50%:]", batch_size,
                          training=True, seed=seed,
                          stream=pipeline.QUERY_STREAM)
    table = episodes_lib.episode_table(config.meta.episode_sampler,
                                       len(config.tasks))
    return episodes_lib.meta_batches(support, query, table,
                                     config.meta.meta_batch_size, seed)


def steps_per_epoch(config):
    """Optimizer steps per epoch: the configured count, else one pass over
    the training split (over its support half in a meta run)."""
    if config.training.steps_per_epoch:
        return config.training.steps_per_epoch
    train = data_lib.num_examples(config.data, "train")
    if config.meta is not None:
        return max(1, train // 2 // (config.training.batch_size
                                     * config.meta.meta_batch_size))
    return max(1, train // config.training.batch_size)
