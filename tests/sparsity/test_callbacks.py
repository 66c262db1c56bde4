import glob
import os

import keras
import numpy as np
import pytest
import tensorflow as tf
from tensorboard.backend.event_processing import event_accumulator

from ms_keras import tasks
from ms_keras.models import backbone_of
from ms_keras.models import build_multitask_model
from ms_keras.sparsity import callbacks
from ms_keras.sparsity import prox
from ms_keras.sparsity.lam import SparsityStrength
from ms_keras.training.multitask_trainer import MultiTaskTrainer


def make_trainer(lam=0.5, steps_per_execution=1, learning_rate=0.1):
    keras.utils.set_random_seed(0)
    spec = tasks.get_dataset("synthetic_nyu")
    specs = tasks.parse_tasks(spec, ["depth"])
    network = build_multitask_model(spec, specs, "resnet_tiny", (16, 16),
                                    aspp_rates=(1,))
    strength = None if lam is None else SparsityStrength(lam,
                                                         learnable=False)
    trainer = MultiTaskTrainer(network, specs, lam=strength)
    trainer.compile(optimizer=keras.optimizers.SGD(learning_rate),
                    steps_per_execution=steps_per_execution)
    trainer(np.zeros((1, 16, 16, 3), np.float32))
    return trainer


def kernels(trainer):
    return [np.asarray(layer.kernel) for layer in backbone_of(
        trainer.network).layers if isinstance(layer, keras.layers.Conv2D)]


def test_prox_uses_current_learning_rate_and_lambda():
    trainer = make_trainer(lam=0.5, learning_rate=0.1)
    callback = callbacks.ProximalGroupLasso("channel")
    callback.set_model(trainer)
    callback.on_train_begin()
    before = kernels(trainer)
    trainer.optimizer.learning_rate = 0.05  # e.g. a schedule moved it
    callback.on_train_batch_end(0)
    after = kernels(trainer)
    for old, new in zip(before, after):
        expected = prox.prox(tf.constant(old), 0.05, 0.5, "channel")
        np.testing.assert_allclose(new, expected, rtol=1e-5, atol=1e-7)
    heads = trainer.network.get_layer("head_depth").trainable_variables
    assert all(np.any(np.asarray(v) != 0) for v in heads[:1])


def test_prox_refuses_a_trainer_without_lambda():
    callback = callbacks.ProximalGroupLasso()
    callback.set_model(make_trainer(lam=None))
    with pytest.raises(ValueError, match="built without sparsity"):
        callback.on_train_begin()


def test_prox_refuses_steps_per_execution_above_one():
    callback = callbacks.ProximalGroupLasso()
    callback.set_model(make_trainer(steps_per_execution=4))
    with pytest.raises(ValueError, match="steps_per_execution=4"):
        callback.on_train_begin()


def test_summaries_write_one_point_per_step(tmp_path):
    trainer = make_trainer()
    summaries = callbacks.SparsitySummaries(str(tmp_path), every_n_steps=1)
    summaries.set_model(trainer)
    summaries.on_train_begin()
    for step in range(1, 4):
        trainer.optimizer.iterations.assign(step)
        summaries.on_train_batch_end(step - 1)
    logs = {}
    summaries.on_epoch_end(0, logs)
    summaries.on_train_end()
    assert set(logs) == {"sparsity_parameter", "sparsity_group", "lambda"}
    (path,) = glob.glob(os.path.join(tmp_path, "train", "events*"))
    events = event_accumulator.EventAccumulator(
        path, size_guidance={event_accumulator.TENSORS: 0})
    events.Reload()
    tags = events.Tags()["tensors"]
    for tag in ("lambda", "sparsity/parameter", "sparsity/group",
                "sparsity/stem_conv/active_channels"):
        assert tag in tags
        assert [e.step for e in events.Tensors(tag)] == [1, 2, 3]
    lam = tf.make_ndarray(events.Tensors("lambda")[0].tensor_proto)
    assert float(lam) == pytest.approx(0.5, rel=1e-5)


def test_keep_sparsity_pattern_reapplies_masks():
    trainer = make_trainer()
    backbone = backbone_of(trainer.network)
    masks = {layer.name: np.random.default_rng(0).random(
        layer.kernel.shape) < 0.5 for layer in backbone.layers
        if isinstance(layer, keras.layers.Conv2D)}
    keeper = callbacks.KeepSparsityPattern(masks)
    keeper.set_model(trainer)
    keeper.on_train_begin()
    layer = backbone.get_layer("stem_conv")
    layer.kernel.assign(np.ones(layer.kernel.shape, np.float32))
    keeper.on_train_batch_end(0)
    np.testing.assert_array_equal(np.asarray(layer.kernel) != 0,
                                  masks["stem_conv"])


def test_keep_sparsity_pattern_refuses_incomplete_masks():
    keeper = callbacks.KeepSparsityPattern({"stem_conv": np.ones((7, 7, 3, 8))})
    keeper.set_model(make_trainer())
    with pytest.raises(ValueError, match="no entry for backbone layers"):
        keeper.on_train_begin()
