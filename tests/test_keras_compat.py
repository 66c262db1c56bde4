"""The Keras internals ms_keras reads (`keras_compat`) are still where it
reads them: a Keras release that moves one fails here, not silently."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from ms_keras import keras_compat
from ms_keras.models.backbone import build_backbone
from ms_keras.sparsity import proximal

OPTIMIZERS = {
    "sgd": lambda: keras.optimizers.SGD(0.01),
    "sgd_momentum": lambda: keras.optimizers.SGD(0.01, momentum=0.9),
    "sgd_nesterov": lambda: keras.optimizers.SGD(0.01, momentum=0.9,
                                                 nesterov=True),
    "adam": lambda: keras.optimizers.Adam(0.01),
    "adam_amsgrad": lambda: keras.optimizers.Adam(0.01, amsgrad=True),
    "adamw": lambda: keras.optimizers.AdamW(0.01),
    "nadam": lambda: keras.optimizers.Nadam(0.01),
}


def small_model():
    keras.utils.set_random_seed(0)
    images = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", name="a")(images)
    y = keras.layers.Conv2D(4, 1, name="b")(x)
    z = keras.layers.Add(name="add")([x, y])
    return keras.Model(images, z)


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_optimizer_slots_find_every_per_variable_state(name):
    model = small_model()
    optimizer = OPTIMIZERS[name]()
    optimizer.build(model.trainable_variables)
    found = {id(slot) for v in model.trainable_variables
             for slot in keras_compat.optimizer_slots(optimizer, v)}
    shapes = {tuple(v.shape) for v in model.trainable_variables}
    # Every optimizer variable shaped like a model variable is its state.
    state = {id(v) for v in optimizer.variables
             if tuple(v.shape) in shapes and tuple(v.shape) != ()}
    assert found == state
    for v in model.trainable_variables:
        for slot in keras_compat.optimizer_slots(optimizer, v):
            assert tuple(slot.shape) == tuple(v.shape)


def test_optimizer_slots_need_a_built_optimizer():
    with pytest.raises(ValueError, match="not built"):
        keras_compat.optimizer_slots(keras.optimizers.Adam(),
                                     small_model().trainable_variables[0])


def test_adam_velocity_is_the_second_moment():
    model = small_model()
    optimizer = keras.optimizers.Adam(0.01, beta_2=0.9)
    variables = model.trainable_variables
    optimizer.build(variables)
    grads = [tf.fill(v.shape, 2.0) for v in variables]
    optimizer.apply(grads, variables)
    velocity = keras_compat.adam_velocity(optimizer, variables[0])
    np.testing.assert_allclose(np.asarray(velocity), 0.1 * 4.0, rtol=1e-6)


def test_the_layer_graph_is_read_through_its_nodes():
    model = small_model()
    layer = {layer.name: layer for layer in model.layers}
    assert [l.name for l in keras_compat.inbound_layers(layer["add"])] == [
        "a", "b"]
    assert sorted(l.name for l in keras_compat.outbound_layers(
        layer["a"])) == ["add", "b"]
    assert keras_compat.producer(model.output).name == "add"


@pytest.mark.parametrize("name", ["sgd_momentum", "adam"])
def test_a_zeroed_group_loses_its_optimizer_state(name):
    # The repro: SGD's momentum survived the reset before.
    backbone = build_backbone("resnet_tiny", (32, 32))
    prox = proximal.OuterProx(backbone, "channel", "reset_moments")
    optimizer = OPTIMIZERS[name]()
    variables = backbone.trainable_variables
    optimizer.build(variables)
    optimizer.apply([tf.ones_like(v) for v in variables], variables)
    prox.apply(optimizer, 1e3)
    for kernel in prox.kernels:
        assert not np.any(np.asarray(kernel))
        slots = keras_compat.optimizer_slots(optimizer, kernel)
        assert slots
        for slot in slots:
            assert float(tf.norm(slot)) == 0.0


def test_sublayers_can_be_reordered_and_dropped():
    class Two(keras.Model):
        def __init__(self):
            super().__init__()
            self.a = keras.layers.Dense(2, name="a")
            self.b = keras.layers.Dense(3, name="b")

    owner = Two()
    owner.a.build((None, 1))
    owner.b.build((None, 1))
    old = owner.a
    owner.a = keras.layers.Dense(4, name="new_a")
    owner.a.build((None, 1))
    # Keras keeps the replaced layer and appends the new one.
    assert [layer.name for layer in owner.layers] == ["a", "b", "new_a"]
    keras_compat.set_leading_sublayers(owner, [owner.a, owner.b],
                                       dropped=[old])
    assert [layer.name for layer in owner.layers] == ["new_a", "b"]
    assert [w.shape for w in owner.weights][:2] == [(1, 4), (4,)]
