"""Meta-testing: fine-tunes a finished run, keeping its sparsity pattern.

`python -m ms_keras.finetune --from_dir=<run> [--model_dir=<new run>]`

The paper's three meta-testing settings (section 4):

    # (i) the meta-training tasks again
    python -m ms_keras.finetune --from_dir=runs/meta_t123 --model_dir=runs/ft
    # (ii) add a task and train only its head
    python -m ms_keras.finetune --from_dir=runs/meta_t123 --tasks=1,2,3,4 \
        --train_scope=new_heads --model_dir=runs/ft_new
    # (iii) add a task and train everything
    python -m ms_keras.finetune --from_dir=runs/meta_t123 --tasks=1,2,3,4 \
        --model_dir=runs/ft_all

The config derives from the source run's (`config.for_finetuning`): data and
model as there, the training-loop flags you give replace the source's; the
backbone and the heads of shared tasks start from its best weights, and every
zero of its backbone stays zero. Writes the same artifacts as `train`.
"""

from ms_keras import quiet_tf  # noqa: F401  (must precede TensorFlow)

import os

from absl import app
from absl import flags

from ms_keras import config as config_lib
from ms_keras import experiment
from ms_keras import flag_config
from ms_keras import flags as ms_flags
from ms_keras import launch
from ms_keras import tasks as tasks_lib

FLAGS = ms_flags.FLAGS
ms_flags.define_run_flags()
ms_flags.define_data_location_flags()
ms_flags.define_training_flags()
ms_flags.define_finetune_flags()


def finetune_config(from_dir, model_dir, train_scope, tasks=None,
                    training=None, data=None, runtime=None):
    """The fine-tuning run's config, checked.

    Args:
        from_dir: the finished source run.
        model_dir: the new run's directory (None: a new one under runs/).
        train_scope: `all` or `new_heads`.
        tasks: `--tasks` values, or None for the source's tasks.
        training: training fields to replace.
        runtime: runtime fields to replace.
        data: data fields to replace (where the files are).

    Raises:
        ValueError: for an unusable source run, tasks outside its dataset, or
            `new_heads` without a new task.
    """
    source = experiment.load_config(from_dir, require_finished=True,
                                    flag="from_dir")
    names = (None if tasks is None else flag_config.resolve_tasks(
        tasks_lib.dataset_spec(source.data), tasks))
    config = config_lib.for_finetuning(
        source, model_dir or flag_config.new_run_dir(source.data.dataset,
                                                  "finetune"),
        config_lib.TransferConfig(os.path.abspath(from_dir), train_scope),
        tasks=names, training=training, data=data, runtime=runtime)
    if train_scope == "new_heads" and not set(config.tasks) - set(
            source.tasks):
        raise ValueError(
            f"--train_scope=new_heads: --tasks={','.join(config.tasks)} adds "
            f"no task to the source run's ({','.join(source.tasks)}).")
    return config


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    launch.train_and_report(lambda: finetune_config(
        FLAGS.from_dir, FLAGS.model_dir, FLAGS.train_scope, FLAGS.tasks,
        training=ms_flags.given(config_lib.TrainingConfig),
        runtime=ms_flags.given(config_lib.RuntimeConfig),
        data={name: FLAGS[name].value for name in ("data_dir", "tfds_dir")
              if ms_flags.set_by_user(name)}), FLAGS.overwrite)


if __name__ == "__main__":
    flags.mark_flag_as_required("from_dir")
    app.run(main, flags_parser=ms_flags.parse)
