"""What the training binaries share: start or resume a run, train it, print
its summary; bad input and a non-finite loss end in one line."""

import sys

from ms_keras import console
from ms_keras import experiment
from ms_keras import flags as ms_flags
from ms_keras.trainers import safety


def train_and_report(make_config, overwrite):
    """Runs the experiment `make_config()` describes and prints its result.

    Args:
        make_config: returns the `ExperimentConfig` (raises ValueError on a
            bad combination, which becomes the one-line failure).
        overwrite: whether an existing run directory may be replaced.
    """
    try:
        config = make_config()
        strategy, resume = experiment.start(config, overwrite)
    except ValueError as e:
        ms_flags.fail(e)
    print(f"Run directory: {config.model_dir}", flush=True)
    for note in resume.skipped:
        print(f"warning: {note}", file=sys.stderr, flush=True)
    if resume.epoch:
        print(f"resumed from epoch {resume.epoch}", flush=True)
    try:
        metrics = experiment.run(config, strategy)
    except safety.NonFiniteError as e:
        ms_flags.fail(e)
    print(console.summary(metrics, config), flush=True)
