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
        segmentation_classes=settings.get("segmentation_classes"),
        synthetic_examples=_ints(settings["synthetic_examples"]),
        synthetic_seed=settings.get("synthetic_seed", 0),
        synthetic_holes=settings.get("synthetic_holes", True))
    spec = data.spec
    task_specs = (tasks_lib.parse_tasks(spec, settings["tasks"])
                  if settings.get("tasks") else spec.tasks)
    fields = {name: settings[name] for name in config_lib.SETTING_FIELDS
              if name in settings}
    return config_lib.ExperimentConfig(
        data=data,
        tasks=tuple(t.name for t in task_specs),
        model_dir=model_dir or settings["model_dir"],
        aspp_rates=_ints(settings["aspp_rates"]),
        verbose=settings.get("verbose", 1) if verbose is None else verbose,
        **fields)


def load(model_dir, data_dir=None, verbose=0):
    """The ExperimentConfig of the run stored in `model_dir`.

    Raises:
        ValueError: when `model_dir` holds no readable run.
    """
    path = os.path.join(model_dir, artifacts.FLAGS_FILE)
    if not os.path.isdir(model_dir):
        raise ValueError(f"--model_dir={model_dir}: no such directory.")
    if not os.path.exists(path):
        raise ValueError(
            f"--model_dir={model_dir} holds no run ({artifacts.FLAGS_FILE} "
            "is missing).")
    try:
        settings = artifacts.read_json(path)
    except (OSError, ValueError) as e:
        raise ValueError(f"{path}: unreadable ({e}).") from None
    return from_settings(settings, model_dir=model_dir, data_dir=data_dir,
                         verbose=verbose)
