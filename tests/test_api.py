"""The public API on a user's own model, tasks and data: meta-train, report,
slim, export; partial labels; refusals."""

import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

import ms_keras as msk
from ms_keras.models.layers import ExactBatchNormalization
from ms_keras.sparsity import groups as groups_lib
from tests.conftest import set_precision
from tests.helpers import serve_without_ms_keras

L = keras.layers
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def handmade_backbone(size=16, activation="relu"):
    """Every new layer kind: depthwise and separable convs, padding,
    Concatenate, a squeeze-excite gate, Keras batch norm."""
    images = keras.Input((size, size, 3))
    x = L.Conv2D(8, 3, padding="same")(images)
    x = L.BatchNormalization()(x)
    x = L.Activation(activation)(x)
    a = L.DepthwiseConv2D(3, padding="same")(x)
    a = L.BatchNormalization()(a)
    a = L.Conv2D(6, 1)(a)
    b = L.ZeroPadding2D(1)(x)
    b = L.Conv2D(4, 3)(b)
    c = L.Concatenate()([a, b])
    s = L.GlobalAveragePooling2D(keepdims=True)(c)
    s = L.Conv2D(3, 1, activation=activation)(s)
    s = L.Conv2D(10, 1, activation="sigmoid")(s)
    c = L.Multiply()([c, s])
    d = L.SeparableConv2D(8, 3, padding="same")(c)
    d = L.BatchNormalization()(d)
    out = L.Activation(activation)(L.Add()([d, x]))
    return keras.Model(images, out, name="backbone")


def heads(features, activation="relu"):
    def head(units):
        return keras.Sequential([keras.Input(features), L.Conv2D(
            4, 1, activation=activation), L.GlobalAveragePooling2D(),
            L.Dense(units)])
    return {"label": head(5), "value": head(1)}


def model_of(backbone, activation="relu"):
    keras.utils.set_random_seed(0)
    return msk.MultiTaskModel(backbone, heads(backbone.output.shape[1:],
                                              activation))


def make_tasks():
    """A 5-class classification and a scalar regression (a Keras loss
    object computes in the float type of when it was made)."""
    return [msk.Task("label",
                     loss=keras.losses.SparseCategoricalCrossentropy(
                         from_logits=True),
                     metrics=["sparse_categorical_accuracy"]),
            msk.Task("value", loss="mse", metrics=["mae"])]


TASKS = make_tasks()


def dataset(size=16, count=32, batch=4, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.uniform(size=(count, size, size, 3)).astype("float32")
    targets = {"label": rng.integers(0, 5, count),
               "value": images.mean(axis=(1, 2, 3))[:, None]}
    return tf.data.Dataset.from_tensor_slices((images, targets)).batch(batch)


def meta_train_slim_export(model, tmp_path, size, first_order=False):
    trainer = msk.MetaSparsityTrainer(
        model, TASKS, sparsity_control="budget", target_sparsity=40,
        meta_batch_size=2, first_order=first_order)
    trainer.compile(optimizer=keras.optimizers.Adam(1e-2))
    trainer.fit(dataset(size), validation_data=dataset(size, 8, seed=1),
                epochs=2, verbose=0)
    report = msk.sparsity_report(model)
    assert report["parameter_percent"] == pytest.approx(40.0, abs=3.0)
    slim = msk.slim_model(model)
    assert isinstance(slim, msk.MultiTaskModel)
    images = np.random.default_rng(2).uniform(
        size=(3, size, size, 3)).astype("float32")
    expected = {k: np.asarray(v) for k, v in model(images).items()}
    for name, value in slim(images).items():
        np.testing.assert_allclose(value, expected[name], atol=1e-4)
    kept = sum(int(np.prod(groups_lib.group_kernel(layer).shape))
               for layer in groups_lib.conv_layers(slim.backbone))
    assert kept == report["structural_parameters"]
    assert slim.backbone.count_params() < model.backbone.count_params()
    output = tmp_path / "export"
    msk.export_model(slim, str(output), formats=("saved_model", "tflite"),
                     latency_repeats=1)
    check_artefacts(output, images, expected, tmp_path)
    return trainer


def check_artefacts(output, images, expected, tmp_path):
    served = serve_without_ms_keras(output / "saved_model", images, tmp_path)
    # Float32 artefacts agree in all but the last bits: to 1e-4 of the
    # outputs' scale (the largest output, at least 1), as the exporter checks.
    scale = max(1.0, max(float(np.abs(v).max()) for v in expected.values()))
    for name, value in expected.items():
        np.testing.assert_allclose(served[name], value, atol=1e-4 * scale)
    interpreter = tf.lite.Interpreter(model_path=str(output / "model.tflite"))
    interpreter.allocate_tensors()
    (source,) = interpreter.get_input_details()
    for i, image in enumerate(images):
        interpreter.set_tensor(source["index"], image[None])
        interpreter.invoke()
        got = {d["shape"][-1]: interpreter.get_tensor(d["index"])[0]
               for d in interpreter.get_output_details()}
        for value in expected.values():
            np.testing.assert_allclose(got[value.shape[-1]], value[i],
                                       atol=1e-4 * scale)


def test_a_handmade_backbone_meta_trains_slims_and_exports(tmp_path):
    model = model_of(handmade_backbone())
    trainer = meta_train_slim_export(model, tmp_path, 16)
    # Second order: Keras' batch norms were swapped for the exact one.
    assert len(trainer.swapped_layers) == 3
    assert not any(isinstance(layer, L.BatchNormalization)
                   for layer in model.backbone.layers)
    assert sum(isinstance(layer, ExactBatchNormalization)
               for layer in model.backbone.layers) == 3


@pytest.mark.slow
@pytest.mark.parametrize("name", ["MobileNetV2", "ResNet50"])
def test_keras_applications_backbones_meta_train_slim_and_export(
        tmp_path, name):
    keras.utils.set_random_seed(0)
    options = {"alpha": 0.35} if name == "MobileNetV2" else {}
    backbone = getattr(keras.applications, name)(
        input_shape=(32, 32, 3), include_top=False, weights=None, **options)
    meta_train_slim_export(model_of(backbone), tmp_path, 32,
                           first_order=name == "ResNet50")


def test_the_swap_replaces_the_batch_norms_in_the_users_model(tmp_path):
    model = model_of(handmade_backbone(8))
    paths = [w.path for w in model.weights]
    inputs = np.random.default_rng(0).uniform(size=(2, 8, 8, 3))
    before = model(inputs)
    msk.MetaSparsityTrainer(model, TASKS)
    # Same weights in the same order (the old backbone is not kept on the
    # side), the same function, and it saves and reloads as it is.
    assert [w.path for w in model.weights] == paths
    after = model(inputs)
    for task in before:
        np.testing.assert_allclose(after[task], before[task], atol=1e-6)
    model.save(tmp_path / "swapped.keras")
    reloaded = keras.saving.load_model(tmp_path / "swapped.keras")
    assert len(reloaded.weights) == len(paths)


def test_first_order_keeps_keras_batch_norm():
    model = model_of(handmade_backbone())
    trainer = msk.MetaSparsityTrainer(model, TASKS, first_order=True)
    assert trainer.swapped_layers == []
    assert any(isinstance(layer, L.BatchNormalization)
               for layer in model.backbone.layers)


def test_meta_gradients_are_exact_on_the_handmade_backbone():
    set_precision("float64")
    keras.utils.set_random_seed(3)
    model = model_of(handmade_backbone(8, "gelu"), "gelu")
    trainer = msk.MetaSparsityTrainer(
        model, make_tasks(), sparsity_control="paper", lambda_init=0.05,
        inner_steps=2, inner_lr=0.05, inner_prox="differentiable")
    rng = np.random.default_rng(0)

    def batch():
        images = tf.constant(rng.uniform(size=(2, 8, 8, 3)))
        return images, {"label": tf.constant(rng.integers(0, 5, 2)),
                        "value": tf.constant(rng.normal(size=(2, 1)))}

    support, query = batch(), batch()
    episode = tf.constant([True, True])
    # Traced once: each of the 2 x ~24 evaluations below then runs the
    # graph instead of the eager second-order step.
    meta_step = tf.function(lambda: trainer.compute_meta_gradients(
        support, query, episode))
    result = meta_step()

    def query_loss():
        return float(meta_step().query_loss)

    variables = trainer.meta_variables
    checked = 0
    for index, variable in enumerate(variables):
        direction = rng.normal(size=variable.shape)
        original = np.asarray(variable)
        values = []
        for sign in (1, -1):
            variable.assign(original + sign * 1e-5 * direction)
            values.append(query_loss())
        variable.assign(original)
        fd = (values[0] - values[1]) / 2e-5
        analytic = float(np.sum(np.asarray(result.weights[index])
                                * direction))
        # The weights' meta-gradient is of the query loss; the penalty
        # reaches them through the prox only (README, the meta-step).
        assert abs(analytic - fd) <= 1e-4 * max(abs(fd), 1e-3), (
            variable.path, analytic, fd)
        checked += 1
    assert checked >= 20


def test_a_batch_without_a_task_leaves_its_head_untouched():
    model = model_of(handmade_backbone())
    trainer = msk.MultiTaskTrainer(model, TASKS)
    trainer.compile(optimizer=keras.optimizers.Adam(1e-2))
    images, targets = next(iter(dataset()))
    head = [np.copy(w) for w in model.heads["value"].get_weights()]
    other = [np.copy(w) for w in model.heads["label"].get_weights()]
    trainer.train_on_batch(images, {"label": targets["label"]})
    for before, after in zip(head, model.heads["value"].get_weights()):
        np.testing.assert_array_equal(before, after)
    assert any(np.any(b != a) for b, a in zip(
        other, model.heads["label"].get_weights()))
    # Per example: a custom task's `<name>_weight` of zeros does the same.
    trainer.train_on_batch(images, {**targets,
                                    "value_weight": np.zeros(4, "float32")})
    for before, after in zip(head, model.heads["value"].get_weights()):
        np.testing.assert_array_equal(before, after)


def test_a_meta_step_without_a_task_leaves_its_head_untouched():
    model = model_of(handmade_backbone())
    trainer = msk.MetaSparsityTrainer(model, TASKS, first_order=True,
                                      sparsity_control="paper",
                                      lambda_init=1e-3)
    trainer.compile(optimizer=keras.optimizers.Adam(1e-2))
    head = [np.copy(w) for w in model.heads["value"].get_weights()]
    partial = dataset().map(lambda x, y: (x, {"label": y["label"]}))
    trainer.fit(partial, epochs=1, steps_per_epoch=2, verbose=0)
    for before, after in zip(head, model.heads["value"].get_weights()):
        np.testing.assert_array_equal(before, after)


def test_an_unknown_layer_fails_at_construction_in_one_line():
    images = keras.Input((16, 16, 3))
    x = L.Conv2D(4, 3, padding="same")(images)
    x = L.LSTM(4, name="lstm")(L.Reshape((16, 64))(x))
    backbone = keras.Model(images, L.Reshape((1, 1, 4))(x))
    model = msk.MultiTaskModel(backbone, heads((1, 1, 4)))
    with pytest.raises(ValueError) as error:
        msk.MetaSparsityTrainer(model, TASKS)
    text = str(error.value)
    assert "has no known channel semantics" in text
    assert len(text.splitlines()) == 1


def test_a_grouped_conv_fails_at_construction_in_one_line():
    images = keras.Input((16, 16, 3))
    x = L.Conv2D(4, 3, padding="same")(images)
    x = L.Conv2D(4, 3, padding="same", groups=2, name="grouped")(x)
    model = msk.MultiTaskModel(keras.Model(images, x), heads((16, 16, 4)))
    with pytest.raises(ValueError, match="grouped convolution"):
        msk.MetaSparsityTrainer(model, TASKS, sparsity_control="paper",
                                lambda_init=1e-3)


def test_a_task_needs_a_loss_and_a_name():
    with pytest.raises(ValueError, match="needs a `loss`"):
        msk.Task("label")
    with pytest.raises(ValueError, match="needs a name"):
        msk.Task("", loss="mse")
    assert msk.Task.depth().kind == "depth"
    assert msk.Task.segmentation("seg", classes=7).output_channels == 7


@pytest.mark.slow
def test_the_readme_example_runs_as_written(tmp_path):
    result = subprocess.run(
        [sys.executable, os.path.join(REPO, "examples", "your_own_model.py")],
        cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "'parameter_percent'" in result.stdout
    assert (tmp_path / "runs" / "your_own_model_export" / "model.tflite"
            ).exists()


def test_the_readme_shows_the_example_as_it_is():
    with open(os.path.join(REPO, "README.md")) as f:
        readme = f.read()
    with open(os.path.join(REPO, "examples", "your_own_model.py")) as f:
        example = f.read().rstrip()
    assert f"```python\n{example}\n```" in readme
