"""Meta-gradients of one episode: finite differences and an independent
unrolled computation in plain TF ops (float64, GELU: smooth everywhere the
checks look)."""

import keras
import numpy as np
import tensorflow as tf
from absl.testing import parameterized

from ms_keras import tasks
from ms_keras.models import MultiTaskModel
from ms_keras.trainers.meta_sparsity import MetaSparsityTrainer
from ms_keras.models.layers import ExactBatchNormalization
from ms_keras.sparsity.lam import SparsityStrength
from ms_keras.sparsity.proximal import OuterProx
from tests.conftest import set_precision

SEG = tasks.TaskSpec(1, "segmentation", tasks.SEGMENTATION, 3)
NORMALS = tasks.TaskSpec(3, "normals", tasks.NORMALS, 3)
EPSILON = 1e-5  # ExactBatchNormalization's default


def tiny_network():
    """A two-conv backbone (with batch norm) and two 1x1 heads."""
    image = keras.Input((5, 5, 3), name="image")
    x = keras.layers.Conv2D(4, 3, padding="same", use_bias=False,
                            name="conv1")(image)
    x = ExactBatchNormalization(name="bn1")(x)
    x = keras.layers.Activation("gelu")(x)
    x = keras.layers.Conv2D(4, 3, padding="same", use_bias=False,
                            name="conv2")(x)
    x = keras.layers.Activation("gelu")(x)
    backbone = keras.Model(image, x, name="backbone")
    features = keras.Input((5, 5, 4))
    seg = keras.Model(features, keras.layers.Conv2D(3, 1)(features),
                      name="head_segmentation")
    normal_out = keras.layers.UnitNormalization()(
        keras.layers.Conv2D(3, 1)(features))
    normals = keras.Model(features, normal_out, name="head_normals")
    return MultiTaskModel(backbone, {"segmentation": seg, "normals": normals})


def make_batch(rng, size=3):
    images = rng.uniform(size=(size, 5, 5, 3))
    normals = rng.normal(size=(size, 5, 5, 3))
    normals /= np.linalg.norm(normals, axis=-1, keepdims=True)
    labels = rng.integers(0, 3, size=(size, 5, 5)).astype(np.int32)
    labels[0, 0, :2] = 255
    return (tf.constant(images),
            {"segmentation": tf.constant(labels),
             "normals": tf.constant(normals)})


def build_trainer(inner_steps, first_order=False, inner_lr=0.05, lam=0.02,
                  sparsity="channel", seed=0, inner_clip_norm=0.0,
                  inner_prox="differentiable", prox_step="adam_metric"):
    keras.utils.set_random_seed(seed)
    network = tiny_network()
    prox = (None if sparsity == "none"
            else OuterProx(network.backbone, sparsity, prox_step))
    trainer = MetaSparsityTrainer(
        network, (SEG, NORMALS), "uncertainty", sparsity=sparsity,
        lam=SparsityStrength(lam), prox=prox, inner_steps=inner_steps,
        inner_lr=inner_lr, first_order=first_order,
        inner_clip_norm=inner_clip_norm, inner_prox=inner_prox)
    trainer.loss_weighting.log_variances.assign([0.3, -0.2])
    return trainer


# ---------------------------------------------------------------------------
# The independent computation: the same model and Alg. 3 written with tf.nn
# ops on a dict of tensors.

def plain_forward(p, images, targets, mask):
    h = tf.nn.conv2d(images, p["conv1"], 1, "SAME")
    mean = tf.reduce_mean(h, axis=[0, 1, 2])
    var = tf.reduce_mean(tf.square(h - mean), axis=[0, 1, 2])
    h = (h - mean) / tf.sqrt(var + EPSILON) * p["gamma"] + p["beta"]
    h = tf.nn.gelu(h, approximate=False)
    h = tf.nn.gelu(tf.nn.conv2d(h, p["conv2"], 1, "SAME"), approximate=False)
    logits = tf.nn.conv2d(h, p["seg_w"], 1, "SAME") + p["seg_b"]
    labels = targets["segmentation"]
    valid = tf.cast(labels != 255, tf.float64)
    safe = tf.where(labels != 255, labels, 0)
    nll = -tf.reduce_sum(tf.one_hot(safe, 3, dtype=tf.float64)
                         * tf.nn.log_softmax(logits), -1)
    seg_loss = tf.reduce_sum(nll * valid) / tf.reduce_sum(valid)
    raw = tf.nn.conv2d(h, p["nrm_w"], 1, "SAME") + p["nrm_b"]
    unit = raw / tf.maximum(tf.norm(raw, axis=-1, keepdims=True), 1e-12)
    normal_loss = tf.reduce_mean(
        1 - tf.reduce_sum(unit * targets["normals"], -1))
    losses = tf.stack([seg_loss, normal_loss])
    if float(tf.reduce_sum(mask)) == 1.0:  # a single-task episode (Alg. 3)
        return tf.reduce_sum(mask * losses)
    s = p["log_var"]
    return tf.reduce_sum(mask * (0.5 * tf.exp(-s) * losses + 0.5 * s))


def plain_prox(kernel, threshold, straight_through=False):
    squared = tf.reduce_sum(tf.square(kernel), axis=[0, 1, 3])
    # A zero group (dead after an earlier step) has norm 0: keep its
    # gradient finite (the subgradient 0), like any careful implementation.
    alive = squared > threshold ** 2
    norms = tf.sqrt(tf.where(alive, squared, tf.ones_like(squared)))
    scale = tf.where(alive, 1 - threshold / norms, tf.zeros_like(squared))
    out = kernel * scale[None, None, :, None]
    if straight_through:
        dead = tf.cast(scale == 0, kernel.dtype)[None, None, :, None]
        out = out + dead * (kernel - tf.stop_gradient(kernel))
    return out


def plain_penalty(kernels):
    total = 0.0
    for k in kernels:
        squared = tf.reduce_sum(tf.square(k), axis=[0, 1, 3])
        safe = tf.sqrt(tf.where(squared > 0, squared, tf.ones_like(squared)))
        total += np.sqrt(9 * 4) * tf.reduce_sum(
            tf.where(squared > 0, safe, tf.zeros_like(squared)))
    return total


def plain_adapt(p, lam, support, mask, steps, lr,
                inner_prox="differentiable"):
    """The inner loop: `steps` SGD steps on the support batch, each followed
    by the group prox with threshold `lr * lam * sqrt(group size)`."""
    names = sorted(p)
    fast = dict(p)
    for _ in range(steps):
        with tf.GradientTape() as inner:
            inner.watch([fast[n] for n in names])
            loss = plain_forward(fast, *support, mask)
        grads = inner.gradient(
            loss, [fast[n] for n in names],
            unconnected_gradients=tf.UnconnectedGradients.ZERO)
        fast = {n: fast[n] - lr * g for n, g in zip(names, grads)}
        if inner_prox == "off":
            continue
        for n in ("conv1", "conv2"):
            fast[n] = plain_prox(fast[n], lr * lam * np.sqrt(9 * 4),
                                 inner_prox == "straight_through")
    return fast


def plain_objective(p, inner_lam, outer_lam, support, query, mask, steps,
                    lr):
    """Eq. 10 with the inner loop's lambda and the penalty's lambda apart:
    d/d outer_lam is the explicit term R(theta*) of lambda's gradient,
    d/d inner_lam the implicit one (Eq. 15)."""
    fast = plain_adapt(p, inner_lam, support, mask, steps, lr)
    return plain_forward(fast, *query, mask) + outer_lam * plain_penalty(
        [fast["conv1"], fast["conv2"]])


def plain_meta_gradients(p, raw, support, query, mask, steps, lr,
                         inner_prox="differentiable"):
    names = sorted(p)
    with tf.GradientTape(persistent=True) as outer:
        outer.watch([p[n] for n in names] + [raw])
        lam = tf.math.softplus(raw)
        fast = plain_adapt(p, lam, support, mask, steps, lr, inner_prox)
        query_loss = plain_forward(fast, *query, mask)
        objective = query_loss + lam * plain_penalty([fast["conv1"],
                                                      fast["conv2"]])
    weights = dict(zip(names, outer.gradient(
        query_loss, [p[n] for n in names],
        unconnected_gradients=tf.UnconnectedGradients.ZERO)))
    return weights, outer.gradient(objective, raw)


def as_plain(trainer):
    """The trainer's parameters as the plain computation's dict."""
    backbone = trainer.network.backbone
    seg = trainer.network.heads["segmentation"].trainable_variables
    nrm = trainer.network.heads["normals"].trainable_variables
    bn = backbone.get_layer("bn1")
    values = {
        "conv1": backbone.get_layer("conv1").kernel, "gamma": bn.gamma,
        "beta": bn.beta, "conv2": backbone.get_layer("conv2").kernel,
        "seg_w": seg[0], "seg_b": seg[1], "nrm_w": nrm[0], "nrm_b": nrm[1],
        "log_var": trainer.loss_weighting.log_variances,
    }
    return {k: tf.constant(np.asarray(v)) for k, v in values.items()}


class MetaGradientTest(parameterized.TestCase):

    def setUp(self):
        set_precision("float64")
        rng = np.random.default_rng(0)
        self.support = make_batch(rng)
        self.query = make_batch(rng)
        self.episode = tf.constant([True, True])

    def tearDown(self):
        set_precision("float32")

    def _objective(self, trainer):
        result = trainer.compute_meta_gradients(self.support, self.query,
                                                self.episode)
        return result.query_loss.numpy(), result.objective.numpy()

    def _directional_fd(self, trainer, variable, direction, which, eps=1e-5):
        original = np.asarray(variable)
        values = []
        for sign in (1, -1):
            variable.assign(original + sign * eps * direction)
            values.append(self._objective(trainer)[which])
        variable.assign(original)
        return (values[0] - values[1]) / (2 * eps)

    @parameterized.named_parameters(("k1", 1), ("k3", 3))
    def test_lambda_gradient_matches_finite_differences(self, steps):
        trainer = build_trainer(steps)
        result = trainer.compute_meta_gradients(self.support, self.query,
                                                self.episode)
        fd = self._directional_fd(trainer, trainer.lam.raw, 1.0, which=1)
        self.assertLess(abs(float(result.lam) - fd) / abs(fd), 1e-4)

    @parameterized.named_parameters(("k1", 1), ("k3", 3))
    def test_the_logged_explicit_and_implicit_terms_match_finite_differences(
            self, steps):
        # The README's argument (lambda's gradient is its explicit term R)
        # rests on this split: each logged term is the derivative through
        # one of lambda's two roles, the penalty's factor or the inner prox.
        trainer = build_trainer(steps)
        result = trainer.compute_meta_gradients(self.support, self.query,
                                                self.episode)
        trainer._track_lambda_gradient(result.lam, result.penalty)
        explicit = float(trainer.explicit_tracker.result())
        implicit = float(trainer.implicit_tracker.result())
        params = as_plain(trainer)
        lam, eps = float(trainer.lam.value()), 1e-6
        mask = tf.constant([1.0, 1.0], tf.float64)

        def objective(inner_lam, outer_lam):
            return float(plain_objective(
                params, inner_lam, outer_lam, self.support, self.query,
                mask, steps, trainer.inner_lr))

        fd_explicit = (objective(lam, lam + eps)
                       - objective(lam, lam - eps)) / (2 * eps)
        fd_implicit = (objective(lam + eps, lam)
                       - objective(lam - eps, lam)) / (2 * eps)
        self.assertNotAlmostEqual(fd_implicit, 0.0, places=6)
        self.assertLess(abs(explicit - fd_explicit) / abs(fd_explicit), 1e-6)
        self.assertLess(abs(implicit - fd_implicit) / abs(fd_implicit), 1e-4)

    @parameterized.named_parameters(("k1", 1), ("k3", 3))
    def test_weight_gradients_match_finite_differences(self, steps):
        trainer = build_trainer(steps)
        result = trainer.compute_meta_gradients(self.support, self.query,
                                                self.episode)
        variables = trainer.meta_variables
        rng = np.random.default_rng(1)
        checked = 0
        for index, variable in enumerate(variables):
            if variable.path.endswith("moving_mean"):
                continue
            direction = rng.normal(size=variable.shape)
            analytic = float(np.sum(np.asarray(result.weights[index])
                                    * direction))
            fd = self._directional_fd(trainer, variable, direction, which=0)
            self.assertLess(abs(analytic - fd) / max(abs(fd), 1e-8), 1e-4,
                            variable.path)
            checked += 1
        self.assertGreaterEqual(checked, 8)

    @parameterized.named_parameters(
        ("k1", 1, "differentiable", (True, True)),
        ("k2", 2, "differentiable", (True, True)),
        ("single_task_episode", 2, "differentiable", (False, True)),
        ("straight_through", 2, "straight_through", (True, True)),
        ("inner_prox_off", 2, "off", (True, True)))
    def test_equals_an_independent_unrolled_computation(self, steps,
                                                        inner_prox, episode):
        # A strong inner prox zeroes groups inside the inner loop, so the
        # straight-through path is exercised.
        trainer = build_trainer(steps, inner_prox=inner_prox,
                                lam=0.02 if inner_prox == "differentiable"
                                else 3.0)
        result = trainer.compute_meta_gradients(self.support, self.query,
                                                tf.constant(episode))
        params = as_plain(trainer)
        raw = tf.constant(float(trainer.lam.raw.numpy()), tf.float64)
        weights, lam_grad = plain_meta_gradients(
            params, raw, self.support, self.query,
            tf.constant(episode, tf.float64), steps, trainer.inner_lr,
            inner_prox)
        np.testing.assert_allclose(float(result.lam), float(lam_grad),
                                   rtol=1e-9)
        # meta_variables: backbone, segmentation head, normals head, weighting.
        order = ("conv1", "gamma", "beta", "conv2", "seg_w", "seg_b",
                 "nrm_w", "nrm_b", "log_var")
        self.assertLen(result.weights, len(order))
        for name, ours in zip(order, result.weights):
            np.testing.assert_allclose(ours, weights[name], rtol=1e-8,
                                       atol=1e-12, err_msg=name)

    def test_straight_through_changes_only_the_zeroed_groups_gradient(self):
        # First order: a group zeroed by the inner prox then gets exactly
        # zero meta-gradient without the straight-through path (the ratchet).
        exact = build_trainer(1, lam=3.0, first_order=True
                              ).compute_meta_gradients(
            self.support, self.query, self.episode)
        through = build_trainer(1, lam=3.0, first_order=True,
                                inner_prox="straight_through"
                                ).compute_meta_gradients(
            self.support, self.query, self.episode)
        # Same forward values and lambda gradient (a zeroed group carries no
        # lambda dependence either way); the zeroed groups get a gradient.
        # (Exact values: the independent computation above.)
        np.testing.assert_allclose(through.query_loss, exact.query_loss)
        np.testing.assert_allclose(through.lam, exact.lam, rtol=1e-12)
        some_zeroed = False
        for index in (0, 3):  # conv1, conv2
            kernel = exact.weights[index].numpy()
            zeroed = np.all(kernel == 0, axis=(0, 1, 3))
            some_zeroed |= bool(zeroed.any())
            moved = through.weights[index].numpy()
            if zeroed.any():
                self.assertFalse(np.all(moved[:, :, zeroed] == 0))
        self.assertTrue(some_zeroed)

    def test_clipped_inner_steps_are_differentiated_exactly(self):
        trainer = build_trainer(3, inner_clip_norm=0.05)
        result = trainer.compute_meta_gradients(self.support, self.query,
                                                self.episode)
        unclipped = build_trainer(3).compute_meta_gradients(
            self.support, self.query, self.episode)
        self.assertNotAlmostEqual(float(result.query_loss),
                                  float(unclipped.query_loss), places=4)
        fd = self._directional_fd(trainer, trainer.lam.raw, 1.0, which=1)
        self.assertLess(abs(float(result.lam) - fd) / abs(fd), 1e-4)
        kernel = trainer.meta_variables[0]
        direction = np.random.default_rng(2).normal(size=kernel.shape)
        analytic = float(np.sum(np.asarray(result.weights[0]) * direction))
        fd = self._directional_fd(trainer, kernel, direction, which=0)
        self.assertLess(abs(analytic - fd) / abs(fd), 1e-4)

    def test_first_and_second_order_differ(self):
        second = build_trainer(2).compute_meta_gradients(
            self.support, self.query, self.episode)
        first = build_trainer(2, first_order=True).compute_meta_gradients(
            self.support, self.query, self.episode)
        np.testing.assert_allclose(first.query_loss, second.query_loss)
        difference = max(float(np.max(np.abs(a - b)))
                         for a, b in zip(first.weights, second.weights))
        self.assertGreater(difference, 1e-4)

    def test_inactive_task_gets_no_gradient(self):
        trainer = build_trainer(1)
        result = trainer.compute_meta_gradients(
            self.support, self.query, tf.constant([False, True]))
        for variable, grad in zip(trainer.meta_variables, result.weights):
            if "head_segmentation" in variable.path:
                np.testing.assert_array_equal(grad, 0.0)
        self.assertEqual(float(result.task_losses[0]), 0.0)

    def test_lambda_gradient_takes_either_sign(self):
        # Usually the explicit term R(theta*) >= 0 dominates: descent lowers
        # lambda.
        usual = build_trainer(1).compute_meta_gradients(
            self.support, self.query, self.episode)
        self.assertGreater(float(usual.lam), 0.0)
        # Constructed case: small backbone weights (small R), strong heads and
        # a query whose labels (all class 0, favoured by the head's bias) are
        # best predicted from weaker features. The implicit term of Eq. 15,
        # through the inner prox, outweighs the explicit one.
        trainer = build_trainer(1, inner_lr=0.4, lam=0.02)
        backbone = trainer.network.backbone
        for name, scale in (("conv1", 0.05), ("conv2", 0.02)):
            kernel = backbone.get_layer(name).kernel
            kernel.assign(kernel * scale)
        head = trainer.network.heads["segmentation"]
        head.trainable_variables[0].assign(head.trainable_variables[0] * 20)
        head.trainable_variables[1].assign([1.0, 0.0, 0.0])
        images, targets = self.query
        query = (images, {**targets, "segmentation": tf.zeros_like(
            targets["segmentation"])})
        result = trainer.compute_meta_gradients(self.support, query,
                                                tf.constant([True, False]))
        self.assertLess(float(result.lam), 0.0)
        before = float(trainer.lam.value())
        trainer.lam.raw.assign_sub(0.1 * result.lam)
        self.assertGreater(float(trainer.lam.value()), before)
