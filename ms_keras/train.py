"""Trains a (sparse) multi-task model: `python -m ms_keras.train`.

Example:

    python -m ms_keras.train --flagfile=flags/quickstart.cfg --model_dir=/tmp/q

Writes flags.json, checkpoints, TensorBoard logs, model.keras and
metrics.json (test metrics) into --model_dir.
"""

from ms_keras import quiet_tf  # noqa: F401  (must precede TensorFlow)

import json

from absl import app

from ms_keras import common_flags
from ms_keras import experiment_flags
from ms_keras import training_flags
from ms_keras.training import run_config

_FLAG_MODULES = (common_flags.__name__, training_flags.__name__,
                 experiment_flags.__name__)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    if not common_flags.MODEL_DIR.value:
        common_flags.fail("--model_dir is required.")
    settings = common_flags.flag_values(_FLAG_MODULES)
    metrics = training_flags.prepare_and_train(
        lambda: (settings, run_config.from_settings(settings)))
    print(json.dumps({"test": metrics["test"]}, indent=2))


if __name__ == "__main__":
    app.run(main, flags_parser=common_flags.parse_flags)
