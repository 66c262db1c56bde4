"""Per-task losses (the paper's Table 2) and multi-task loss weighting (Eq. 2).

Every loss takes `(y_true, y_pred)` in the task's target convention, skips
invalid pixels, and returns a scalar mean. All are written with ops whose
second derivatives TF implements, because the meta-gradient differentiates
through the inner-loop gradient.
"""

import keras
import numpy as np
from keras import ops

from ms_keras import tasks as tasks_lib

HU_ALPHA = 0.5  # offset inside the logarithms of Hu et al. (2019)
# Every log term of the depth loss is shifted by -log(HU_ALPHA), its value at
# zero error, so the loss is >= 0 (uncertainty weighting, Eq. 2, assumes
# non-negative task losses) with the gradient unchanged.
_LOG_FLOOR = float(np.log(HU_ALPHA))
_SOBEL_X = np.array([[1, 0, -1], [2, 0, -2], [1, 0, -1]], np.float64)


def masked_mean(values, mask):
    """Mean of `values` over the entries where `mask` is 1 (0 if none)."""
    mask = ops.cast(mask, values.dtype)
    return ops.sum(values * mask) / ops.maximum(ops.sum(mask), 1.0)


def segmentation_loss(labels, logits):
    """Pixel-wise cross-entropy; labels equal to 255 are ignored.

    Args:
        labels: `(batch, h, w)` integer class ids, 255 = ignore.
        logits: `(batch, h, w, classes)` unnormalised scores.
    """
    labels = ops.cast(labels, "int32")
    valid = ops.not_equal(labels, tasks_lib.IGNORE_LABEL)
    safe = ops.where(valid, labels, 0)
    log_probs = ops.log_softmax(logits, axis=-1)
    one_hot = ops.one_hot(safe, ops.shape(logits)[-1], dtype=logits.dtype)
    nll = -ops.sum(one_hot * log_probs, axis=-1)
    return masked_mean(nll, valid)


def _sobel(depth):
    """Horizontal and vertical Sobel responses of `(b, h, w, 1)` maps (VALID)."""
    kx = ops.convert_to_tensor(_SOBEL_X[:, :, None, None], depth.dtype)
    ky = ops.convert_to_tensor(_SOBEL_X.T[:, :, None, None], depth.dtype)
    dx = ops.conv(depth, kx, padding="valid")
    dy = ops.conv(depth, ky, padding="valid")
    return dx[..., 0], dy[..., 0]


def depth_loss(depth_true, depth_pred):
    """Depth loss of Hu et al. (2019): log depth, gradient and normal errors.

    `ln(|d - g| + a)` over valid pixels, plus `ln(|dx(d) - dx(g)| + a) +
    ln(|dy(d) - dy(g)| + a)` from Sobel gradients and `|1 - cos(n_d, n_g)|`
    with `n = (-dx, -dy, 1)`, both over pixels whose 3x3 neighbourhood is
    valid; `a` = 0.5. Pixels with depth 0 carry no measurement. Each log term
    is shifted by `-ln(a)`, so the loss is 0 for a perfect prediction and
    never negative; the gradient is Hu et al.'s.

    Args:
        depth_true: `(batch, h, w, 1)` metres, 0 = invalid.
        depth_pred: `(batch, h, w, 1)` metres.
    """
    depth_true = ops.cast(depth_true, depth_pred.dtype)
    valid = ops.cast(depth_true > tasks_lib.INVALID_DEPTH, depth_pred.dtype)
    log_error = ops.log(ops.abs(depth_pred - depth_true) + HU_ALPHA) - (
        _LOG_FLOOR)
    loss_depth = masked_mean(log_error[..., 0], valid[..., 0])
    # A Sobel response is trustworthy only if all 9 pixels it reads are valid.
    ones = ops.ones((3, 3, 1, 1), depth_pred.dtype)
    valid_patch = ops.conv(valid, ones, padding="valid")[..., 0] > 8.5
    dx_pred, dy_pred = _sobel(depth_pred)
    dx_true, dy_true = _sobel(depth_true)
    grad_error = (ops.log(ops.abs(dx_pred - dx_true) + HU_ALPHA)
                  + ops.log(ops.abs(dy_pred - dy_true) + HU_ALPHA)
                  - 2.0 * _LOG_FLOOR)
    loss_grad = masked_mean(grad_error, valid_patch)
    dot = dx_pred * dx_true + dy_pred * dy_true + 1.0
    norms = ops.sqrt((dx_pred ** 2 + dy_pred ** 2 + 1.0)
                     * (dx_true ** 2 + dy_true ** 2 + 1.0))
    loss_normal = masked_mean(ops.abs(1.0 - dot / norms), valid_patch)
    return loss_depth + loss_grad + loss_normal


def normals_loss(normals_true, normals_pred):
    """Mean `1 - cos(pred, true)` over pixels whose true normal is non-zero."""
    normals_true = ops.cast(normals_true, normals_pred.dtype)
    valid = ops.sum(ops.abs(normals_true), axis=-1) > 0
    pred = ops.normalize(normals_pred, axis=-1, epsilon=1e-12)
    cosine = ops.sum(pred * normals_true, axis=-1)
    return masked_mean(1.0 - cosine, valid)


def edges_loss(edges_true, edges_pred, delta=1.0):
    """Huber loss between the predicted edge map and the {0, 1} edge labels."""
    edges_true = ops.cast(edges_true, edges_pred.dtype)
    return ops.mean(keras.losses.huber(edges_true, edges_pred, delta=delta))


def attribute_loss(labels, logits):
    """Binary cross-entropy from logits for `(batch, 1)` {0, 1} labels."""
    labels = ops.cast(labels, logits.dtype)
    return ops.mean(keras.losses.binary_crossentropy(labels, logits,
                                                     from_logits=True))


def _custom_loss(task):
    loss = task.loss
    if isinstance(loss, str):
        loss = keras.losses.get(loss)
    if not callable(loss):
        raise ValueError(
            f"Task '{task.name}': `loss` must be a Keras loss name, a "
            f"keras.losses.Loss or a function. Received: loss={task.loss!r}")
    return loss


def custom_task_loss(task, y_true, y_pred, weight=None):
    """The loss of a task with its own `loss` on one batch
    (`task_kinds.task_loss` answers every task).

    Args:
        task: a TaskSpec whose `loss` is set.
        y_true: targets.
        y_pred: the head's output.
        weight: optional `(batch,)`, 1 for labelled examples and 0 for
            missing ones; the loss is the mean over the labelled examples,
            0 if there are none.
    """
    loss = _custom_loss(task)
    if isinstance(loss, keras.losses.Loss):
        if weight is None:
            return ops.cast(loss(y_true, y_pred), y_pred.dtype)
        weight = ops.cast(ops.reshape(weight, (-1,)), y_pred.dtype)
        # Keras averages over the whole batch: rescale to the labelled part.
        value = ops.cast(loss(y_true, y_pred, sample_weight=weight),
                         y_pred.dtype)
        count = ops.cast(ops.shape(weight)[0], y_pred.dtype)
        return value * count / ops.maximum(ops.sum(weight), 1.0)
    values = ops.cast(loss(y_true, y_pred), y_pred.dtype)
    if len(values.shape) > 1:  # per-element values: a mean per example
        values = ops.mean(ops.reshape(values, (ops.shape(values)[0], -1)),
                          axis=1)
    if len(values.shape) == 0:
        if weight is not None:
            raise ValueError(
                f"Task '{task.name}': its loss function returns one value "
                "per batch, so per-example label weights cannot apply; "
                "return one value per example.")
        return values
    if weight is None:
        return ops.mean(values)
    return masked_mean(values, ops.reshape(weight, (-1,)))


def _checked_num_tasks(num_tasks):
    if num_tasks < 1:
        raise ValueError(
            f"`num_tasks` must be >= 1. Received: num_tasks={num_tasks}")
    return int(num_tasks)


@keras.saving.register_keras_serializable(package="ms_keras")
class UncertaintyWeighting(keras.layers.Layer):
    """Homoscedastic-uncertainty loss weighting of Kendall et al. (Eq. 2).

    Combines per-task losses as `sum_i m_i * (l_i / (2 s_i^2) + log s_i)` with
    one learnable `log(s_i^2)` per task, stored as the weight `log_variances`.
    `m_i` masks the tasks that take part (all by default), so the same layer
    serves every episode of a task set. For a task loss `l > 0` the term is
    bounded below by `(1 + log l) / 2` (at `s^2 = l`); every built-in
    loss is >= 0, so no weight can lower the total without limit.

    Args:
        num_tasks: number of tasks.

    Example:

    >>> weighting = UncertaintyWeighting(2)
    >>> total = weighting(keras.ops.array([1.0, 3.0]))  # 0.5 + 1.5 at s = 1
    """

    def __init__(self, num_tasks, **kwargs):
        super().__init__(**kwargs)
        self.num_tasks = _checked_num_tasks(num_tasks)

    def build(self, input_shape=None):
        self.log_variances = self.add_weight(
            shape=(self.num_tasks,), initializer="zeros",
            name="log_variances")

    def call(self, losses, mask=None):
        log_var = ops.cast(self.log_variances, losses.dtype)
        terms = 0.5 * ops.exp(-log_var) * losses + 0.5 * log_var
        if mask is not None:
            terms = terms * ops.cast(mask, losses.dtype)
        return ops.sum(terms)

    def task_weights(self):
        """The current weight `1 / (2 s_i^2)` of each task's loss."""
        return 0.5 * ops.exp(-self.log_variances)

    def get_config(self):
        config = super().get_config()
        config.update({"num_tasks": self.num_tasks})
        return config


@keras.saving.register_keras_serializable(package="ms_keras")
class EqualWeighting(keras.layers.Layer):
    """Plain sum of the (masked) task losses; every task weight is 1.

    Args:
        num_tasks: number of tasks.
    """

    def __init__(self, num_tasks, **kwargs):
        super().__init__(**kwargs)
        self.num_tasks = _checked_num_tasks(num_tasks)

    def build(self, input_shape=None):
        # No weights; called without a shape like UncertaintyWeighting.
        self.built = True

    def call(self, losses, mask=None):
        if mask is not None:
            losses = losses * ops.cast(mask, losses.dtype)
        return ops.sum(losses)

    def task_weights(self):
        """Every task's weight, 1."""
        return ops.ones((self.num_tasks,))

    def get_config(self):
        config = super().get_config()
        config.update({"num_tasks": self.num_tasks})
        return config


WEIGHTINGS = {"uncertainty": UncertaintyWeighting, "equal": EqualWeighting}


def build_loss_weighting(kind, num_tasks):
    """Returns the weighting layer `kind` (`uncertainty` or `equal`); it
    weighs float32 losses whatever the global dtype policy."""
    if kind not in WEIGHTINGS:
        raise ValueError(
            f"Unknown loss weighting '{kind}'. Allowed: {', '.join(WEIGHTINGS)}")
    mixed = keras.config.dtype_policy().compute_dtype in ("float16",
                                                          "bfloat16")
    return WEIGHTINGS[kind](num_tasks, name="loss_weighting",
                            dtype="float32" if mixed else None)
