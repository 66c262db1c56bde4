"""The binaries, driven through absl flags as a user would drive them."""

import json
import os
import subprocess
import sys

import pytest
from absl import flags
from absl.testing import flagsaver

from ms_keras import common_flags
from ms_keras import evaluate
from ms_keras import train
from tests.conftest import TINY_EXAMPLES

FLAGS = flags.FLAGS


def tiny_flags(tfds_dir, model_dir, **overrides):
    values = dict(
        dataset="synthetic_nyu", tasks=["1", "2", "3", "4"],
        image_size=["32", "32"], synthetic_examples=list(TINY_EXAMPLES),
        backbone="resnet_tiny", aspp_rates=["1", "2"], batch_size=4,
        epochs=1, steps_per_epoch=2, validation_steps=1, data_dir=tfds_dir,
        model_dir=model_dir, verbose=0)
    values.update(overrides)
    return values


def run_train(tfds_dir, model_dir, **overrides):
    with flagsaver.flagsaver(**tiny_flags(tfds_dir, model_dir, **overrides)):
        train.main(["train"])


def read(model_dir, name):
    with open(os.path.join(model_dir, name)) as f:
        return json.load(f)


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
    assert {"flags.json", "metrics.json", "model.keras", "checkpoints",
            "train", "validation"} <= names
    assert os.listdir(os.path.join(model_dir, "train"))
    metrics = read(model_dir, "metrics.json")
    assert set(metrics["test"]) - {"loss"} == (
        set(expected) | set(metrics["test"]) - {"loss"})
    for task, metric in expected.items():
        assert isinstance(metrics["test"][task][metric], float)
    assert metrics["sparsity"] is None and metrics["lambda"] is None
    recorded = read(model_dir, "flags.json")
    assert recorded["dataset"] == dataset and recorded["mode"] == mode


def test_evaluate_reproduces_the_test_metrics(tfds_dir, tmp_path):
    model_dir = str(tmp_path / "run")
    run_train(tfds_dir, model_dir, tasks=["2", "3"])
    with flagsaver.flagsaver(model_dir=model_dir, verbose=0, split="test"):
        evaluate.main(["evaluate"])
    trained = read(model_dir, "metrics.json")["test"]
    evaluated = read(model_dir, "evaluation_test.json")
    assert evaluated["depth"]["mae"] == pytest.approx(
        trained["depth"]["mae"], rel=1e-5)


def test_unfinished_run_resumes_and_finished_run_is_protected(tfds_dir,
                                                              tmp_path,
                                                              capsys):
    model_dir = str(tmp_path / "run")
    run_train(tfds_dir, model_dir, tasks=["2"])
    before = read(model_dir, "metrics.json")
    with pytest.raises(SystemExit) as exit_info:
        run_train(tfds_dir, model_dir, tasks=["2"])
    assert exit_info.value.code == 1
    assert "already holds a finished run" in capsys.readouterr().err
    assert read(model_dir, "metrics.json") == before


def test_model_dir_of_another_experiment_is_refused(tfds_dir, tmp_path,
                                                    capsys):
    model_dir = str(tmp_path / "run")
    run_train(tfds_dir, model_dir, tasks=["2"])
    flags_before = read(model_dir, "flags.json")
    with pytest.raises(SystemExit) as exit_info:
        run_train(tfds_dir, model_dir, tasks=["3"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 1
    assert "holds a different experiment" in err and "tasks" in err
    assert len(err.strip().splitlines()) == 1
    assert read(model_dir, "flags.json") == flags_before


@pytest.mark.parametrize("argv,message", [
    (["--dataset=imagenet"], "--dataset"),
    (["--dataset=nyu", "--tasks=5"], "Task 5 is outside dataset 'nyu'"),
    (["--tasks=1,1"], "listed twice"),
    (["--tasks="], "non-empty"),
    (["--tasks=depth,colour"], "Unknown task 'colour'"),
    (["--image_size=30,32"], "--image_size=30,32"),
    (["--image_size=64"], "--image_size=64"),
    (["--batch_size=0"], "--batch_size"),
    (["--epochs=-1"], "--epochs"),
    (["--learning_rate=0"], "--learning_rate"),
    (["--steps_per_epoch=-3"], "--steps_per_epoch"),
    (["--synthetic_examples=10,0,5"], "--synthetic_examples=10,0,5"),
    (["--mode=stl", "--tasks=1,2"], "--mode=stl trains exactly one task"),
    (["--aspp_rates=1,x"], "--aspp_rates=1,x"),
])
def test_bad_flags_give_one_line_and_exit_2(argv, message, capsys):
    with flagsaver.flagsaver():
        with pytest.raises(SystemExit) as exit_info:
            common_flags.parse_flags(["train", *argv])
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2
    assert message in err
    assert len(err.splitlines()) == 1


def test_missing_real_data_dir_fails_before_any_work(tmp_path):
    model_dir = tmp_path / "run"
    result = subprocess.run(
        [sys.executable, "-m", "ms_keras.train", "--dataset=nyu",
         "--data_dir=/no/such/dir", f"--model_dir={model_dir}"],
        capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    err = result.stderr.strip().splitlines()
    assert err == ["train.py: error: --data_dir=/no/such/dir: no such "
                   "directory (dataset 'nyu' is read from the user's files)."]
    assert not model_dir.exists()


def test_bad_flag_from_the_command_line_has_no_traceback(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "ms_keras.train", "--dataset=nyu", "--tasks=5",
         f"--model_dir={tmp_path}"],
        capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
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
