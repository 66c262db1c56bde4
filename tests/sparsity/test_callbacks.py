import glob
import os

import keras
import numpy as np
import pytest
import tensorflow as tf
from tensorboard.backend.event_processing import event_accumulator

from ms_keras import tasks
from ms_keras.models import build_multitask_model
from ms_keras.sparsity import callbacks
from ms_keras.sparsity.lam import SparsityStrength
from ms_keras.trainers.multitask import MultiTaskTrainer


def make_trainer(lam=0.5):
    keras.utils.set_random_seed(0)
    spec = tasks.get_dataset("synthetic_nyu")
    specs = tasks.parse_tasks(spec, ["depth"])
    network = build_multitask_model(spec, specs, "resnet_tiny", (16, 16),
                                    aspp_rates=(1,))
    trainer = MultiTaskTrainer(network, specs,
                               lam=SparsityStrength(lam, learnable=False))
    trainer.compile(optimizer=keras.optimizers.SGD(0.1))
    trainer(np.zeros((1, 16, 16, 3), np.float32))
    return trainer


def test_summaries_write_one_point_per_step(tmp_path):
    trainer = make_trainer()
    backbone = trainer.network.backbone
    stem = backbone.get_layer("stem_conv").kernel
    stem.assign(tf.concat([tf.zeros_like(stem[:, :, :1]), stem[:, :, 1:]],
                          axis=2))
    summaries = callbacks.SparsitySummaries(
        str(tmp_path), backbone, trainer.lam, every_n_steps=1)
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
    value = lambda tag: float(tf.make_ndarray(events.Tensors(tag)[0]
                                               .tensor_proto))
    assert value("lambda") == pytest.approx(0.5, rel=1e-5)
    assert value("sparsity/stem_conv/active_channels") == 2
    total = sum(int(np.prod(layer.kernel.shape)) for layer in backbone.layers
                if isinstance(layer, keras.layers.Conv2D))
    assert value("sparsity/parameter") == pytest.approx(
        100 * 7 * 7 * 8 / total, rel=1e-5)
    assert logs["sparsity_parameter"] == pytest.approx(
        value("sparsity/parameter"), rel=1e-6)


def test_summaries_refuse_a_zero_period(tmp_path):
    with pytest.raises(ValueError, match="every_n_steps=0"):
        callbacks.SparsitySummaries(str(tmp_path), None, every_n_steps=0)
