"""Flags every binary shares, and one-line handling of user mistakes.

Mistakes at the command line end as one line on stderr and a non-zero exit
code: flag errors (from validators) exit with 2, bad combinations found while
preparing a run exit with 1. Neither prints a traceback.
"""

import os
import re
import sys

from absl import flags
from absl import logging

FLAGS = flags.FLAGS

MODEL_DIR = flags.DEFINE_string(
    "model_dir", None, "Directory of the run: flags.json, checkpoints, "
    "TensorBoard logs (train/, validation/), metrics.json, exports.")
DATA_DIR = flags.DEFINE_string(
    "data_dir", None, "TFDS data directory for the synthetic datasets "
    "(default: TFDS's own), or the directory with your files for nyu/celeba. "
    "Binaries that read a finished run use it to override the recorded one.")
TASKS = flags.DEFINE_list(
    "tasks", None, "Tasks by number or name, e.g. 1,2,3 or "
    "segmentation,depth. Default: all tasks of the dataset (train), of the "
    "source run (finetune), or of the run (evaluate, export).")
VERBOSE = flags.DEFINE_integer(
    "verbose", 1, "Keras progress output: 0 silent, 1 progress bar, "
    "2 one line per epoch.", lower_bound=0, upper_bound=2)


def register_positive(name):
    """Validator: the flag, when set, must be > 0."""
    flags.register_validator(name, lambda v: v is None or v > 0,
                             message="must be positive")


def parse_ints(values, name):
    """A list flag's values as ints, or a ValidationError naming the flag."""
    try:
        return tuple(int(v) for v in values)
    except ValueError:
        raise flags.ValidationError(
            f"--{name}={','.join(values)}: expected integers") from None


def register_positive_ints(name, count=None, expected="positive integers"):
    """Validator: a list flag of positive integers (exactly `count` if set)."""
    def check(values):
        ints = parse_ints(values, name)
        if not ints or min(ints) <= 0 or (count and len(ints) != count):
            raise flags.ValidationError(
                f"--{name}={','.join(values)}: expected {expected}")
        return True
    flags.register_validator(name, check)


def program_name():
    return os.path.basename(sys.argv[0]) if sys.argv else "ms_keras"


def parse_flags(argv):
    """absl flags parser that reports a bad flag in one line (exit code 2).

    Unless `--verbosity` is given, library INFO logs (TFDS prints several per
    dataset access) are hidden so that Keras' progress output stays readable.
    """
    try:
        remaining = FLAGS(argv)
    except flags.Error as e:
        # Multi-flag validators get every checked value prepended; their
        # messages name the offending flag themselves.
        message = re.sub(r"^flags .*?: (?=--)", "", str(e), count=1)
        sys.stderr.write(f"{program_name()}: error: {message}\n")
        sys.exit(2)
    if not FLAGS["verbosity"].present:
        logging.set_verbosity(logging.ERROR)
    return remaining


def fail(error):
    """Ends the program with a one-line message (exit code 1)."""
    sys.stderr.write(f"{program_name()}: error: {error}\n")
    sys.exit(1)


def flag_values(module_names):
    """`{flag: value}` of the flags defined by the given modules."""
    values = {}
    for module in module_names:
        for flag in FLAGS.get_flags_for_module(module):
            values[flag.name] = flag.value
    return values
