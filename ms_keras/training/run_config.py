"""ExperimentConfig <-> the flag values recorded in `flags.json`.

The train binary builds its config from its flag values with `from_settings`;
evaluate, finetune and export rebuild the same config from the run's
`flags.json`, so a run is always described by one record.
"""

import os

from ms_keras import data as data_lib
from ms_keras import tasks as tasks_lib
from ms_keras.training import artifacts
from ms_keras.training import config as config_lib


def _ints(values):
    return tuple(int(v) for v in values)


def from_settings(settings, model_dir=None, data_dir=None, verbose=None):
    """Builds an ExperimentConfig from `{flag: value}`.

    Args:
        settings: flag values (list flags as lists of strings).
        model_dir: overrides `settings["model_dir"]`.
        data_dir: overrides `settings["data_dir"]` when given.
        verbose: overrides `settings["verbose"]` when given.

    Raises:
        ValueError: when the settings describe an invalid experiment.
    """
    data = data_lib.DataConfig(
        dataset=settings["dataset"],
        image_size=_ints(settings["image_size"]),
        data_dir=data_dir or settings.get("data_dir"),
        segmentation_classes=data_lib.segmentation_classes(
            settings["dataset"], data_dir or settings.get("data_dir"),
            settings.get("segmentation_classes")),
        synthetic_examples=_ints(settings["synthetic_examples"]),
        synthetic_seed=settings.get("synthetic_seed", 0),
        synthetic_holes=settings.get("synthetic_holes", True))
    spec = data.spec
    requested = settings.get("tasks")
    try:
        task_specs = (spec.tasks if requested is None
                      else tasks_lib.parse_tasks(spec, requested))
    except ValueError as e:
        raise ValueError(
            f"--tasks={','.join(requested)} --dataset={data.dataset}: "
            f"{e}") from None
    fields = {name: settings[name] for name in config_lib.SETTING_FIELDS
              if name in settings}
    return config_lib.ExperimentConfig(
        data=data,
        tasks=tuple(t.name for t in task_specs),
        model_dir=model_dir or settings["model_dir"],
        aspp_rates=_ints(settings["aspp_rates"]),
        verbose=settings.get("verbose", 1) if verbose is None else verbose,
        **fields)


# Settings that describe how the source run was trained, not the model it
# produced; a fine-tuning run resets them.
_SOURCE_ONLY = ("sparsity", "lam", "lambda_init", "lambda_lr", "lambda_beta",
                "meta_batch_size", "inner_steps", "inner_lr", "first_order",
                "inner_prox", "regrow_prob", "episode_sampler",
                "sparsity_log_steps", "inner_clip_norm")


def read_settings(model_dir, require_finished=False):
    """The flag values recorded in `model_dir/flags.json`.

    Raises:
        ValueError: when `model_dir` holds no readable (finished) run.
    """
    path = os.path.join(model_dir, artifacts.FLAGS_FILE)
    if not os.path.isdir(model_dir):
        raise ValueError(f"{model_dir}: no such directory.")
    if not os.path.exists(path):
        raise ValueError(
            f"{model_dir} holds no run ({artifacts.FLAGS_FILE} is missing).")
    if require_finished:
        for name in (artifacts.METRICS_FILE, artifacts.MODEL_FILE,
                     artifacts.MASK_FILE):
            if not os.path.exists(os.path.join(model_dir, name)):
                raise ValueError(
                    f"{model_dir} holds no finished run ({name} is missing).")
    try:
        return artifacts.read_json(path)
    except (OSError, ValueError) as e:
        raise ValueError(f"{path}: unreadable ({e}).") from None


def finetune_settings(source_dir, overrides):
    """Settings of a fine-tuning (meta-testing) run of `source_dir`.

    Data and model settings come from the source run; `overrides` (the
    fine-tuning flags: tasks, training loop, model_dir, ...) replace the
    rest; the source's sparsity and meta-learning settings are reset (the
    sparsity pattern itself is kept by the trainer).
    """
    source = read_settings(source_dir, require_finished=True)
    settings = {k: v for k, v in source.items() if k not in _SOURCE_ONLY}
    settings.update({k: v for k, v in overrides.items() if v is not None})
    tasks = settings.get("tasks") or []
    settings["mode"] = "stl" if len(tasks) == 1 else "mtl"
    settings["sparsity"] = "none"
    settings["init_from"] = os.path.abspath(source_dir)
    return settings


def load(model_dir, data_dir=None, verbose=0):
    """The ExperimentConfig of the run stored in `model_dir`.

    Raises:
        ValueError: when `model_dir` holds no readable run.
    """
    try:
        settings = read_settings(model_dir)
    except ValueError as e:
        raise ValueError(f"--model_dir={e}") from None
    return from_settings(settings, model_dir=model_dir, data_dir=data_dir,
                         verbose=verbose)


def resolve_tasks(config, requested, allow_none=False):
    """Resolves a `--tasks` value against a finished run's tasks.

    Args:
        config: the run's ExperimentConfig.
        requested: task numbers/names, or None for all of the run's tasks.
        allow_none: accept `none`, meaning no task (the backbone alone).

    Returns:
        Task names, `[]` for `none`, or None for all.

    Raises:
        ValueError: for a task the dataset lacks or the run did not train.
    """
    if requested is None:
        return None
    if allow_none and [t.lower() for t in requested] == ["none"]:
        return []
    names = [t.name for t in tasks_lib.parse_tasks(config.data.spec,
                                                   requested)]
    missing = [name for name in names if name not in config.tasks]
    if missing:
        raise ValueError(
            f"--tasks={','.join(requested)}: the run has no head for "
            f"{', '.join(missing)} (its tasks: {', '.join(config.tasks)}).")
    return names
