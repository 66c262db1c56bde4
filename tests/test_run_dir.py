"""`run_dir.Run`, the one reader of a recorded run: what it returns, and the
one wording of its errors (naming the flag that named the run)."""

import json

import numpy as np
import pytest

from ms_keras import run_dir


def write_run(path, finished=True):
    path.mkdir(parents=True)
    (path / run_dir.CONFIG_FILE).write_text(json.dumps({"tasks": ["depth"]}))
    if finished:
        (path / run_dir.METRICS_FILE).write_text(json.dumps({"steps": 12}))
        (path / run_dir.COST_FILE).write_text(
            json.dumps({"train_seconds": 3.5}))
        np.savez(path / run_dir.MASK_FILE, conv1=np.array([True, False]))


def test_a_finished_run_reads_back_as_written(tmp_path):
    write_run(tmp_path / "run")
    run = run_dir.Run(str(tmp_path / "run"))
    assert run.is_finished
    assert run.config == {"tasks": ["depth"]}
    assert run.metrics == {"steps": 12}
    assert run.cost == {"train_seconds": 3.5}
    masks = run.masks()
    assert list(masks) == ["conv1"]
    np.testing.assert_array_equal(masks["conv1"], [True, False])


def test_an_unfinished_run_is_refused_naming_the_flag_and_the_file(tmp_path):
    write_run(tmp_path / "run", finished=False)
    run = run_dir.Run(str(tmp_path / "run"), "budget_from")
    assert not run.is_finished and run.cost is None
    with pytest.raises(ValueError, match=r"^--budget_from=.*/run: no "
                       r"finished run there \(metrics.json is missing\)"):
        run.metrics
    with pytest.raises(ValueError, match="sparsity_mask.npz is missing"):
        run.masks()


def test_a_missing_or_empty_directory_says_so(tmp_path):
    with pytest.raises(ValueError, match="no such directory"):
        run_dir.Run(str(tmp_path / "nowhere"), "from_dir").metrics
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"^--from_dir=.*/empty holds no "
                       r"run \(config.json is missing\)"):
        run_dir.Run(str(tmp_path / "empty"), "from_dir").config


def test_an_unreadable_record_is_one_line_not_a_traceback(tmp_path):
    write_run(tmp_path / "run")
    (tmp_path / "run" / run_dir.METRICS_FILE).write_text("{cut sho")
    with pytest.raises(ValueError, match="cannot read metrics.json"):
        run_dir.Run(str(tmp_path / "run")).metrics
