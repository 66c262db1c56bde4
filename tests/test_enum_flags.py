"""Every value of every enum flag of `train` runs end to end through the
binary (tiny settings), and the run records it. What each value does is
tested where it is implemented (losses, prox, inner loop, selection)."""

import pytest

from ms_keras import flags as ms_flags
from tests.helpers import read
from tests.helpers import run_train
from tests.helpers import tiny_flags

TINY_DEFAULTS = tiny_flags(None, None)

META = dict(mode="meta", meta_batch_size=2, tasks=["1", "2"],
            steps_per_epoch=2, learning_rate=0.01, sparsity_control="paper")

# Each run combines several values; together they cover every value.
RUNS = {
    "meta_channel": dict(
        META, sparsity="channel", lambda_init=0.05, optimizer="sgd",
        momentum=0.9, loss_weighting="equal", prox_step="reset_moments",
        inner_prox="straight_through", lambda_optimizer="adam",
        activation="gelu", monitor="loss", episode_sampler="size<=1",
        learning_rate_schedule="cosine"),
    "meta_unstructured": dict(
        META, sparsity="unstructured", lambda_init=0.05, prox_step="plain",
        inner_prox="differentiable", lambda_optimizer="sgd",
        monitor="task_losses", episode_sampler="all_tasks", first_order=True),
    "meta_inner_prox_off": dict(META, sparsity="channel", lambda_init=0.05,
                                inner_prox="off", episode_sampler="uniform"),
    "meta_budget": dict(META, sparsity="channel", sparsity_control="budget",
                        target_sparsity=20.0, learning_rate_schedule="step"),
    "fixed_mtl_default_prox": dict(tasks=["1", "3"], sparsity="channel",
                                   lam=0.01,
                                   prox_step="adam_metric_reset"),
    "fixed_stl": dict(mode="stl", tasks=["2"], sparsity="channel", lam=0.05,
                      prox_step="adam_metric", preserve_norm=False),
    "dense_mtl_resnet18": dict(mode="mtl", tasks=["1", "4"], sparsity="none",
                               backbone="resnet18_d8", steps_per_epoch=1),
}


# Values run end to end by other tests.
COVERED_ELSEWHERE = {
    ("dataset", "nyu"): "tests/data/test_real.py",
    ("dataset", "celeba"): "tests/data/test_real.py",
    ("dataset", "synthetic_celeba"): "tests/test_binaries.py",
    ("backbone", "resnet50_d8"): "test_resnet50_d8_trains_end_to_end (slow)",
    ("monitor", "delta_m"): "test_delta_m_selection_follows_a_reference_run",
    ("sparsity_control", "tolerance"): "tests/test_sparsity_control.py",
    ("dtype_policy", "mixed_bfloat16"): "tests/test_mixed_precision.py",
    ("dtype_policy", "mixed_float16"): "tests/test_mixed_precision.py "
                                       "(slow)",
    ("train_scope", "new_heads"): "test_finetune_new_heads_trains_only_...",
    ("strategy", "mirrored"): "test_deterministic_runs_write_..._metrics"
                              "[mirrored] (slow), tests/distribute/"
                              "mirrored_step.py",
    ("strategy", "multi_worker"): "test_two_workers_agree_and_only_the_...",
    # No TPU here: the binary's one-line failure is what can be run.
    ("strategy", "tpu"): "test_strategies_that_cannot_start_fail_in_one_line",
    **{("pruning", method): "test_every_method_reaches_the_budget"
       for method in ("one_shot", "iterative", "progressive",
                      "sparse_training")},
    **{("pruning_mask", mask): "test_every_method_reaches_the_budget"
       for mask in ("magnitude", "random", "meta")},
}


def test_every_value_of_every_enum_flag_of_train_runs_end_to_end():
    missing = []
    for flag in ms_flags.FLAGS.get_flags_for_module(ms_flags.__name__):
        if not hasattr(flag.parser, "enum_values"):
            continue
        used = {run.get(flag.name, TINY_DEFAULTS.get(flag.name,
                                                    flag.default))
                for run in RUNS.values()}
        for value in flag.parser.enum_values:
            if value not in used and (flag.name, value) not in (
                    COVERED_ELSEWHERE):
                missing.append(f"--{flag.name}={value}")
    assert not missing, missing


@pytest.mark.parametrize("name", sorted(RUNS))
def test_every_enum_value_trains_end_to_end(tfds_dir, tmp_path, name):
    model_dir = str(tmp_path / name)
    run_train(tfds_dir, model_dir, **RUNS[name])
    config = read(model_dir, "config.json")
    metrics = read(model_dir, "metrics.json")
    flags = RUNS[name]
    assert config["mode"] == flags.get("mode", "mtl")
    for section in ("training", "model", "runtime", "sparsity", "meta"):
        for field, value in (config.get(section) or {}).items():
            if field in flags and field != "kind":
                assert value == flags[field], (section, field)
    if flags.get("sparsity", "none") == "none":
        assert config["sparsity"] is None and metrics["lambda"] is None
    else:
        assert config["sparsity"]["kind"] == flags["sparsity"]
        assert metrics["lambda"] is not None
    if config["mode"] == "meta" and config["sparsity"]:
        assert metrics["sparsity_control"]["mode"] == flags[
            "sparsity_control"]
    if flags.get("sparsity_control") == "paper" and "sparsity" in flags:
        assert metrics["sparsity_control"] == {
            "mode": "paper", "lambda_init": flags["lambda_init"],
            "constraint": None}
        # Lambda moved by its own meta-gradient from where it started.
        assert metrics["lambda"] != pytest.approx(flags["lambda_init"],
                                                  rel=1e-4)
    monitor = flags.get("monitor", "task_losses")
    assert metrics["selection"]["monitor"] == f"val_{monitor}"
    assert set(metrics["test"]) - {"loss"} == {
        {"1": "segmentation", "2": "depth", "3": "normals",
         "4": "edges"}[t]
        for t in flags["tasks"]}


def test_delta_m_selection_follows_a_reference_run(tfds_dir, tmp_path):
    reference = str(tmp_path / "dense")
    run_train(tfds_dir, reference, tasks=["1", "2"], epochs=1)
    model_dir = str(tmp_path / "selected")
    run_train(tfds_dir, model_dir, tasks=["1", "2"], epochs=2,
              monitor="delta_m", delta_m_reference=reference,
              early_stopping_patience=0)
    metrics = read(model_dir, "metrics.json")
    assert metrics["selection"]["monitor"] == "val_delta_m"
    history = metrics["history"]["val_delta_m"]
    kept = metrics["selection"]["epoch"]
    assert history[kept - 1] == max(history)
    assert metrics["selection"]["value"] == pytest.approx(max(history))


def test_delta_m_reference_must_have_the_tasks(tfds_dir, tmp_path, capsys):
    reference = str(tmp_path / "depth_only")
    run_train(tfds_dir, reference, tasks=["2"])
    with pytest.raises(SystemExit) as exit_info:
        run_train(tfds_dir, str(tmp_path / "x"), tasks=["1", "2"],
                  monitor="delta_m", delta_m_reference=reference)
    assert exit_info.value.code == 1
    assert "has no validation segmentation miou" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


@pytest.mark.slow
def test_resnet50_d8_trains_end_to_end(tfds_dir, tmp_path):
    model_dir = str(tmp_path / "r50")
    run_train(tfds_dir, model_dir, backbone="resnet50_d8", tasks=["2"],
              mode="stl", steps_per_epoch=1, batch_size=2)
    assert read(model_dir, "config.json")["model"]["backbone"] == (
        "resnet50_d8")
