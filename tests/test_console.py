"""What a run prints: short epoch lines and a closing summary."""

import pytest

from ms_keras import console
from ms_keras import tasks
from tests.helpers import read
from tests.helpers import run_train


def full_logs(specs):
    """Epoch logs as a meta-sparsity run writes them (40+ entries)."""
    logs = {"objective": 1.234, "loss": 1.0, "lambda": 1.23e-4,
            "sparsity_parameter": 43.21, "val_quality_gap": 1.5,
            "gradient_norm": 3.0}
    for task in specs:
        for metric in ("loss", "miou", "mae", "cosine_similarity",
                       "accuracy", "balanced_accuracy", "abs_rel"):
            logs[f"{task.name}_{metric}"] = 0.5
            logs[f"val_{task.name}_{metric}"] = 0.4567
    return logs


@pytest.mark.parametrize("dataset", ["nyu", "celeba"])
def test_an_epoch_line_names_what_matters_in_160_characters(dataset):
    specs = tasks.get_dataset(dataset).tasks
    line = console.epoch_line(2, 8, 41.7, full_logs(specs), specs,
                              "reference ")
    assert len(line) <= console.LINE_WIDTH, len(line)
    assert line.startswith("reference epoch 3/8 42s objective 1.23")
    for text in ("sparsity 43.2%", "lambda 1.2e-04", "gap +1.5%"):
        assert text in line
    assert "seg.mIoU 0.457" in line or "seg.mIoU 0.46" in line
    assert "gradient_norm" not in line and "val_loss" not in line
    if dataset == "celeba":
        assert "bus 0.46" in line  # seven tasks: attributes by name alone


def test_a_run_prints_one_line_per_epoch_and_a_summary(tfds_dir, tmp_path,
                                                       capsys):
    model_dir = str(tmp_path / "run")
    run_train(tfds_dir, model_dir, tasks=["1", "2"], epochs=3, verbose=2,
              sparsity="channel", lam=0.01)
    out = capsys.readouterr().out
    lines = out.splitlines()
    epochs = [line for line in lines if line.startswith("epoch ")]
    assert [line.split()[1] for line in epochs] == ["1/3", "2/3", "3/3"]
    # Paths aside (the run directory, the commands that come next).
    long = [line for line in lines if len(line) > console.LINE_WIDTH
            and model_dir not in line]
    assert not long, long
    metrics = read(model_dir, "metrics.json")
    assert f"Test split, checkpoint of epoch {metrics['selection']['epoch']}"\
        in out
    assert (f"{metrics['sparsity']['parameter_percent']:.1f} % of the "
            "backbone conv weights") in out
    assert f"{metrics['sparsity']['flops_speedup']:.2f}x fewer" in out
    assert f"{metrics['sparsity']['structural_parameters']:,} of" in out
    assert f"python -m ms_keras.export --model_dir={model_dir}" in out
    assert f"tensorboard --logdir={model_dir}" in out
    # The summary is short; metrics.json keeps every metric.
    assert len(lines) < 30
    assert "segmentation_pixel_accuracy" in metrics["history"]
