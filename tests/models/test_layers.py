import keras
import numpy as np
import tensorflow as tf
from absl.testing import parameterized

from ms_keras.models import layers
from ms_keras.models.heads import build_aspp_head
from ms_keras import tasks
from tests import gradcheck
from tests.conftest import set_precision


def _curved_loss(layer, inputs, training=None):
    """sum(c * sin(layer(x))): curvature after the layer exercises the
    layer's second derivative through its backward op."""
    kwargs = {} if training is None else {"training": training}
    out_shape = layer(inputs, **kwargs).shape
    weights = tf.constant(
        np.random.default_rng(1).normal(size=out_shape), tf.float64)
    return lambda: tf.reduce_sum(weights * tf.sin(layer(inputs, **kwargs)))


class SecondOrderTest(parameterized.TestCase):
    """Every layer kind on the forward path has an exact Hessian."""

    def setUp(self):
        set_precision("float64")
        keras.utils.set_random_seed(0)
        self.inputs = tf.Variable(
            np.random.default_rng(0).normal(size=(2, 6, 6, 3)), tf.float64)

    @parameterized.named_parameters(
        ("conv", lambda: keras.layers.Conv2D(4, 3, padding="same")),
        ("dilated_conv", lambda: keras.layers.Conv2D(
            4, 3, padding="same", dilation_rate=2)),
        ("strided_conv", lambda: keras.layers.Conv2D(
            4, 3, strides=2, padding="same")),
        ("bilinear_resize", lambda: layers.BilinearResize((13, 9))),
        ("max_pool", lambda: keras.layers.MaxPooling2D(3, 2, padding="same")),
        ("gelu", lambda: keras.layers.Activation("gelu")),
        ("unit_normalization", lambda: keras.layers.UnitNormalization()),
        ("global_pool", lambda: keras.layers.GlobalAveragePooling2D(
            keepdims=True)),
        ("input_normalization", lambda: keras.layers.Normalization(
            mean=[0.4, 0.5, 0.6], variance=[0.05, 0.06, 0.07])),
    )
    def test_hvp_matches_finite_differences(self, make_layer):
        layer = make_layer()
        loss = _curved_loss(layer, self.inputs)
        variables = [self.inputs, *layer.trainable_variables]
        hvp, fd = gradcheck.hvp_and_finite_difference(loss, variables)
        self.assertLess(gradcheck.relative_error(hvp, fd), 1e-6)
        self.assertGreater(np.abs(hvp).max(), 0.0)

    def test_batch_norm_training_hvp_matches_finite_differences(self):
        layer = layers.ExactBatchNormalization()
        loss = _curved_loss(layer, self.inputs, training=True)
        variables = [self.inputs, *layer.trainable_variables]
        hvp, fd = gradcheck.hvp_and_finite_difference(loss, variables)
        self.assertLess(gradcheck.relative_error(hvp, fd), 1e-6)

    def test_spatial_broadcast_hvp_matches_finite_differences(self):
        pooled = tf.Variable(np.random.default_rng(2).normal(size=(2, 1, 1, 3)))
        layer = layers.SpatialBroadcast((4, 5))
        hvp, fd = gradcheck.hvp_and_finite_difference(
            _curved_loss(layer, pooled), [pooled])
        self.assertLess(gradcheck.relative_error(hvp, fd), 1e-6)

    def test_aspp_head_hvp_matches_finite_differences(self):
        task = tasks.TaskSpec(3, "normals", tasks.NORMALS, 3)
        features = tf.Variable(
            np.random.default_rng(3).normal(size=(2, 4, 4, 5)))
        head = build_aspp_head((4, 4, 5), task, (16, 16), filters=3,
                               rates=(1, 2), activation="gelu",
                               unit_output=True)
        loss = _curved_loss(lambda x: head(x, training=True), features)
        variables = [features, *head.trainable_variables]
        hvp, fd = gradcheck.hvp_and_finite_difference(loss, variables)
        self.assertLess(gradcheck.relative_error(hvp, fd), 1e-6)


class BilinearResizeTest(parameterized.TestCase):

    @parameterized.named_parameters(
        ("upsample_x8", (4, 5), (32, 40)),
        ("upsample_odd", (3, 7), (10, 9)),
        ("downsample", (16, 12), (5, 7)),
    )
    def test_equals_tf_image_resize(self, in_size, out_size):
        x = np.random.default_rng(0).normal(size=(2, *in_size, 3)).astype(
            np.float32)
        expected = tf.image.resize(x, out_size, method="bilinear")
        got = layers.BilinearResize(out_size)(x)
        np.testing.assert_allclose(got, expected, atol=1e-5)

    def test_rejects_bad_size(self):
        with self.assertRaisesRegex(ValueError, "size=.*0"):
            layers.BilinearResize((0, 4))


class ExactBatchNormalizationTest(parameterized.TestCase):

    def setUp(self):
        self.x = np.random.default_rng(0).normal(2.0, 3.0, size=(4, 5, 5, 3))

    def test_matches_keras_batch_normalization(self):
        ours = layers.ExactBatchNormalization(momentum=0.9, epsilon=1e-3)
        theirs = keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-3)
        for training in (True, False):
            np.testing.assert_allclose(
                ours(self.x, training=training),
                theirs(self.x, training=training), atol=1e-4)
        np.testing.assert_allclose(ours.moving_mean, theirs.moving_mean,
                                   atol=1e-5)
        np.testing.assert_allclose(ours.moving_variance,
                                   theirs.moving_variance, rtol=1e-3)

    @parameterized.named_parameters(("center_scale", True),
                                    ("no_affine", False))
    def test_fused_and_plain_paths_agree(self, affine):
        x = tf.constant(self.x, tf.float32)
        layer = layers.ExactBatchNormalization(center=affine, scale=affine)
        layer.build(x.shape)
        if affine:
            layer.gamma.assign([0.5, 2.0, -1.0])
            layer.beta.assign([0.1, -0.2, 0.3])
        fused, mean_f, var_f = layer._normalise_fused(x)
        plain, mean_p, var_p = layer._normalise_plain(x, [0, 1, 2])
        np.testing.assert_allclose(fused, plain, atol=2e-5)
        np.testing.assert_allclose(mean_f, mean_p, rtol=1e-5)
        np.testing.assert_allclose(var_f, var_p, rtol=1e-5)

    def test_fused_second_derivatives_equal_the_exact_ones(self):
        # float32 through the fused kernel against float64 plain reductions
        # (whose Hessian matches finite differences above).
        rng = np.random.default_rng(4)
        weights = rng.normal(size=self.x.shape)
        direction = rng.normal(size=self.x.shape)

        def hvp(dtype):
            layer = layers.ExactBatchNormalization(dtype=dtype)
            x = tf.Variable(self.x.astype(dtype))
            layer.build(x.shape)
            layer.gamma.assign(np.array([0.5, 2.0, -1.0], dtype))
            w = tf.constant(weights.astype(dtype))
            with tf.GradientTape() as outer:
                with tf.GradientTape() as inner:
                    loss = tf.reduce_sum(w * tf.sin(layer(x, training=True)))
                grads = inner.gradient(loss, [x, layer.gamma])
                along = tf.reduce_sum(grads[0] * direction.astype(dtype)) + (
                    tf.reduce_sum(grads[1]))
            return [g.numpy() for g in outer.gradient(
                along, [x, layer.gamma, layer.beta])]

        for ours, exact in zip(hvp("float32"), hvp("float64")):
            self.assertLess(gradcheck.relative_error(ours, exact), 1e-5)

    def test_config_round_trip(self):
        layer = layers.ExactBatchNormalization(momentum=0.8, epsilon=1e-4,
                                               name="bn")
        clone = layers.ExactBatchNormalization.from_config(layer.get_config())
        self.assertEqual(clone.get_config(), layer.get_config())

    def test_rejects_bad_momentum(self):
        with self.assertRaisesRegex(ValueError, "momentum=1.5"):
            layers.ExactBatchNormalization(momentum=1.5)


class ExactMaxPoolingTest(parameterized.TestCase):

    def setUp(self):
        set_precision("float64")
        self.inputs = tf.Variable(
            np.random.default_rng(4).normal(size=(2, 9, 7, 3)), tf.float64)

    def tearDown(self):
        set_precision("float32")

    @parameterized.named_parameters(
        ("same", 3, 2, "same"), ("valid", 3, 2, "valid"),
        ("two_by_two", 2, 2, "valid"), ("overlapping", 3, 1, "same"))
    def test_matches_keras_and_has_an_exact_hessian(self, pool, stride,
                                                    padding):
        exact = layers.ExactMaxPooling2D(pool, stride, padding=padding)
        stock = keras.layers.MaxPooling2D(pool, stride, padding=padding)
        np.testing.assert_array_equal(exact(self.inputs), stock(self.inputs))
        hvp, fd = gradcheck.hvp_and_finite_difference(
            _curved_loss(exact, self.inputs), [self.inputs])
        self.assertLess(gradcheck.relative_error(hvp, fd), 1e-6)
        self.assertGreater(np.abs(hvp).max(), 0.0)

    def test_its_second_derivative_is_the_same_under_xla(self):
        # Values within 1e-4 of each other: XLA's own MaxPoolGradGrad, which
        # compares them in 16 bits, routes the second derivative to the
        # wrong element (an error as large as the derivative itself).
        inputs = tf.constant((1.0 + 1e-4 * np.random.default_rng(5).normal(
            size=(2, 8, 8, 4))).astype(np.float32))
        weights = tf.constant(np.random.default_rng(6).normal(
            size=(2, 4, 4, 4)).astype(np.float32))
        direction = tf.constant(np.random.default_rng(7).normal(
            size=(2, 8, 8, 4)).astype(np.float32))

        def hvp(layer):
            with tf.GradientTape() as outer:
                outer.watch(inputs)
                with tf.GradientTape() as inner:
                    inner.watch(inputs)
                    loss = tf.reduce_sum(weights * tf.sin(layer(inputs)))
                grad = inner.gradient(loss, inputs)
                product = tf.reduce_sum(grad * direction)
            return outer.gradient(product, inputs)

        layer = layers.ExactMaxPooling2D(3, 2, padding="same",
                                         dtype="float32")
        eager = hvp(layer)
        xla = tf.function(hvp, jit_compile=True)(layer)
        self.assertGreater(np.abs(eager).max(), 0.1)
        np.testing.assert_allclose(xla, eager, rtol=1e-5, atol=1e-6)

    def test_it_serializes(self):
        layer = layers.ExactMaxPooling2D(3, 2, padding="same", name="p")
        clone = keras.saving.deserialize_keras_object(
            keras.saving.serialize_keras_object(layer))
        self.assertIsInstance(clone, layers.ExactMaxPooling2D)
        self.assertEqual(clone.get_config(), layer.get_config())

    def test_it_pools_inputs_of_unknown_size(self):
        layer = layers.ExactMaxPooling2D(3, 2, padding="same",
                                         dtype="float32")
        pool = tf.function(layer, input_signature=[
            tf.TensorSpec([None, None, None, 4], tf.float32)])
        inputs = np.random.default_rng(8).normal(
            size=(2, 9, 7, 4)).astype(np.float32)
        np.testing.assert_array_equal(
            pool(inputs), keras.layers.MaxPooling2D(
                3, 2, padding="same", dtype="float32")(inputs))
