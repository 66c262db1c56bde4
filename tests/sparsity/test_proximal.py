"""The outer prox after an optimizer update, and fixed sparsity patterns."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from ms_keras import config as config_lib
from ms_keras.sparsity import prox
from ms_keras.sparsity import proximal
from tests.conftest import set_precision


def tiny_backbone(seed=0):
    keras.utils.set_random_seed(seed)
    image = keras.Input((6, 6, 3))
    x = keras.layers.Conv2D(5, 3, padding="same", use_bias=False,
                            name="conv1")(image)
    x = keras.layers.Conv2D(4, 1, use_bias=False, name="conv2")(x)
    return keras.Model(image, x, name="backbone")


def kernels(backbone):
    return [np.asarray(layer.kernel) for layer in backbone.layers
            if isinstance(layer, keras.layers.Conv2D)]


def step(backbone, optimizer, grads):
    variables = [layer.kernel for layer in backbone.layers
                 if isinstance(layer, keras.layers.Conv2D)]
    optimizer.apply([tf.constant(g, tf.float32) for g in grads], variables)


def random_grads(backbone, rng, scale=1.0):
    return [scale * rng.normal(size=k.shape) for k in kernels(backbone)]


@pytest.mark.parametrize("step_kind", config_lib.PROX_STEPS)
def test_with_sgd_every_step_kind_is_eq_8(step_kind):
    backbone = tiny_backbone()
    optimizer = keras.optimizers.SGD(0.1)
    step(backbone, optimizer, random_grads(backbone,
                                           np.random.default_rng(0)))
    before = kernels(backbone)
    mean = proximal.OuterProx(backbone, "channel", step_kind).apply(
        optimizer, 0.5)
    for old, new in zip(before, kernels(backbone)):
        expected = prox.prox(tf.constant(old), 0.1, 0.5, "channel")
        np.testing.assert_allclose(new, expected, rtol=1e-5, atol=1e-7)
    sizes = [np.sqrt(k.shape[0] * k.shape[1] * k.shape[3]) for k in before]
    expected_mean = np.mean([0.1 * 0.5 * s for s in sizes])
    assert float(mean) == pytest.approx(expected_mean, rel=1e-5)


def test_adam_metric_scales_each_group_like_adams_step():
    set_precision("float64")
    try:
        backbone = tiny_backbone()
        optimizer = keras.optimizers.Adam(0.01)
        rng = np.random.default_rng(1)
        for _ in range(3):
            # Group c of conv1 sees gradients of size 10^-c: Adam's metric
            # differs by orders of magnitude between groups.
            grads = random_grads(backbone, rng)
            grads[0] = grads[0] * (10.0 ** -np.arange(3))[None, None, :, None]
            step(backbone, optimizer, grads)
        kernel = backbone.get_layer("conv1").kernel
        before = np.asarray(kernel)
        velocity = np.asarray(optimizer._velocities[  # noqa: SLF001
            optimizer._get_variable_index(kernel)])  # noqa: SLF001
        t = 3
        alpha = 0.01 * np.sqrt(1 - 0.999 ** t) / (1 - 0.9 ** t)
        metric = (np.sqrt(velocity) + 1e-7).mean(axis=(0, 1, 3))
        threshold = alpha * 0.02 * np.sqrt(3 * 3 * 5) / metric
        proximal.OuterProx(backbone, "channel", "adam_metric").apply(
            optimizer, 0.02)
        norms = np.sqrt((before ** 2).sum(axis=(0, 1, 3)))
        scale = np.maximum(1 - threshold / norms, 0)
        np.testing.assert_allclose(np.asarray(kernel),
                                   before * scale[None, None, :, None],
                                   rtol=1e-10)
        # The group with the smallest gradients has the largest threshold.
        assert threshold[2] > 10 * threshold[0]
    finally:
        set_precision("float32")


@pytest.mark.parametrize("step_kind", ["reset_moments", "adam_metric_reset"])
def test_resets_zero_the_moments_of_zeroed_groups_only(step_kind):
    backbone = tiny_backbone()
    optimizer = keras.optimizers.Adam(0.01)
    rng = np.random.default_rng(2)
    step(backbone, optimizer, random_grads(backbone, rng))
    kernel = backbone.get_layer("conv1").kernel
    kernel.assign(np.asarray(kernel) * np.array([1.0, 1e-4, 1.0])[
        None, None, :, None])
    proximal.OuterProx(backbone, "channel", step_kind).apply(
        optimizer, 1.0 if step_kind == "reset_moments" else 1e-3)
    index = optimizer._get_variable_index(kernel)  # noqa: SLF001
    for slot in (optimizer._momentums[index],  # noqa: SLF001
                 optimizer._velocities[index]):  # noqa: SLF001
        slot = np.asarray(slot)
        assert np.all(slot[:, :, 1] == 0)
        assert np.any(slot[:, :, 0] != 0) and np.any(slot[:, :, 2] != 0)


def test_adam_metric_reset_revives_a_group_only_on_a_strong_gradient():
    # A zeroed group restarts Adam: its first step is judged against a
    # threshold ~10x its size, so only a gradient well above lam revives it.
    backbone = tiny_backbone()
    kernel = backbone.get_layer("conv1").kernel
    optimizer = keras.optimizers.Adam(0.01)
    prox = proximal.OuterProx(backbone, "channel", "adam_metric_reset")
    rng = np.random.default_rng(6)
    grads = random_grads(backbone, rng)
    for _ in range(50):
        step(backbone, optimizer, grads)
    kernel.assign(np.asarray(kernel) * np.array([1.0, 0.0, 1.0])[
        None, None, :, None])
    prox.apply(optimizer, 1e-9)  # zeroes nothing new, resets group 1
    revived = {}
    for size in (0.5, 50.0):  # gradient per weight vs lam = 1.0
        before = np.asarray(kernel).copy()
        state = [np.asarray(v).copy() for v in optimizer.variables]
        push = [np.zeros_like(g) for g in grads]
        push[0][:, :, 1, :] = size
        step(backbone, optimizer, push)
        prox.apply(optimizer, 1.0)
        revived[size] = bool(np.any(np.asarray(kernel)[:, :, 1] != 0))
        kernel.assign(before)
        for variable, value in zip(optimizer.variables, state):
            variable.assign(value)
    assert revived == {0.5: False, 50.0: True}


def test_plain_keeps_the_moments_and_a_zeroed_group_regrows():
    backbone = tiny_backbone()
    optimizer = keras.optimizers.Adam(0.01)
    rng = np.random.default_rng(3)
    grads = random_grads(backbone, rng)
    for _ in range(5):
        step(backbone, optimizer, grads)
    kernel = backbone.get_layer("conv1").kernel
    kernel.assign(np.asarray(kernel) * np.array([1.0, 0.0, 1.0])[
        None, None, :, None])
    proximal.OuterProx(backbone, "channel", "plain").apply(optimizer, 1e-3)
    zero = [np.zeros_like(g) for g in grads]
    step(backbone, optimizer, zero)  # momentum alone moves the zero group
    assert np.any(np.asarray(kernel)[:, :, 1] != 0)


def test_unstructured_prox_thresholds_each_weight():
    backbone = tiny_backbone()
    optimizer = keras.optimizers.SGD(0.1)
    before = kernels(backbone)
    proximal.OuterProx(backbone, "unstructured", "plain").apply(optimizer,
                                                                0.3)
    for old, new in zip(before, kernels(backbone)):
        np.testing.assert_allclose(
            new, np.sign(old) * np.maximum(np.abs(old) - 0.03, 0), atol=1e-7)


def test_masks_hold_on_weights_gradients_and_adams_moments():
    backbone = tiny_backbone()
    optimizer = keras.optimizers.Adam(0.05)
    rng = np.random.default_rng(4)
    grads = random_grads(backbone, rng)
    for _ in range(3):  # moments built while everything was alive
        step(backbone, optimizer, grads)
    masks = {layer.name: rng.random(layer.kernel.shape) < 0.5
             for layer in backbone.layers
             if isinstance(layer, keras.layers.Conv2D)}
    holder = proximal.KernelMasks(backbone, masks)
    holder.apply(optimizer)
    variables = [layer.kernel for layer in backbone.layers
                 if isinstance(layer, keras.layers.Conv2D)]
    for _ in range(5):
        masked = holder.mask_gradients(
            [tf.constant(g, tf.float32) for g in random_grads(backbone, rng)],
            variables)
        optimizer.apply(masked, variables)
        # Not even one step of Adam's momentum revives a masked weight.
        for layer in backbone.layers:
            if isinstance(layer, keras.layers.Conv2D):
                assert np.all(np.asarray(layer.kernel)[~masks[layer.name]]
                              == 0)


def test_masks_are_checked_against_the_backbone():
    backbone = tiny_backbone()
    with pytest.raises(ValueError, match="no entry for backbone layers"):
        proximal.KernelMasks(backbone, {"conv1": np.ones((3, 3, 3, 5))})
    with pytest.raises(ValueError, match="mask of 'conv2' has shape"):
        proximal.KernelMasks(backbone, {"conv1": np.ones((3, 3, 3, 5)),
                                        "conv2": np.ones((1, 1, 4, 4))})


def test_bad_arguments_are_refused():
    backbone = tiny_backbone()
    with pytest.raises(ValueError, match="`step` must be one of"):
        proximal.OuterProx(backbone, "channel", "newton")
    with pytest.raises(ValueError, match="`kind` must be"):
        proximal.OuterProx(backbone, "none")


def test_preserve_norm_keeps_batch_normed_kernels_norm_and_function():
    from ms_keras.models import build_backbone
    images = np.random.default_rng(5).uniform(size=(4, 16, 16, 3))
    results = {}
    for preserve in (True, False, None):
        keras.utils.set_random_seed(5)
        backbone = build_backbone("resnet_tiny", (16, 16))
        norms = [float(np.linalg.norm(k)) for k in kernels(backbone)]
        if preserve is not None:  # None: the dense backbone
            proximal.OuterProx(backbone, "channel", "plain",
                               preserve_norm=preserve).apply(
                                   keras.optimizers.SGD(0.1), 0.8)
        results[preserve] = (norms, kernels(backbone),
                             backbone(images, training=True).numpy())
    dense_output = results[None][2]
    norms, kept, output = results[True]
    _, shrunk, shrunk_output = results[False]
    zeroed = [np.all(k == 0, axis=(0, 1, 3)) for k in kept]
    assert sum(int(z.sum()) for z in zeroed) > 0  # the prox zeroed groups
    for norm, kernel, other, dead in zip(norms, kept, shrunk, zeroed):
        # The same groups die with or without the rescale...
        np.testing.assert_array_equal(
            dead, np.all(other == 0, axis=(0, 1, 3)))
        if np.any(kernel != 0):
            assert float(np.linalg.norm(kernel)) == pytest.approx(norm,
                                                                  rel=1e-5)
            assert float(np.linalg.norm(other)) < norm
    # ...and the rescale is invisible to batch norm (training mode, up to
    # its epsilon): the backbone computes what the plain prox's computes,
    # while the zeroed groups change it ten times more.
    rescale = np.abs(output - shrunk_output).max()
    zeroing = np.abs(output - dense_output).max()
    assert rescale < 0.1 * zeroing, (rescale, zeroing)


def test_without_preserve_norm_the_prox_shrinks_every_group():
    from ms_keras.models import build_backbone
    keras.utils.set_random_seed(5)
    backbone = build_backbone("resnet_tiny", (16, 16))
    norms = [float(np.linalg.norm(k)) for k in kernels(backbone)]
    proximal.OuterProx(backbone, "channel", "plain",
                       preserve_norm=False).apply(keras.optimizers.SGD(0.1),
                                                  0.2)
    assert all(float(np.linalg.norm(k)) < norm
               for norm, k in zip(norms, kernels(backbone)))
