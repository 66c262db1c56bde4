"""The run directory: its file names, atomic writes, claim and resume, and
`Run`, the one reader of what a run recorded.

Every file a run writes goes through `atomic_write` (a temporary file next to
the destination, then a rename), so a crash never leaves a half-written file.
`claim` decides whether a directory may hold an experiment: a new or empty
directory is claimed, the same experiment unfinished is resumed, anything
else is refused unless the caller overwrites.
"""

import json
import os
import shutil
import tempfile

import numpy as np

CONFIG_FILE = "config.json"
LEGACY_FLAGS_FILE = "flags.json"
METRICS_FILE = "metrics.json"
COST_FILE = "cost.json"  # training time, tuned values (not deterministic)
BEST_WEIGHTS = "checkpoints/best.weights.h5"
BEST_RECORD = "checkpoints/best.weights.json"  # monitor, value, epoch
TIME_RECORD = "checkpoints/time.json"  # training seconds, over resumes
HISTORY_RECORD = "checkpoints/history.json"  # every epoch's logs
MODEL_FILE = "model.keras"
MASK_FILE = "sparsity_mask.npz"
BACKUP_DIR = "backup"
REFERENCE_DIR = "reference"  # the dense run a tolerance-mode run trains
# What `--overwrite` removes before a run starts again.
_RESULTS = (METRICS_FILE, COST_FILE, MASK_FILE, MODEL_FILE)
_RESULT_DIRS = ("checkpoints", BACKUP_DIR, "train", "validation",
                REFERENCE_DIR)


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def publish_permissions(path):
    """Gives a file or directory made by `tempfile` the usual permissions.

    `tempfile` creates private (0600 / 0700) entries; once renamed into
    place they should be as readable as anything else the user writes.
    """
    mode = 0o777 if os.path.isdir(path) else 0o666
    os.chmod(path, mode & ~_umask())


def atomic_write(path, write):
    """Calls `write(tmp_path)`, then renames the temporary file to `path`.

    The temporary file lives next to `path` (same filesystem, so the rename is
    atomic) and keeps its suffix, which Keras' savers check.
    """
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    base = os.path.basename(path)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix="-" + base,
                               dir=directory)
    os.close(fd)
    try:
        write(tmp)
        publish_permissions(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_json(path, payload):
    """Writes `payload` as indented JSON, atomically."""
    def write(tmp):
        with open(tmp, "w") as f:
            json.dump(payload, f, indent=2, sort_keys=True)
            f.write("\n")
    atomic_write(path, write)


def read_json(path):
    with open(path) as f:
        return json.load(f)


def path(model_dir, name):
    return os.path.join(model_dir, name)


def is_finished(model_dir):
    return os.path.exists(path(model_dir, METRICS_FILE))


class Run:
    """A run directory as its run recorded it.

    Every reader of another run (a reference, a budget or mask source, a
    transfer source, the study runner and the report) goes through this
    class, so a missing or unreadable file reads the same everywhere:
    `--<flag>=<path>: no finished run there (metrics.json is missing).`

    Args:
        path: the run directory.
        flag: the flag that named it, for error messages (None: none).
    """

    def __init__(self, path, flag=None):
        self.path = path
        self.flag = flag

    def __repr__(self):
        return f"Run({self.path!r})"

    @property
    def where(self):
        """How error messages name the run."""
        return f"--{self.flag}={self.path}" if self.flag else self.path

    def file(self, name):
        return path(self.path, name)

    @property
    def is_finished(self):
        return is_finished(self.path)

    def require_finished(self, needs=(METRICS_FILE,)):
        """Returns self; raises ValueError naming the first of `needs` the
        directory lacks."""
        if not os.path.isdir(self.path):
            raise ValueError(f"{self.where}: no finished run there (no such "
                             "directory).")
        for name in needs:
            if not os.path.exists(self.file(name)):
                raise ValueError(f"{self.where}: no finished run there "
                                 f"({name} is missing).")
        return self

    def _read(self, name):
        self.require_finished((name,))
        try:
            return read_json(self.file(name))
        except (OSError, ValueError) as e:
            raise ValueError(f"{self.where}: cannot read {name} ({e})."
                             ) from None

    @property
    def config(self):
        """The recorded config dict (`config.json`, as written)."""
        try:
            recorded = read_recorded(self.path)
        except ValueError as e:
            # The message starts with the path: prefix the flag to it.
            raise ValueError(f"--{self.flag}={e}" if self.flag else str(e)
                             ) from None
        if recorded is None:
            raise ValueError(f"{self.where} holds no run ({CONFIG_FILE} is "
                             "missing).")
        return recorded

    @property
    def metrics(self):
        """`metrics.json` of the finished run."""
        return self._read(METRICS_FILE)

    @property
    def cost(self):
        """`cost.json` (training time, tuned values), or None."""
        return (read_json(self.file(COST_FILE))
                if os.path.exists(self.file(COST_FILE)) else None)

    def masks(self):
        """`{conv name: bool mask}` of the kept epoch
        (`sparsity_mask.npz`)."""
        self.require_finished((MASK_FILE,))
        with np.load(self.file(MASK_FILE)) as masks:
            return {name: masks[name] for name in masks.files}

    def model(self):
        """The kept epoch's Keras model (`model.keras`); the classes it
        uses must be registered (import `ms_keras.models`)."""
        import keras  # Lazily: the study runner reads runs without TF.
        self.require_finished((MODEL_FILE,))
        return keras.saving.load_model(self.file(MODEL_FILE))


def _differences(old, new, prefix=""):
    found = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            found += _differences(a, b, f"{prefix}{key}.")
        elif a != b:
            found.append(f"{prefix}{key}: {a!r} there, {b!r} here")
    return found


def read_recorded(model_dir):
    """The config dict recorded in `model_dir`, or None if it holds no run.

    Raises:
        ValueError: for an unreadable record, or a run of an older ms_keras
            (`flags.json`), saying how to go on.
    """
    if not os.path.exists(path(model_dir, CONFIG_FILE)):
        if os.path.exists(path(model_dir, LEGACY_FLAGS_FILE)):
            raise ValueError(
                f"{model_dir} holds a run of ms_keras 0.1 ({LEGACY_FLAGS_FILE}"
                f", no {CONFIG_FILE}); re-run its training command with this "
                "version into a new --model_dir.")
        return None
    try:
        return read_json(path(model_dir, CONFIG_FILE))
    except (OSError, ValueError) as e:
        raise ValueError(
            f"{model_dir}: cannot read {CONFIG_FILE} ({e}); choose another "
            "--model_dir.") from None


def check(model_dir, identity, identity_of, overwrite=False):
    """Raises ValueError when this experiment may not use `model_dir`.

    Writes nothing.

    Args:
        model_dir: the run directory.
        identity: the experiment's config without run-control fields
            (`ExperimentConfig.identity()`).
        identity_of: maps a recorded config dict to its identity; raises
            ValueError for a record it cannot read.
        overwrite: whether the caller will replace what is there.

    Returns:
        True when `model_dir` holds this experiment unfinished (a resume).
    """
    if os.path.exists(model_dir) and not os.path.isdir(model_dir):
        raise ValueError(f"--model_dir={model_dir} is a file, not a directory.")
    try:
        recorded = read_recorded(model_dir) if os.path.isdir(model_dir) else None
    except ValueError as e:
        if overwrite:
            recorded = None
        else:
            raise ValueError(f"--model_dir={e}") from None
    if recorded is not None:
        try:
            diff = _differences(identity_of(recorded), identity)
        except ValueError as e:
            diff = [str(e)]
        if diff and not overwrite:
            raise ValueError(
                f"--model_dir={model_dir} holds a different experiment "
                f"({'; '.join(diff[:3])}); choose another --model_dir or pass "
                "--overwrite.")
        if is_finished(model_dir) and not overwrite:
            raise ValueError(
                f"--model_dir={model_dir} already holds a finished run of this "
                "experiment; pass --overwrite to train it again.")
        return not overwrite and not diff
    if os.path.isdir(model_dir) and os.listdir(model_dir) and not overwrite:
        raise ValueError(
            f"--model_dir={model_dir} is not empty and holds no {CONFIG_FILE}; "
            "choose an empty or new directory.")
    return False


def claim(model_dir, config_dict, identity, identity_of, overwrite=False):
    """Checks that `model_dir` may hold this experiment, then records it.

    A new or empty directory is claimed. A directory holding the same
    experiment unfinished is resumed. A finished run of the same experiment,
    or a different experiment, is refused unless `overwrite` is set, in which
    case its results, checkpoints, backup and logs are removed first.

    Args:
        model_dir: the run directory.
        config_dict: the config to record (`config.to_dict`).
        identity: the experiment's identity (`ExperimentConfig.identity()`).
        identity_of: maps a recorded config dict to its identity.
        overwrite: replace what the directory holds.

    Returns:
        True when an unfinished run is being resumed.

    Raises:
        ValueError: when the directory holds something this run must not
            overwrite.
    """
    resuming = check(model_dir, identity, identity_of, overwrite)
    if overwrite:
        for name in _RESULTS + (LEGACY_FLAGS_FILE,):
            if os.path.exists(path(model_dir, name)):
                os.remove(path(model_dir, name))
        for name in _RESULT_DIRS:
            shutil.rmtree(path(model_dir, name), ignore_errors=True)
    write_json(path(model_dir, CONFIG_FILE), config_dict)
    return resuming
