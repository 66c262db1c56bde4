"""One experiment end to end: data, model, training, test metrics, artifacts.

The binaries turn flags into an `ExperimentConfig` and call `run`; nothing
here reads flags.
"""

import dataclasses
import os

import keras
from absl import logging

from ms_keras import data as data_lib
from ms_keras import metrics as metrics_lib
from ms_keras import tasks as tasks_lib
from ms_keras.models import build_multitask_model
from ms_keras.models.heads import DEFAULT_ASPP_RATES
from ms_keras.training import artifacts
from ms_keras.training.callbacks import AtomicBestCheckpoint
from ms_keras.training.multitask_trainer import MultiTaskTrainer

MODES = ("stl", "mtl")
OPTIMIZERS = ("adam", "sgd")

# ExperimentConfig fields stored under the same name in flags.json.
SETTING_FIELDS = (
    "mode", "backbone", "activation", "head_filters", "batch_size", "epochs",
    "steps_per_epoch", "validation_steps", "learning_rate", "optimizer",
    "loss_weighting", "early_stopping_patience", "seed", "jit_compile")


@dataclasses.dataclass(frozen=True)
class ExperimentConfig:
    """Everything that defines a training run.

    Attributes:
        data: where the examples come from (`data.DataConfig`).
        tasks: task names, in order.
        mode: `stl` (one task) or `mtl`.
        backbone: backbone name.
        activation: `relu` or `gelu`.
        head_filters: head width (0: the backbone's default).
        aspp_rates: ASPP dilation rates.
        batch_size: examples per batch.
        epochs: maximum number of epochs.
        steps_per_epoch: optimizer steps per epoch (0: one pass over train).
        validation_steps: validation batches per epoch (0: the whole split).
        learning_rate: optimizer learning rate.
        optimizer: `adam` or `sgd`.
        loss_weighting: `uncertainty` or `equal`.
        early_stopping_patience: epochs without validation improvement before
            stopping (0 disables early stopping).
        seed: seed of initialisation, shuffling and augmentation.
        model_dir: where artifacts go.
        jit_compile: compile the train step with XLA.
        verbose: Keras progress output (0 silent, 1 progress bar, 2 a line
            per epoch).
    """

    data: data_lib.DataConfig
    tasks: tuple
    model_dir: str
    mode: str = "mtl"
    backbone: str = "resnet_tiny"
    activation: str = "relu"
    head_filters: int = 0
    aspp_rates: tuple = DEFAULT_ASPP_RATES
    batch_size: int = 8
    epochs: int = 10
    steps_per_epoch: int = 0
    validation_steps: int = 0
    learning_rate: float = 1e-3
    optimizer: str = "adam"
    loss_weighting: str = "uncertainty"
    early_stopping_patience: int = 5
    seed: int = 0
    jit_compile: bool = False
    verbose: int = 1

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(
                f"`mode` must be one of {MODES}. Received: mode={self.mode}")
        if self.mode == "stl" and len(self.tasks) != 1:
            raise ValueError(
                "--mode=stl trains one task; got "
                f"{len(self.tasks)} (tasks={','.join(self.tasks)}).")
        for name in ("batch_size", "epochs"):
            if getattr(self, name) <= 0:
                raise ValueError(
                    f"--{name} must be positive. Received: "
                    f"{name}={getattr(self, name)}")
        for name in ("steps_per_epoch", "validation_steps",
                     "early_stopping_patience", "head_filters"):
            if getattr(self, name) < 0:
                raise ValueError(
                    f"--{name} must be >= 0. Received: "
                    f"{name}={getattr(self, name)}")
        if self.learning_rate <= 0:
            raise ValueError(
                "--learning_rate must be positive. Received: "
                f"learning_rate={self.learning_rate}")

    @property
    def task_specs(self):
        return tasks_lib.parse_tasks(self.data.spec, self.tasks)


def build_network(config):
    """The multi-task network of `config`."""
    return build_multitask_model(
        config.data.spec, config.task_specs, config.backbone,
        config.data.image_size, activation=config.activation,
        head_filters=config.head_filters or None,
        aspp_rates=config.aspp_rates)


def build_optimizer(config):
    if config.optimizer == "sgd":
        return keras.optimizers.SGD(config.learning_rate, momentum=0.9)
    return keras.optimizers.Adam(config.learning_rate)


def build_trainer(config):
    """A compiled trainer for `config` (weights freshly initialised)."""
    keras.utils.set_random_seed(config.seed)
    trainer = MultiTaskTrainer(build_network(config), config.task_specs,
                               config.loss_weighting)
    trainer.compile(optimizer=build_optimizer(config),
                    jit_compile=config.jit_compile)
    trainer(keras.ops.zeros((1, *config.data.image_size, 3)))
    return trainer


def _steps_per_epoch(config):
    if config.steps_per_epoch:
        return config.steps_per_epoch
    train = data_lib.num_examples(config.data, "train")
    return max(1, train // config.batch_size)


def _callbacks(config):
    model_dir = config.model_dir
    callbacks = [
        keras.callbacks.BackupAndRestore(
            os.path.join(model_dir, artifacts.BACKUP_DIR)),
        AtomicBestCheckpoint(os.path.join(model_dir, artifacts.BEST_WEIGHTS)),
        keras.callbacks.TensorBoard(log_dir=model_dir, write_graph=False),
    ]
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
    return {
        "test": evaluate_split(trainer, config, "test"),
        "sparsity": None,
        "lambda": None,
    }


def prepare(config, settings, overwrite=False):
    """Checks the user-facing inputs and claims `model_dir`; trains nothing.

    Raises:
        ValueError: for a missing real-data directory or a `model_dir` that
            holds another experiment or a finished run (see
            `artifacts.claim_model_dir`).
    """
    data_lib.check_data_dir(config.data)
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
    train = data_lib.load(config.data, config.task_specs, "train",
                          config.batch_size, training=True, seed=config.seed)
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
    artifacts.write_json(os.path.join(config.model_dir, artifacts.METRICS_FILE),
                         metrics)
    return metrics

