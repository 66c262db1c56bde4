"""What a killed run resumes from: a backup of the whole trainer after every
epoch, two generations kept, and the record of every epoch's logs.

A backup holds everything `trainer.save_weights` saves: the weights, both
optimizers' slots, lambda, the sparsity masks and the controller's state.
Each is written to a temporary name and renamed, so a kill during a save
leaves the previous backup whole. A backup that cannot be read (a full disk,
a copy cut short) is passed over for the generation before it, and said so
in one line; the best checkpoint is never touched by any of this.
"""

import collections
import glob
import os
import re

import h5py
import keras

from ms_keras import run_dir

GENERATIONS = 2
_WEIGHTS = "epoch_{:04d}.weights.h5"
_NAME = re.compile(r"^epoch_(\d{4})\.weights\.h5$")

Resume = collections.namedtuple("Resume", ["epoch", "path", "skipped"])
Resume.__doc__ = """Where a run resumes.

Attributes:
    epoch: epochs the backup holds (0: start from scratch).
    path: its weights file (None for a fresh start).
    skipped: one-line notes about newer backups that could not be read.
"""


def backup_epochs(backup_dir):
    """The epochs backed up in `backup_dir`, newest first."""
    found = []
    for path in glob.glob(os.path.join(backup_dir, "epoch_*.weights.h5")):
        match = _NAME.match(os.path.basename(path))
        if match:
            found.append(int(match.group(1)))
    return sorted(found, reverse=True)


def _readable(path):
    """None when `path` opens as an HDF5 weights file, else the reason."""
    try:
        with h5py.File(path, "r") as f:
            if not len(f.keys()):
                return "it holds no weights"
    except OSError as e:
        return (str(e).splitlines() or [type(e).__name__])[0]
    return None


def find_resume(backup_dir):
    """The newest readable backup in `backup_dir`.

    Raises:
        ValueError: when backups exist but none can be read.
    """
    skipped = []
    for epoch in backup_epochs(backup_dir):
        path = os.path.join(backup_dir, _WEIGHTS.format(epoch))
        problem = _readable(path)
        if problem is None:
            return Resume(epoch, path, skipped)
        skipped.append(f"the backup of epoch {epoch} ({path}) cannot be read "
                       f"({problem}); it is passed over.")
    if skipped:
        raise ValueError(
            f"no backup in {backup_dir} can be read ({' '.join(skipped)}) "
            "Pass --overwrite to train the run again from the start.")
    return Resume(0, None, [])


def restore(trainer, resume):
    """Loads a backup into a built trainer.

    Raises:
        ValueError: when the backup does not fit the trainer.
    """
    if resume.path is None:
        return
    if trainer.optimizer is not None and not trainer.optimizer.built:
        trainer.optimizer.build(trainer.trainable_variables)
    try:
        trainer.load_weights(resume.path)
    except (OSError, ValueError) as e:
        raise ValueError(
            f"the backup of epoch {resume.epoch} ({resume.path}) does not "
            f"fit this run ({str(e).splitlines()[0]}). Pass --overwrite to "
            "train the run again from the start.") from None


class EpochBackup(keras.callbacks.Callback):
    """Backs up the trainer after every epoch, keeping `keep` generations.

    Resuming is `find_resume` + `restore` before `fit(initial_epoch=...)`;
    this callback only writes. The backups are removed when training ends
    normally (a run that stops on an error keeps them).

    Example:

    >>> resume = find_resume("run/backup")
    >>> restore(trainer, resume)
    >>> trainer.fit(batches, epochs=10, initial_epoch=resume.epoch,
    ...             callbacks=[EpochBackup("run/backup")])

    Args:
        backup_dir: where the backups live.
        keep: generations kept (the newest and the ones before it).
    """

    def __init__(self, backup_dir, keep=GENERATIONS):
        super().__init__()
        if keep < 1:
            raise ValueError(f"`keep` must be >= 1. Received: keep={keep}")
        self.backup_dir = backup_dir
        self.keep = int(keep)

    def on_epoch_end(self, epoch, logs=None):
        os.makedirs(self.backup_dir, exist_ok=True)
        path = os.path.join(self.backup_dir, _WEIGHTS.format(epoch + 1))
        run_dir.atomic_write(path, self.model.save_weights)
        for old in backup_epochs(self.backup_dir)[self.keep:]:
            os.remove(os.path.join(self.backup_dir, _WEIGHTS.format(old)))

    def on_train_end(self, logs=None):
        for epoch in backup_epochs(self.backup_dir):
            os.remove(os.path.join(self.backup_dir, _WEIGHTS.format(epoch)))
        if os.path.isdir(self.backup_dir) and not os.listdir(self.backup_dir):
            os.rmdir(self.backup_dir)


class EpochHistory(keras.callbacks.Callback):
    """Records every epoch's logs in a JSON file, across resumes.

    Keras' `History` holds the epochs of one `fit` call; a resumed run's
    whole history (the lambda and sparsity curves of a report) is this
    record, cut back to the epoch the run resumed from.

    Args:
        path: the JSON record.
        initial_epoch: epochs done before this `fit` (kept from the record).
    """

    def __init__(self, path, initial_epoch=0):
        super().__init__()
        self.path = path
        self.initial_epoch = int(initial_epoch)
        self.epochs = read_history(path)[:self.initial_epoch]

    def on_epoch_end(self, epoch, logs=None):
        del self.epochs[epoch:]
        self.epochs.append({key: float(value)
                            for key, value in (logs or {}).items()})
        run_dir.write_json(self.path, {"epochs": self.epochs})


def read_history(path):
    """The recorded epochs' logs (a list of dicts; empty without a record)."""
    if not os.path.exists(path):
        return []
    return list(run_dir.read_json(path)["epochs"])


def as_columns(epochs):
    """`[{key: v}, ...]` per epoch -> `{key: [v, ...]}` (metrics.json)."""
    keys = []
    for logs in epochs:
        keys += [k for k in logs if k not in keys]
    return {key: [logs.get(key, float("nan")) for logs in epochs]
            for key in keys}
