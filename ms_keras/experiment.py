"""One experiment end to end: data, model, training, test metrics, artifacts.

The binaries map flags onto an `ExperimentConfig`, call `prepare` (checks,
claims the run directory) and `run`; nothing here reads flags.
"""

import os
import shutil
import tempfile

import keras
import tensorflow as tf
from absl import logging

from ms_keras import build
from ms_keras import console
from ms_keras import control_run
from ms_keras import config as config_lib
from ms_keras import data as data_lib
from ms_keras import results
from ms_keras import run_dir
from ms_keras import runtime
from ms_keras import tasks as tasks_lib
from ms_keras.sparsity import callbacks as sparsity_callbacks
from ms_keras.sparsity import pruning as pruning_lib
from ms_keras.trainers.checkpoint import AtomicBestCheckpoint
from ms_keras.trainers.checkpoint import DeltaMLogger
from ms_keras.trainers import backup
from ms_keras.trainers import safety
from ms_keras.trainers.checkpoint import TrainingTimer


def reference_validation(path):
    """The validation metrics of a finished run (the delta_m reference).

    Raises:
        ValueError: when `path` holds no finished run of this version.
    """
    metrics = run_dir.Run(path, "delta_m_reference").metrics
    if "validation" not in metrics:
        raise ValueError(
            f"--delta_m_reference={path}: no validation metrics in its "
            f"{run_dir.METRICS_FILE}.")
    return metrics["validation"]


def _callbacks(config, trainer, initial_epoch=0):
    model_dir = config.model_dir
    monitor, mode = control_run.monitored(config.training)
    callbacks = [
        safety.NonFiniteGuard(config.tasks),
        backup.EpochBackup(run_dir.path(model_dir, run_dir.BACKUP_DIR)),
        TrainingTimer(run_dir.path(model_dir, run_dir.TIME_RECORD))]
    if config.pruning:
        callbacks.append(build.pruning_schedule(config, trainer.network.backbone,
                                          trainer.masks))
    if config.training.monitor == "delta_m":
        callbacks.append(DeltaMLogger(
            reference_validation(config.training.delta_m_reference),
            tasks_lib.task_specs(config)))
    if config.sparse:
        callbacks.append(sparsity_callbacks.SparsitySummaries(
            model_dir, trainer.network.backbone, trainer.lam,
            config.runtime.sparsity_log_steps, trainer.controller))
    if trainer.controller is not None:
        callbacks.append(control_run.sparsity_constraint(config, trainer))
    callbacks.append(AtomicBestCheckpoint(
        run_dir.path(model_dir, run_dir.BEST_WEIGHTS),
        **control_run.selection(config)))
    # Last, so that they record what the callbacks above add to the logs.
    callbacks.append(keras.callbacks.TensorBoard(log_dir=model_dir,
                                                 write_graph=False))
    callbacks.append(backup.EpochHistory(
        run_dir.path(model_dir, run_dir.HISTORY_RECORD), initial_epoch))
    if config.runtime.verbose == 2:
        callbacks.append(console.EpochLines(
            tasks_lib.task_specs(config), config.training.epochs,
            "reference " if control_run.is_reference(config) else ""))
    if config.training.early_stopping_patience:
        callbacks.append(keras.callbacks.EarlyStopping(
            monitor=monitor, mode=mode,
            patience=config.training.early_stopping_patience,
            start_from_epoch=_first_eligible_epoch(config)))
    return callbacks


def _first_eligible_epoch(config):
    """The epoch (0-based) from which a pruning run's budget is in force."""
    pruning = config.pruning
    if pruning is None:
        return 0
    return pruning_lib.budget_step(
        pruning.method, build.total_steps(config), pruning.pruning_rounds,
        pruning.pruning_begin_step, pruning.pruning_end_step) // (
            build.steps_per_epoch(config))


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
    trainer = build.build_trainer(config, training=False)
    load_best_weights(trainer, config)
    return trainer


def load_config(model_dir, require_finished=False, flag=None):
    """The ExperimentConfig recorded in `model_dir` (its `config.json`).

    Args:
        model_dir: the run directory.
        require_finished: also require its results (metrics, model, masks).
        flag: the flag that named `model_dir`, which errors then name.

    Raises:
        ValueError: when `model_dir` holds no readable (finished) run.
    """
    run = run_dir.Run(model_dir, flag)
    if not os.path.isdir(model_dir):
        raise ValueError(f"{run.where}: no such directory.")
    recorded = run.config
    if require_finished:
        run.require_finished((run_dir.METRICS_FILE, run_dir.MODEL_FILE,
                              run_dir.MASK_FILE))
    try:
        return config_lib.from_dict(recorded).replace(model_dir=model_dir)
    except ValueError as e:
        raise ValueError(f"{run.where}/{run_dir.CONFIG_FILE}: {e}") from None


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
    names = [t.name for t in tasks_lib.parse_tasks(
        tasks_lib.dataset_spec(config.data), requested)]
    missing = [name for name in names if name not in config.tasks]
    if missing:
        raise ValueError(
            f"--tasks={','.join(requested)}: the run has no head for "
            f"{', '.join(missing)} (its tasks: {', '.join(config.tasks)}).")
    return names


def _identity_of(recorded):
    return config_lib.from_dict(recorded).identity()


def check_replicas(config, replicas):
    """Raises ValueError unless the global batch splits over `replicas`."""
    if config.meta is not None:
        size, name = config.meta.meta_batch_size, "meta_batch_size"
    else:
        size, name = config.training.batch_size, "batch_size"
    if size % replicas:
        raise ValueError(
            f"--{name}={size} is the global batch: it must divide evenly over "
            f"the strategy's {replicas} replicas.")


def check_control(config):
    """Raises ValueError for a `--reference_dir` that is not a finished dense
    run of this run's dataset and tasks, or a FLOPs budget the backbone
    cannot reach."""
    meta = config.meta
    if meta.reference_dir:
        path = meta.reference_dir
        reference = load_config(path, require_finished=True,
                                flag="reference_dir")
        if reference.sparse or reference.pruning:
            raise ValueError(
                f"--reference_dir={path}: a sparse run; the reference must be "
                "dense (--mode=mtl or stl, no --sparsity or --pruning).")
        if reference.data.dataset != config.data.dataset:
            raise ValueError(
                f"--reference_dir={path}: trained on "
                f"{reference.data.dataset}, this run on "
                f"{config.data.dataset}.")
        build.reference_curve(path, config.tasks)
    if meta.target_flops_speedup is not None:
        control_run.check_flops_target(config, meta.target_flops_speedup)




def prepare(config, strategy=None, overwrite=False):
    """Checks the user-facing inputs and claims `model_dir`; trains nothing.

    Under a multi-worker strategy only the chief claims the directory.

    Returns:
        The `trainers.backup.Resume` of the run (epoch 0 for a new run).

    Raises:
        ValueError: for unusable data files, a global batch that does not
            split over the replicas, or a `model_dir` that holds another
            experiment or a finished run (see `run_dir.claim`).
    """
    strategy = strategy or tf.distribute.get_strategy()
    check_replicas(config, strategy.num_replicas_in_sync)
    identity = config.identity()
    chief = runtime.is_chief(strategy)
    resuming = chief and run_dir.check(config.model_dir, identity,
                                       _identity_of, overwrite)
    if config.training.monitor == "delta_m":
        try:
            DeltaMLogger(reference_validation(
                config.training.delta_m_reference),
                tasks_lib.task_specs(config))
        except ValueError as e:
            raise ValueError(
                f"--delta_m_reference={config.training.delta_m_reference}: "
                f"{e}") from None
    if config.pruning:
        build.check_pruning(config.pruning)
        if config.pruning.target_flops_speedup is not None:
            control_run.check_flops_target(
                config, config.pruning.target_flops_speedup)
    if config.transfer:
        load_config(config.transfer.from_dir, require_finished=True,
                    flag="from_dir")
    if config.sparsity_control is not None:
        check_control(config)
    if config.model.backbone_weights:
        if not os.path.isfile(config.model.backbone_weights):
            raise ValueError(f"--backbone_weights="
                             f"{config.model.backbone_weights}: no such file.")
        build.build_network(config, load_weights=True)  # refuses a bad file
    if config.needs_own_reference and isinstance(
            strategy, tf.distribute.MultiWorkerMirroredStrategy):
        raise ValueError(
            "--sparsity_control=tolerance over several workers needs "
            "--reference_dir=<finished dense run>: only the chief keeps the "
            "files of a reference trained on the way.")
    # Prepares the examples now: unusable files are reported before anything
    # is written into model_dir.
    data_lib.builder(config.data)
    if not chief:
        return backup.Resume(0, None, [])
    resume = backup.Resume(0, None, [])
    if resuming:
        # Unreadable backups are reported before anything is written.
        resume = backup.find_resume(run_dir.path(config.model_dir,
                                                 run_dir.BACKUP_DIR))
    run_dir.claim(config.model_dir, config_lib.to_dict(config), identity,
                  _identity_of, overwrite=overwrite)
    return resume


def start(config, overwrite=False):
    """Starts TensorFlow as the config asks (devices, strategy, determinism),
    then `prepare`s the run.

    Returns:
        `(strategy, trainers.backup.Resume)`.

    Raises:
        ValueError: for anything that stops the run before it starts.
    """
    settings = config.runtime
    strategy = runtime.start(settings.strategy, settings.cpu_devices,
                             settings.deterministic, config.training.seed)
    return strategy, prepare(config, strategy, overwrite)


def run(config, strategy=None):
    """Trains, evaluates on the test split and writes all artifacts.

    Call `prepare` first. Under `strategy` the trainer is built in its scope
    and `fit` spreads every step over its replicas; only the chief writes
    the run's files (other workers work in a temporary directory, removed at
    the end). A resumed run continues its data and episode streams where the
    last completed epoch left them.

    Returns:
        The metrics written to `metrics.json`.
    """
    strategy = strategy or tf.distribute.get_strategy()
    chief = runtime.is_chief(strategy)
    if not chief:
        config = config.replace(model_dir=tempfile.mkdtemp(
            prefix=".ms_keras-worker-"))
    try:
        if config.needs_own_reference:
            train_reference(config, strategy)
        return _train_and_record(config, strategy, chief)
    finally:
        if not chief:
            shutil.rmtree(config.model_dir, ignore_errors=True)


def train_reference(config, strategy):
    """Trains a tolerance-mode run's dense reference into
    `<model_dir>/reference` (same data, model, seed and optimizer steps),
    unless it is there already; an interrupted one resumes."""
    reference = config_lib.dense_reference(
        config, run_dir.path(config.model_dir, run_dir.REFERENCE_DIR),
        build.steps_per_epoch(config))
    if run_dir.is_finished(reference.model_dir):
        return
    logging.info("Training the dense reference in %s", reference.model_dir)
    if runtime.is_chief(strategy):
        run_dir.claim(reference.model_dir, config_lib.to_dict(reference),
                      reference.identity(), _identity_of)
    _train_and_record(reference, strategy, runtime.is_chief(strategy))


def _train_and_record(config, strategy, chief):
    with strategy.scope():
        trainer = build.build_trainer(config)
    steps = build.steps_per_epoch(config)
    resume = backup.find_resume(run_dir.path(config.model_dir,
                                             run_dir.BACKUP_DIR))
    backup.restore(trainer, resume)
    done = resume.epoch
    # The data and episode streams continue where the backup left them.
    train = build.training_batches(config).skip(done * steps)
    validation = data_lib.load(
        config.data, tasks_lib.task_specs(config), "validation",
        config.training.batch_size, training=False)
    trainer.fit(
        train, epochs=config.training.epochs, steps_per_epoch=steps,
        initial_epoch=done, validation_data=validation,
        validation_steps=config.training.validation_steps or None,
        callbacks=_callbacks(config, trainer, done),
        # --verbose=2 prints `console.EpochLines` instead of Keras' line.
        verbose=1 if config.runtime.verbose == 1 else 0, shuffle=False)
    steps_trained = int(keras.ops.convert_to_numpy(
        trainer.optimizer.iterations))
    load_best_weights(trainer, config)
    metrics = results.final_metrics(trainer, config)
    epochs = backup.read_history(run_dir.path(config.model_dir,
                                              run_dir.HISTORY_RECORD))
    metrics["steps"] = steps_trained
    metrics["epochs_trained"] = len(epochs)
    metrics["history"] = backup.as_columns(epochs)
    if chief:
        model_dir = config.model_dir
        run_dir.atomic_write(run_dir.path(model_dir, run_dir.MODEL_FILE),
                             trainer.network.save)
        results.save_masks(trainer, run_dir.path(model_dir, run_dir.MASK_FILE))
        run_dir.write_json(run_dir.path(model_dir, run_dir.COST_FILE),
                           results.cost(config))
        run_dir.write_json(run_dir.path(model_dir, run_dir.METRICS_FILE),
                           metrics)
    return metrics
