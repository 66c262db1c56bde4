"""tools/bench.py at a tiny size (slow: it traces second-order steps)."""

import json
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))


@pytest.mark.slow
def test_bench_reports_times_and_memory_per_configuration():
    result = subprocess.run(
        [sys.executable, os.path.join(REPO, "tools", "bench.py"),
         "--backbone=resnet_tiny", "--image_size=32", "--batch_size=2",
         "--inner_steps=1,2", "--orders=first", "--steps=2", "--warmup=1",
         "--threads=2", "--inter_op_threads=1"],
        cwd=REPO, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    records = json.loads(result.stdout)
    assert [(r["inner_steps"], r["order"]) for r in records] == [
        (1, "first"), (2, "first")]
    for record in records:
        assert record["median_ms"] > 0 and len(record["ms"]) == 2
        assert record["first_step_s"] > 0
        assert record["peak_mib"] >= record["rss_built_mib"] >= (
            record["rss_import_mib"]) > 0


def test_bench_refuses_bad_arguments():
    result = subprocess.run(
        [sys.executable, os.path.join(REPO, "tools", "bench.py"),
         "--orders=third"], cwd=REPO, capture_output=True, text=True,
        timeout=120)
    assert result.returncode == 2
    assert "--orders: expected first or second" in result.stderr
