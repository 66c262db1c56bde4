"""The binaries, driven through absl flags as a user would drive them."""

import os
import subprocess
import sys

import keras
import numpy as np
import pytest
from absl import flags
from absl.testing import flagsaver

from ms_keras import evaluate
from ms_keras import experiment
from ms_keras.trainers import backup
from tests.helpers import META_FLAGS
from tests.helpers import assert_flag_error
from tests.helpers import read
from tests.helpers import run_train

FLAGS = flags.FLAGS


@pytest.mark.parametrize("dataset,tasks_flag,mode,expected", [
    ("synthetic_nyu", ["1", "2", "3", "4"], "mtl",
     {"segmentation": "miou", "depth": "mae", "normals": "cosine_similarity",
      "edges": "mae"}),
    ("synthetic_celeba", ["1", "2", "3", "4", "5", "6", "7"], "mtl",
     {"segmentation": "miou", "male": "accuracy", "bushy_eyebrows":
      "accuracy"}),
    ("synthetic_nyu", ["2"], "stl", {"depth": "abs_rel"}),
])
def test_train_writes_every_artifact(tfds_dir, tmp_path, dataset, tasks_flag,
                                     mode, expected):
    model_dir = str(tmp_path / "run")
    run_train(tfds_dir, model_dir, dataset=dataset, tasks=tasks_flag,
              mode=mode)
    names = set(os.listdir(model_dir))
    assert {"config.json", "metrics.json", "model.keras", "checkpoints",
            "train", "validation"} <= names
    assert os.listdir(os.path.join(model_dir, "train"))
    metrics = read(model_dir, "metrics.json")
    assert set(metrics["test"]) - {"loss"} == (
        set(expected) | set(metrics["test"]) - {"loss"})
    for task, metric in expected.items():
        assert isinstance(metrics["test"][task][metric], float)
    assert metrics["sparsity"]["parameter_percent"] == 0.0
    assert metrics["lambda"] is None
    recorded = read(model_dir, "config.json")
    assert recorded["data"]["dataset"] == dataset and recorded["mode"] == mode


def test_evaluate_reproduces_the_test_metrics(tfds_dir, tmp_path):
    model_dir = str(tmp_path / "run")
    run_train(tfds_dir, model_dir, tasks=["2", "3"])
    with flagsaver.flagsaver(model_dir=model_dir, verbose=0, split="test"):
        evaluate.main(["evaluate"])
    trained = read(model_dir, "metrics.json")["test"]
    evaluated = read(model_dir, "evaluation_test.json")
    assert evaluated["depth"]["mae"] == pytest.approx(
        trained["depth"]["mae"], rel=1e-5)


def test_finished_run_is_protected(tfds_dir, tmp_path, capsys):
    model_dir = str(tmp_path / "run")
    run_train(tfds_dir, model_dir, tasks=["2"])
    before = read(model_dir, "metrics.json")
    with pytest.raises(SystemExit) as exit_info:
        run_train(tfds_dir, model_dir, tasks=["2"])
    assert exit_info.value.code == 1
    assert "already holds a finished run" in capsys.readouterr().err
    assert read(model_dir, "metrics.json") == before


class _StopAfterEpochs(keras.callbacks.Callback):
    """Interrupts training like a crash after `epochs` epochs."""

    def __init__(self, epochs):
        super().__init__()
        self.epochs = epochs

    def on_epoch_end(self, epoch, logs=None):
        if epoch + 1 == self.epochs:
            raise KeyboardInterrupt


def interrupt_after(monkeypatch, epochs):
    """Makes the next training run stop like a crash after `epochs`."""
    original = experiment._callbacks
    monkeypatch.setattr(
        experiment, "_callbacks", lambda config, trainer, done=0: [
            *original(config, trainer, done), _StopAfterEpochs(epochs)])
    return lambda: monkeypatch.setattr(experiment, "_callbacks", original)


RESUMED = dict(tasks=["2"], epochs=4, early_stopping_patience=0)


def test_interrupted_run_resumes_where_it_stopped(tfds_dir, tmp_path,
                                                  monkeypatch):
    whole = str(tmp_path / "whole")
    run_train(tfds_dir, whole, **RESUMED)
    model_dir = str(tmp_path / "run")
    restore = interrupt_after(monkeypatch, 2)
    with pytest.raises(KeyboardInterrupt):
        run_train(tfds_dir, model_dir, **RESUMED)
    assert not os.path.exists(os.path.join(model_dir, "metrics.json"))
    restore()
    run_train(tfds_dir, model_dir, **RESUMED)
    metrics, uninterrupted = (read(model_dir, "metrics.json"),
                              read(whole, "metrics.json"))
    # The record covers the whole run, and it is the uninterrupted run's:
    # the weights, optimizer state and data position were all restored.
    assert metrics["epochs_trained"] == 4
    assert metrics["steps"] == uninterrupted["steps"]
    for key in ("loss", "depth_loss", "val_loss", "val_depth_mae"):
        np.testing.assert_allclose(metrics["history"][key],
                                   uninterrupted["history"][key], rtol=1e-4)
    assert metrics["fingerprint"] == uninterrupted["fingerprint"]


def test_a_damaged_backup_is_passed_over_for_the_one_before(
        tfds_dir, tmp_path, monkeypatch, capsys):
    model_dir = tmp_path / "run"
    restore = interrupt_after(monkeypatch, 3)
    with pytest.raises(KeyboardInterrupt):
        run_train(tfds_dir, str(model_dir), **RESUMED)
    restore()
    backups = model_dir / "backup"
    assert backup.backup_epochs(str(backups)) == [3, 2]
    best = (model_dir / "checkpoints" / "best.weights.h5").read_bytes()
    latest = backups / "epoch_0003.weights.h5"
    latest.write_bytes(latest.read_bytes()[:1000])  # a copy cut short
    capsys.readouterr()
    run_train(tfds_dir, str(model_dir), **RESUMED)
    out = capsys.readouterr()
    warnings = [line for line in out.err.splitlines() if line.strip()]
    assert len(warnings) == 1 and "the backup of epoch 3" in warnings[0]
    assert "cannot be read" in warnings[0]
    assert "resumed from epoch 2" in out.out
    assert read(str(model_dir), "metrics.json")["epochs_trained"] == 4
    # Both generations damaged: one line, how to start over, nothing lost.
    second = tmp_path / "second"
    restore = interrupt_after(monkeypatch, 3)
    with pytest.raises(KeyboardInterrupt):
        run_train(tfds_dir, str(second), **RESUMED)
    restore()
    for path in (second / "backup").glob("*.weights.h5"):
        path.write_bytes(path.read_bytes()[:1000])
    best = (second / "checkpoints" / "best.weights.h5").read_bytes()
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        run_train(tfds_dir, str(second), **RESUMED)
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 1 and len(err) == 1, err
    assert "can be read" in err[0] and "--overwrite" in err[0]
    assert (second / "checkpoints" / "best.weights.h5").read_bytes() == best


def test_overwrite_removes_the_old_results_first(tfds_dir, tmp_path):
    model_dir = tmp_path / "run"
    run_train(tfds_dir, str(model_dir), tasks=["2"])
    (model_dir / "evaluation_test.json").write_text("{}")
    stale = model_dir / "train" / "stale.txt"
    stale.write_text("old")
    run_train(tfds_dir, str(model_dir), tasks=["3"], overwrite=True)
    assert not stale.exists()
    assert read(str(model_dir), "config.json")["tasks"] == ["normals"]
    assert set(read(str(model_dir), "metrics.json")["test"]) == {
        "normals", "loss"}


def test_old_run_directories_get_one_line_saying_how_to_rerun(tfds_dir,
                                                              tmp_path,
                                                              capsys):
    model_dir = tmp_path / "old"
    model_dir.mkdir()
    (model_dir / "flags.json").write_text('{"mode": "mtl"}')
    with pytest.raises(SystemExit):
        with flagsaver.flagsaver(model_dir=str(model_dir), verbose=0):
            evaluate.main(["evaluate"])
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "ms_keras 0.1 (flags.json" in err[0]
    assert "re-run its training command" in err[0]


def test_model_dir_of_another_experiment_is_refused(tfds_dir, tmp_path,
                                                    capsys):
    model_dir = str(tmp_path / "run")
    run_train(tfds_dir, model_dir, tasks=["2"])
    config_before = read(model_dir, "config.json")
    with pytest.raises(SystemExit) as exit_info:
        run_train(tfds_dir, model_dir, tasks=["3"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 1
    assert "holds a different experiment" in err and "tasks" in err
    assert len(err.strip().splitlines()) == 1
    assert read(model_dir, "config.json") == config_before


@pytest.mark.parametrize("argv,message", [
    (["--dataset=imagenet"], "--dataset"),
    (["--image_size=30,32"], "--image_size=30,32"),
    (["--image_size=64"], "--image_size=64"),
    (["--batch_size=0"], "--batch_size"),
    (["--epochs=-1"], "--epochs"),
    (["--learning_rate=0"], "--learning_rate"),
    (["--steps_per_epoch=-3"], "--steps_per_epoch"),
    (["--synthetic_examples=10,0,5"], "--synthetic_examples=10,0,5"),
    (["--aspp_rates=1,x"], "--aspp_rates=1,x"),
    (["--mode=stl", "--tasks=1,2"], "--mode=stl trains one task"),
])
def test_bad_flags_give_one_line_and_exit_2(argv, message, capsys):
    assert_flag_error("train", argv, message, capsys)


@pytest.mark.parametrize("overrides,message", [
    (dict(dataset="synthetic_celeba", tasks=["8"]),
     "Task 8 is outside dataset 'synthetic_celeba' (tasks 1-7)"),
    (dict(tasks=["1", "segmentation"]), "listed twice"),
    (dict(tasks=[]), "non-empty"),
    (dict(tasks=["depth", "colour"]), "Unknown task 'colour'"),
])
def test_bad_tasks_fail_before_any_work(tfds_dir, tmp_path, capsys,
                                        overrides, message):
    with pytest.raises(SystemExit) as exit_info:
        run_train(tfds_dir, str(tmp_path / "run"), **overrides)
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 1
    assert message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "run").exists()


def test_missing_real_data_dir_fails_before_any_work(tmp_path):
    model_dir = tmp_path / "run"
    result = subprocess.run(
        [sys.executable, "-m", "ms_keras.train", "--dataset=nyu",
         "--data_dir=/no/such/dir", f"--model_dir={model_dir}"],
        capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    err = result.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(
        "train.py: error: --data_dir=/no/such/dir: no such directory. Put "
        "NYUv2 into")
    assert not model_dir.exists()


def test_bad_flag_from_the_command_line_has_no_traceback(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "ms_keras.train", "--dataset=nyu", "--tasks=5",
         f"--model_dir={tmp_path}"],
        capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("train.py: error: ")
    assert lines[0].endswith("Task 5 is outside dataset 'nyu' (tasks 1-4). "
                             "Received: tasks=5")


def test_evaluate_without_a_run_fails_cleanly(tmp_path, capsys):
    with flagsaver.flagsaver(model_dir=str(tmp_path / "none")):
        with pytest.raises(SystemExit) as exit_info:
            evaluate.main(["evaluate"])
    assert exit_info.value.code == 1
    assert "no such directory" in capsys.readouterr().err


def test_meta_sparsity_run_learns_lambda_and_sparsifies(tfds_dir, tmp_path):
    model_dir = str(tmp_path / "meta")
    run_train(tfds_dir, model_dir, **META_FLAGS)
    metrics = read(model_dir, "metrics.json")
    # Lambda followed its meta-gradient from --lambda_init: down, since the
    # explicit term R (> 0) dominates it (README, sparsity control).
    assert metrics["lambda"] < META_FLAGS["lambda_init"] * 0.999
    sparsity = metrics["sparsity"]
    assert sparsity["parameter_percent"] > 0
    assert sparsity["compression_ratio"] > 1 and sparsity["flops_speedup"] > 1
    assert "stem_conv" in sparsity["per_layer"]
    masks = np.load(os.path.join(model_dir, "sparsity_mask.npz"))
    assert masks["stem_conv"].dtype == bool
    zeros = sum(int((~masks[name]).sum()) for name in masks.files)
    total = sum(masks[name].size for name in masks.files)
    assert 100 * zeros / total == pytest.approx(
        sparsity["parameter_percent"])


@pytest.mark.slow  # --deterministic runs are compared in the default suite
def test_same_seed_gives_identical_lambda_and_sparsity(tfds_dir, tmp_path):
    results = []
    for name in ("a", "b"):
        model_dir = str(tmp_path / name)
        run_train(tfds_dir, model_dir, **META_FLAGS, first_order=True)
        metrics = read(model_dir, "metrics.json")
        results.append((metrics["lambda"], metrics["sparsity"]))
    assert results[0] == results[1]


def test_fixed_lambda_mtl_and_meta_baseline(tfds_dir, tmp_path):
    fixed = str(tmp_path / "fixed")
    run_train(tfds_dir, fixed, tasks=["2"], sparsity="unstructured",
              lam=0.5, learning_rate=0.01)
    metrics = read(fixed, "metrics.json")
    assert metrics["lambda"] == pytest.approx(0.5, rel=1e-5)
    assert metrics["sparsity"]["parameter_percent"] > 0
    baseline = str(tmp_path / "baseline")
    run_train(tfds_dir, baseline, mode="meta", sparsity="none",
              tasks=["2", "3"], steps_per_epoch=2)
    metrics = read(baseline, "metrics.json")
    assert metrics["lambda"] is None
    assert metrics["sparsity"]["parameter_percent"] == 0.0


@pytest.mark.parametrize("argv,message", [
    (["--mode=meta", "--sparsity=channel", "--lam=1e-4"],
     "--lam fixes lambda for stl/mtl runs"),
    (["--mode=mtl", "--inner_steps=3"], "--inner_steps applies to --mode=meta"),
    (["--mode=meta", "--inner_clip_norm=-1"], "--inner_clip_norm"),
    (["--mode=mtl", "--inner_clip_norm=5"], "--inner_clip_norm applies to"),
    (["--mode=mtl", "--sparsity=channel"], "needs a fixed --lam > 0"),
    (["--mode=meta", "--sparsity=none", "--lambda_init=0.5"],
     "--lambda_init applies to --mode=meta with --sparsity=channel or "
     "unstructured"),
    (["--mode=meta", "--sparsity=channel", "--regrow_prob=1.5"],
     "--regrow_prob=1.5"),
    (["--mode=meta", "--inner_steps=0"], "--inner_steps=0"),
    (["--mode=meta", "--inner_lr=-1"], "--inner_lr=-1"),
    (["--mode=meta", "--meta_batch_size=0"], "--meta_batch_size=0"),
    (["--mode=meta", "--sparsity=channel", "--lambda_init=0"],
     "--lambda_init=0"),
    (["--mode=meta", "--sparsity=channel", "--lambda_beta=0"],
     "--lambda_beta=0"),
    (["--mode=meta", "--sparsity=channel", "--sparsity_control=paper",
      "--lambda_init=1e-3", "--lambda_lr=-0.1"], "--lambda_lr=-0.1"),
    (["--mode=meta", "--episode_sampler=size<=5"],
     "--episode_sampler=size<=5: k must be in 1-4"),
    (["--mode=meta", "--episode_sampler=pairs"], "--episode_sampler=pairs"),
    (["--sparsity=filter"], "--sparsity"),
    (["--mode=mtl", "--sparsity=channel", "--lam=-1"], "--lam=-1"),
    (["--sparsity=channel", "--mode=mtl", "--lam=1e-4",
      "--sparsity_log_steps=0"], "--sparsity_log_steps=0"),
])
def test_bad_sparsity_and_meta_flags_give_one_line(argv, message, capsys):
    assert_flag_error("train", argv, message, capsys)


def test_inference_agrees_with_training_mode_after_a_sparse_meta_run(
        tfds_dir, tmp_path):
    # Batch-norm statistics must belong to the meta weights that are shipped:
    # at high sparsity, inference (moving statistics) and training mode
    # (each batch's statistics) give the same loss on training batches within
    # 20 %; the initial statistics (never updated) miss by over 50 % here.
    import keras
    from ms_keras import build
    from ms_keras import data as data_lib
    from ms_keras import tasks as tasks_lib
    model_dir = str(tmp_path / "sparse")
    run_train(tfds_dir, model_dir, **{
        **META_FLAGS, "lambda_init": 0.15, "epochs": 3, "steps_per_epoch": 10,
        "early_stopping_patience": 0})
    metrics = read(model_dir, "metrics.json")
    assert metrics["sparsity"]["parameter_percent"] > 50
    config = experiment.load_config(model_dir)
    network = keras.saving.load_model(os.path.join(model_dir, "model.keras"))
    batches = data_lib.load(config.data, tasks_lib.task_specs(config),
                            "train", 8, training=False)
    trainer = build.build_trainer(config)

    def loss(training):
        return np.mean([
            float(keras.ops.sum(trainer.task_losses(
                targets, network(images, training=training))[0]))
            for images, targets in batches])

    batch_statistics, shipped = loss(True), loss(False)
    assert abs(shipped - batch_statistics) <= 0.2 * batch_statistics, (
        shipped, batch_statistics)
    for variable in network.non_trainable_variables:
        initial = (np.ones if variable.path.endswith("variance")
                   else np.zeros)(variable.shape)
        variable.assign(initial)
    assert abs(loss(False) - batch_statistics) > 0.5 * batch_statistics
