"""One experiment end to end: data, model, training, test metrics, artifacts.

The binaries turn flags into an `ExperimentConfig` and call `run`; nothing
here reads flags.
"""

import os

import keras
import numpy as np
from absl import logging

from ms_keras import data as data_lib
from ms_keras import metrics as metrics_lib
from ms_keras.meta import episodes as episodes_lib
from ms_keras.meta.trainer import MetaSparsityTrainer
from ms_keras.models import backbone_of
from ms_keras.models import build_multitask_model
from ms_keras.sparsity import callbacks as sparsity_callbacks
from ms_keras.sparsity.lam import SparsityStrength
from ms_keras.sparsity.stats import SparsityMeter
from ms_keras.training import artifacts
from ms_keras.training.callbacks import AtomicBestCheckpoint
from ms_keras.training.multitask_trainer import MultiTaskTrainer

def build_network(config):
    """The multi-task network of `config`."""
    return build_multitask_model(
        config.data.spec, config.task_specs, config.backbone,
        config.data.image_size, activation=config.activation,
        head_filters=config.head_filters or None,
        aspp_rates=config.aspp_rates)


def build_optimizer(config, learning_rate=None):
    """The (outer) optimizer; `learning_rate` overrides the config's."""
    learning_rate = learning_rate or config.learning_rate
    clip = {"global_clipnorm": config.clip_norm} if config.clip_norm else {}
    if config.optimizer == "sgd":
        return keras.optimizers.SGD(learning_rate, momentum=0.9, **clip)
    return keras.optimizers.Adam(learning_rate, **clip)


def build_lambda(config):
    """The run's SparsityStrength, or None for a dense run."""
    if not config.sparse:
        return None
    if config.learns_lambda:
        return SparsityStrength(config.lambda_init, beta=config.lambda_beta,
                                learnable=True, seed=config.seed, name="lam")
    return SparsityStrength(config.lam, beta=config.lambda_beta,
                            learnable=False, name="lam")


def transfer_from(network, source_dir, train_scope):
    """Starts `network` from a finished run (meta-testing).

    Copies the source's backbone and the heads of the tasks both have; with
    `train_scope="new_heads"` those copied parts are frozen, so only the
    heads of new tasks train.

    Returns:
        The names of the copied heads' tasks.
    """
    source = keras.saving.load_model(
        os.path.join(source_dir, artifacts.MODEL_FILE))
    backbone_of(network).set_weights(backbone_of(source).get_weights())
    shared = []
    for layer in network.layers:
        if layer.name.startswith("head_") and layer.name in {
                l.name for l in source.layers}:
            layer.set_weights(source.get_layer(layer.name).get_weights())
            shared.append(layer.name[len("head_"):])
    if train_scope == "new_heads":
        backbone_of(network).trainable = False
        for task in shared:
            network.get_layer(f"head_{task}").trainable = False
    return shared


def build_trainer(config):
    """A compiled, built trainer for `config`.

    Weights are freshly initialised, or start from `config.init_from`.
    """
    keras.utils.set_random_seed(config.seed)
    network = build_network(config)
    if config.init_from:
        transfer_from(network, config.init_from, config.train_scope)
    lam = build_lambda(config)
    if config.mode == "meta":
        trainer = MetaSparsityTrainer(
            network, config.task_specs, config.loss_weighting,
            sparsity=config.sparsity, lam=lam,
            inner_steps=config.inner_steps, inner_lr=config.inner_lr,
            first_order=config.first_order, inner_prox=config.inner_prox,
            regrow_prob=config.regrow_prob,
            inner_clip_norm=config.inner_clip_norm, seed=config.seed)
        lambda_optimizer = (build_optimizer(config, config.lambda_lr)
                            if config.learns_lambda else None)
        trainer.compile(optimizer=build_optimizer(config),
                        lambda_optimizer=lambda_optimizer,
                        jit_compile=config.jit_compile)
    else:
        trainer = MultiTaskTrainer(network, config.task_specs,
                                   config.loss_weighting, lam=lam)
        trainer.compile(optimizer=build_optimizer(config),
                        jit_compile=config.jit_compile)
    trainer(keras.ops.zeros((1, *config.data.image_size, 3)))
    return trainer


def training_batches(config):
    """The training stream: plain batches, or meta-batches of episodes.

    Meta-batches draw support and query batches from disjoint halves of the
    training split.
    """
    if config.mode != "meta":
        return data_lib.load(config.data, config.task_specs, "train",
                             config.batch_size, training=True,
                             seed=config.seed)
    support = data_lib.load(config.data, config.task_specs, "train[:50%]",
                            config.batch_size, training=True,
                            seed=config.seed)
    query = data_lib.load(config.data, config.task_specs, "train[50%:]",
                          config.batch_size, training=True,
                          seed=config.seed + 1)
    table = episodes_lib.episode_table(config.episode_sampler,
                                       len(config.tasks))
    return episodes_lib.meta_batches(support, query, table,
                                     config.meta_batch_size, config.seed)


def _steps_per_epoch(config):
    if config.steps_per_epoch:
        return config.steps_per_epoch
    train = data_lib.num_examples(config.data, "train")
    if config.mode == "meta":
        # One pass over the support half.
        return max(1, train // 2 // (config.batch_size *
                                     config.meta_batch_size))
    return max(1, train // config.batch_size)


def _callbacks(config):
    model_dir = config.model_dir
    callbacks = [
        keras.callbacks.BackupAndRestore(
            os.path.join(model_dir, artifacts.BACKUP_DIR)),
        AtomicBestCheckpoint(os.path.join(model_dir, artifacts.BEST_WEIGHTS)),
    ]
    if config.init_from:
        masks = np.load(os.path.join(config.init_from, artifacts.MASK_FILE))
        callbacks.append(sparsity_callbacks.KeepSparsityPattern(
            {name: masks[name] for name in masks.files}))
    if config.sparse:
        callbacks.append(sparsity_callbacks.ProximalGroupLasso(
            config.sparsity))
        callbacks.append(sparsity_callbacks.SparsitySummaries(
            model_dir, config.sparsity_log_steps))
    # Last, so that it records what the callbacks above add to the logs.
    callbacks.append(keras.callbacks.TensorBoard(log_dir=model_dir,
                                                 write_graph=False))
    if config.early_stopping_patience:
        callbacks.append(keras.callbacks.EarlyStopping(
            monitor="val_loss", patience=config.early_stopping_patience))
    return callbacks


def evaluate_split(trainer, config, split):
    """Runs `trainer` over a whole split; returns `{task: {metric: v}}`."""
    batches = data_lib.load(config.data, config.task_specs, split,
                            config.batch_size, training=False)
    logs = trainer.evaluate(batches, verbose=0, return_dict=True)
    grouped = metrics_lib.group_results(logs, trainer.task_names)
    grouped["loss"] = float(logs["loss"])
    return grouped


def check_has_checkpoint(config):
    """Raises ValueError unless the run has a best checkpoint."""
    path = os.path.join(config.model_dir, artifacts.BEST_WEIGHTS)
    if not os.path.exists(path):
        raise ValueError(
            f"--model_dir={config.model_dir} has no checkpoint "
            f"({artifacts.BEST_WEIGHTS}); train it first.")


def load_best_weights(trainer, config):
    """Loads the run's best checkpoint into a (built) trainer."""
    check_has_checkpoint(config)
    if not trainer.optimizer.built:
        # The checkpoint holds optimizer slots; give them somewhere to go.
        trainer.optimizer.build(trainer.trainable_variables)
    trainer.load_weights(os.path.join(config.model_dir,
                                      artifacts.BEST_WEIGHTS))


def build_for_evaluation(config):
    """A trainer with the run's best weights, ready for `evaluate`."""
    trainer = build_trainer(config)
    load_best_weights(trainer, config)
    return trainer


def final_metrics(trainer, config):
    """The `metrics.json` payload: test metrics, sparsity and lambda."""
    lam = getattr(trainer, "lam", None)
    metrics = {
        "test": evaluate_split(trainer, config, "test"),
        "sparsity": SparsityMeter(backbone_of(trainer.network)).measure(),
        "lambda": None if lam is None else float(lam.value()),
    }
    if config.init_from:
        source = artifacts.read_json(os.path.join(config.init_from,
                                                  artifacts.METRICS_FILE))
        metrics["init_from"] = {"model_dir": config.init_from,
                                "lambda": source["lambda"],
                                "tasks": sorted(set(source["test"]) - {"loss"}),
                                "train_scope": config.train_scope}
    return metrics


def save_masks(trainer, path):
    """Writes `{conv name: bool kernel mask}` of the backbone to an .npz."""
    masks = SparsityMeter(backbone_of(trainer.network)).masks()

    def write(tmp):
        with open(tmp, "wb") as f:
            np.savez_compressed(f, **masks)

    artifacts.atomic_write(path, write)


def prepare(config, settings, overwrite=False):
    """Checks the user-facing inputs and claims `model_dir`; trains nothing.

    Raises:
        ValueError: for a missing real-data directory or a `model_dir` that
            holds another experiment or a finished run (see
            `artifacts.claim_model_dir`).
    """
    artifacts.check_model_dir(config.model_dir, settings, overwrite)
    # Prepares the examples now: unusable files are reported before anything
    # is written into model_dir.
    data_lib.builder(config.data)
    resuming = artifacts.claim_model_dir(config.model_dir, settings,
                                         overwrite=overwrite)
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
                               config.batch_size, training=False)
    history = trainer.fit(
        train, epochs=config.epochs, steps_per_epoch=_steps_per_epoch(config),
        validation_data=validation,
        validation_steps=config.validation_steps or None,
        callbacks=_callbacks(config), verbose=config.verbose, shuffle=False)
    load_best_weights(trainer, config)
    metrics = final_metrics(trainer, config)
    metrics["epochs_trained"] = len(history.epoch)
    metrics["history"] = {k: [float(v) for v in values]
                          for k, values in history.history.items()}
    artifacts.atomic_write(os.path.join(config.model_dir, artifacts.MODEL_FILE),
                           trainer.network.save)
    save_masks(trainer, os.path.join(config.model_dir, artifacts.MASK_FILE))
    artifacts.write_json(os.path.join(config.model_dir, artifacts.METRICS_FILE),
                         metrics)
    return metrics

