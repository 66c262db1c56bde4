import math

import numpy as np
import tensorflow as tf
from absl.testing import absltest

from ms_keras.sparsity import lam as lam_lib
from ms_keras.sparsity import prox


class GroupSoftThresholdTest(absltest.TestCase):

    def setUp(self):
        rng = np.random.default_rng(0)
        self.kernel = rng.normal(size=(3, 3, 5, 4))
        # Make group norms clearly spread: scale channel c by (c + 1) / 5.
        self.kernel *= (np.arange(1, 6) / 5.0)[None, None, :, None]
        self.norms = np.sqrt(np.sum(self.kernel ** 2, axis=(0, 1, 3)))

    def test_zeroes_exactly_the_groups_at_or_below_threshold(self):
        ordered = np.sort(self.norms)
        threshold = float(ordered[1] + ordered[2]) / 2
        out = prox.group_soft_threshold(tf.constant(self.kernel),
                                        threshold).numpy()
        for c, norm in enumerate(self.norms):
            group = out[:, :, c, :]
            if norm <= threshold:
                self.assertTrue(np.all(group == 0), f"group {c}")
            else:
                expected = (1 - threshold / norm) * self.kernel[:, :, c, :]
                np.testing.assert_allclose(group, expected, rtol=1e-12)

    def test_prox_threshold_is_lr_lam_sqrt_group_size(self):
        lr, lam = 0.1, 0.05
        threshold = lr * lam * math.sqrt(3 * 3 * 4)
        np.testing.assert_allclose(
            prox.prox(tf.constant(self.kernel), lr, lam, "channel"),
            prox.group_soft_threshold(tf.constant(self.kernel), threshold))

    def test_unstructured_prox_is_element_soft_threshold(self):
        out = prox.prox(tf.constant(self.kernel), 0.5, 0.4, "unstructured")
        expected = np.sign(self.kernel) * np.maximum(
            np.abs(self.kernel) - 0.2, 0)
        np.testing.assert_allclose(out, expected, rtol=1e-12)

    def test_gradient_at_a_zero_group_is_finite(self):
        kernel = tf.Variable(self.kernel)
        kernel[:, :, 0, :].assign(tf.zeros((3, 3, 4), tf.float64))
        with tf.GradientTape() as tape:
            value = tf.reduce_sum(prox.group_soft_threshold(kernel, 0.1)) + (
                prox.penalty([kernel], "channel"))
        grad = tape.gradient(value, kernel).numpy()
        self.assertTrue(np.all(np.isfinite(grad)))
        np.testing.assert_array_equal(grad[:, :, 0, :], 0.0)

    def test_penalty_matches_eq_12(self):
        expected = math.sqrt(36) * self.norms.sum()
        self.assertAlmostEqual(
            float(prox.penalty([tf.constant(self.kernel)], "channel")),
            expected, places=10)
        self.assertAlmostEqual(
            float(prox.penalty([tf.constant(self.kernel)], "unstructured")),
            float(np.abs(self.kernel).sum()), places=10)

    def test_unknown_kind_is_rejected(self):
        with self.assertRaisesRegex(ValueError, "Received: filter"):
            prox.prox(tf.constant(self.kernel), 0.1, 0.1, "filter")


class SparsityStrengthTest(absltest.TestCase):

    def test_softplus_round_trip(self):
        for value in (1e-5, 1e-3, 0.5, 3.0):
            for beta in (1.0, 4.0):
                strength = lam_lib.SparsityStrength(value, beta=beta,
                                                    learnable=False)
                self.assertAlmostEqual(float(strength.value()) / value, 1.0,
                                       places=5)

    def test_initial_value_is_required_and_positive(self):
        for value in (None, 0.0, -1e-3):
            with self.assertRaisesRegex(ValueError, "initial_value"):
                lam_lib.SparsityStrength(value)

    def test_learnable_controls_trainability_and_config_round_trips(self):
        fixed = lam_lib.SparsityStrength(1e-4, learnable=False)
        self.assertEmpty(fixed.trainable_variables)
        learned = lam_lib.SparsityStrength(0.3)
        self.assertLen(learned.trainable_variables, 1)
        clone = lam_lib.SparsityStrength.from_config(learned.get_config())
        self.assertAlmostEqual(float(clone.value()), float(learned.value()))

    def test_rejects_non_positive_values(self):
        with self.assertRaisesRegex(ValueError, "initial_value=0"):
            lam_lib.SparsityStrength(0.0)
        with self.assertRaisesRegex(ValueError, "beta=-1"):
            lam_lib.SparsityStrength(0.1, beta=-1)


class PenalisedKernelsTest(absltest.TestCase):

    def test_a_backbone_without_convs_is_refused(self):
        import keras
        from ms_keras.sparsity import groups
        image = keras.Input((4, 4, 3))
        model = keras.Model(image, keras.layers.Dense(2)(image), name="bb")
        with self.assertRaisesRegex(ValueError, "no trainable Conv2D"):
            groups.penalised_kernels(model)


if __name__ == "__main__":
    absltest.main()
