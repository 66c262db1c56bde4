"""Evaluates a trained run on a split: `python -m ms_keras.evaluate`.

Example:

    python -m ms_keras.evaluate --model_dir=runs/quickstart

Rebuilds the model from --model_dir/config.json, loads the best checkpoint,
prints `{task: {metric: value}}` and writes it to
--model_dir/evaluation_<split>.json.
"""

from ms_keras import quiet_tf  # noqa: F401  (must precede TensorFlow)

import dataclasses
import json

from absl import app
from absl import flags

from ms_keras import data as data_lib
from ms_keras import experiment
from ms_keras import results as outcomes
from ms_keras import flags as ms_flags
from ms_keras import run_dir
from ms_keras import runtime

FLAGS = ms_flags.FLAGS
ms_flags.define_run_flags()
ms_flags.define_data_location_flags()
ms_flags.define_tasks_flag()
flags.DEFINE_enum("split", "test", ["train", "validation", "test"],
                  "Split to evaluate.")


def run_config(model_dir, data=None, verbose=0):
    """The recorded config of the trained run in `model_dir`, checked.

    Args:
        model_dir: a trained run.
        data: data fields replacing the recorded ones (where the files are).
        verbose: Keras progress output.

    Raises:
        ValueError: for a directory without a trained run or unusable data
            files.
    """
    config = experiment.load_config(model_dir, flag="model_dir")
    config = config.replace(
        data=dataclasses.replace(config.data, **(data or {})),
        runtime=dataclasses.replace(config.runtime, verbose=verbose))
    data_lib.check_data_dir(config.data)
    experiment.check_has_checkpoint(config)
    return config


def run(config, split="test", tasks=None):
    """Evaluates the best checkpoint of the run `config` on `split`.

    Args:
        config: the run's ExperimentConfig (`run_config`).
        split: `train`, `validation` or `test`.
        tasks: task names to report (default: all of the run's).

    Returns:
        `{task: {metric: value}, "loss": total}` (the total over all of the
        run's tasks), also written to `<model_dir>/evaluation_<split>.json`.
    """
    trainer = experiment.build_for_evaluation(config)
    results = outcomes.evaluate_split(trainer, config, split)
    if tasks:
        results = {k: v for k, v in results.items()
                   if k in tasks or k == "loss"}
    run_dir.write_json(
        run_dir.path(config.model_dir, f"evaluation_{split}.json"), results)
    return results


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    runtime.start()
    try:
        config = run_config(
            FLAGS.model_dir, verbose=FLAGS.verbose,
            data={name: FLAGS[name].value for name in ("data_dir", "tfds_dir")
                  if ms_flags.set_by_user(name)})
        tasks = experiment.resolve_run_tasks(config, FLAGS.tasks)
    except ValueError as e:
        ms_flags.fail(e)
    print(json.dumps(run(config, FLAGS.split, tasks), indent=2))


if __name__ == "__main__":
    flags.mark_flag_as_required("model_dir")
    app.run(main, flags_parser=ms_flags.parse)
