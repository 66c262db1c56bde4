"""Sparsity control: how sparse a meta-sparsity run ends, stated by the user.

Three modes (`CONTROLS`):

- `paper`: lambda follows its own meta-gradient (Eq. 15) from `lambda_init`.
  The explicit term R of that gradient is positive and dwarfs the implicit
  one, so descending Eq. 10 in lambda only ever lowers it: the sparsity the
  run ends at is set by where lambda starts.
- `budget`: the backbone must end at a parameter sparsity or at a structural
  FLOPs speed-up. The budget follows a cubic ramp from 0 to the target over
  the first half of training, then holds. At every step lambda is the value
  at which the outer prox (Eq. 8, in Adam's metric) zeroes exactly the
  budget: the Lagrange multiplier of the constraint "at least this sparse".
  Which groups go is decided by the meta-trained weights: those whose norm,
  in the prox's metric, is smallest against `sqrt(n_g)`.
- `tolerance`: the user states how much validation loss each task may lose
  against a dense reference; the run finds the sparsest backbone within it.
  A few times an epoch the model's task losses on the validation split
  (`observe`, from `callbacks.QualityChecks`) are compared with the
  reference's at the same point of training; the sparsity setpoint is
  raised while every task is within the tolerance and lowered when one is
  not (dual ascent on the quality constraint), and lambda realises the
  setpoint as in `budget`.

The solve runs inside the train step (tensors and variables), so that the
prox, the controller and the meta-step stay one traced function.
"""

import dataclasses

import keras
import tensorflow as tf

from ms_keras import config as config_lib
from ms_keras.sparsity import budget as budget_lib

# The budget ramps up over this fraction of the training steps, then holds.
RAMP_FRACTION = 0.5
# The tolerance controller raises the setpoint while the quality gap is below
# this share of the tolerance, holds it up to the tolerance, and lowers it
# beyond: the band keeps the noise of the validation estimate from moving it.
TOLERANCE_AIM = 0.5
# Raising may cross the whole range over this fraction of training: the
# sparsity a network sustains falls as the dense reference keeps improving,
# and a setpoint that rises faster than that only overshoots. Lowering is
# this many times slower, since a network needs many steps to put revived
# groups back to use (lowering as fast as the gap asks would overshoot too).
FULL_SWING_FRACTION = 1.0
LOWERING_SLOWDOWN = 2.0
# The running quality gap averages the checks with weights halving with
# each older one (this many checks' window): one check's losses move with
# the model's own step-to-step changes. (Tried on the quickstart's sweep
# over --lambda_init and not kept: the median of the last three checks,
# and that median with an uncompared warm-up over the first quarter; both
# met the tolerance in fewer runs and spread the sparsity further.)
CHECK_WINDOW = 2
MAX_SETPOINT_PERCENT = 99.0
# A landed budget: within this many points of parameter sparsity, or this
# much FLOPs speed-up.
PARAMETER_SLACK = 1.0
FLOPS_SLACK = 0.05


def cubic_ramp(step, total_steps, fraction=RAMP_FRACTION):
    """Zhu & Gupta's schedule: 0 at step 0, 1 from `fraction * total_steps`.

    `1 - (1 - t)^3` with `t = step / (fraction * total_steps)` clipped to
    [0, 1]; a tensor when `step` is.
    """
    end = max(1.0, fraction * float(total_steps))
    progress = tf.clip_by_value(tf.cast(step, tf.float32) / end, 0.0, 1.0)
    return 1.0 - (1.0 - progress) ** 3


def inverse_softplus(value, beta):
    """`raw` with `softplus(beta * raw) / beta == value`, as a tensor op.

    Stable for tiny values: `log(expm1(x)) = x + log(-expm1(-x))`.
    """
    x = beta * tf.maximum(value, tf.cast(1e-12, value.dtype))
    return (x + tf.math.log(-tf.math.expm1(-x))) / beta


class _Untracked:
    """A plain holder Keras does not look into (no weight tracking)."""

    def __init__(self, **values):
        self.__dict__.update(values)


def next_setpoint(setpoint, gap, tolerance, rate, settled=False):
    """One move of the tolerance controller (percent points).

    Dual ascent with a dead band: the setpoint rises by `rate` when the
    quality gap is zero, by less as the gap approaches the aim
    (`TOLERANCE_AIM * tolerance`), holds between the aim and the tolerance,
    and beyond the tolerance falls by up to `rate / LOWERING_SLOWDOWN`
    (reached at twice the tolerance). Once `settled` it no longer rises.

    Args:
        setpoint: parameter sparsity setpoint (percent).
        gap: `quality_gap` of the current model (a fraction).
        tolerance: the allowed gap (a fraction, > 0).
        rate: the largest rise (percent points) of this move.
        settled: the last part of training (a bool or a bool tensor).
    """
    aim = TOLERANCE_AIM * tolerance
    settled = tf.convert_to_tensor(settled)
    rise = tf.where(settled, 0.0,
                    tf.clip_by_value((aim - gap) / aim, 0.0, 1.0))
    fall = tf.clip_by_value((gap - tolerance) / tolerance, 0.0, 1.0)
    change = rate * rise - rate / LOWERING_SLOWDOWN * fall
    return tf.clip_by_value(setpoint + change, 0.0, MAX_SETPOINT_PERCENT)


class SparsityController(keras.layers.Layer):
    """Chooses lambda every step so that the outer prox meets a sparsity
    setpoint, and (in `tolerance` mode) moves the setpoint with the quality.

    Its state (the setpoint, the running validation losses) is made of
    non-trainable weights, so a trainer that holds it saves and restores it
    with its checkpoints and backups.

    Args:
        options: the run's `config.MetaConfig`: its `sparsity_control`
            (`budget` or `tolerance`), its budget (`target_sparsity` or
            `target_flops_speedup`) or `quality_tolerance`.
        total_steps: optimizer steps of the whole run (ramp and rate); None
            until known.
        reference: the `ReferenceCurve` of the dense reference (needed by
            `observe`, so by `tolerance` mode when training).
        num_tasks: the tasks whose losses `observe` receives.

    Example:

    >>> options = config.MetaConfig(sparsity_control="budget",
    ...                             target_sparsity=44)
    >>> controller = SparsityController(options, total_steps=600)
    >>> controller.attach(prox, network.backbone)
    >>> lam = controller.solve(optimizer)          # inside the train step
    """

    def __init__(self, options, total_steps=None, reference=None,
                 num_tasks=1, **kwargs):
        super().__init__(trainable=False, **kwargs)
        mode = options.sparsity_control
        if mode not in (config_lib.BUDGET, config_lib.TOLERANCE):
            raise ValueError(
                f"`sparsity_control` must be '{config_lib.BUDGET}' or "
                f"'{config_lib.TOLERANCE}' for a controller. Received: "
                f"sparsity_control={mode}")
        if mode == config_lib.TOLERANCE and not options.quality_tolerance:
            options = dataclasses.replace(
                options,
                quality_tolerance=config_lib.DEFAULT_QUALITY_TOLERANCE)
        # Checked by the config (one budget, a positive tolerance).
        self.options = options
        self.total_steps = total_steps
        self._reference = _Untracked(curve=reference)
        self.num_tasks = int(num_tasks)
        self._ranking = None
        self.setpoint = self.add_weight(shape=(), initializer="zeros",
                                        trainable=False, name="setpoint")
        self.loss_average = self.add_weight(
            shape=(self.num_tasks,), initializer="zeros", trainable=False,
            name="loss_average")
        self.reference_average = self.add_weight(
            shape=(self.num_tasks,), initializer="zeros", trainable=False,
            name="reference_average")
        self.average_weight = self.add_weight(
            shape=(), initializer="zeros", trainable=False,
            name="average_weight")
        self.last_check = self.add_weight(
            shape=(), initializer="zeros", trainable=False,
            name="last_check")

    @property
    def mode(self):
        """`budget` or `tolerance`."""
        return self.options.sparsity_control

    @property
    def target_sparsity(self):
        return self.options.target_sparsity

    @property
    def target_flops_speedup(self):
        return self.options.target_flops_speedup

    @property
    def quality_tolerance(self):
        return self.options.quality_tolerance

    @property
    def reference(self):
        return self._reference.curve

    @reference.setter
    def reference(self, curve):
        self._reference.curve = curve

    @property
    def total_steps(self):
        """Optimizer steps of the whole run (the ramp and the rate follow
        it); None until known (a trainer's `fit` sets it)."""
        return self._total_steps

    @total_steps.setter
    def total_steps(self, steps):
        self._total_steps = None if steps is None else max(1, int(steps))

    @property
    def rate(self):
        """The largest setpoint rise per step (percent points)."""
        return 100.0 / (FULL_SWING_FRACTION * self._steps())

    def _steps(self):
        if self._total_steps is None:
            raise ValueError(
                "The sparsity controller does not know the run's length "
                "yet: set `total_steps` (fit() does).")
        return self._total_steps

    @property
    def measures_flops(self):
        return self.target_flops_speedup is not None

    def attach(self, prox, backbone):
        """Binds the controller to the prox and backbone it steers."""
        if self.measures_flops and prox.kind != config_lib.CHANNEL:
            raise ValueError(
                "--target_flops_speedup needs channel sparsity: zeroed single "
                "weights remove no channel (got --sparsity=unstructured).")
        self._ranking = _Untracked(value=budget_lib.GroupRanking(prox,
                                                                 backbone))
        if self.measures_flops:
            most = self._ranking.value.structure.max_speedup()
            if self.target_flops_speedup >= most:
                raise ValueError(
                    f"--target_flops_speedup={self.target_flops_speedup}: "
                    f"this backbone reaches at most {most:.2f}x with every "
                    "group zeroed.")

    def budget_now(self, step):
        """The budget in force at `step`: the ramped target (budget mode,
        percent or speed-up) or the setpoint (tolerance mode, percent)."""
        if self.mode == config_lib.TOLERANCE:
            return self.setpoint.value
        ramp = cubic_ramp(step, self._steps())
        if self.measures_flops:
            # Ramp the removed share of the FLOPs, not the speed-up.
            removed = (1.0 - 1.0 / self.target_flops_speedup) * ramp
            return 1.0 / (1.0 - removed)
        return self.target_sparsity * ramp

    def solve(self, optimizer):
        """Lambda at which the prox, after this step's update, zeroes the
        budget in force (call after the optimizer's update, before the prox).
        """
        ranking = self._ranking.value
        lams = ranking.death_lambdas(optimizer)
        budget = self.budget_now(optimizer.iterations)
        if self.measures_flops:
            lam = ranking.lambda_for_speedup(lams, budget)
        else:
            lam = ranking.lambda_for_parameters(lams, budget)
        # Groups at exactly the solved lambda are zeroed too.
        return lam * (1.0 + 1e-5)

    def observe(self, losses, step):
        """Tolerance mode: folds one quality check (the task losses on the
        validation split) into the running averages and moves the setpoint
        by the rate times the steps since the last check.

        Args:
            losses: per-task validation losses of the current model.
            step: the optimizer step of the check.

        Returns:
            The running quality gap (a fraction).
        """
        if self.reference is None:
            raise ValueError("`observe` needs the dense `reference` curve.")
        losses = tf.cast(losses, tf.float32)
        step = tf.cast(step, tf.float32)
        fraction = step / float(self._steps())
        # The dense reference at the same point of training, averaged like
        # the model's losses, so that both lag alike.
        reference = self.reference.tensor_at(fraction)
        # Nothing is compared (and the setpoint stays) before the reference
        # curve starts.
        active = fraction >= self.reference.first_fraction
        decay = tf.where(active, 1.0 - 1.0 / CHECK_WINDOW, 1.0)
        self.loss_average.assign(decay * self.loss_average + (1 - decay)
                                 * losses)
        self.reference_average.assign(decay * self.reference_average
                                      + (1 - decay) * reference)
        self.average_weight.assign(decay * self.average_weight + (1 - decay))
        gap = self.gap()
        moved = next_setpoint(
            self.setpoint, gap, self.quality_tolerance / 100.0,
            self.rate * (step - self.last_check),
            fraction >= self.options.settle_fraction)
        self.setpoint.assign(tf.where(active, moved, self.setpoint))
        self.last_check.assign(step)
        return gap

    def gap(self):
        """The running quality gap (fraction; 0 before any observation)."""
        ready = self.average_weight > 0
        safe = tf.where(ready, self.reference_average,
                        tf.ones_like(self.reference_average))
        return tf.where(ready, tf.reduce_max(self.loss_average / safe) - 1.0,
                        0.0)
