"""tools/bench.py at a tiny size (slow: it traces second-order steps)."""

import json
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))


def bench(*argv, timeout=1200):
    return subprocess.run(
        [sys.executable, os.path.join(REPO, "tools", "bench.py"), *argv],
        cwd=REPO, capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
def test_bench_times_every_kind_of_step_and_nothing_retraces():
    rows = ["reference/1/first/1/graph/float32",
            "training/1/second/2/graph/float32",
            "dense/0/none/1/graph/mixed_bfloat16"]
    result = bench("--backbone=resnet_tiny", "--image_size=32",
                   "--batch_size=2", "--tasks=segmentation,depth",
                   "--steps=3", "--warmup=1", "--threads=2",
                   f"--rows={','.join(rows)}")
    assert result.returncode == 0, result.stderr[-3000:]
    records = json.loads(result.stdout.split("\n\n")[0])
    assert [r["row"]["kind"] for r in records] == [
        "reference", "training", "dense"]
    for record in records:
        assert record["median_ms"] > 0 and len(record["ms"]) == 3
        assert record["first_step_s"] > 0
        assert record["peak_mib"] >= record["built_mib"] > 0
        # Traced once: every later step reused the first trace.
        assert record["traces"] == 1, record["row"]
    assert "| training meta-step, k=1 second order, 2 episodes, graph, " \
           "float32 |" in result.stdout


@pytest.mark.parametrize("rows,message", [
    ("reference/1/third/1/graph/float32", "kind/k/order/meta_batch"),
    ("dense/1/first/1/graph/float32", "kind/k/order/meta_batch"),
    ("bogus", "kind/k/order/meta_batch"),
])
def test_bench_refuses_bad_rows(rows, message):
    result = bench(f"--rows={rows}", timeout=120)
    assert result.returncode == 1
    assert message in result.stderr
