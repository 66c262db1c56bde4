"""tools/report.py: statistics against numpy, best marks, valid PNGs."""

import csv
import json
import os
import sys

import numpy as np
import pytest
import tensorflow as tf

REPO = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(REPO, "tools"))

import report  # noqa: E402

RNG = np.random.default_rng(0)
TASKS = {"segmentation": "miou", "depth": "mae", "normals":
         "cosine_similarity", "edges": "mae"}


def make_run(path, metrics, sparsity, lam, steps=5, cost=None):
    lam_value = 0.0 if lam is None else lam
    os.makedirs(path)
    with open(os.path.join(path, "metrics.json"), "w") as f:
        json.dump({"test": {t: {m: metrics[t]} for t, m in TASKS.items()},
                   "sparsity": {"parameter_percent": sparsity,
                                "group_percent": sparsity / 2,
                                "flops_speedup": 1 + sparsity / 100},
                   "lambda": lam}, f)
    with open(os.path.join(path, "cost.json"), "w") as f:
        json.dump(cost or {"train_seconds": 10.0 + sparsity,
                           "tuned_values": 1}, f)
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump({"data": {"dataset": "synthetic_nyu",
                            "segmentation_classes": None},
                   "tasks": list(TASKS)}, f)
    writer = tf.summary.create_file_writer(os.path.join(path, "train"))
    with writer.as_default():
        for step in range(1, steps + 1):
            if lam is not None:
                tf.summary.scalar("lambda", lam_value * (1 + 1 / step),
                                  step=step)
            tf.summary.scalar("sparsity/parameter", sparsity * step / steps,
                              step=step)
    writer.flush()


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("study")
    values = {}
    for configuration, offset in (("dense", 0.0), ("sparse", 0.1)):
        values[configuration] = []
        for seed in range(3):
            metrics = {t: float(RNG.uniform(0.2, 0.9)) + offset for t in TASKS}
            sparsity = 0.0 if configuration == "dense" else float(
                RNG.uniform(30, 50))
            make_run(str(root / configuration / f"seed_{seed}"), metrics,
                     sparsity, None if configuration == "dense" else 1e-3)
            values[configuration].append({**metrics, "sparsity": sparsity})
    output = root / "report"
    runs = report.find_runs([str(root)])
    os.makedirs(output)
    summary, getters = report.summarise(runs)
    report.write_tables(summary, getters, str(output))
    report.write_cost(runs, str(output))
    report.plot_profiles(runs, str(output / "lambda_sparsity.png"))
    report.plot_metric_vs_sparsity(runs, str(output / "metric_vs_sparsity.png"))
    return output, values


def read_csv(path):
    with open(path) as f:
        return {row["configuration"]: row for row in csv.DictReader(f)}


def test_mean_and_std_over_seeds_match_numpy(study):
    output, values = study
    rows = read_csv(output / "table.csv")
    for configuration, runs in values.items():
        row = rows[configuration]
        assert row["runs"] == "3"
        for task, metric in TASKS.items():
            column = next(k for k in row if k.startswith(f"T") and task in k
                          and k.endswith(" mean"))
            samples = [run[task] for run in runs]
            assert float(row[column]) == pytest.approx(np.mean(samples))
            assert float(row[column.replace(" mean", " std")]) == (
                pytest.approx(np.std(samples, ddof=1)))
        sparsity = [run["sparsity"] for run in runs]
        assert float(row["parameter sparsity % mean"]) == pytest.approx(
            np.mean(sparsity))


def test_best_mean_is_marked_in_the_right_direction(study):
    output, values = study
    rows = read_csv(output / "table.csv")
    means = {c: {t: np.mean([r[t] for r in runs]) for t in TASKS}
             for c, runs in values.items()}
    for task, metric in TASKS.items():
        higher = metric != "mae"
        pick = max if higher else min
        best = pick(means, key=lambda c: means[c][task])
        column = next(k for k in rows[best] if task in k
                      and k.endswith(" best"))
        assert rows[best][column] == "1"
        other = next(c for c in rows if c != best)
        assert rows[other][column] == "0"
    markdown = (output / "table.md").read_text()
    assert markdown.count("**") >= 2 * len(TASKS)


def test_plots_are_valid_pngs(study):
    from matplotlib import image
    output, _ = study
    for name in ("lambda_sparsity.png", "metric_vs_sparsity.png"):
        path = output / name
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        pixels = image.imread(str(path))
        assert pixels.ndim == 3 and pixels.shape[0] > 100
        assert pixels.std() > 0.01  # something was drawn


def test_scalars_are_read_back_from_tensorboard_events(study):
    output, _ = study
    run = os.path.join(os.path.dirname(output), "sparse", "seed_0")
    steps, values = report.scalars(run, "lambda")
    assert steps == [1, 2, 3, 4, 5]
    np.testing.assert_allclose(values, [1e-3 * (1 + 1 / s) for s in steps],
                               rtol=1e-6)


def test_cost_table_has_the_median_time(study):
    output, _ = study
    rows = read_csv(output / "cost.csv")
    assert rows["dense"]["train_seconds_median"] == "10.0"
    assert rows["dense"]["total_seconds_median"] == "10.0"
    assert rows["sparse"]["tuned_values"] == "1"


def test_cost_total_charges_the_source_runs_and_every_tuned_value(tmp_path):
    metrics = {t: 0.5 for t in TASKS}
    for seed, own in enumerate((20.0, 30.0, 40.0)):
        make_run(str(tmp_path / "pruned" / f"seed_{seed}"), metrics, 40.0,
                 None, cost={"train_seconds": own, "tuned_values": 3,
                             "source_train_seconds": 100.0,
                             "mask_source_train_seconds": 50.0})
    report.write_cost(report.find_runs([str(tmp_path)]), str(tmp_path))
    row = read_csv(tmp_path / "cost.csv")["pruned"]
    assert float(row["train_seconds_median"]) == 30.0
    assert float(row["source_seconds_median"]) == 150.0
    assert float(row["total_seconds_median"]) == (30.0 + 150.0) * 3
