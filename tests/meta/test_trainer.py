import keras
import numpy as np
import tensorflow as tf
from absl.testing import absltest

from ms_keras.meta import inner_loop
from ms_keras.sparsity import prox
from tests.meta.test_meta_gradients import build_trainer
from tests.meta.test_meta_gradients import make_batch
from tests.conftest import set_precision


class RegrowTest(absltest.TestCase):

    def setUp(self):
        kernel = np.random.default_rng(0).normal(size=(3, 3, 5, 2))
        kernel[:, :, [1, 3], :] = 0
        self.weights = [tf.constant(kernel)]
        generator = keras.random.SeedGenerator(0)
        self.uniform = lambda shape, lo, hi: keras.random.uniform(
            shape, minval=lo, maxval=hi, seed=generator, dtype="float64")

    def test_certain_regrowth_refills_only_zero_groups_within_glorot(self):
        (out,) = inner_loop.regrow(self.weights, [0], 1.0, self.uniform)
        norms = prox.group_norms(out).numpy()
        self.assertTrue(np.all(norms > 0))
        np.testing.assert_array_equal(out.numpy()[:, :, [0, 2, 4]],
                                      self.weights[0].numpy()[:, :, [0, 2, 4]])
        limit = inner_loop.glorot_limit((3, 3, 5, 2))
        self.assertLessEqual(np.abs(out.numpy()[:, :, [1, 3]]).max(), limit)

    def test_zero_probability_changes_nothing(self):
        (out,) = inner_loop.regrow(self.weights, [0], 0.0, self.uniform)
        np.testing.assert_array_equal(out, self.weights[0])


class MetaTrainStepTest(absltest.TestCase):

    def setUp(self):
        set_precision("float64")

    def tearDown(self):
        set_precision("float32")

    def _data(self, meta_batch):
        rng = np.random.default_rng(0)
        batches = [(make_batch(rng), make_batch(rng))
                   for _ in range(meta_batch)]
        stack = lambda *xs: tf.stack(xs)
        support = tf.nest.map_structure(stack, *[b[0] for b in batches])
        query = tf.nest.map_structure(stack, *[b[1] for b in batches])
        return {"support_images": support[0], "support_targets": support[1],
                "query_images": query[0], "query_targets": query[1],
                "episodes": tf.ones((meta_batch, 2), tf.bool)}, query

    def test_moving_statistics_belong_to_the_updated_meta_weights(self):
        trainer = build_trainer(1, inner_lr=0.5)
        trainer.compile(optimizer=keras.optimizers.SGD(0.5))
        backbone = trainer.network.backbone
        bn = backbone.get_layer("bn1")
        bn.moving_mean.assign(np.full(4, 0.5))
        data, query = self._data(meta_batch=2)
        conv1 = backbone.get_layer("conv1")
        images = np.concatenate([query[0][m] for m in range(2)])
        before = np.mean(conv1(images).numpy(), axis=(0, 1, 2))
        trainer.train_step(data)
        # One update from a training-mode pass at the meta weights after the
        # update and the prox, over every query image of the meta-batch.
        after = np.mean(conv1(images).numpy(), axis=(0, 1, 2))
        np.testing.assert_allclose(bn.moving_mean, 0.9 * 0.5 + 0.1 * after,
                                   rtol=1e-6)
        self.assertGreater(np.max(np.abs(after - before)), 1e-3)

    def test_train_step_updates_lambda_and_weights(self):
        trainer = build_trainer(1)
        trainer.compile(optimizer=keras.optimizers.Adam(1e-2),
                        lambda_optimizer=keras.optimizers.SGD(1e-3))
        lam = float(trainer.lam.value())
        kernel = np.asarray(trainer.network.backbone
                            .get_layer("conv2").kernel)
        logs = trainer.train_step(self._data(meta_batch=2)[0])
        self.assertNotEqual(float(trainer.lam.value()), lam)
        self.assertFalse(np.allclose(
            trainer.network.backbone.get_layer("conv2").kernel,
            kernel))
        for key in ("loss", "objective", "lambda", "segmentation_loss",
                    "normals_weight"):
            self.assertIn(key, logs)
        self.assertGreater(float(logs["objective"]), float(logs["loss"]))


if __name__ == "__main__":
    absltest.main()
