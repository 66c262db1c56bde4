"""The dense reference a tolerance-mode run is held to: its validation
losses over training (`ReferenceCurve`), its finished quality, and the
quality gap of a model against it."""

import numpy as np
import tensorflow as tf


# The finished quality of a dense reference: its validation losses averaged
# over the last quarter of its epochs. One epoch's are as noisy as the
# model's last steps (+-10 % per task on the CPU study), and the best of
# them is picked for its luck.
FINAL_SHARE = 0.25


def final_losses(losses):
    """A reference's finished validation loss per task from its per-epoch
    `(epochs, tasks)` losses: the mean over the last `FINAL_SHARE`."""
    losses = np.asarray(losses, np.float64)
    count = max(1, int(round(FINAL_SHARE * len(losses))))
    return losses[-count:].mean(axis=0)


class ReferenceCurve:
    """A dense reference's validation loss per task over training.

    Args:
        fractions: increasing fractions of training (0, 1] at which the
            reference was evaluated (its epoch ends).
        losses: `(len(fractions), num_tasks)` validation task losses.
        final: the reference's finished validation loss per task, what a
            run is held to at the end (default: `final_losses(losses)`).

    Values between two points are interpolated linearly in log-loss; before
    the first and after the last point they are held.
    """

    def __init__(self, fractions, losses, final=None):
        fractions = np.asarray(fractions, np.float64)
        losses = np.asarray(losses, np.float64)
        if fractions.ndim != 1 or not len(fractions) or losses.shape[0] != len(
                fractions):
            raise ValueError(
                "A reference curve needs one loss row per fraction. Received "
                f"fractions of shape {fractions.shape}, losses of shape "
                f"{losses.shape}")
        if np.any(np.diff(fractions) <= 0):
            raise ValueError(
                f"Reference fractions must increase. Received: {fractions}")
        if np.any(losses <= 0):
            raise ValueError("Reference losses must be positive to compare "
                             f"against. Received: {losses}")
        self.fractions = fractions
        self.losses = losses
        self.final = np.asarray(final_losses(losses) if final is None
                                else final, np.float64)
        if self.final.shape != losses.shape[1:] or np.any(self.final <= 0):
            raise ValueError(
                "The final reference losses must be positive, one per task. "
                f"Received: {self.final}")

    @property
    def first_fraction(self):
        """Where the curve starts: before it there is nothing to compare
        with (an untrained network's inference-mode loss, its batch-norm
        statistics still catching up, is no guide)."""
        return float(self.fractions[0])

    def at(self, fraction):
        """Reference losses (numpy, per task) at one fraction of training."""
        logs = np.log(self.losses)
        return np.exp([np.interp(fraction, self.fractions, logs[:, t])
                       for t in range(logs.shape[1])])

    def tensor_at(self, fraction):
        """`at` as tensor ops on a scalar tensor `fraction`."""
        xs = tf.constant(self.fractions, tf.float32)
        logs = tf.constant(np.log(self.losses), tf.float32)
        count = int(xs.shape[0])
        fraction = tf.clip_by_value(tf.cast(fraction, tf.float32), xs[0],
                                    xs[-1])
        if count == 1:
            return tf.exp(logs[0])
        right = tf.clip_by_value(
            tf.searchsorted(xs, fraction[None], side="left")[0], 1,
            count - 1)
        left = right - 1
        weight = (fraction - xs[left]) / (xs[right] - xs[left])
        return tf.exp(logs[left] + weight * (logs[right] - logs[left]))


def quality_gap(losses, reference):
    """The worst task's relative excess loss over the reference
    (`max_t losses_t / reference_t - 1`); negative when every task is
    better than the reference."""
    return np.max(np.asarray(losses) / np.asarray(reference) - 1.0)
