"""Model selection: the best checkpoint only keeps epochs that meet the run's
constraint, and says so when none did."""

import json

import keras
import pytest

from ms_keras.trainers.checkpoint import TOLERANCE_SELECTION
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


def _tolerance_epochs(sparsity, gaps):
    return [{"sparsity_parameter": s, "constraint_holds": float(g <= 5.0),
             "val_quality_gap": g} for s, g in zip(sparsity, gaps)]


def test_within_a_point_of_sparsity_the_epoch_closest_to_the_reference_wins(
        tmp_path):
    # The quickstart's tolerance5_lam1e-4 (5 %): epochs 6-8 equally sparse,
    # the last (after the small learning rate) closest to the reference.
    epochs = _tolerance_epochs(
        [0.0, 11.8, 21.7, 33.9, 33.2, 31.42, 31.41, 31.40],
        [200.4, 79.6, 41.3, 31.0, 7.2, 0.9, 1.4, -1.0])
    record = select(tmp_path, epochs, **TOLERANCE_SELECTION)
    assert record["epoch"] == 8 and record["eligible"]
    # Without the tie the sparsest epoch wins by 0.01 points.
    plain = {k: v for k, v in TOLERANCE_SELECTION.items() if k != "tie"}
    assert select(tmp_path / "plain", epochs, **plain)["epoch"] == 6


def test_a_sparser_epoch_beyond_the_margin_still_wins(tmp_path):
    epochs = _tolerance_epochs([20.0, 21.5, 22.0], [0.5, 4.0, 4.5])
    record = select(tmp_path, epochs, **TOLERANCE_SELECTION)
    # 21.5 is more than a point above 20 (kept), then 22.0 ties with 21.5
    # but is further from the reference.
    assert record["epoch"] == 2


def test_ties_do_not_drift_down_a_point_at_a_time(tmp_path):
    # Each epoch 0.8 points less sparse and a little better: only the first
    # two are within a point of the sparsest.
    epochs = _tolerance_epochs([30.0, 29.2, 28.4, 27.6], [3.0, 2.0, 1.0, 0.0])
    assert select(tmp_path, epochs, **TOLERANCE_SELECTION)["epoch"] == 2


def test_a_resumed_ranking_keeps_its_tie(tmp_path):
    epochs = _tolerance_epochs([30.0, 29.5, 30.2], [2.0, 1.0, 1.5])
    select(tmp_path, epochs[:2], **TOLERANCE_SELECTION)
    # A second process (a resumed run) sees epoch 3 only.
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    checkpoint = AtomicBestCheckpoint(str(tmp_path / "best.weights.h5"),
                                      **TOLERANCE_SELECTION)
    checkpoint.set_model(model)
    checkpoint.on_train_begin()
    checkpoint.on_epoch_end(2, dict(epochs[2]))
    record = json.loads((tmp_path / "best.weights.json").read_text())
    assert record["epoch"] == 2 and record["tie_value"] == 1.0
