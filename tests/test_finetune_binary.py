"""The finetune binary (meta-testing) on a finished meta-sparsity run."""

import os
import subprocess
import sys

import keras
import numpy as np
import pytest
from absl.testing import flagsaver

from ms_keras import evaluate
from ms_keras import finetune
from tests.helpers import read


def run_finetune(from_dir, model_dir, **overrides):
    values = dict(from_dir=from_dir, model_dir=model_dir, verbose=0,
                  epochs=1, steps_per_epoch=2, validation_steps=1)
    values.update(overrides)
    with flagsaver.flagsaver(**values):
        finetune.main(["finetune"])


def test_finetune_same_tasks_keeps_the_sparsity_pattern(meta_run, tmp_path):
    model_dir = str(tmp_path / "ft")
    run_finetune(meta_run, model_dir, learning_rate=0.05)
    source = np.load(os.path.join(meta_run, "sparsity_mask.npz"))
    tuned = np.load(os.path.join(model_dir, "sparsity_mask.npz"))
    for name in source.files:
        assert not np.any(tuned[name] & ~source[name]), name
    metrics = read(model_dir, "metrics.json")
    assert metrics["init_from"]["tasks"] == ["depth", "segmentation"]
    assert metrics["sparsity"]["parameter_percent"] >= read(
        meta_run, "metrics.json")["sparsity"]["parameter_percent"]
    settings = read(model_dir, "config.json")
    assert settings["mode"] == "mtl" and settings["sparsity"] is None
    assert settings["transfer"]["from_dir"] == os.path.abspath(meta_run)
    # evaluate works on a fine-tuned run like on any other.
    with flagsaver.flagsaver(model_dir=model_dir, verbose=0, split="test"):
        evaluate.main(["evaluate"])


def test_finetune_new_heads_trains_only_the_new_head(meta_run, tmp_path):
    model_dir = str(tmp_path / "ft_new")
    run_finetune(meta_run, model_dir, tasks=["1", "2", "4"],
                 train_scope="new_heads", learning_rate=0.05)
    source = keras.saving.load_model(os.path.join(meta_run, "model.keras"))
    tuned = keras.saving.load_model(os.path.join(model_dir, "model.keras"))
    for a, b in zip(source.backbone.get_weights() +
                    source.heads["depth"].get_weights(),
                    tuned.backbone.get_weights() +
                    tuned.heads["depth"].get_weights()):
        np.testing.assert_array_equal(a, b)
    assert "edges" in read(model_dir, "metrics.json")["test"]


def test_finetune_new_heads_needs_a_new_task(meta_run, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        run_finetune(meta_run, str(tmp_path / "x"), train_scope="new_heads")
    assert exit_info.value.code == 1
    assert "adds no task" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_finetune_tasks_outside_the_source_dataset_fail_cleanly(meta_run,
                                                                tmp_path):
    # The finetune binary alone: its tasks are checked against the source
    # run's dataset, not a --dataset flag.
    result = subprocess.run(
        [sys.executable, "-m", "ms_keras.finetune", f"--from_dir={meta_run}",
         "--tasks=9", f"--model_dir={tmp_path / 'x'}"],
        capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Task 9 is outside dataset 'synthetic_nyu'" in (
        lines[0])
    assert not (tmp_path / "x").exists()


def test_finetune_from_an_unfinished_run_is_refused(tmp_path, capsys):
    with pytest.raises(SystemExit):
        run_finetune(str(tmp_path), str(tmp_path / "x"))
    assert "holds no run" in capsys.readouterr().err
