"""One experiment end to end: data, model, training, test metrics, artifacts.

The binaries map flags onto an `ExperimentConfig`, call `prepare` (checks,
claims the run directory) and `run`; nothing here reads flags.
"""

import os

import keras
import numpy as np
from absl import logging

from ms_keras import config as config_lib
from ms_keras import data as data_lib
from ms_keras import metrics as metrics_lib
from ms_keras import run_dir
from ms_keras import tasks as tasks_lib
from ms_keras.data import pipeline
from ms_keras.meta import episodes as episodes_lib
from ms_keras.models import build_multitask_model
from ms_keras.sparsity import callbacks as sparsity_callbacks
from ms_keras.sparsity import proximal
from ms_keras.sparsity.lam import SparsityStrength
from ms_keras.sparsity.stats import SparsityMeter
from ms_keras.trainers.checkpoint import AtomicBestCheckpoint
from ms_keras.trainers.checkpoint import DeltaMLogger
from ms_keras.trainers.meta_sparsity import MetaSparsityTrainer
from ms_keras.trainers.multitask import MultiTaskTrainer


def build_network(config):
    """The `MultiTaskModel` of `config`."""
    return build_multitask_model(
        config.data.spec, config.task_specs, config.model.backbone,
        config.data.image_size, activation=config.model.activation,
        head_filters=config.model.head_filters or None,
        aspp_rates=config.model.aspp_rates)


def build_optimizer(training):
    """The optimizer of the weights."""
    clip = ({"global_clipnorm": training.clip_norm} if training.clip_norm
            else {})
    if training.optimizer == "sgd":
        return keras.optimizers.SGD(training.learning_rate,
                                    momentum=training.momentum, **clip)
    return keras.optimizers.Adam(training.learning_rate, **clip)


def build_lambda_optimizer(config):
    """The optimizer of lambda's raw weight in a meta-sparsity run."""
    learning_rate = config.meta.lambda_lr or config.training.learning_rate
    if config.meta.lambda_optimizer == "sgd":
        return keras.optimizers.SGD(learning_rate)
    return keras.optimizers.Adam(learning_rate)


def source_masks(transfer):
    """`{conv name: bool mask}` of the run a fine-tuning run starts from."""
    masks = np.load(run_dir.path(transfer.from_dir, run_dir.MASK_FILE))
    return {name: masks[name] for name in masks.files}


def build_lambda(config):
    """The run's SparsityStrength, or None for a dense run."""
    if not config.sparse:
        return None
    beta = config.sparsity.lambda_beta
    if config.learns_lambda:
        return SparsityStrength(config.meta.lambda_init, beta=beta,
                                learnable=True, seed=config.training.seed,
                                name="lam")
    return SparsityStrength(config.sparsity.lam, beta=beta, learnable=False,
                            name="lam")


def transfer_from(network, transfer):
    """Starts `network` from a finished run (meta-testing).

    Copies the source's backbone and the heads of the tasks both have; with
    `train_scope="new_heads"` those copied parts are frozen, so only the
    heads of new tasks train.

    Returns:
        The names of the copied heads' tasks.
    """
    source = keras.saving.load_model(
        run_dir.path(transfer.from_dir, run_dir.MODEL_FILE))
    network.backbone.set_weights(source.backbone.get_weights())
    shared = [name for name in network.heads if name in source.heads]
    for name in shared:
        network.heads[name].set_weights(source.heads[name].get_weights())
    if transfer.train_scope == "new_heads":
        network.backbone.trainable = False
        for name in shared:
            network.heads[name].trainable = False
    return shared


def build_trainer(config):
    """A compiled, built trainer for `config`.

    Weights are freshly initialised, or start from `config.transfer`.
    """
    training = config.training
    keras.utils.set_random_seed(training.seed)
    network = build_network(config)
    if config.transfer:
        transfer_from(network, config.transfer)
    lam = build_lambda(config)
    prox = (proximal.OuterProx(network.backbone, config.sparsity.kind,
                               config.sparsity.prox_step,
                               config.sparsity.preserve_norm)
            if config.sparse else None)
    masks = (proximal.KernelMasks(network.backbone,
                                  source_masks(config.transfer))
             if config.transfer else None)
    if config.meta is not None:
        meta = config.meta
        trainer = MetaSparsityTrainer(
            network, config.task_specs, training.loss_weighting,
            sparsity=config.sparsity.kind if config.sparse else "none",
            lam=lam, prox=prox, masks=masks, inner_steps=meta.inner_steps,
            inner_lr=meta.inner_lr, first_order=meta.first_order,
            inner_prox=meta.inner_prox, regrow_prob=meta.regrow_prob,
            inner_clip_norm=meta.inner_clip_norm, seed=training.seed)
        trainer.compile(optimizer=build_optimizer(training),
                        lambda_optimizer=build_lambda_optimizer(config)
                        if config.learns_lambda else None,
                        jit_compile=training.jit_compile)
    else:
        trainer = MultiTaskTrainer(network, config.task_specs,
                                   training.loss_weighting, lam=lam,
                                   prox=prox, masks=masks)
        trainer.compile(optimizer=build_optimizer(training),
                        jit_compile=training.jit_compile)
    if masks is not None:
        masks.apply()
    trainer(keras.ops.zeros((1, *config.data.image_size, 3)))
    return trainer


def training_batches(config):
    """The training stream: plain batches, or meta-batches of episodes.

    Meta-batches draw support and query batches from disjoint halves of the
    training split, with independent random streams.
    """
    batch_size, seed = config.training.batch_size, config.training.seed
    if config.meta is None:
        return data_lib.load(config.data, config.task_specs, "train",
                             batch_size, training=True, seed=seed)
    support = data_lib.load(config.data, config.task_specs, "train[:50%]",
                            batch_size, training=True, seed=seed,
                            stream=pipeline.SUPPORT_STREAM)
    query = data_lib.load(config.data, config.task_specs, "train[50%:]",
                          batch_size, training=True, seed=seed,
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


def monitored(training):
    """`(log name, mode)` of the model-selection figure."""
    lower_is_better = config_lib.MONITORS[training.monitor]
    return f"val_{training.monitor}", "min" if lower_is_better else "max"


def reference_validation(path):
    """The validation metrics of a finished run (the delta_m reference).

    Raises:
        ValueError: when `path` holds no finished run of this version.
    """
    metrics_path = run_dir.path(path, run_dir.METRICS_FILE)
    try:
        return run_dir.read_json(metrics_path)["validation"]
    except (OSError, ValueError, KeyError):
        raise ValueError(
            f"--delta_m_reference={path}: no finished run with validation "
            f"metrics ({run_dir.METRICS_FILE}).") from None


def _callbacks(config, trainer):
    model_dir = config.model_dir
    monitor, mode = monitored(config.training)
    callbacks = [keras.callbacks.BackupAndRestore(
        run_dir.path(model_dir, run_dir.BACKUP_DIR))]
    if config.training.monitor == "delta_m":
        callbacks.append(DeltaMLogger(
            reference_validation(config.training.delta_m_reference),
            config.task_specs))
    callbacks.append(AtomicBestCheckpoint(
        run_dir.path(model_dir, run_dir.BEST_WEIGHTS), monitor, mode))
    if config.sparse:
        callbacks.append(sparsity_callbacks.SparsitySummaries(
            model_dir, trainer.network.backbone, trainer.lam,
            config.sparsity.sparsity_log_steps))
    # Last, so that it records what the callbacks above add to the logs.
    callbacks.append(keras.callbacks.TensorBoard(log_dir=model_dir,
                                                 write_graph=False))
    if config.training.early_stopping_patience:
        callbacks.append(keras.callbacks.EarlyStopping(
            monitor=monitor, mode=mode,
            patience=config.training.early_stopping_patience))
    return callbacks


def evaluate_split(trainer, config, split):
    """Runs `trainer` over a whole split; returns `{task: {metric: v}}`."""
    batches = data_lib.load(config.data, config.task_specs, split,
                            config.training.batch_size, training=False)
    logs = trainer.evaluate(batches, verbose=0, return_dict=True)
    grouped = metrics_lib.group_results(logs, trainer.task_names)
    grouped["loss"] = float(logs["loss"])
    return grouped


def check_has_checkpoint(config):
    """Raises ValueError unless the run has a best checkpoint."""
    if not os.path.exists(run_dir.path(config.model_dir,
                                       run_dir.BEST_WEIGHTS)):
        raise ValueError(
            f"--model_dir={config.model_dir} has no checkpoint "
            f"({run_dir.BEST_WEIGHTS}); train it first.")


def load_best_weights(trainer, config):
    """Loads the run's best checkpoint into a (built) trainer."""
    check_has_checkpoint(config)
    if not trainer.optimizer.built:
        # The checkpoint holds optimizer slots; give them somewhere to go.
        trainer.optimizer.build(trainer.trainable_variables)
    trainer.load_weights(run_dir.path(config.model_dir, run_dir.BEST_WEIGHTS))


def build_for_evaluation(config):
    """A trainer with the run's best weights, ready for `evaluate`."""
    trainer = build_trainer(config)
    load_best_weights(trainer, config)
    return trainer


def load_config(model_dir, require_finished=False):
    """The ExperimentConfig recorded in `model_dir` (its `config.json`).

    Raises:
        ValueError: when `model_dir` holds no readable (finished) run.
    """
    if not os.path.isdir(model_dir):
        raise ValueError(f"{model_dir}: no such directory.")
    recorded = run_dir.read_recorded(model_dir)
    if recorded is None:
        raise ValueError(
            f"{model_dir} holds no run ({run_dir.CONFIG_FILE} is missing).")
    if require_finished:
        for name in (run_dir.METRICS_FILE, run_dir.MODEL_FILE,
                     run_dir.MASK_FILE):
            if not os.path.exists(run_dir.path(model_dir, name)):
                raise ValueError(
                    f"{model_dir} holds no finished run ({name} is missing).")
    try:
        return config_lib.from_dict(recorded).replace(model_dir=model_dir)
    except ValueError as e:
        raise ValueError(f"{model_dir}/{run_dir.CONFIG_FILE}: {e}") from None


def resolve_run_tasks(config, requested, allow_none=False):
    """Resolves a `--tasks` value against a trained run's tasks.

    Args:
        config: the run's ExperimentConfig.
        requested: task numbers/names, or None for all of the run's tasks.
        allow_none: accept `none`, meaning no task (the backbone alone).

    Returns:
        Task names, `[]` for `none`, or None for all.

    Raises:
        ValueError: for a task the dataset lacks or the run did not train.
    """
    if requested is None:
        return None
    if allow_none and [t.lower() for t in requested] == ["none"]:
        return []
    names = [t.name for t in tasks_lib.parse_tasks(config.data.spec,
                                                   requested)]
    missing = [name for name in names if name not in config.tasks]
    if missing:
        raise ValueError(
            f"--tasks={','.join(requested)}: the run has no head for "
            f"{', '.join(missing)} (its tasks: {', '.join(config.tasks)}).")
    return names


def final_metrics(trainer, config):
    """The `metrics.json` payload: test and validation metrics of the kept
    checkpoint, its sparsity and lambda, and which epoch was kept."""
    metrics = {
        "test": evaluate_split(trainer, config, "test"),
        "validation": evaluate_split(trainer, config, "validation"),
        "sparsity": SparsityMeter(trainer.network.backbone).measure(),
        "lambda": None if trainer.lam is None else float(trainer.lam.value()),
    }
    record = run_dir.read_json(run_dir.path(
        config.model_dir, run_dir.BEST_RECORD))
    metrics["selection"] = {
        "monitor": record["monitor"], "value": record["best"],
        "epoch": record["epoch"],
        "parameter_sparsity_percent": metrics["sparsity"][
            "parameter_percent"],
        "lambda": metrics["lambda"]}
    if config.transfer:
        source = run_dir.read_json(run_dir.path(config.transfer.from_dir,
                                                run_dir.METRICS_FILE))
        metrics["init_from"] = {
            "model_dir": config.transfer.from_dir, "lambda": source["lambda"],
            "tasks": sorted(set(source["test"]) - {"loss"}),
            "train_scope": config.transfer.train_scope}
    return metrics


def save_masks(trainer, path):
    """Writes `{conv name: bool kernel mask}` of the backbone to an .npz."""
    masks = SparsityMeter(trainer.network.backbone).masks()

    def write(tmp):
        with open(tmp, "wb") as f:
            np.savez_compressed(f, **masks)

    run_dir.atomic_write(path, write)


def _identity_of(recorded):
    return config_lib.from_dict(recorded).identity()


def prepare(config, overwrite=False):
    """Checks the user-facing inputs and claims `model_dir`; trains nothing.

    Raises:
        ValueError: for unusable data files or a `model_dir` that holds
            another experiment or a finished run (see `run_dir.claim`).
    """
    identity = config.identity()
    run_dir.check(config.model_dir, identity, _identity_of, overwrite)
    if config.training.monitor == "delta_m":
        try:
            DeltaMLogger(reference_validation(
                config.training.delta_m_reference), config.task_specs)
        except ValueError as e:
            raise ValueError(
                f"--delta_m_reference={config.training.delta_m_reference}: "
                f"{e}") from None
    # Prepares the examples now: unusable files are reported before anything
    # is written into model_dir.
    data_lib.builder(config.data)
    resuming = run_dir.claim(config.model_dir, config_lib.to_dict(config),
                             identity, _identity_of, overwrite=overwrite)
    if resuming:
        logging.info("Resuming the unfinished run in %s", config.model_dir)


def run(config):
    """Trains, evaluates on the test split and writes all artifacts.

    Call `prepare` first.

    Returns:
        The metrics written to `metrics.json`.
    """
    trainer = build_trainer(config)
    train = training_batches(config)
    validation = data_lib.load(config.data, config.task_specs, "validation",
                               config.training.batch_size, training=False)
    history = trainer.fit(
        train, epochs=config.training.epochs,
        steps_per_epoch=steps_per_epoch(config), validation_data=validation,
        validation_steps=config.training.validation_steps or None,
        callbacks=_callbacks(config, trainer),
        verbose=config.training.verbose, shuffle=False)
    load_best_weights(trainer, config)
    metrics = final_metrics(trainer, config)
    metrics["epochs_trained"] = len(history.epoch)
    metrics["history"] = {k: [float(v) for v in values]
                          for k, values in history.history.items()}
    model_dir = config.model_dir
    run_dir.atomic_write(run_dir.path(model_dir, run_dir.MODEL_FILE),
                         trainer.network.save)
    save_masks(trainer, run_dir.path(model_dir, run_dir.MASK_FILE))
    run_dir.write_json(run_dir.path(model_dir, run_dir.METRICS_FILE), metrics)
    return metrics
