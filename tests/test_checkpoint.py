"""Model selection: the best checkpoint only keeps epochs that meet the run's
constraint, and says so when none did."""

import json

import keras
import pytest

from ms_keras.trainers.checkpoint import AtomicBestCheckpoint


def select(tmp_path, epochs, **kwargs):
    """Feeds per-epoch logs to a checkpoint; returns its record."""
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    path = tmp_path / "best.weights.h5"
    checkpoint = AtomicBestCheckpoint(str(path), **kwargs)
    checkpoint.set_model(model)
    checkpoint.on_train_begin()
    for epoch, logs in enumerate(epochs):
        checkpoint.on_epoch_end(epoch, dict(logs))
    return json.loads((tmp_path / "best.weights.json").read_text())


def test_an_epoch_that_violates_the_constraint_is_never_kept(tmp_path):
    # Epoch 3 is the sparsest but breaks the tolerance.
    epochs = [
        {"sparsity_parameter": 10.0, "constraint_holds": 1.0,
         "val_quality_gap": 0.5},
        {"sparsity_parameter": 30.0, "constraint_holds": 1.0,
         "val_quality_gap": 1.5},
        {"sparsity_parameter": 60.0, "constraint_holds": 0.0,
         "val_quality_gap": 4.0},
    ]
    record = select(tmp_path, epochs, monitor="sparsity_parameter",
                    mode="max", eligible="constraint_holds",
                    fallback=("val_quality_gap", "min"))
    assert record["epoch"] == 2 and record["eligible"]
    assert record["monitor"] == "sparsity_parameter"


def test_an_eligible_epoch_replaces_a_better_ineligible_one(tmp_path):
    epochs = [{"val_task_losses": 1.0, "constraint_holds": 0.0},
              {"val_task_losses": 2.0, "constraint_holds": 1.0},
              {"val_task_losses": 0.5, "constraint_holds": 0.0}]
    record = select(tmp_path, epochs, monitor="val_task_losses",
                    eligible="constraint_holds")
    assert record["epoch"] == 2 and record["eligible"]


def test_without_an_eligible_epoch_the_closest_one_is_kept(tmp_path):
    epochs = [
        {"sparsity_parameter": 70.0, "constraint_holds": 0.0,
         "val_quality_gap": 9.0},
        {"sparsity_parameter": 40.0, "constraint_holds": 0.0,
         "val_quality_gap": 2.5},
        {"sparsity_parameter": 50.0, "constraint_holds": 0.0,
         "val_quality_gap": 3.0},
    ]
    record = select(tmp_path, epochs, monitor="sparsity_parameter",
                    mode="max", eligible="constraint_holds",
                    fallback=("val_quality_gap", "min"))
    assert record["epoch"] == 2 and not record["eligible"]
    assert record["monitor"] == "val_quality_gap"


def test_a_bad_fallback_mode_is_refused(tmp_path):
    with pytest.raises(ValueError, match="fallback"):
        AtomicBestCheckpoint(str(tmp_path / "b.weights.h5"),
                             fallback=("val_loss", "lowest"))
