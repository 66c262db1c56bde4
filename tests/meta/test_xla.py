"""The meta-step compiled with XLA (`--jit_compile`) computes what the
graph-mode step computes: exactly in float64, to float32 rounding in
float32."""

import keras
import numpy as np
import tensorflow as tf

from ms_keras import tasks
from ms_keras.models import MultiTaskModel
from ms_keras.models import layers
from ms_keras.trainers.meta_sparsity import MetaSparsityTrainer
from tests.conftest import set_precision

SIZE = 8
TASKS = (tasks.Task.segmentation("segmentation", 6), tasks.Task.depth())


def small_network():
    """Every kind of layer of the built-in networks on the path through the
    second-order graph (conv, batch norm, max pool, residual add, resize),
    small enough that XLA compiles it in seconds."""
    image = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", use_bias=False)(image)
    x = layers.ExactBatchNormalization()(x)
    x = keras.layers.ReLU()(x)
    x = layers.ExactMaxPooling2D(3, 2, padding="same")(x)
    y = keras.layers.Conv2D(4, 3, padding="same", use_bias=False)(x)
    y = layers.ExactBatchNormalization()(y)
    x = keras.layers.ReLU()(keras.layers.Add()([x, y]))
    backbone = keras.Model(image, x)

    def head(channels):
        features = keras.Input(x.shape[1:])
        out = layers.BilinearResize((SIZE, SIZE))(
            keras.layers.Conv2D(channels, 1)(features))
        return keras.Model(features, out)

    return MultiTaskModel(backbone, {"segmentation": head(6),
                                     "depth": head(1)})


def build_trainer(inner_steps):
    keras.utils.set_random_seed(0)
    trainer = MetaSparsityTrainer(
        small_network(), TASKS, sparsity_control="paper", lambda_init=1e-3,
        inner_steps=inner_steps, inner_clip_norm=1.0)
    trainer.compile(optimizer=keras.optimizers.Adam(1e-3))
    trainer(np.zeros((1, SIZE, SIZE, 3), keras.config.floatx()))
    return trainer


def batches(meta_batch=1):
    rng = np.random.default_rng(0)
    shape = (meta_batch, 4, SIZE, SIZE)
    floatx = keras.config.floatx()

    def targets():
        return {"segmentation": rng.integers(0, 6, shape).astype(np.int32),
                "depth": rng.uniform(1, 4, (*shape, 1)).astype(floatx)}

    return tf.nest.map_structure(tf.constant, {
        "support_images": rng.random((*shape, 3)).astype(floatx),
        "support_targets": targets(),
        "query_images": rng.random((*shape, 3)).astype(floatx),
        "query_targets": targets(),
        "episodes": np.ones((meta_batch, 2), np.int32)})


def relative_difference(xs, ys):
    difference = np.sqrt(sum(np.sum((np.asarray(x) - np.asarray(y)) ** 2)
                             for x, y in zip(xs, ys)))
    return difference / np.sqrt(sum(np.sum(np.asarray(x) ** 2) for x in xs))


def test_xla_meta_gradients_are_exact_in_float64():
    set_precision("float64")
    try:
        trainer = build_trainer(inner_steps=2)
        data = batches()
        first = lambda t: t[0]
        support = (data["support_images"][0],
                   tf.nest.map_structure(first, data["support_targets"]))
        query = (data["query_images"][0],
                 tf.nest.map_structure(first, data["query_targets"]))
        episode = tf.ones((2,), tf.bool)
        found = {}
        for jit in (False, True):
            meta = tf.function(trainer.compute_meta_gradients,
                               jit_compile=jit, autograph=False)(
                support, query, episode)
            found[jit] = meta
        graph, xla = found[False], found[True]
        assert relative_difference(graph.weights, xla.weights) < 1e-10
        assert relative_difference([graph.lam], [xla.lam]) < 1e-10
        assert all(np.any(np.asarray(g) != 0) for g in graph.weights[:3])
    finally:
        set_precision("float32")


def test_an_xla_meta_step_equals_the_graph_step_in_float32():
    data = batches()
    after = {}
    for jit in (False, True):
        trainer = build_trainer(inner_steps=1)
        tf.function(trainer.train_step, jit_compile=jit,
                    autograph=False)(data)
        after[jit] = ([np.asarray(v) for v in trainer.trainable_variables],
                      float(trainer.lam.value()))
    assert relative_difference(after[False][0], after[True][0]) < 1e-5
    assert abs(after[True][1] / after[False][1] - 1) < 1e-5
