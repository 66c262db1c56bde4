"""tools/study.py: the grid, its resumption, dependencies and failures."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(REPO, "tools"))

import study  # noqa: E402


def write_study(tmp_path, runs, seeds=(0, 1)):
    config = {"output_dir": str(tmp_path / "out"), "seeds": list(seeds),
              "common": ["--x=1"], "runs": runs}
    path = tmp_path / "study.json"
    path.write_text(json.dumps(config))
    return str(path)


def invocations(path):
    with open(os.path.join(path, "invocations")) as f:
        return len(f.readlines())


def test_every_configuration_and_seed_runs_once_and_refs_resolve(tmp_path):
    path = write_study(tmp_path, [
        {"name": "dense", "module": "tests.fake_run"},
        {"name": "pruned", "module": "tests.fake_run",
         "flags": ["--from_dir={run:dense}"]},
        {"name": "sweep", "module": "tests.fake_run", "seeds": [7]}])
    config = study.load_study(path)
    status = study.run_study(config, parallel=2, out=open(os.devnull, "w"))
    out = tmp_path / "out"
    assert sorted(status.values()) == ["done"] * 5
    for name, seed in (("dense", 0), ("dense", 1), ("pruned", 0),
                       ("pruned", 1), ("sweep", 7)):
        run = out / name / f"seed_{seed}"
        metrics = json.loads((run / "metrics.json").read_text())
        assert metrics["seed"] == seed and invocations(run) == 1
    pruned = json.loads((out / "pruned" / "seed_1" / "metrics.json")
                        .read_text())
    assert pruned["from"] == str(out / "dense" / "seed_1")
    again = study.run_study(config, out=open(os.devnull, "w"))
    assert set(again.values()) == {"finished"}
    assert invocations(out / "dense" / "seed_0") == 1


def test_a_failed_run_is_reported_and_its_dependents_skipped(tmp_path):
    path = write_study(tmp_path, [
        {"name": "bad", "module": "tests.fake_run", "flags": ["--fail=1"]},
        {"name": "after", "module": "tests.fake_run",
         "flags": ["--from_dir={run:bad}"]},
        {"name": "fine", "module": "tests.fake_run"}], seeds=[0])
    status = study.run_study(study.load_study(path),
                             out=open(os.devnull, "w"))
    out = tmp_path / "out"
    assert status[str(out / "bad" / "seed_0")] == "failed (rc=3)"
    assert status[str(out / "after" / "seed_0")].startswith("skipped")
    assert status[str(out / "fine" / "seed_0")] == "done"


def test_a_killed_study_resumes_without_redoing_finished_runs(tmp_path):
    path = write_study(tmp_path, [
        {"name": "first", "module": "tests.fake_run"},
        {"name": "second", "module": "tests.fake_run"}], seeds=[0])
    out = tmp_path / "out"
    (out / "second").mkdir(parents=True)
    (out / "second" / "slow").write_text("")
    command = [sys.executable, os.path.join(REPO, "tools", "study.py"),
               f"--config={path}"]
    process = subprocess.Popen(command, cwd=REPO, start_new_session=True,
                               stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    first = out / "first" / "seed_0"
    deadline = time.time() + 120
    while not (out / "second" / "seed_0" / "invocations").exists():
        assert time.time() < deadline and process.poll() is None
        time.sleep(0.2)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=30)
    assert (first / "metrics.json").exists()
    assert not (out / "second" / "seed_0" / "metrics.json").exists()
    (out / "second" / "slow").unlink()
    result = subprocess.run(command, cwd=REPO, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert invocations(first) == 1
    assert invocations(out / "second" / "seed_0") == 2
    assert (out / "second" / "seed_0" / "metrics.json").exists()


@pytest.mark.parametrize("runs,message", [
    ([{"name": "a"}, {"name": "a"}], "run names repeat"),
    ([{"flags": []}], "every run needs a 'name'"),
    ([{"name": "a", "flags": ["--from_dir={run:b}"]}],
     "refers to {run:b}, which the study does not define"),
])
def test_bad_study_configs_are_refused(tmp_path, runs, message):
    with pytest.raises(study.StudyError, match=message):
        study.load_study(write_study(tmp_path, runs))
