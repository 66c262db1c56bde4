"""The pruning baselines through the train binary: every method and mask
source lands on its budget, --budget_from reads the right figure, and every
bad combination gets one line and writes nothing."""

import os

import numpy as np
import pytest

from tests.helpers import assert_flag_error
from tests.helpers import read
from tests.helpers import run_train

TASKS = ["1", "2"]


@pytest.fixture(scope="module")
def dense_run(tfds_dir, tmp_path_factory):
    model_dir = str(tmp_path_factory.mktemp("dense") / "run")
    run_train(tfds_dir, model_dir, tasks=TASKS, epochs=1, steps_per_epoch=3)
    return model_dir


def achieved(model_dir):
    masks = np.load(os.path.join(model_dir, "sparsity_mask.npz"))
    zeros = sum(int((~masks[n]).sum()) for n in masks.files)
    return 100.0 * zeros / sum(masks[n].size for n in masks.files)


# The first four cover every method and every mask in the default suite.
@pytest.mark.parametrize("method,mask", [
    ("one_shot", "meta"), ("iterative", "magnitude"),
    ("progressive", "random"), ("sparse_training", "magnitude"),
    *(pytest.param(method, mask, marks=pytest.mark.slow)
      for method, mask in (("one_shot", "magnitude"), ("one_shot", "random"),
                           ("progressive", "meta"),
                           ("sparse_training", "meta"))),
])
def test_every_method_reaches_the_budget(tfds_dir, tmp_path, dense_run,
                                         meta_run, method, mask):
    model_dir = str(tmp_path / "pruned")
    extra = {"from_dir": dense_run} if method in ("one_shot",
                                                  "iterative") else {}
    if mask == "meta":
        extra["mask_from"] = meta_run
    run_train(tfds_dir, model_dir, tasks=TASKS, epochs=2, steps_per_epoch=4,
              pruning=method, pruning_mask=mask, target_sparsity=30.0,
              pruning_rounds=2, pruning_frequency=1,
              early_stopping_patience=0, **extra)
    metrics = read(model_dir, "metrics.json")
    assert metrics["pruning"]["method"] == method
    assert metrics["pruning"]["mask"] == mask
    assert abs(metrics["pruning"]["achieved_percent"] - 30.0) <= 0.5
    # The shipped weights hold the pattern: their sparsity is at least it.
    assert metrics["sparsity"]["parameter_percent"] >= (
        metrics["pruning"]["achieved_percent"] - 1e-9)
    assert achieved(model_dir) >= 30.0 - 0.5
    assert read(model_dir, "cost.json")["train_seconds"] > 0


@pytest.mark.parametrize("method", ["one_shot", "progressive"])
def test_a_flops_budget_is_met_in_structural_flops(tfds_dir, tmp_path,
                                                   dense_run, method):
    model_dir = str(tmp_path / "flops")
    extra = {"from_dir": dense_run} if method == "one_shot" else {}
    run_train(tfds_dir, model_dir, tasks=TASKS, epochs=2, steps_per_epoch=4,
              pruning=method, target_flops_speedup=1.5, pruning_frequency=1,
              early_stopping_patience=0, **extra)
    metrics = read(model_dir, "metrics.json")
    pruning = metrics["pruning"]
    assert pruning["measure"] == "flops"
    assert pruning["target_flops_speedup"] == 1.5
    assert metrics["sparsity"]["flops_speedup"] >= 1.5
    if method == "one_shot":
        # One selection, the fewest groups that reach it: just above.
        assert metrics["sparsity"]["flops_speedup"] <= 1.55
    assert pruning["achieved_flops_speedup"] == (
        metrics["sparsity"]["flops_speedup"])
    assert metrics["history"]["pruning_target_reached"][-1] == 1.0


def test_meta_mask_prunes_what_the_meta_run_zeroed(tfds_dir, tmp_path,
                                                   dense_run, meta_run):
    model_dir = str(tmp_path / "meta_mask")
    budget = read(meta_run, "metrics.json")["sparsity"]["parameter_percent"]
    run_train(tfds_dir, model_dir, tasks=TASKS, epochs=1, steps_per_epoch=2,
              pruning="one_shot", from_dir=dense_run, pruning_mask="meta",
              mask_from=meta_run, budget_from=meta_run)
    source = np.load(os.path.join(meta_run, "sparsity_mask.npz"))
    pruned = np.load(os.path.join(model_dir, "sparsity_mask.npz"))
    for name in source.files:
        dead = ~np.any(source[name], axis=(0, 1, 3))
        assert not np.any(pruned[name][:, :, dead, :]), name
    assert read(model_dir, "metrics.json")["pruning"]["target_percent"] == (
        pytest.approx(budget))
    # Its price includes both the dense run it prunes and the meta run.
    cost = read(model_dir, "cost.json")
    assert cost["source_train_seconds"] == read(
        dense_run, "cost.json")["train_seconds"]
    assert cost["mask_source_train_seconds"] == read(
        meta_run, "cost.json")["train_seconds"]


def test_budget_from_reads_the_runs_parameter_sparsity(tfds_dir, tmp_path,
                                                       meta_run):
    model_dir = str(tmp_path / "budget")
    run_train(tfds_dir, model_dir, tasks=TASKS, epochs=1, steps_per_epoch=2,
              pruning="sparse_training", budget_from=meta_run)
    budget = read(meta_run, "metrics.json")["sparsity"]["parameter_percent"]
    metrics = read(model_dir, "metrics.json")
    assert metrics["pruning"]["target_percent"] == pytest.approx(budget)
    assert metrics["pruning"]["budget_from"] == meta_run
    assert abs(metrics["pruning"]["achieved_percent"] - budget) <= 0.5


@pytest.mark.parametrize("overrides,message", [
    (dict(pruning="one_shot", target_sparsity=40.0),
     "--pruning=one_shot prunes a trained run: pass --from_dir"),
    (dict(pruning="iterative", target_sparsity=40.0),
     "--pruning=iterative prunes a trained run"),
    (dict(pruning="progressive", target_sparsity=40.0, from_dir="DENSE"),
     "--pruning=progressive starts from random initialisation"),
    (dict(pruning="sparse_training", target_sparsity=40.0,
          pruning_mask="meta", mask_from="DENSE"),
     "zeroes no group (0 % group sparsity)"),
    (dict(pruning="progressive", budget_from="DENSE"),
     "its parameter sparsity is 0.00 %"),
    (dict(pruning="sparse_training", budget_from="/no/run"),
     "--budget_from=/no/run: no finished run there"),
    (dict(pruning="one_shot", target_sparsity=40.0, from_dir="/no/run"),
     "--from_dir=/no/run: no such directory"),
    (dict(from_dir="DENSE"), "applies to --pruning=one_shot or iterative"),
])
def test_bad_combinations_fail_in_one_line_writing_nothing(
        tfds_dir, tmp_path, dense_run, capsys, overrides, message):
    overrides = {k: dense_run if v == "DENSE" else v
                 for k, v in overrides.items()}
    with pytest.raises(SystemExit) as exit_info:
        run_train(tfds_dir, str(tmp_path / "x"), tasks=TASKS, **overrides)
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 1
    assert len(err) == 1 and message in err[0], err
    assert not (tmp_path / "x").exists()


def test_pruning_needs_a_dense_mode(capsys):
    assert_flag_error("train", ["--pruning=sparse_training",
                                "--target_sparsity=40"],
                      "--pruning=sparse_training trains and prunes a dense "
                      "model: pass --mode=mtl or stl", capsys)


@pytest.mark.parametrize("argv,message", [
    (["--pruning=sparse_training", "--target_sparsity=120"],
     "--target_sparsity=120.0: must be < 100."),
    (["--pruning=sparse_training", "--target_sparsity=0"],
     "--target_sparsity=0.0"),
    (["--pruning=sparse_training"], "needs exactly one budget"),
    (["--pruning=sparse_training", "--target_sparsity=40",
      "--budget_from=/x"], "needs exactly one budget"),
    (["--pruning=sparse_training", "--target_sparsity=40",
      "--pruning_mask=meta"], "--pruning_mask=meta needs --mask_from"),
    (["--target_sparsity=40"], "--target_sparsity applies to --mode=meta "
     "--sparsity_control=budget or to --pruning (got --mode=mtl"),
    (["--pruning=progressive", "--target_sparsity=40",
      "--pruning_begin_step=50", "--pruning_end_step=20"],
     "--pruning_end_step=20 must come after"),
    (["--pruning=iterative", "--target_sparsity=40", "--pruning_rounds=0"],
     "--pruning_rounds=0"),
    (["--pruning=magnitude"], "--pruning"),
])
def test_bad_pruning_flags_give_one_line(argv, message, capsys):
    assert_flag_error("train", ["--mode=mtl", *argv], message, capsys)
