import time

import numpy as np
import pytest
import tensorflow as tf

from ms_keras import config as config_lib
from ms_keras import data as data_lib
from ms_keras import tasks
from ms_keras.data import pipeline
from ms_keras.data import synthetic_nyu
from ms_keras.tasks import CELEBA_PART_NAMES


def _config(tfds_dir, dataset="synthetic_nyu", **kwargs):
    return config_lib.DataConfig(dataset=dataset, image_size=(32, 32),
                               tfds_dir=tfds_dir,
                               synthetic_examples=(12, 4, 4), **kwargs)


def test_batches_follow_the_target_conventions(tfds_dir):
    config = _config(tfds_dir)
    specs = tasks.dataset_spec(config).tasks
    images, targets = next(iter(data_lib.load(config, specs, "train", 4,
                                              training=True)))
    assert images.shape == (4, 32, 32, 3) and images.dtype == tf.float32
    assert 0.0 <= float(tf.reduce_min(images)) <= float(
        tf.reduce_max(images)) <= 1.0
    assert targets["segmentation"].dtype == tf.int32
    assert targets["segmentation"].shape == (4, 32, 32)
    assert targets["depth"].shape == (4, 32, 32, 1)
    assert targets["normals"].shape == (4, 32, 32, 3)
    assert targets["edges"].shape == (4, 32, 32, 1)


def test_evaluation_pass_is_ordered_and_finite(tfds_dir):
    config = _config(tfds_dir)
    specs = tasks.parse_tasks(tasks.dataset_spec(config), ["depth"])
    first = [t["depth"].numpy() for _, t in data_lib.load(
        config, specs, "test", 3, training=False)]
    second = [t["depth"].numpy() for _, t in data_lib.load(
        config, specs, "test", 3, training=False)]
    assert [b.shape[0] for b in first] == [3, 1]
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)
    assert data_lib.num_examples(config, "train") == 12


def test_celeba_attributes_and_merged_classes(tfds_dir):
    config = _config(tfds_dir, "synthetic_celeba", segmentation_classes=3)
    specs = tasks.parse_tasks(tasks.dataset_spec(config), [1, 2, 7])
    _, targets = next(iter(data_lib.load(config, specs, "validation", 4,
                                         training=False)))
    assert targets["male"].shape == (4, 1)
    assert set(np.unique(targets["male"])) <= {0.0, 1.0}
    assert int(tf.reduce_max(targets["segmentation"])) <= 2


def test_flip_negates_normal_x_and_mirrors_maps():
    spec = tasks.get_dataset("synthetic_nyu")
    scene = synthetic_nyu.render_scene(np.random.default_rng(0), 16, 24,
                                       holes=True)
    image, targets = pipeline.example_to_inputs(
        {k: tf.constant(v) for k, v in scene.items()}, spec, spec.tasks,
        (16, 24))
    flipped_image, flipped = pipeline.flip_horizontally(image, targets, spec,
                                                        spec.tasks)
    np.testing.assert_array_equal(flipped_image, image[:, ::-1])
    np.testing.assert_array_equal(flipped["depth"], targets["depth"][:, ::-1])
    normals = targets["normals"].numpy()[:, ::-1]
    np.testing.assert_array_equal(flipped["normals"][..., 0],
                                  -normals[..., 0])
    np.testing.assert_array_equal(flipped["normals"][..., 1:],
                                  normals[..., 1:])


def test_flip_swaps_left_and_right_face_parts():
    spec = tasks.get_dataset("synthetic_celeba")
    left = CELEBA_PART_NAMES.index("l_eye")
    right = CELEBA_PART_NAMES.index("r_eye")
    labels = tf.constant([[left, 0, right, 13]], tf.int32)
    _, flipped = pipeline.flip_horizontally(
        tf.zeros((1, 4, 3)), {"segmentation": labels}, spec, spec.tasks[:1])
    np.testing.assert_array_equal(flipped["segmentation"],
                                  [[13, left, 0, right]])


def test_resizing_keeps_labels_holes_and_unit_normals():
    spec = tasks.get_dataset("synthetic_nyu")
    scene = synthetic_nyu.render_scene(np.random.default_rng(3), 48, 64,
                                       holes=True)
    _, targets = pipeline.example_to_inputs(
        {k: tf.constant(v) for k, v in scene.items()}, spec, spec.tasks,
        (24, 32))
    assert targets["depth"].shape == (24, 32, 1)
    assert set(np.unique(targets["segmentation"])) <= set(
        np.unique(scene["segmentation"]))
    norms = np.linalg.norm(targets["normals"], axis=-1)
    valid = norms > 0
    np.testing.assert_allclose(norms[valid], 1.0, atol=1e-5)
    np.testing.assert_array_equal(valid, targets["depth"][..., 0] > 0)


def test_real_dataset_without_data_dir_is_refused():
    config = config_lib.DataConfig(dataset="nyu", image_size=(32, 32),
                                 data_dir="/no/such/dir")
    with pytest.raises(ValueError, match="--data_dir=/no/such/dir: no such"):
        data_lib.check_data_dir(config)


def test_real_dataset_files_default_to_the_tfds_manual_dir(monkeypatch,
                                                           tmp_path):
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path))
    config = config_lib.DataConfig(dataset="celeba", image_size=(32, 32))
    assert data_lib.files_dir(config) == str(
        tmp_path / "downloads" / "manual" / "celeba")
    with pytest.raises(ValueError, match="CelebAMask-HQ-attribute-anno.txt"):
        data_lib.check_data_dir(config)


def test_synthetic_dataset_refuses_a_data_dir():
    with pytest.raises(ValueError, match="is generated, not read"):
        config_lib.DataConfig(dataset="synthetic_nyu", image_size=(32, 32),
                            data_dir="/data")


def _draws(seed, stream, count):
    """Every key one stream uses for its first `count` examples."""
    key = pipeline.stream_key(seed, stream)
    return {tuple(k.numpy()) for i in range(count)
            for k in pipeline.augmentation_keys(key, i)}


def test_support_and_query_draws_are_independent():
    support = _draws(0, pipeline.SUPPORT_STREAM, 200)
    query = _draws(0, pipeline.QUERY_STREAM, 200)
    train = _draws(0, pipeline.TRAIN_STREAM, 200)
    # Three purposes per example, none shared within or across streams.
    assert len(support) == len(query) == len(train) == 600
    assert not support & query and not support & train and not query & train
    assert not _draws(1, pipeline.SUPPORT_STREAM, 200) & support


def test_support_and_query_zoom_factors_are_uncorrelated():
    def zooms(stream):
        key = pipeline.stream_key(0, stream)
        return np.array([float(tf.random.stateless_uniform(
            (), seed=pipeline.augmentation_keys(key, i)[1]))
            for i in range(400)])
    support, query = zooms(pipeline.SUPPORT_STREAM), zooms(
        pipeline.QUERY_STREAM)
    # Shifted by one example, the old offsets made these draws identical.
    assert abs(np.corrcoef(support[:-1], query[1:])[0, 1]) < 0.15
    assert abs(np.corrcoef(support, query)[0, 1]) < 0.15


@pytest.mark.slow
def test_generation_is_at_least_100_samples_per_second_at_96x128():
    rates = []
    for _ in range(3):
        start = time.perf_counter()
        for i in range(100):
            synthetic_nyu.render_scene(np.random.default_rng(i), 96, 128)
        rates.append(100 / (time.perf_counter() - start))
    assert np.median(rates) >= 100


def test_scale_crop_divides_depth_and_keeps_labels_and_normals():
    spec = tasks.get_dataset("synthetic_nyu")
    scene = synthetic_nyu.render_scene(np.random.default_rng(4), 32, 40,
                                       holes=True)
    image, targets = pipeline.example_to_inputs(
        {k: tf.constant(v) for k, v in scene.items()}, spec, spec.tasks,
        (32, 40))
    zoom, crop = tf.constant([3, 7], tf.int64), tf.constant([4, 8], tf.int64)
    out_image, out = pipeline.random_scale_crop(image, targets, spec.tasks,
                                                zoom, crop)
    again = pipeline.random_scale_crop(image, targets, spec.tasks, zoom,
                                       crop)[1]
    np.testing.assert_array_equal(out["depth"], again["depth"])
    assert out_image.shape == image.shape
    assert set(np.unique(out["segmentation"])) <= set(
        np.unique(targets["segmentation"]))
    # Nearest resizing copies normals unchanged (holes stay holes).
    normals = targets["normals"].numpy().reshape(-1, 3)
    for vector in out["normals"].numpy().reshape(-1, 3)[::37]:
        assert np.min(np.abs(normals - vector).sum(axis=1)) < 1e-6
    np.testing.assert_array_equal(out["depth"].numpy()[..., 0] == 0,
                                  np.abs(out["normals"].numpy()).sum(-1) == 0)


def test_scale_crop_of_a_constant_depth_is_depth_over_scale():
    spec = tasks.get_dataset("synthetic_nyu")
    specs = tasks.parse_tasks(spec, ["depth"])
    depth = tf.fill((16, 16, 1), 3.0)
    for seed in range(5):
        stacked = tf.concat([tf.zeros((16, 16, 2)), depth], axis=-1)
        _, out = pipeline.random_scale_crop(
            stacked, {"depth": depth}, specs,
            tf.constant([seed, 1], tf.int64), tf.constant([seed, 2], tf.int64))
        values = np.unique(out["depth"].numpy())
        assert values.size == 1 and 2.0 <= values[0] <= 3.0


def test_examples_another_process_prepared_first_are_reused():
    # Two runs preparing the same examples: the one that loses the rename
    # race (FileExistsError) reads the winner's with a fresh builder.
    made = []

    class Builder:
        def __init__(self):
            made.append(self)
            self.prepared = False

        def download_and_prepare(self, download_config=None):
            if len(made) == 1:
                raise FileExistsError("incomplete.XYZ -> 1.0.0 exists")
            self.prepared = True

    result = data_lib._prepared(Builder)
    assert len(made) == 2 and result is made[1] and result.prepared
