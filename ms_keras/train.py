"""Trains a (sparse) multi-task model: `python -m ms_keras.train`.

Examples:

    python -m ms_keras.train --flagfile=flags/quickstart.cfg
    python -m ms_keras.train --dataset=nyu --tasks=1,2,3

Writes config.json, checkpoints, TensorBoard logs, model.keras,
sparsity_mask.npz and metrics.json (test metrics) into --model_dir (default:
a new directory under runs/, printed at the start).
"""

from ms_keras import quiet_tf  # noqa: F401  (must precede TensorFlow)

from absl import app

from ms_keras import flag_config
from ms_keras import flags as ms_flags
from ms_keras import launch

FLAGS = ms_flags.FLAGS
ms_flags.define_run_flags()
ms_flags.define_data_flags()
ms_flags.define_model_flags()
ms_flags.define_training_flags()
ms_flags.define_experiment_flags()
ms_flags.define_pruning_flags()


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    launch.train_and_report(flag_config.experiment_config, FLAGS.overwrite)


if __name__ == "__main__":
    app.run(main, flags_parser=ms_flags.parse_with_config)
