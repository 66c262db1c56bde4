"""tf.distribute and fault tolerance: mirrored = one device, two workers on
127.0.0.1 agree and only the chief writes, a SIGKILLed run resumes, a NaN
stops training cleanly, --deterministic runs match exactly. Every subprocess
has a time bound; ports are picked free."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf
from absl.testing import flagsaver
from tensorboard.backend.event_processing import event_accumulator

from ms_keras import config as config_lib
from ms_keras import data as data_lib
from ms_keras.trainers import backup
from ms_keras.trainers.meta_sparsity import MetaSparsityTrainer
from ms_keras.trainers.multitask import MultiTaskTrainer
from tests.conftest import TINY_EXAMPLES
from tests.helpers import META_FLAGS
from tests.helpers import read
from tests.helpers import run_train

REPO = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
TIMEOUT = 900


def tiny_argv(tfds_dir, model_dir, *extra):
    return [f"--tfds_dir={tfds_dir}", "--image_size=32,32",
            f"--synthetic_examples={','.join(map(str, TINY_EXAMPLES))}",
            "--aspp_rates=1,2", "--batch_size=4", "--validation_steps=1",
            f"--model_dir={model_dir}", "--verbose=2", *extra]


def train(argv, env=None, timeout=TIMEOUT):
    return subprocess.run([sys.executable, "-m", "ms_keras.train", *argv],
                          cwd=REPO, env={**os.environ, **(env or {})},
                          capture_output=True, text=True, timeout=timeout)


def summary_facts(stdout):
    """`{name: text}` of the facts of a run's closing summary."""
    facts = {}
    for line in stdout.splitlines():
        name, _, text = line.strip().partition("  ")
        if name in ("fingerprint", "lambda", "steps"):
            facts[name] = text.strip()
    return facts


def prepared(tfds_dir):
    data_lib.builder(config_lib.DataConfig(
        "synthetic_nyu", (32, 32), tfds_dir=tfds_dir,
        synthetic_examples=TINY_EXAMPLES))
    return tfds_dir


# Slow (two logical devices, a second-order trace on each): the default
# suite keeps to 10 minutes.
@pytest.mark.slow
def test_mirrored_meta_step_equals_one_device():
    result = subprocess.run(
        [sys.executable, os.path.join(REPO, "tests", "distribute",
                                      "mirrored_step.py")],
        cwd=REPO, capture_output=True, text=True, timeout=TIMEOUT)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["replicas"] == 2
    assert report["update_size"] > 1e-3 and report["lambda_moved"] > 1e-4
    for name in ("weights", "lambda", "bn_statistics"):
        assert report[name] < 1e-5, report


def free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def test_two_workers_agree_and_only_the_chief_writes(tfds_dir, tmp_path):
    prepared(tfds_dir)
    # README command 1's tolerance mode, against a finished dense run (over
    # several workers the reference is not trained on the way).
    reference = tmp_path / "dense"
    result = train(tiny_argv(tfds_dir, reference, "--mode=mtl",
                             "--epochs=2", "--steps_per_epoch=2"))
    assert result.returncode == 0, result.stderr[-3000:]
    ports = free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{port}" for port in ports]}
    processes = []
    for index in range(2):
        temp = tmp_path / f"tmp{index}"
        temp.mkdir()
        env = {**os.environ, "TMPDIR": str(temp), "TF_CONFIG": json.dumps(
            {"cluster": cluster, "task": {"type": "worker", "index": index}})}
        argv = ["--flagfile=flags/quickstart.cfg", *tiny_argv(
            tfds_dir, tmp_path / f"run{index}", "--first_order",
            "--epochs=1", "--steps_per_epoch=2",
            f"--reference_dir={reference}", "--strategy=multi_worker")]
        processes.append(subprocess.Popen(
            [sys.executable, "-m", "ms_keras.train", *argv], cwd=REPO,
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True))
    outputs = []
    for process in processes:
        stdout, stderr = process.communicate(timeout=TIMEOUT)
        assert process.returncode == 0, stderr[-3000:]
        outputs.append(summary_facts(stdout))
    assert outputs[0]["fingerprint"] == outputs[1]["fingerprint"]
    assert outputs[0]["lambda"] == outputs[1]["lambda"]
    assert outputs[0]["steps"] == "2"
    chief = tmp_path / "run0"
    assert {"config.json", "metrics.json", "model.keras", "checkpoints",
            "train"} <= set(os.listdir(chief))
    assert not (tmp_path / "run1").exists()
    # The worker's run directory is gone (TensorFlow's autograph may leave
    # its own generated modules in the same TMPDIR).
    assert not [name for name in os.listdir(tmp_path / "tmp1")
                if name.startswith(".ms_keras-worker-")]


def test_a_sigkilled_run_resumes_from_its_last_epoch(tfds_dir, tmp_path):
    prepared(tfds_dir)
    model_dir = tmp_path / "run"
    argv = tiny_argv(tfds_dir, model_dir, "--mode=meta", "--tasks=1,2",
                     "--sparsity=channel", "--sparsity_control=paper",
                     "--lambda_init=0.01",
                     "--meta_batch_size=2", "--first_order", "--epochs=8",
                     "--steps_per_epoch=6", "--early_stopping_patience=0")
    process = subprocess.Popen(
        [sys.executable, "-m", "ms_keras.train", *argv], cwd=REPO,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + TIMEOUT
    while not backup.backup_epochs(str(model_dir / "backup")) or (
            backup.backup_epochs(str(model_dir / "backup"))[0] < 2):
        assert process.poll() is None and time.time() < deadline
        time.sleep(0.05)
    time.sleep(0.2)  # into the third epoch (first-order steps are quick)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=60)
    kept = backup.backup_epochs(str(model_dir / "backup"))[0]
    assert kept >= 2 and not (model_dir / "metrics.json").exists()
    result = train(argv)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"resumed from epoch {kept}" in result.stdout
    metrics = read(str(model_dir), "metrics.json")
    assert metrics["steps"] == 8 * 6
    # The record covers the whole run, before and after the kill.
    assert metrics["epochs_trained"] == 8
    assert len(metrics["history"]["loss"]) == 8
    # lambda's trajectory carries on from the backup: one value per step,
    # every step present, no jump where the run restarted.
    steps, values = {}, []
    for path in sorted((model_dir / "train").glob("events*")):
        events = event_accumulator.EventAccumulator(
            str(path), size_guidance={event_accumulator.TENSORS: 0})
        events.Reload()
        if "lambda" not in events.Tags()["tensors"]:
            continue  # the epoch summaries of Keras' TensorBoard callback
        for event in events.Tensors("lambda"):
            steps[event.step] = float(tf.make_ndarray(event.tensor_proto))
    assert sorted(steps) == list(range(1, 8 * 6 + 1))
    values = np.array([steps[s] for s in sorted(steps)])
    jumps = np.abs(np.diff(values))
    restart = kept * 6
    assert jumps[restart - 1] <= 3 * np.median(jumps) + 1e-12
    # The best checkpoint is whole: evaluate loads and runs it.
    evaluate = subprocess.run(
        [sys.executable, "-m", "ms_keras.evaluate",
         f"--model_dir={model_dir}", "--verbose=0"], cwd=REPO,
        capture_output=True, text=True, timeout=TIMEOUT)
    assert evaluate.returncode == 0, evaluate.stderr[-3000:]


@pytest.mark.parametrize("strategy", [
    "default",
    # Through the binary over two logical devices (slow: two traces).
    pytest.param("mirrored", marks=pytest.mark.slow)])
def test_deterministic_runs_write_identical_metrics(tfds_dir, tmp_path,
                                                    strategy):
    prepared(tfds_dir)
    runs = []
    for name in ("a", "b"):
        argv = tiny_argv(tfds_dir, tmp_path / name, "--mode=meta",
                         "--tasks=1,2", "--sparsity=channel",
                         "--sparsity_control=paper",
                         "--lambda_init=0.03", "--meta_batch_size=2",
                         "--epochs=1", "--steps_per_epoch=4",
                         f"--strategy={strategy}", "--cpu_devices="
                         f"{2 if strategy == 'mirrored' else 1}",
                         "--first_order", "--deterministic", "--seed=7")
        result = train(argv)
        assert result.returncode == 0, result.stderr[-3000:]
        runs.append((tmp_path / name / "metrics.json").read_text())
    assert runs[0] == runs[1]
    metrics = json.loads(runs[0])
    assert metrics["steps"] == 4
    assert metrics["lambda"] != pytest.approx(0.03)


def test_a_nan_stops_training_in_one_line_keeping_the_checkpoints(
        tfds_dir, tmp_path, monkeypatch, capsys):
    original = MultiTaskTrainer.task_losses

    def poisoned(self, targets, predictions):
        losses, labelled = original(self, targets, predictions)
        late = tf.cast(self.optimizer.iterations >= 3, losses.dtype)
        nan = tf.constant(float("nan"), losses.dtype)
        return tf.stack([losses[0], tf.where(late > 0, nan, losses[1])]), (
            labelled)

    monkeypatch.setattr(MultiTaskTrainer, "task_losses", poisoned)
    model_dir = tmp_path / "run"
    with pytest.raises(SystemExit) as exit_info:
        run_train(tfds_dir, str(model_dir), tasks=["1", "2"], epochs=3,
                  steps_per_epoch=2, early_stopping_patience=0)
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 1
    assert len(err) == 1 and "step 4: the depth loss is nan" in err[0], err
    # The last good epoch's backup, not the NaN one's.
    assert backup.backup_epochs(str(model_dir / "backup")) == [1]
    best = read(str(model_dir), "checkpoints/best.weights.json")
    assert best["epoch"] == 1
    assert not (model_dir / "metrics.json").exists()


def test_a_nan_in_a_meta_step_stops_training_the_same_way(
        tfds_dir, tmp_path, monkeypatch, capsys):
    original = MetaSparsityTrainer._episode_loss

    def poisoned(self, weights, statistics, images, targets, episode):
        total, losses, active = original(self, weights, statistics, images,
                                         targets, episode)
        late = self.optimizer.iterations >= 3
        nan = tf.constant(float("nan"), losses.dtype)
        losses = tf.stack([losses[0], tf.where(late, nan, losses[1])])
        return tf.where(late, nan, total), losses, active

    monkeypatch.setattr(MetaSparsityTrainer, "_episode_loss", poisoned)
    model_dir = tmp_path / "run"
    with pytest.raises(SystemExit) as exit_info:
        run_train(tfds_dir, str(model_dir), **{
            **META_FLAGS, "epochs": 3, "steps_per_epoch": 2,
            "early_stopping_patience": 0, "first_order": True})
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 1
    assert len(err) == 1 and "step 4: the depth loss is nan" in err[0], err
    assert backup.backup_epochs(str(model_dir / "backup")) == [1]
    assert read(str(model_dir), "checkpoints/best.weights.json")["epoch"] == 1
    assert not (model_dir / "metrics.json").exists()


@pytest.mark.parametrize("argv,message", [
    (["--strategy=mirrored", "--cpu_devices=2", "--mode=meta",
      "--meta_batch_size=3"],
     "--meta_batch_size=3 is the global batch: it must divide evenly over "
     "the strategy's 2 replicas"),
    (["--strategy=multi_worker"], "reads the cluster from the TF_CONFIG"),
    (["--strategy=tpu"], "--strategy=tpu: no TPU found here"),
])
def test_strategies_that_cannot_start_fail_in_one_line(tfds_dir, tmp_path,
                                                       argv, message):
    env = {"TF_CONFIG": ""}
    result = train(tiny_argv(prepared(tfds_dir), tmp_path / "x", *argv),
                   env=env, timeout=300)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1 and len(lines) == 1, result.stderr[-3000:]
    assert message in lines[0]
    assert not (tmp_path / "x").exists()


def test_cpu_devices_need_the_mirrored_strategy(capsys):
    from tests.helpers import assert_flag_error
    assert_flag_error("train", ["--cpu_devices=2"],
                      "--cpu_devices=2 splits the CPU for "
                      "--strategy=mirrored", capsys)


def test_default_strategy_runs_in_process(tfds_dir, tmp_path):
    with flagsaver.flagsaver():
        run_train(tfds_dir, str(tmp_path / "d"), tasks=["2"],
                  strategy="default")
    assert read(str(tmp_path / "d"), "metrics.json")["steps"] == 2
