"""Meta-testing: fine-tunes a finished run, keeping its sparsity pattern.

`python -m ms_keras.finetune --from_dir=<run> --model_dir=<new run>`

The paper's three meta-testing settings (section 4):

    # (i) the meta-training tasks again
    python -m ms_keras.finetune --from_dir=runs/meta_t123 --model_dir=runs/ft
    # (ii) add a task and train only its head
    python -m ms_keras.finetune --from_dir=runs/meta_t123 --tasks=1,2,3,4 \
        --train_scope=new_heads --model_dir=runs/ft_new
    # (iii) add a task and train everything
    python -m ms_keras.finetune --from_dir=runs/meta_t123 --tasks=1,2,3,4 \
        --model_dir=runs/ft_all

Data and model settings come from the source run's flags.json; the backbone
and the heads of shared tasks start from its best weights, and every zero of
its backbone stays zero. Writes the same artifacts as `train`.
"""

from ms_keras import quiet_tf  # noqa: F401  (must precede TensorFlow)

import json

from absl import app
from absl import flags

from ms_keras import common_flags
from ms_keras import training_flags
from ms_keras.training import run_config

FROM_DIR = flags.DEFINE_string(
    "from_dir", None, "The finished (meta-)training run to start from.")
TRAIN_SCOPE = flags.DEFINE_enum(
    "train_scope", "all", ["all", "new_heads"],
    "all: train backbone and every head (sparsity pattern kept); new_heads: "
    "train only the heads of tasks the source run did not have.")


def _given_training_flags():
    """Training-loop flags the user set (the rest come from the source)."""
    values = common_flags.flag_values([training_flags.__name__])
    values["tasks"] = common_flags.TASKS.value
    flag = common_flags.FLAGS
    given = {name: value for name, value in values.items()
             if flag[name].present or value != flag[name].default}
    given.pop("overwrite", None)
    return given


def build_settings(from_dir, model_dir, data_dir, train_scope, verbose):
    """Resolves the fine-tuning run's settings and checks them.

    Raises:
        ValueError: for an unusable source run, tasks outside its dataset, or
            `new_heads` without a new task.
    """
    overrides = {**_given_training_flags(), "model_dir": model_dir,
                 "data_dir": data_dir, "train_scope": train_scope,
                 "verbose": verbose}
    try:
        settings = run_config.finetune_settings(from_dir, overrides)
    except ValueError as e:
        raise ValueError(f"--from_dir={e}") from None
    config = run_config.from_settings(settings)
    if train_scope == "new_heads":
        source = run_config.from_settings(run_config.read_settings(from_dir))
        new = [t for t in config.tasks if t not in source.tasks]
        if not new:
            raise ValueError(
                f"--train_scope=new_heads: --tasks={','.join(config.tasks)} "
                f"adds no task to the source run's "
                f"({','.join(source.tasks)}).")
    return settings, config


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    for name in ("from_dir", "model_dir"):
        if not common_flags.FLAGS[name].value:
            common_flags.fail(f"--{name} is required.")
    metrics = training_flags.prepare_and_train(lambda: build_settings(
        FROM_DIR.value, common_flags.MODEL_DIR.value,
        common_flags.DATA_DIR.value, TRAIN_SCOPE.value,
        common_flags.VERBOSE.value))
    print(json.dumps({"test": metrics["test"]}, indent=2))


if __name__ == "__main__":
    app.run(main, flags_parser=common_flags.parse_flags)
