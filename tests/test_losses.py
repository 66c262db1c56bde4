import math

import keras
import numpy as np
import tensorflow as tf
from absl.testing import absltest
from absl.testing import parameterized

from ms_keras import losses


class SegmentationLossTest(absltest.TestCase):

    def test_cross_entropy_by_hand_skips_ignored_pixels(self):
        logits = np.array([[[[2.0, 0.0], [0.0, 1.0], [5.0, -5.0]]]])
        labels = np.array([[[0, 1, 255]]])
        expected = (math.log(1 + math.exp(-2.0))
                    + math.log(1 + math.exp(-1.0))) / 2
        self.assertAlmostEqual(
            float(losses.segmentation_loss(labels, logits)), expected,
            places=6)

    def test_all_ignored_gives_zero(self):
        logits = np.ones((1, 2, 2, 3), np.float32)
        labels = np.full((1, 2, 2), 255)
        self.assertEqual(float(losses.segmentation_loss(labels, logits)), 0.0)


class DepthLossTest(absltest.TestCase):

    def test_constant_offset_by_hand(self):
        # Equal gradients (offset only): gradient term 0, normal term 0.
        truth = np.full((1, 4, 4, 1), 2.0)
        pred = truth + 0.3
        expected = math.log(0.3 + 0.5) - math.log(0.5)
        self.assertAlmostEqual(float(losses.depth_loss(truth, pred)),
                               expected, places=6)

    def test_ramp_by_hand(self):
        # Truth is a ramp along x with slope 1 per pixel: Sobel dx = -8.
        truth = np.tile(np.arange(1.0, 6.0), (5, 1))[None, ..., None]
        pred = np.full_like(truth, 3.0)
        log_term = np.mean(np.log(np.abs(pred - truth) + 0.5)) - math.log(0.5)
        grad_term = math.log(8 + 0.5) - math.log(0.5)
        cos = 1.0 / math.sqrt(65.0)
        expected = log_term + grad_term + (1 - cos)
        self.assertAlmostEqual(float(losses.depth_loss(truth, pred)),
                               expected, places=6)

    def test_is_zero_for_a_perfect_prediction_and_never_negative(self):
        rng = np.random.default_rng(1)
        truth = rng.uniform(0.5, 5, size=(4, 8, 8, 1))
        truth[0, :2] = 0.0  # holes
        self.assertAlmostEqual(float(losses.depth_loss(truth, truth)), 0.0,
                               places=6)
        for scale in (1e-4, 1e-2, 1.0, 10.0):
            pred = truth + rng.normal(0, scale, size=truth.shape)
            self.assertGreaterEqual(float(losses.depth_loss(truth, pred)), 0)

    def test_gradient_is_hu_et_al_s(self):
        rng = np.random.default_rng(2)
        truth = tf.constant(rng.uniform(1, 3, size=(2, 6, 6, 1)))
        pred = tf.constant(rng.uniform(1, 3, size=(2, 6, 6, 1)))
        with tf.GradientTape(persistent=True) as tape:
            tape.watch(pred)
            shifted = losses.depth_loss(truth, pred)
            dx = lambda d: tf.nn.conv2d(d, tf.constant(
                [[1., 0, -1], [2, 0, -2], [1, 0, -1]], tf.float64)[
                    :, :, None, None], 1, "VALID")
            dy = lambda d: tf.nn.conv2d(d, tf.constant(
                [[1., 2, 1], [0, 0, 0], [-1, -2, -1]], tf.float64)[
                    :, :, None, None], 1, "VALID")
            gx, gy = dx(pred) - dx(truth), dy(pred) - dy(truth)
            dot = dx(pred) * dx(truth) + dy(pred) * dy(truth) + 1
            norm = tf.sqrt((dx(pred) ** 2 + dy(pred) ** 2 + 1)
                           * (dx(truth) ** 2 + dy(truth) ** 2 + 1))
            unshifted = (tf.reduce_mean(tf.math.log(tf.abs(pred - truth)
                                                    + 0.5))
                         + tf.reduce_mean(tf.math.log(tf.abs(gx) + 0.5)
                                          + tf.math.log(tf.abs(gy) + 0.5))
                         + tf.reduce_mean(tf.abs(1 - dot / norm)))
        np.testing.assert_allclose(tape.gradient(shifted, pred),
                                   tape.gradient(unshifted, pred), rtol=1e-9)
        self.assertAlmostEqual(float(unshifted - shifted),
                               3 * math.log(0.5), places=9)

    def test_invalid_pixels_do_not_count(self):
        rng = np.random.default_rng(0)
        truth = rng.uniform(1, 3, size=(1, 6, 6, 1))
        pred = truth + rng.normal(0, 0.2, size=truth.shape)
        holed = truth.copy()
        holed[0, 0, 0, 0] = 0.0
        wild = pred.copy()
        wild[0, 0, 0, 0] = 100.0
        # The hole changes the loss only through which pixels are valid...
        base = float(losses.depth_loss(holed, pred))
        # ...and whatever is predicted at the hole is irrelevant.
        self.assertAlmostEqual(float(losses.depth_loss(holed, wild)), base,
                               places=6)
        with tf.GradientTape() as tape:
            p = tf.constant(pred)
            tape.watch(p)
            loss = losses.depth_loss(holed, p)
        self.assertEqual(float(tape.gradient(loss, p)[0, 0, 0, 0]), 0.0)


class OtherLossesTest(parameterized.TestCase):

    def test_normals_loss_is_one_minus_cosine_over_valid(self):
        truth = np.array([[[[0.0, 0.0, 1.0], [0.0, 0.0, 0.0]]]])
        pred = np.array([[[[0.0, 1.0, 1.0], [1.0, 0.0, 0.0]]]])
        expected = 1 - 1 / math.sqrt(2)
        self.assertAlmostEqual(float(losses.normals_loss(truth, pred)),
                               expected, places=6)

    def test_edges_loss_is_huber(self):
        truth = np.array([[[[1.0], [0.0]]]])
        pred = np.array([[[[0.5], [3.0]]]])
        expected = (0.5 * 0.25 + (3.0 - 0.5)) / 2
        self.assertAlmostEqual(float(losses.edges_loss(truth, pred)),
                               expected, places=6)

    def test_attribute_loss_is_binary_cross_entropy_from_logits(self):
        labels = np.array([[1.0], [0.0]])
        logits = np.array([[0.5], [2.0]])
        expected = (math.log(1 + math.exp(-0.5))
                    + math.log(1 + math.exp(2.0))) / 2
        self.assertAlmostEqual(float(losses.attribute_loss(labels, logits)),
                               expected, places=5)


class WeightingTest(absltest.TestCase):

    def test_uncertainty_weighting_follows_eq_2(self):
        layer = losses.UncertaintyWeighting(2)
        layer.build()
        layer.log_variances.assign([0.0, math.log(4.0)])
        total = layer(keras.ops.array([1.0, 8.0]))
        # sigma^2 = 1, 4: l/(2 s^2) + log s
        expected = 0.5 + 0.0 + 8.0 / 8.0 + math.log(2.0)
        self.assertAlmostEqual(float(total), expected, places=5)

    def test_mask_drops_tasks(self):
        layer = losses.UncertaintyWeighting(2)
        layer.build()
        total = layer(keras.ops.array([1.0, 8.0]), keras.ops.array([1.0, 0.0]))
        self.assertAlmostEqual(float(total), 0.5, places=6)

    def test_equal_weighting_sums(self):
        layer = losses.build_loss_weighting("equal", 3)
        layer.build()  # as the trainers do; it used to fail here
        self.assertAlmostEqual(float(layer(keras.ops.array([1.0, 2.0, 3.0]))),
                               6.0)

    def test_uncertainty_weighted_total_is_bounded_below(self):
        # Gradient descent on the log-variances alone, at fixed task losses
        # measured on random predictions: the total converges to the closed
        # form minimum sum (1 + log l) / 2 instead of running to -infinity.
        rng = np.random.default_rng(3)
        depth = rng.uniform(1, 3, size=(2, 8, 8, 1))
        task_losses = np.array([
            float(losses.depth_loss(depth, depth + rng.normal(
                0, 0.01, size=depth.shape))),
            float(losses.normals_loss(
                np.tile([0., 0, 1], (2, 8, 8, 1)),
                rng.normal(size=(2, 8, 8, 3))))])
        self.assertTrue(np.all(task_losses > 0))
        layer = losses.UncertaintyWeighting(2)
        layer.build()
        optimizer = keras.optimizers.SGD(0.5)
        for _ in range(300):
            with tf.GradientTape() as tape:
                total = layer(keras.ops.array(task_losses))
            optimizer.apply(tape.gradient(total, layer.trainable_variables),
                            layer.trainable_variables)
        bound = np.sum(0.5 * (1 + np.log(task_losses)))
        self.assertGreaterEqual(float(total), bound - 1e-6)
        self.assertAlmostEqual(float(total), bound, places=4)

    def test_unknown_weighting(self):
        with self.assertRaisesRegex(ValueError, "Unknown loss weighting 'x'"):
            losses.build_loss_weighting("x", 2)


if __name__ == "__main__":
    absltest.main()
