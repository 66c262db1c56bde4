"""The ExperimentConfig of `train`'s command line: its flags, a
`--config=run.json` file (a run's `config.json`, or any part of one) and
dotted overrides of any field, `--training.learning_rate=1e-4` (Model
Garden's `params_override`). The precedence is: field defaults <
`--config` < flags the user gave < dotted overrides.
"""

import dataclasses
import datetime
import os

from ms_keras import config as config_lib
from ms_keras import data as data_lib
from ms_keras import flag_checks as checks
from ms_keras import flags as ms_flags
from ms_keras import tasks as tasks_lib

FLAGS = ms_flags.FLAGS
RUNS_DIR = ms_flags.RUNS_DIR


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
    values = {**(base or {}), **ms_flags.given(cls, skip), **overrides}
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


def _mode(base, values):
    """`--mode`, else what `--config`'s sections say, else the default."""
    if ms_flags.set_by_user("mode") or not base:
        return values["mode"]
    if base.get("meta"):
        return "meta"
    return "stl" if len(base.get("tasks") or ()) == 1 else "mtl"


def _sparsity_kind(base, values):
    """`--sparsity` (default by mode), else `--config`'s sparsity section."""
    if ms_flags.set_by_user("sparsity") or "sparsity" not in base:
        return checks.sparsity_kind(values)
    return (base["sparsity"] or {}).get("kind", config_lib.NONE)


def _pruning(base, values):
    """The pruning section of `--pruning` or of `--config`, or None."""
    if checks.prunes(values):
        method = values["pruning"]
    elif base.get("pruning") and not ms_flags.set_by_user("pruning"):
        method = base["pruning"]["method"]
    else:
        return None
    return _section(config_lib.PruningConfig, base.get("pruning"),
                    skip=("method",), method=method)


def experiment_config():
    """The ExperimentConfig of `train`'s flags (with `--config` and the
    dotted overrides).

    Raises:
        ValueError: for a combination the config refuses.
    """
    path, overrides = ms_flags.config_arguments()
    base = config_lib.read_partial(path) if path else {}
    values = {name: FLAGS[name].value for name in FLAGS}
    data = _data_section(base.get("data"))
    spec = tasks_lib.dataset_spec(data)
    tasks = resolve_tasks(spec, base.get("tasks") if FLAGS.tasks is None
                          else FLAGS.tasks)
    mode = _mode(base, values)
    values["mode"] = mode
    kind = _sparsity_kind(base, values)
    values["sparsity"] = kind
    sparsity = None
    if kind != config_lib.NONE:
        sparsity = _section(config_lib.SparsityConfig, base.get("sparsity"),
                            skip=("kind",), kind=kind)
    pruning = _pruning(base, values)
    transfer = None
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
        meta = checks.meta_section({
            **values, **(base.get("meta") or {}),
            **ms_flags.given(config_lib.MetaConfig)})
    if mode == "stl" and len(tasks) != 1:
        raise ValueError(f"--mode=stl trains one task; got {len(tasks)} "
                         f"(tasks={','.join(tasks)}).")
    config = config_lib.ExperimentConfig(
        data=data, tasks=tasks,
        model=_section(config_lib.ModelConfig, base.get("model")),
        training=_section(config_lib.TrainingConfig, base.get("training")),
        runtime=_section(config_lib.RuntimeConfig, base.get("runtime")),
        sparsity=sparsity, meta=meta, pruning=pruning, transfer=transfer,
        model_dir=FLAGS.model_dir or base.get("model_dir")
        or new_run_dir(data.dataset, mode))
    if overrides:
        config = config_lib.apply_overrides(config, overrides)
    tasks_lib.task_specs(config)
    return config
