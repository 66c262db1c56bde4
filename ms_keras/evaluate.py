"""Evaluates a trained run on a split: `python -m ms_keras.evaluate`.

Example:

    python -m ms_keras.evaluate --model_dir=/tmp/q

Rebuilds the model from --model_dir/flags.json, loads the best checkpoint,
prints `{task: {metric: value}}` and writes it to
--model_dir/evaluation_<split>.json.
"""

from ms_keras import quiet_tf  # noqa: F401  (must precede TensorFlow)

import json
import os

from absl import app
from absl import flags

from ms_keras import common_flags
from ms_keras import data as data_lib
from ms_keras.training import artifacts
from ms_keras.training import experiment
from ms_keras.training import run_config

SPLIT = flags.DEFINE_enum(
    "split", "test", ["train", "validation", "test"], "Split to evaluate.")


def evaluate(config, split="test", tasks=None):
    """Evaluates the best checkpoint of the run `config` on `split`.

    Args:
        config: the run's ExperimentConfig.
        split: `train`, `validation` or `test`.
        tasks: task names to report (default: all of the run's).

    Returns:
        `{task: {metric: value}, "loss": total}` (the total over all of the
        run's tasks), also written to `<model_dir>/evaluation_<split>.json`.
    """
    trainer = experiment.build_for_evaluation(config)
    results = experiment.evaluate_split(trainer, config, split)
    if tasks:
        results = {k: v for k, v in results.items()
                   if k in tasks or k == "loss"}
    artifacts.write_json(
        os.path.join(config.model_dir, f"evaluation_{split}.json"),
                         results)
    return results


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    model_dir = common_flags.MODEL_DIR.value
    if not model_dir:
        common_flags.fail("--model_dir is required.")
    try:
        config = run_config.load(model_dir, data_dir=common_flags.DATA_DIR.value,
                                 verbose=common_flags.VERBOSE.value)
        data_lib.check_data_dir(config.data)
        experiment.check_has_checkpoint(config)
        tasks = run_config.resolve_tasks(config, common_flags.TASKS.value)
    except ValueError as e:
        common_flags.fail(e)
    results = evaluate(config, SPLIT.value, tasks)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    app.run(main, flags_parser=common_flags.parse_flags)
