"""Sparsity control through the train binary: a budget is met, a tolerance
run compares itself with a dense reference, bad settings end in one line."""

import os

import pytest
from absl.testing import flagsaver

from ms_keras import flag_config
from tests.helpers import assert_flag_error
from tests.helpers import read
from tests.helpers import run_train

CONTROLLED = dict(mode="meta", sparsity="channel", meta_batch_size=2,
                  tasks=["1", "2"], learning_rate=0.01, epochs=2,
                  steps_per_epoch=4, validation_steps=0)


def test_a_parameter_budget_run_lands_on_its_budget(tfds_dir, tmp_path):
    model_dir = str(tmp_path / "budget")
    run_train(tfds_dir, model_dir, **CONTROLLED, sparsity_control="budget",
              target_sparsity=30.0)
    metrics = read(model_dir, "metrics.json")
    achieved = metrics["sparsity"]["parameter_percent"]
    assert achieved == pytest.approx(30.0, abs=1.0)
    control = metrics["sparsity_control"]
    assert control["mode"] == "budget" and control["holds"]
    assert control["achieved"] == pytest.approx(achieved)
    # The ramp reaches the budget halfway; the kept epoch is on it.
    assert metrics["history"]["constraint_holds"][-1] == 1.0
    assert metrics["selection"]["eligible"]


def test_a_flops_budget_run_lands_on_its_speedup(tfds_dir, tmp_path):
    model_dir = str(tmp_path / "flops")
    run_train(tfds_dir, model_dir, **CONTROLLED, sparsity_control="budget",
              target_flops_speedup=1.5)
    metrics = read(model_dir, "metrics.json")
    assert metrics["sparsity"]["flops_speedup"] == pytest.approx(1.5,
                                                                 abs=0.05)
    assert metrics["sparsity_control"]["constraint"]["measure"] == (
        "flops_speedup")


@pytest.fixture(scope="module")
def tolerance_run(tfds_dir, tmp_path_factory):
    """A tolerance run that trained its own dense reference."""
    model_dir = str(tmp_path_factory.mktemp("tolerance") / "run")
    run_train(tfds_dir, model_dir, **CONTROLLED,
              sparsity_control="tolerance", quality_tolerance=5.0)
    return model_dir


def test_a_tolerance_run_trains_its_reference_and_reports_the_gap(
        tolerance_run):
    model_dir = tolerance_run
    reference = os.path.join(model_dir, "reference")
    dense = read(reference, "config.json")
    assert dense["mode"] == "mtl" and dense["sparsity"] is None
    assert dense["training"]["steps_per_epoch"] == 4
    assert read(reference, "metrics.json")["steps"] == 8
    metrics = read(model_dir, "metrics.json")
    control = metrics["sparsity_control"]
    assert control["mode"] == "tolerance"
    assert control["constraint"]["reference_dir"] == reference
    gaps = control["task_gap_percent"]
    assert set(gaps) == {"segmentation", "depth"}
    assert control["quality_gap_percent"] == pytest.approx(max(gaps.values()))
    assert control["holds"] == (control["quality_gap_percent"] <= 5.0)
    history = metrics["history"]
    assert len(history["val_quality_gap"]) == 2
    assert "quality_gap" in history and "sparsity_budget" in history
    # The kept epoch is the sparsest that holds, if any holds.
    holds = history["constraint_holds"]
    kept = metrics["selection"]["epoch"]
    if any(holds):
        assert holds[kept - 1] == 1.0
        assert history["sparsity_parameter"][kept - 1] == max(
            s for s, h in zip(history["sparsity_parameter"], holds) if h)


def test_a_tolerance_run_reuses_a_finished_reference(tfds_dir, tmp_path,
                                                     tolerance_run):
    dense = os.path.join(tolerance_run, "reference")
    model_dir = str(tmp_path / "tolerance")
    run_train(tfds_dir, model_dir, **CONTROLLED,
              sparsity_control="tolerance", reference_dir=dense)
    assert not os.path.exists(os.path.join(model_dir, "reference"))
    control = read(model_dir, "metrics.json")["sparsity_control"]
    assert control["constraint"]["reference_dir"] == dense
    assert control["reference_test"] == read(dense, "metrics.json")["test"]


# Slow: the enum test's paper-mode runs check the same record.
@pytest.mark.slow
def test_the_paper_mode_follows_lambdas_meta_gradient(tfds_dir, tmp_path):
    model_dir = str(tmp_path / "paper")
    run_train(tfds_dir, model_dir, **CONTROLLED, sparsity_control="paper",
              lambda_init=0.05)
    metrics = read(model_dir, "metrics.json")
    assert metrics["sparsity_control"] == {"mode": "paper",
                                           "lambda_init": 0.05,
                                           "constraint": None}
    # Lambda moved by its own gradient from where it started.
    assert metrics["lambda"] != pytest.approx(0.05, rel=1e-4)


@pytest.mark.parametrize("argv,message", [
    (["--quality_tolerance=-1"], "--quality_tolerance=-1.0: must be > 0."),
    (["--sparsity_control=budget", "--target_flops_speedup=0.5"],
     "--target_flops_speedup=0.5: must be > 1."),
    (["--sparsity_control=budget", "--sparsity=none", "--target_sparsity=40"],
     "--sparsity_control applies to --mode=meta with --sparsity=channel or "
     "unstructured (got --mode=meta --sparsity=none)"),
    (["--sparsity_control=budget", "--sparsity=none"],
     "--sparsity_control applies to --mode=meta with --sparsity=channel"),
    (["--mode=mtl", "--sparsity_control=tolerance"],
     "--sparsity_control applies to --mode=meta"),
    (["--mode=mtl", "--quality_tolerance=3"],
     "--quality_tolerance applies to --mode=meta"),
    (["--sparsity_control=budget"], "needs exactly one budget"),
    (["--sparsity_control=budget", "--target_sparsity=40",
      "--target_flops_speedup=2"], "needs exactly one budget"),
    (["--sparsity_control=budget", "--target_sparsity=100"],
     "--target_sparsity=100.0"),
    (["--sparsity_control=paper"], "needs --lambda_init"),
    (["--target_sparsity=40"],
     "--target_sparsity applies to --mode=meta --sparsity_control=budget or "
     "to --pruning (got --mode=meta --sparsity=channel "
     "--sparsity_control=tolerance)"),
    (["--sparsity_control=budget", "--target_sparsity=40",
      "--quality_tolerance=2"], "--quality_tolerance applies to --mode=meta "
     "--sparsity_control=tolerance"),
    (["--sparsity_control=tolerance", "--lambda_lr=0.1"],
     "--lambda_lr applies to --mode=meta --sparsity_control=paper"),
])
def test_bad_control_settings_give_one_line(argv, message, capsys):
    assert_flag_error("train", argv, message, capsys)


def test_reference_dir_must_be_a_finished_dense_run_of_the_tasks(
        tfds_dir, tmp_path, capsys):
    depth_only = str(tmp_path / "depth_only")
    run_train(tfds_dir, depth_only, mode="stl", tasks=["2"])
    sparse = str(tmp_path / "sparse")
    run_train(tfds_dir, sparse, mode="mtl", tasks=["1", "2"],
              sparsity="channel", lam=0.01)
    cases = [
        (str(tmp_path / "missing"), "no such directory"),
        (depth_only, "it did not train segmentation"),
        (sparse, "a sparse run; the reference must be dense"),
    ]
    for reference, message in cases:
        model_dir = tmp_path / "refused"
        with pytest.raises(SystemExit) as exit_info:
            run_train(tfds_dir, str(model_dir), **CONTROLLED,
                      reference_dir=reference)
        err = capsys.readouterr().err.strip()
        assert exit_info.value.code == 1
        assert message in err and len(err.splitlines()) == 1, err
        assert ": error: --reference_dir=" in err
        assert not model_dir.exists()


def test_an_unreachable_flops_budget_fails_before_anything_is_written(
        tfds_dir, tmp_path, capsys):
    model_dir = tmp_path / "too_fast"
    with pytest.raises(SystemExit) as exit_info:
        run_train(tfds_dir, str(model_dir), **CONTROLLED,
                  sparsity_control="budget", target_flops_speedup=500.0)
    assert exit_info.value.code == 1
    assert "reaches at most" in capsys.readouterr().err
    assert not model_dir.exists()


def test_the_programs_default_is_meta_sparsity_in_tolerance_mode(tmp_path):
    with flagsaver.flagsaver(model_dir=str(tmp_path / "run")):
        config = flag_config.experiment_config()
    assert config.mode == "meta" and config.sparsity.kind == "channel"
    assert config.meta.sparsity_control == "tolerance"
    assert config.meta.quality_tolerance == 2.0
    assert config.meta.target_sparsity is None
    # Dense multi-task training is one flag away, dense meta-learning too.
    with flagsaver.flagsaver(model_dir=str(tmp_path / "run"), mode="mtl"):
        dense = flag_config.experiment_config()
    assert dense.sparsity is None and dense.meta is None
    with flagsaver.flagsaver(model_dir=str(tmp_path / "run"),
                             sparsity="none"):
        baseline = flag_config.experiment_config()
    assert baseline.mode == "meta" and baseline.sparsity is None
    assert baseline.meta.sparsity_control is None
