"""Files of a run in `--model_dir`, written atomically."""

import json
import os
import shutil
import tempfile

FLAGS_FILE = "flags.json"
METRICS_FILE = "metrics.json"
BEST_WEIGHTS = "checkpoints/best.weights.h5"
MODEL_FILE = "model.keras"
MASK_FILE = "sparsity_mask.npz"
BACKUP_DIR = "backup"

# Settings that may change between runs of one experiment.
NON_IDENTITY_KEYS = frozenset({"model_dir", "overwrite", "jit_compile",
                               "data_dir", "verbose"})


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


def identity(settings):
    """The settings that define an experiment (run-control keys removed)."""
    return {k: v for k, v in settings.items() if k not in NON_IDENTITY_KEYS}


def _differences(old, new):
    keys = sorted(set(old) | set(new))
    return [f"{k}: {old.get(k)!r} there, {new.get(k)!r} here"
            for k in keys if old.get(k) != new.get(k)]


def check_model_dir(model_dir, settings, overwrite=False):
    """Raises ValueError when this run may not use `model_dir`; writes nothing.

    The rules of `claim_model_dir`.

    Returns:
        True when `model_dir` holds this experiment unfinished (a resume).
    """
    flags_path = os.path.join(model_dir, FLAGS_FILE)
    if os.path.exists(model_dir) and not os.path.isdir(model_dir):
        raise ValueError(f"--model_dir={model_dir} is a file, not a directory.")
    if os.path.exists(flags_path):
        try:
            old = identity(read_json(flags_path))
        except (OSError, ValueError) as e:
            raise ValueError(
                f"--model_dir={model_dir}: cannot read {FLAGS_FILE} ({e}); "
                "choose another --model_dir.") from None
        diff = _differences(old, identity(settings))
        finished = os.path.exists(os.path.join(model_dir, METRICS_FILE))
        if diff and not overwrite:
            raise ValueError(
                f"--model_dir={model_dir} holds a different experiment "
                f"({'; '.join(diff[:3])}); choose another --model_dir or pass "
                "--overwrite.")
        if finished and not overwrite:
            raise ValueError(
                f"--model_dir={model_dir} already holds a finished run of this "
                "experiment; pass --overwrite to train it again.")
        return not overwrite
    if os.path.isdir(model_dir) and os.listdir(model_dir) and not overwrite:
        raise ValueError(
            f"--model_dir={model_dir} is not empty and holds no {FLAGS_FILE}; "
            "choose an empty or new directory.")
    return False


def claim_model_dir(model_dir, settings, overwrite=False):
    """Checks that `model_dir` may hold this experiment, then records it.

    A new or empty directory is claimed. A directory holding the same
    experiment unfinished is resumed. A finished run of the same experiment,
    or a different experiment, is refused unless `overwrite` is set, in which
    case its checkpoints, backup and metrics are removed first.

    Returns:
        True when an unfinished run is being resumed.

    Raises:
        ValueError: when the directory holds something this run must not
            overwrite.
    """
    resuming = check_model_dir(model_dir, settings, overwrite)
    if overwrite:
        for name in (METRICS_FILE, MASK_FILE, MODEL_FILE):
            path = os.path.join(model_dir, name)
            if os.path.exists(path):
                os.remove(path)
        for name in ("checkpoints", BACKUP_DIR):
            shutil.rmtree(os.path.join(model_dir, name), ignore_errors=True)
    write_json(os.path.join(model_dir, FLAGS_FILE), settings)
    return resuming
