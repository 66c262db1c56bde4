"""Command-line flags of the binaries, generated from the config's fields.

Every field of a config section (`ms_keras.config`) is a flag of the same
name (or its `flag` metadata), with the field's default, help and allowed
values; a binary defines the sections it honours (`define_*_flags`), so it
accepts no flag that would do nothing. Beside them, a few flags choose which
sections a run has (`--mode`, `--sparsity`, `--pruning`, `--from_dir`).

`parse_with_config` also takes `--config=run.json` and dotted overrides
`--section.field=value` out of the command line (`flag_config` applies
them).

Mistakes at the command line end as one line on stderr and a non-zero exit
code: flag errors (validators) exit with 2, problems found while preparing a
run (tasks against the dataset, the data files, the run directory) with 1.
Neither prints a traceback.
"""

import dataclasses
import os
import re
import sys

from absl import flags
from absl import logging

from ms_keras import config as config_lib
from ms_keras import flag_checks as checks
from ms_keras import tasks as tasks_lib
from ms_keras.config import schema
from ms_keras.models import BACKBONES

FLAGS = flags.FLAGS
RUNS_DIR = "runs"

_DEFINED = set()
# What `parse` took out of the command line before absl saw it.
_EXTRA = {"config": None, "overrides": []}


def config_arguments():
    """`(--config file or None, [section.field=value, ...])` that
    `parse_with_config` took out of the command line."""
    return _EXTRA["config"], list(_EXTRA["overrides"])
# Registered names a field must be one of (the config leaves them to the
# registries).
_REGISTERED = {"dataset": lambda: tasks_lib.DATASET_NAMES,
               "backbone": lambda: tuple(BACKBONES)}


def _once(define):
    """Defines a concern's flags once per process (binaries share them)."""
    def wrapper():
        if define.__name__ not in _DEFINED:
            _DEFINED.add(define.__name__)
            define()
    wrapper.__doc__ = define.__doc__
    wrapper.__name__ = define.__name__
    return wrapper


class _IntListParser(flags.ListParser):
    """A comma-separated list of integers."""

    def parse(self, argument):
        values = super().parse(argument)
        try:
            return [int(v) for v in values]
        except ValueError:
            raise ValueError("expected integers") from None

    def flag_type(self):
        return "comma separated list of integers"


def define_int_list(name, default, help_text):
    """A `--name=1,2,3` flag whose value is a list of ints."""
    return flags.DEFINE(_IntListParser(), name, default, help_text,
                        serializer=flags.CsvListSerializer(","))


def _define_field(field):
    """The flag of one config field (once, whichever section asks first)."""
    name = schema.flag_name(field)
    if name in FLAGS:
        return
    kind, is_list = schema.base_type(field)
    default, text = field.default, field.metadata[schema.HELP]
    choices = field.metadata.get(schema.CHOICES)
    if name in _REGISTERED:
        choices = _REGISTERED[name]()
    if is_list:
        define_int_list(name, list(default), text)
    elif choices:
        flags.DEFINE_enum(name, default, list(choices), text)
    elif kind is bool:
        flags.DEFINE_boolean(name, default, text)
    elif kind is int:
        flags.DEFINE_integer(name, default, text)
    elif kind is float:
        flags.DEFINE_float(name, default, text)
    else:
        flags.DEFINE_string(name, default, text)


def _section_flags(cls, skip=()):
    """Defines a flag per field of section `cls`; returns their names."""
    names = []
    for field in dataclasses.fields(cls):
        if field.name not in skip:
            _define_field(field)
            names.append(schema.flag_name(field))
    return names


def _section_validator(names, build):
    """Runs `build(values)` (a config section) when the flags are parsed,
    unless `--config` gives sections the flags alone do not show."""
    def check(values):
        if _EXTRA["config"] or _EXTRA["overrides"]:
            return True
        try:
            build(values)
        except ValueError as e:
            raise flags.ValidationError(str(e)) from None
        return True
    flags.register_multi_flags_validator(list(names), check)


def set_by_user(name):
    """Whether the user gave `--name` (on the command line, in a flagfile,
    or by assignment, as `flagsaver` does)."""
    return FLAGS[name].present or not FLAGS[name].using_default_value


def given(cls, skip=()):
    """`{field: value}` of `cls`'s fields whose flag the user set."""
    return {f.name: FLAGS[schema.flag_name(f)].value
            for f in dataclasses.fields(cls)
            if f.name not in skip and schema.flag_name(f) in FLAGS
            and set_by_user(schema.flag_name(f))}


# Concerns ---------------------------------------------------------------


@_once
def define_run_flags():
    """--model_dir, --overwrite, --verbose."""
    flags.DEFINE_string(
        "model_dir", None, "Directory of the run: config.json, checkpoints, "
        "TensorBoard logs (train/, validation/), metrics.json. Training "
        f"binaries default to a new directory under {RUNS_DIR}/.")
    flags.DEFINE_boolean(
        "overwrite", False, "Replace a finished run or another experiment in "
        "--model_dir instead of refusing.")
    _define_field(config_lib.section_fields("runtime")["verbose"])


@_once
def define_tasks_flag():
    """--tasks."""
    flags.DEFINE_list(
        "tasks", None, "Tasks by number or name, e.g. 1,2,3 or "
        "segmentation,depth. Default: all tasks of the dataset (train), of "
        "the source run (finetune), or of the run (evaluate, export).")


@_once
def define_data_location_flags():
    """--data_dir, --tfds_dir: where the files are."""
    fields = config_lib.section_fields("data")
    _define_field(fields["data_dir"])
    _define_field(fields["tfds_dir"])


@_once
def define_data_flags():
    """The dataset: --dataset, --image_size, --segmentation_classes, ..."""
    define_tasks_flag()
    names = _section_flags(config_lib.DataConfig)
    _section_validator(names, lambda v: tasks_lib.dataset_spec(
        checks.fields_of(config_lib.DataConfig, v)))


@_once
def define_model_flags():
    """The network: --backbone, --activation, --head_filters, ..."""
    names = _section_flags(config_lib.ModelConfig)
    _section_validator(names, lambda v: checks.fields_of(config_lib.ModelConfig, v))


@_once
def define_runtime_flags():
    """How a run executes: --strategy, --jit_compile, --deterministic, ..."""
    define_run_flags()
    names = _section_flags(config_lib.RuntimeConfig)
    _section_validator(names, lambda v: checks.fields_of(config_lib.RuntimeConfig, v))


@_once
def define_training_flags():
    """The training loop: --batch_size, --epochs, --learning_rate, ..."""
    define_tasks_flag()
    define_runtime_flags()
    names = _section_flags(config_lib.TrainingConfig)
    _section_validator(names, lambda v: checks.fields_of(config_lib.TrainingConfig,
                                                v))


@_once
def define_experiment_flags():
    """What is trained: --mode, --sparsity, lambda, meta-learning."""
    flags.DEFINE_enum(
        "mode", "meta", list(config_lib.MODES),
        "meta: meta-sparsity, MAML over multi-task episodes with a sparse "
        "backbone (Alg. 3); mtl: all --tasks jointly (Alg. 1); stl: one "
        "task.")
    kind = config_lib.section_fields("sparsity")["kind"]
    flags.DEFINE_enum("sparsity", None,
                      [config_lib.NONE, *config_lib.SPARSITY_KINDS],
                      kind.metadata[schema.HELP])
    sparsity = _section_flags(config_lib.SparsityConfig, skip=("kind",))
    meta = _section_flags(config_lib.MetaConfig)
    _section_validator(
        ["mode", "sparsity", *sparsity],
        lambda v: checks.sparsity_kind(v) == "none" or checks.fields_of(
            config_lib.SparsityConfig, v, kind=checks.sparsity_kind(v)))
    _section_validator(
        ["mode", "sparsity", "tasks", "dataset", "lam", *sparsity, *meta],
        checks.check_meta)


@_once
def define_transfer_flags():
    """--from_dir: a finished run to start from."""
    _define_field(config_lib.section_fields("transfer")["from_dir"])


@_once
def define_pruning_flags():
    """Pruning baselines: --pruning, --pruning_mask, the budget, schedules."""
    define_transfer_flags()
    method = config_lib.section_fields("pruning")["method"]
    flags.DEFINE_enum("pruning", "none",
                      ["none", *config_lib.PRUNING_METHODS],
                      method.metadata[schema.HELP])
    names = _section_flags(config_lib.PruningConfig, skip=("method",))

    def check(values):
        if not checks.prunes(values):
            return
        if values["mode"] == "meta":
            raise ValueError(
                f"--pruning={values['pruning']} trains and prunes a dense "
                "model: pass --mode=mtl or stl (--mode defaults to meta).")
        checks.fields_of(config_lib.PruningConfig, values, method=values["pruning"])

    _section_validator(["pruning", "mode", *names], check)


@_once
def define_finetune_flags():
    """Meta-testing: --from_dir, --train_scope."""
    define_transfer_flags()
    _define_field(config_lib.section_fields("transfer")["train_scope"])


# Parsing and errors -----------------------------------------------------


def program_name():
    return os.path.basename(sys.argv[0]) if sys.argv else "ms_keras"


_DOTTED = re.compile(r"^--?[A-Za-z_]+\.[A-Za-z_0-9]+=")


def _take_config_arguments(argv):
    """argv without `--config=...` and `--section.field=...`, which go to
    `_EXTRA` (flagfiles expanded first, so they may hold them too)."""
    argv = FLAGS.read_flags_from_files(argv, force_gnu=False)
    rest, overrides, config = argv[:1], [], None
    for argument in argv[1:]:
        if argument.startswith("--config="):
            config = argument.split("=", 1)[1]
        elif _DOTTED.match(argument):
            config_lib.parse_override(argument)  # an unknown field: now
            overrides.append(argument.lstrip("-"))
        else:
            rest.append(argument)
    return rest, config, overrides


def parse(argv, with_config=False):
    """absl flags parser that reports a bad flag in one line (exit code 2).

    Unless `--verbosity` is given, library INFO logs (TFDS prints several
    per dataset access) are hidden so that Keras' progress output stays
    readable.

    Args:
        argv: the command line.
        with_config: take `--config=FILE` and `--section.field=value` out
            first (see the module docstring; `parse_with_config`).
    """
    try:
        if with_config:
            argv, config, overrides = _take_config_arguments(argv)
            _EXTRA.update(config=config, overrides=overrides)
            if config:
                config_lib.read_partial(config)
        remaining = FLAGS(argv)
    except (flags.Error, ValueError) as e:
        # Multi-flag validators get every checked value prepended; their
        # messages name the offending flag themselves. Of several failing
        # validators, the first is reported.
        message = str(e).splitlines()[0] if str(e) else str(e)
        message = re.sub(r"^flags .*?: (?=--)", "", message, count=1)
        sys.stderr.write(f"{program_name()}: error: {message}\n")
        sys.exit(2)
    if not FLAGS["verbosity"].present:
        logging.set_verbosity(logging.ERROR)
    return remaining


def parse_with_config(argv):
    """`parse` for the binaries that build a config: `--config` and dotted
    overrides accepted."""
    return parse(argv, with_config=True)


def fail(error):
    """Ends the program with a one-line message (exit code 1)."""
    sys.stderr.write(f"{program_name()}: error: {error}\n")
    sys.exit(1)


# Flags -> config ---------------------------------------------------------
