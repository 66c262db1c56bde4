"""Training-loop flags shared by `train` and `finetune` (`--tasks` is in
`common_flags`)."""

from absl import flags

from ms_keras import common_flags
from ms_keras.training import config as config_lib
from ms_keras.training import experiment

BATCH_SIZE = flags.DEFINE_integer("batch_size", 8, "Examples per batch.")
EPOCHS = flags.DEFINE_integer("epochs", 10, "Maximum number of epochs.")
STEPS_PER_EPOCH = flags.DEFINE_integer(
    "steps_per_epoch", 0, "Optimizer steps per epoch (0: one pass over the "
    "training split).", lower_bound=0)
VALIDATION_STEPS = flags.DEFINE_integer(
    "validation_steps", 0, "Validation batches per epoch (0: all).",
    lower_bound=0)
LEARNING_RATE = flags.DEFINE_float("learning_rate", 1e-3, "Learning rate.")
OPTIMIZER = flags.DEFINE_enum(
    "optimizer", "adam", list(config_lib.OPTIMIZERS), "Optimizer.")
CLIP_NORM = flags.DEFINE_float(
    "clip_norm", 0.0, "Clip the (meta-)gradient of the weights to this "
    "global norm before the optimizer step (0: no clipping).",
    lower_bound=0.0)
LOSS_WEIGHTING = flags.DEFINE_enum(
    "loss_weighting", "uncertainty", ["uncertainty", "equal"],
    "uncertainty: Kendall et al. (Eq. 2); equal: plain sum.")
EARLY_STOPPING_PATIENCE = flags.DEFINE_integer(
    "early_stopping_patience", 5, "Epochs without a better validation loss "
    "before stopping (0: never stop early).", lower_bound=0)
SEED = flags.DEFINE_integer("seed", 0, "Seed of initialisation, shuffling "
                            "and augmentation.")
JIT_COMPILE = flags.DEFINE_boolean(
    "jit_compile", False, "Compile the train step with XLA.")
OVERWRITE = flags.DEFINE_boolean(
    "overwrite", False, "Replace a finished run or another experiment in "
    "--model_dir instead of refusing.")


for _name in ("batch_size", "epochs", "learning_rate"):
    common_flags.register_positive(_name)


def prepare_and_train(build):
    """The end of `train` and `finetune`: configure, check, train.

    Args:
        build: returns `(settings, config)`; raises ValueError for a user
            mistake, which ends the program with one line (exit code 1).
            Preparing the data and claiming `--model_dir` happen in the same
            guarded step, so nothing is trained or written on bad input.

    Returns:
        The metrics written to `metrics.json`.
    """
    try:
        settings, config = build()
        experiment.prepare(config, settings, overwrite=OVERWRITE.value)
    except ValueError as e:
        common_flags.fail(e)
    return experiment.run(config)
