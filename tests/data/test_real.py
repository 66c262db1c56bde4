"""Real-dataset readers on tiny fixtures in the real on-disk formats."""

import dataclasses
import os
import subprocess
import sys

import numpy as np
import pytest

from ms_keras import config as config_lib
from ms_keras import data as data_lib
from ms_keras import tasks
from ms_keras.data import celeba
from ms_keras.data import nyu
from tests.data import fixtures

REPO = os.path.dirname(os.path.dirname(os.path.dirname(__file__)))


def nyu_config(root, classes=None, size=(16, 16)):
    return config_lib.DataConfig(
        dataset="nyu", image_size=size, data_dir=str(root),
        segmentation_classes=data_lib.segmentation_classes(
            "nyu", str(root), classes))


def test_nyud_mt_layout_is_read_with_conventions(tmp_path):
    fixtures.write_nyud_mt(tmp_path)
    assert nyu.detect_layout(str(tmp_path)) == nyu.NYUD_MT
    examples = nyu.list_examples(str(tmp_path), nyu.NYUD_MT)
    assert [len(examples[s]) for s in ("train", "validation", "test")] == [
        9, 1, 3]
    example = nyu.read_example(examples["train"][0], nyu.NYUD_MT)
    assert example["image"].dtype == np.uint8
    assert example["segmentation"][0, 0] == 255  # 0 = unlabelled
    assert example["segmentation"][example["segmentation"] != 255].max() < 40
    assert example["depth"].shape == fixtures.NYU_SIZE


def test_mtan_layout_derives_edges_from_labels(tmp_path):
    fixtures.write_mtan(tmp_path)
    assert nyu.detect_layout(str(tmp_path)) == nyu.MTAN
    assert data_lib.segmentation_classes("nyu", str(tmp_path), None) == 13
    examples = nyu.list_examples(str(tmp_path), nyu.MTAN)
    example = nyu.read_example(examples["test"][0], nyu.MTAN)
    labels = example["segmentation"]
    assert labels[0, 0] == 255
    change = labels[:, 1:] != labels[:, :-1]
    assert np.all(example["edges"][:, 1:][change] == 1)
    assert example["depth"].ndim == 2


def test_celeba_release_is_read_with_partition_and_attributes(tmp_path):
    fixtures.write_celeba(tmp_path)
    examples = celeba.list_examples(str(tmp_path))
    assert [len(examples[s]) for s in ("train", "validation", "test")] == [
        8, 2, 2]
    item = examples["train"][0]
    example = celeba.read_example(item)
    assert example["segmentation"].shape == (16, 16)
    assert example["segmentation"].max() < 19
    from ms_keras.data import synthetic_celeba
    face = synthetic_celeba.render_face(np.random.default_rng(0), 32, 32)
    np.testing.assert_array_equal(example["attributes"], face["attributes"])


def _read_only(root):
    for path, dirs, names in os.walk(root):
        for name in names:
            os.chmod(os.path.join(path, name), 0o444)
        os.chmod(path, 0o555)


def test_prepared_batches_have_the_training_resolution(tmp_path):
    files = tmp_path / "files"
    fixtures.write_nyud_mt(files)
    before = sorted(os.listdir(files))
    _read_only(files)  # a read-only dataset mount, as on shared clusters
    config = dataclasses.replace(nyu_config(files),
                                 tfds_dir=str(tmp_path / "tfds"))
    specs = tasks.dataset_spec(config).tasks
    images, targets = next(iter(data_lib.load(config, specs, "train", 2,
                                              training=True)))
    assert images.shape == (2, 16, 16, 3)
    assert targets["normals"].shape == (2, 16, 16, 3)
    assert sorted(os.listdir(files)) == before
    assert os.listdir(tmp_path / "tfds" / "nyu_depth_v2_files")


def test_a_run_checks_and_prepares_its_files_once(tmp_path, monkeypatch):
    files = tmp_path / "files"
    fixtures.write_nyud_mt(files)
    config = dataclasses.replace(nyu_config(files),
                                 tfds_dir=str(tmp_path / "tfds"))
    checks = []
    check = data_lib.check_data_dir
    monkeypatch.setattr(data_lib, "check_data_dir",
                        lambda c: checks.append(c) or check(c))
    specs = tasks.dataset_spec(config).tasks
    # What one meta run asks for: sizes, train, support, query, validation.
    assert data_lib.num_examples(config, "train") == 9
    for split, training in (("train", True), ("train", True),
                            ("train", True), ("validation", False),
                            ("test", False)):
        data_lib.load(config, specs, split, 1, training=training)
    assert len(checks) == 1


def _problem(root, kind):
    fixtures.write_nyud_mt(root)
    if kind == "missing_modality":
        import shutil
        shutil.rmtree(root / "depth")
    elif kind == "missing_file":
        with open(root / "gt_sets" / "train.txt", "a") as f:
            f.write("999999\n")
    elif kind == "corrupt_image":
        (root / "images" / "000002.jpg").write_bytes(b"not a jpeg")


@pytest.mark.parametrize("kind,message", [
    ("missing_modality", "looks like the NYUD_MT layout but depth/ missing"),
    ("missing_file", "gt_sets/train.txt lists an example whose file "
                     "images/999999.jpg is missing"),
    ("corrupt_image", "images/000002.jpg: cannot read it"),
])
def test_bad_nyu_directories_are_reported_before_training(tmp_path, kind,
                                                          message):
    root = tmp_path / "nyu"
    _problem(root, kind)
    result = subprocess.run(
        [sys.executable, "-m", "ms_keras.train", "--dataset=nyu",
         f"--data_dir={root}", "--image_size=16,16",
         f"--model_dir={tmp_path / 'run'}"],
        capture_output=True, text=True, timeout=300)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1, result.stderr[-2000:]
    assert len(lines) == 1 and message in lines[0], lines
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("setup,message", [
    ("missing", "no such directory"),
    ("empty", "the directory is empty"),
    ("official", "convert it first: python tools/prepare_nyu.py"),
])
def test_unusable_nyu_directories(tmp_path, setup, message):
    root = tmp_path / "d"
    if setup != "missing":
        root.mkdir()
    if setup == "official":
        (root / "nyu_depth_v2_labeled.mat").write_bytes(b"")
    with pytest.raises(ValueError, match=message):
        data_lib.check_data_dir(nyu_config(root))


def test_celeba_missing_parts_are_named(tmp_path):
    fixtures.write_celeba(tmp_path)
    os.remove(tmp_path / "CelebA-HQ-to-CelebA-mapping.txt")
    config = config_lib.DataConfig(dataset="celeba", image_size=(16, 16),
                                 data_dir=str(tmp_path))
    with pytest.raises(ValueError,
                       match="CelebA-HQ-to-CelebA-mapping.txt missing"):
        data_lib.check_data_dir(config)


def test_prepare_nyu_converts_the_official_release(tmp_path):
    fixtures.write_official_nyu(tmp_path / "official")
    out = tmp_path / "nyud_mt"
    result = subprocess.run(
        [sys.executable, os.path.join(REPO, "tools", "prepare_nyu.py"),
         f"--source={tmp_path / 'official'}", f"--output_dir={out}"],
        capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "normals computed from depth" in result.stdout
    assert nyu.detect_layout(str(out)) == nyu.NYUD_MT
    examples = nyu.list_examples(str(out), nyu.NYUD_MT)
    assert len(examples["test"]) == 2
    example = nyu.read_example(examples["train"][0], nyu.NYUD_MT)
    assert example["image"].shape == (*fixtures.NYU_SIZE, 3)
    norms = np.linalg.norm(example["normals"], axis=-1)
    np.testing.assert_allclose(norms[norms > 0], 1.0, atol=1e-5)
    assert example["edges"].max() == 1


def test_prepare_nyu_reports_missing_inputs(tmp_path):
    result = subprocess.run(
        [sys.executable, os.path.join(REPO, "tools", "prepare_nyu.py"),
         f"--source={tmp_path}", f"--output_dir={tmp_path / 'o'}"],
        capture_output=True, text=True, timeout=300)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        f"prepare_nyu.py: error: --source={tmp_path}: "
        "nyu_depth_v2_labeled.mat, splits.mat, classMapping40.mat missing "
        "(needed for --classes=40).")


@pytest.mark.parametrize("layout", [
    "nyud_mt", pytest.param("mtan", marks=pytest.mark.slow),
    pytest.param("official", marks=pytest.mark.slow), "celeba"])
def test_binary_trains_two_steps_on_each_format(tmp_path, layout):
    from tests.helpers import read
    from tests.helpers import run_train
    root = tmp_path / "data"
    if layout == "nyud_mt":
        fixtures.write_nyud_mt(root)
    elif layout == "mtan":
        fixtures.write_mtan(root)
    elif layout == "official":
        from ms_keras.data import nyu_official
        fixtures.write_official_nyu(tmp_path / "official")
        nyu_official.convert(str(tmp_path / "official"), str(root), 40,
                             log=lambda message: None)
    else:
        fixtures.write_celeba(root)
    dataset = "celeba" if layout == "celeba" else "nyu"
    model_dir = str(tmp_path / "run")
    run_train(str(tmp_path / "tfds"), model_dir, data_dir=str(root),
              dataset=dataset, tasks=None, image_size=[16, 16],
              steps_per_epoch=2, batch_size=2, mode="mtl")
    metrics = read(model_dir, "metrics.json")
    expected = tasks.get_dataset(dataset).task_names
    assert set(metrics["test"]) - {"loss"} == set(expected)
    classes = 13 if layout == "mtan" else (19 if dataset == "celeba" else 40)
    import keras
    network = keras.saving.load_model(os.path.join(model_dir, "model.keras"))
    assert network.heads["segmentation"].output.shape[-1] == classes
    assert 0 <= metrics["test"]["segmentation"]["miou"] <= 1


def _first_command(home, tmp_path):
    env = {**os.environ, "HOME": str(home)}
    env.pop("TFDS_DATA_DIR", None)
    return subprocess.run(
        [sys.executable, "-m", "ms_keras.train", "--dataset=nyu",
         "--tasks=1,2,3"], cwd=tmp_path, env=env, capture_output=True,
        text=True, timeout=600)


# README command 1 on real files (slow: a dense reference and a meta run);
# test_binary_trains_two_steps_on_each_format covers the reading by default.
@pytest.mark.slow
def test_first_command_trains_on_files_in_the_tfds_manual_dir(tmp_path):
    home = tmp_path / "home"
    fixtures.write_nyud_mt(home / "tensorflow_datasets" / "downloads" /
                           "manual" / "nyu")
    result = _first_command(home, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    (run,) = os.listdir(tmp_path / "runs")
    assert run.startswith("nyu_meta_")
    assert f"Run directory: runs/{run}" in result.stdout
    # The program's main job is its default: meta-sparsity that chooses its
    # sparsity against a dense reference it trains first.
    from tests.helpers import read
    metrics = read(str(tmp_path / "runs" / run), "metrics.json")
    assert metrics["sparsity_control"]["mode"] == "tolerance"
    assert metrics["lambda"] is not None
    assert os.path.exists(tmp_path / "runs" / run / "reference" /
                          "metrics.json")


def test_first_command_without_files_says_where_to_put_what(tmp_path):
    result = _first_command(tmp_path / "home", tmp_path)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1 and len(lines) == 1, result.stderr[-3000:]
    expected_dir = tmp_path / "home/tensorflow_datasets/downloads/manual/nyu"
    assert f"--data_dir={expected_dir}: no such directory." in lines[0]
    assert data_lib.manual_instructions("nyu") in lines[0]
    assert "NYUD_MT" in lines[0] and "https://" in lines[0]
    assert not (tmp_path / "runs").exists()
