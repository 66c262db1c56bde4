"""Runs a study: every configuration x every seed, as resumable subprocesses.

    python tools/study.py --config=flags/study_nyu.json [--parallel=2]

The config (JSON) names the runs:

    {
      "output_dir": "runs/study_nyu",
      "seeds": [0, 1, 2],
      "common": ["--flagfile=flags/study_nyu_common.cfg"],
      "runs": [
        {"name": "dense_mtl", "flags": ["--mode=mtl"]},
        {"name": "one_shot", "flags": ["--pruning=one_shot",
                                       "--from_dir={run:dense_mtl}"]},
        {"name": "lambda_sweep", "seeds": [0], "flags": ["--lam=1e-3"]}
      ]
    }

Each run is `python -m <module> <common> <flags> --seed=<s>
--model_dir=<output_dir>/<name>/seed_<s>` (module `ms_keras.train` unless
the run names another, e.g. `ms_keras.finetune`); `{run:<name>}` is replaced
by that run's directory for the same seed, and the run waits until it has
finished. A run whose directory holds `metrics.json` is finished and skipped,
so re-running a killed study redoes nothing that finished (an interrupted
run resumes from its last epoch). Each run's output goes to
`<output_dir>/logs/<name>_seed_<s>.log`; a failed run is reported and the
others go on. Flagfile paths are relative to the repository root.
"""

import json
import os
import re
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))))

from absl import app  # noqa: E402
from absl import flags  # noqa: E402

from ms_keras.run_dir import is_finished  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

FLAGS = flags.FLAGS


def define_flags():
    """The command line's flags (defined only when run as a program)."""
    flags.DEFINE_string("config", None, "The study's JSON file.")
    flags.DEFINE_integer(
        "parallel", 1, "Runs at a time. Each TensorFlow process uses every "
        "core; on a small model two processes can still finish a study "
        "sooner.", lower_bound=1)
    flags.DEFINE_boolean(
        "dry_run", False, "Print the commands and which runs are finished.")
    flags.mark_flag_as_required("config")

_REFERENCE = re.compile(r"\{run:([A-Za-z0-9_.-]+)\}")
DEFAULT_MODULE = "ms_keras.train"


class StudyError(ValueError):
    """The study's config is unusable."""


def load_study(path):
    """Reads and checks a study config; returns the dict.

    Raises:
        StudyError: naming what is wrong.
    """
    try:
        with open(path) as f:
            study = json.load(f)
    except (OSError, ValueError) as e:
        raise StudyError(f"--config={path}: cannot read it ({e}).") from None
    for key in ("output_dir", "seeds", "runs"):
        if key not in study:
            raise StudyError(f"--config={path}: '{key}' is missing.")
    # Run directories are relative to where the study is started; flagfiles
    # to the repository (the runs' working directory).
    study["output_dir"] = os.path.abspath(study["output_dir"])
    names = [run.get("name") for run in study["runs"]]
    if not all(isinstance(n, str) and n for n in names):
        raise StudyError(f"--config={path}: every run needs a 'name'.")
    if len(set(names)) != len(names):
        raise StudyError(f"--config={path}: run names repeat: {names}.")
    for run in study["runs"]:
        for name in _REFERENCE.findall(" ".join(run.get("flags", []))):
            if name not in names:
                raise StudyError(
                    f"--config={path}: run '{run['name']}' refers to "
                    f"{{run:{name}}}, which the study does not define.")
    return study


def run_dir(study, name, seed):
    return os.path.join(study["output_dir"], name, f"seed_{seed}")


def expand(study):
    """Every (run, seed) of the study, in order: dicts with `name`, `seed`,
    `dir`, `command`, `needs` (directories that must be finished first)."""
    jobs = []
    for run in study["runs"]:
        for seed in run.get("seeds", study["seeds"]):
            needs = []

            def resolve(match, seed=seed, needs=needs):
                path = run_dir(study, match.group(1), seed)
                needs.append(path)
                return path

            run_flags = [_REFERENCE.sub(resolve, flag)
                         for flag in run.get("flags", [])]
            path = run_dir(study, run["name"], seed)
            jobs.append({
                "name": run["name"], "seed": seed, "dir": path,
                "needs": needs,
                "log": os.path.join(study["output_dir"], "logs",
                                    f"{run['name']}_seed_{seed}.log"),
                "command": [sys.executable, "-m",
                            run.get("module", DEFAULT_MODULE),
                            *study.get("common", []), *run_flags,
                            f"--seed={seed}", f"--model_dir={path}",
                            "--verbose=2"],
            })
    return jobs


def _start(job):
    os.makedirs(os.path.dirname(job["log"]), exist_ok=True)
    log = open(job["log"], "a")
    log.write(f"$ {' '.join(job['command'])}\n")
    log.flush()
    job["started"] = time.time()
    job["process"] = subprocess.Popen(job["command"], cwd=REPO, stdout=log,
                                      stderr=subprocess.STDOUT)
    job["log_file"] = log


def run_study(study, parallel=1, out=sys.stdout):
    """Runs every unfinished job; returns `{dir: status}`.

    Status: `finished` (before this call), `done`, `failed (rc=N)` or
    `skipped (needs <dir>)` when a run it depends on failed.
    """
    jobs = expand(study)
    status = {}
    pending = []
    for job in jobs:
        if is_finished(job["dir"]):
            status[job["dir"]] = "finished"
        else:
            pending.append(job)
    running = []
    while pending or running:
        for job in list(running):
            code = job["process"].poll()
            if code is None:
                continue
            job["log_file"].close()
            running.remove(job)
            seconds = time.time() - job["started"]
            done = code == 0 and is_finished(job["dir"])
            status[job["dir"]] = "done" if done else f"failed (rc={code})"
            out.write(f"{status[job['dir']]:>14}  {job['dir']}  "
                      f"({seconds:.0f} s)\n")
            out.flush()
        for job in list(pending):
            blocked = [d for d in job["needs"]
                       if status.get(d) not in ("finished", "done")]
            failed = [d for d in blocked
                      if d in status and status[d] not in ("finished", "done")]
            if failed:
                pending.remove(job)
                status[job["dir"]] = f"skipped (needs {failed[0]})"
                out.write(f"{'skipped':>14}  {job['dir']} (needs "
                          f"{failed[0]})\n")
            elif not blocked and len(running) < parallel:
                pending.remove(job)
                _start(job)
                running.append(job)
        if running:
            time.sleep(1.0)
    return status


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    try:
        study = load_study(FLAGS.config)
    except StudyError as e:
        sys.exit(f"study.py: error: {e}")
    if FLAGS.dry_run:
        for job in expand(study):
            state = "finished" if is_finished(job["dir"]) else "to run"
            print(f"{state:>9}  {' '.join(job['command'])}")
        return
    status = run_study(study, FLAGS.parallel)
    failed = sorted(d for d, s in status.items()
                    if s.startswith(("failed", "skipped")))
    print(json.dumps({"runs": len(status), "failed": failed}, indent=2))
    if failed:
        sys.exit(1)


if __name__ == "__main__":
    define_flags()
    app.run(main)
