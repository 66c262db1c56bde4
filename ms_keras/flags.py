"""Command-line flags of the binaries, generated from the config's fields.

Every field of a config section (`ms_keras.config`) is a flag of the same
name (or its `flag` metadata), with the field's default, help and allowed
values; a binary defines the sections it honours (`define_*_flags`), so it
accepts no flag that would do nothing. Beside them, a few flags choose which
sections a run has (`--mode`, `--sparsity`, `--pruning`, `--from_dir`).

Two more ways to state a config, for every binary that trains:
`--config=run.json` (a run's `config.json`, or any part of one) and dotted
overrides of any field, `--training.learning_rate=1e-4` (Model Garden's
`params_override`). The precedence is: field defaults < `--config` < flags
the user gave < dotted overrides.

Mistakes at the command line end as one line on stderr and a non-zero exit
code: flag errors (validators) exit with 2, problems found while preparing a
run (tasks against the dataset, the data files, the run directory) with 1.
Neither prints a traceback.
"""

import dataclasses
import datetime
import json
import os
import re
import sys

from absl import flags
from absl import logging

from ms_keras import config as config_lib
from ms_keras import data as data_lib
from ms_keras import tasks as tasks_lib
from ms_keras.config import schema
from ms_keras.models import BACKBONES

FLAGS = flags.FLAGS
RUNS_DIR = "runs"

_DEFINED = set()
# What `parse` took out of the command line before absl saw it.
_EXTRA = {"config": None, "overrides": []}
# Registered names a field must be one of (the config leaves them to the
# registries).
_REGISTERED = {"dataset": lambda: tasks_lib.DATASET_NAMES,
               "backbone": lambda: tuple(BACKBONES)}
_SELECTORS = ("mode", "sparsity", "pruning", "from_dir")


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


def _fields(cls, values, **overrides):
    """`cls(**{field: flag value})` for the fields that have a flag."""
    kwargs = {f.name: values[schema.flag_name(f)]
              for f in dataclasses.fields(cls)
              if schema.flag_name(f) in values}
    kwargs.update(overrides)
    return cls(**kwargs)


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
        _fields(config_lib.DataConfig, v)))


@_once
def define_model_flags():
    """The network: --backbone, --activation, --head_filters, ..."""
    names = _section_flags(config_lib.ModelConfig)
    _section_validator(names, lambda v: _fields(config_lib.ModelConfig, v))


@_once
def define_runtime_flags():
    """How a run executes: --strategy, --jit_compile, --deterministic, ..."""
    define_run_flags()
    names = _section_flags(config_lib.RuntimeConfig)
    _section_validator(names, lambda v: _fields(config_lib.RuntimeConfig, v))


@_once
def define_training_flags():
    """The training loop: --batch_size, --epochs, --learning_rate, ..."""
    define_tasks_flag()
    define_runtime_flags()
    names = _section_flags(config_lib.TrainingConfig)
    _section_validator(names, lambda v: _fields(config_lib.TrainingConfig,
                                                v))


def sparsity_kind(values):
    """`--sparsity`, whose default depends on `--mode`: channel for a meta
    run (meta-sparsity), none for stl/mtl (dense)."""
    if values["sparsity"] is not None:
        return values["sparsity"]
    return config_lib.CHANNEL if values["mode"] == "meta" else config_lib.NONE


def _sparse_meta(values):
    return values["mode"] == "meta" and sparsity_kind(values) != "none"


def _prunes(values):
    """Whether `--pruning` is given (read from FLAGS where a validator's
    values do not hold it)."""
    value = values.get("pruning")
    if value is None and "pruning" in FLAGS:
        value = FLAGS["pruning"].value
    return value not in (None, "none")


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
        lambda v: sparsity_kind(v) == "none" or _fields(
            config_lib.SparsityConfig, v, kind=sparsity_kind(v)))
    _section_validator(
        ["mode", "sparsity", "tasks", "dataset", "lam", *sparsity, *meta],
        _check_meta)


def _control(values):
    """The sparsity control the flag values ask for (None: not a sparse
    meta run)."""
    if not _sparse_meta(values):
        return None
    return values["sparsity_control"] or config_lib.TOLERANCE


def _where(section, needs):
    """Where a field of `section` with `needs` metadata takes effect."""
    if needs == config_lib.SPARSE or (section == "sparsity" and needs):
        return "--mode=meta with --sparsity=channel or unstructured"
    if needs:
        budget = " or to --pruning" if needs == config_lib.BUDGET else ""
        return f"--mode=meta --sparsity_control={needs}{budget}"
    return {"sparsity": "--sparsity=channel or unstructured",
            "meta": "--mode=meta only",
            "pruning": "--pruning=one_shot, iterative, progressive or "
                       "sparse_training"}[section]


def _applies(section, field, values):
    """Whether a field given on the command line takes effect."""
    needs = field.metadata.get(schema.NEEDS)
    control = _control(values)
    if needs == config_lib.BUDGET and _prunes(values):
        return True  # the budgets are the pruning baselines' too
    present = {"sparsity": sparsity_kind(values) != config_lib.NONE,
               "meta": values["mode"] == "meta",
               "pruning": _prunes(values)}[section]
    if not present:
        return False
    if needs == config_lib.SPARSE:
        return control is not None
    return needs is None or control == needs


def _check_applicable(values):
    """Refuses a flag given where it would do nothing (one line)."""
    owners = {}
    for section in ("sparsity", "meta", "pruning"):
        for field in dataclasses.fields(config_lib.SECTIONS[section]):
            name = schema.flag_name(field)
            if name in FLAGS and name not in ("sparsity", "pruning"):
                owners.setdefault(name, []).append((section, field))
    for name, fields in owners.items():
        if not FLAGS[name].present or any(
                _applies(section, field, values) for section, field in fields):
            continue
        section, field = fields[0]
        got = f"--mode={values['mode']} --sparsity={sparsity_kind(values)}"
        if _control(values):
            got += f" --sparsity_control={_control(values)}"
        where = _where(section, field.metadata.get(schema.NEEDS))
        raise ValueError(f"--{name} applies to {where} (got {got})")


def _check_meta(values):
    if values["mode"] == "stl" and values["tasks"] and len(
            values["tasks"]) != 1:
        raise ValueError(f"--mode=stl trains one task; got "
                         f"{len(values['tasks'])} (tasks="
                         f"{','.join(values['tasks'])}).")
    _check_applicable(values)
    lam = None if sparsity_kind(values) == "none" else values["lam"]
    config_lib.check_lambda_setting(values["mode"], lam)
    if values["mode"] != "meta" or _prunes(values):
        return
    section = meta_section(values)
    count = (len(values["tasks"]) if values["tasks"] else len(
        tasks_lib.get_dataset(values["dataset"]).tasks))
    bound = config_lib.sampler_bound(section.episode_sampler)
    if bound is not None and not 1 <= bound <= count:
        raise ValueError(f"--episode_sampler={section.episode_sampler}: k "
                         f"must be in 1-{count} for {count} tasks.")


def meta_section(values):
    """The MetaConfig of `--mode=meta` flag values: a dense meta run has no
    sparsity control, and a sparsity control's fields are its own."""
    control = _control(values)
    overrides = {"sparsity_control": control}
    if control == config_lib.TOLERANCE and values[
            "quality_tolerance"] is None:
        overrides["quality_tolerance"] = config_lib.DEFAULT_QUALITY_TOLERANCE
    return _fields(config_lib.MetaConfig, values, **overrides)


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
        if not _prunes(values):
            return
        if values["mode"] == "meta":
            raise ValueError(
                f"--pruning={values['pruning']} trains and prunes a dense "
                "model: pass --mode=mtl or stl (--mode defaults to meta).")
        _fields(config_lib.PruningConfig, values, method=values["pruning"])

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
                read_config_file(config)
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


def read_config_file(path):
    """The `{section: {field: value}}` (and `tasks`) of `--config=path`: a
    run's config.json or any part of one.

    Raises:
        ValueError: for a missing or unreadable file, or unknown keys.
    """
    try:
        with open(path) as f:
            payload = json.load(f)
    except (OSError, ValueError) as e:
        raise ValueError(f"--config={path}: cannot read it ({e}).") from None
    if not isinstance(payload, dict):
        raise ValueError(f"--config={path}: expected a JSON object.")
    if "version" in payload:
        payload = config_lib.to_dict(config_lib.from_dict(payload))
    known = {*config_lib.SECTIONS, "tasks", "model_dir", "version"}
    unknown = sorted(set(payload) - known)
    if unknown:
        raise ValueError(f"--config={path}: unknown keys {unknown}; a config "
                         f"has {', '.join(sorted(known - {'version'}))}.")
    return payload


def new_run_dir(dataset, mode):
    """A fresh directory name under `runs/`, never an existing run's."""
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    base = os.path.join(RUNS_DIR, f"{dataset}_{mode}_{stamp}")
    candidate, suffix = base, 1
    while os.path.exists(candidate):
        suffix += 1
        candidate = f"{base}_{suffix}"
    return candidate


def resolve_tasks(spec, requested):
    """Task names for `--tasks` on a dataset (all of them when unset).

    Raises:
        ValueError: naming the flag, for tasks the dataset lacks.
    """
    if requested is None:
        return spec.task_names
    try:
        return tuple(t.name for t in tasks_lib.parse_tasks(spec, requested))
    except ValueError as e:
        raise ValueError(
            f"--tasks={','.join(requested)} --dataset={spec.name}: {e}"
        ) from None


def _section(cls, base, skip=(), **overrides):
    """A section from `base` (`--config`'s fields, or None) with the flags
    the user gave on top."""
    values = {**(base or {}), **given(cls, skip), **overrides}
    return cls(**values)


def _data_section(base):
    data = _section(config_lib.DataConfig, base)
    spec = tasks_lib.dataset_spec(data)
    if not spec.synthetic and not data.data_dir:
        data = dataclasses.replace(data, data_dir=data_lib.default_data_dir(
            data.dataset, data.tfds_dir))
    return dataclasses.replace(
        data, segmentation_classes=data_lib.segmentation_classes(
            data.dataset, data.data_dir, data.segmentation_classes))


def experiment_config():
    """The ExperimentConfig of `train`'s flags (with `--config` and the
    dotted overrides).

    Raises:
        ValueError: for a combination the config refuses.
    """
    base = read_config_file(_EXTRA["config"]) if _EXTRA["config"] else {}
    values = {name: FLAGS[name].value for name in FLAGS}
    data = _data_section(base.get("data"))
    spec = tasks_lib.dataset_spec(data)
    tasks = (resolve_tasks(spec, FLAGS.tasks)
             if FLAGS.tasks or not base.get("tasks")
             else resolve_tasks(spec, base["tasks"]))
    mode = FLAGS.mode
    if base and not set_by_user("mode"):
        mode = "meta" if base.get("meta") else values["mode"]
    kind = sparsity_kind({**values, "mode": mode})
    if base and not set_by_user("sparsity") and "sparsity" in base:
        kind = (base["sparsity"] or {}).get("kind", config_lib.NONE) if (
            base["sparsity"]) else config_lib.NONE
    sparsity = None
    if kind != config_lib.NONE:
        sparsity = _section(config_lib.SparsityConfig, base.get("sparsity"),
                            skip=("kind",), kind=kind)
    pruning = transfer = None
    if _prunes(values) or (base.get("pruning") and not set_by_user(
            "pruning")):
        method = (values["pruning"] if _prunes(values)
                  else base["pruning"]["method"])
        pruning = _section(config_lib.PruningConfig, base.get("pruning"),
                           skip=("method",), method=method)
    from_dir = FLAGS.from_dir or (base.get("transfer") or {}).get("from_dir")
    if from_dir:
        if pruning is None:
            raise ValueError(
                f"--from_dir={from_dir} applies to --pruning=one_shot or "
                "iterative (to fine-tune a run: python -m ms_keras.finetune "
                "--from_dir=...).")
        transfer = config_lib.TransferConfig(os.path.abspath(from_dir))
    meta = None
    if mode == "meta":
        meta_values = {**(base.get("meta") or {}),
                       **given(config_lib.MetaConfig)}
        meta = meta_section({**values, **meta_values, "mode": mode,
                             "sparsity": kind})
    config = config_lib.ExperimentConfig(
        data=data, tasks=tasks,
        model=_section(config_lib.ModelConfig, base.get("model")),
        training=_section(config_lib.TrainingConfig, base.get("training")),
        runtime=_section(config_lib.RuntimeConfig, base.get("runtime")),
        sparsity=sparsity, meta=meta, pruning=pruning, transfer=transfer,
        model_dir=FLAGS.model_dir or new_run_dir(data.dataset, mode))
    if mode == "stl" and len(tasks) != 1:
        raise ValueError(f"--mode=stl trains one task; got {len(tasks)} "
                         f"(tasks={','.join(tasks)}).")
    if _EXTRA["overrides"]:
        config = config_lib.apply_overrides(config, _EXTRA["overrides"])
    tasks_lib.task_specs(config)
    return config
