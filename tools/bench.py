"""Times meta-steps and measures their peak memory; prints JSON.

Each (inner steps, order) configuration runs in its own process so that its
peak memory is its own. A meta-step is one `MetaSparsityTrainer.train_step`
(meta-batch of one episode with every task) followed by the outer prox.

Example:

    python tools/bench.py --backbone=resnet18_d8 --image_size=64,64 \
        --batch_size=4 --tasks=segmentation,depth --inner_steps=1,3

Output: a JSON list of `{"inner_steps", "order", "median_ms", "ms" (every
timed step), "peak_memory_mib" (peak RSS on CPU, peak allocator bytes on a
GPU), "device"}`.
"""

import json
import os
import resource
import subprocess
import sys
import time

from absl import app
from absl import flags

_BACKBONE = flags.DEFINE_string("backbone", "resnet18_d8", "Backbone.")
_IMAGE_SIZE = flags.DEFINE_list("image_size", ["64", "64"], "height,width.")
_BATCH_SIZE = flags.DEFINE_integer(
    "batch_size", 4, "Support and query batch size (each).", lower_bound=1)
_TASKS = flags.DEFINE_list("tasks", ["segmentation", "depth"],
                           "synthetic_nyu tasks.")
_INNER_STEPS = flags.DEFINE_list("inner_steps", ["1", "3"],
                                 "Inner-step counts to measure.")
_ORDERS = flags.DEFINE_list("orders", ["first", "second"],
                            "Meta-gradient orders to measure.")
_STEPS = flags.DEFINE_integer("steps", 10, "Timed meta-steps.", lower_bound=1)
_WARMUP = flags.DEFINE_integer("warmup", 2, "Untimed meta-steps (tracing).",
                               lower_bound=1)
_JIT = flags.DEFINE_boolean("jit_compile", False, "Compile with XLA.")
_SINGLE = flags.DEFINE_string(
    "single", None, "Internal: measure one 'inner_steps,order' here.")


def _measure(inner_steps, order):
    from ms_keras import quiet_tf  # noqa: F401

    import keras
    import numpy as np
    import tensorflow as tf

    from ms_keras import tasks as tasks_lib
    from ms_keras.trainers.meta_sparsity import MetaSparsityTrainer
    from ms_keras.models import build_multitask_model
    from ms_keras.sparsity.lam import SparsityStrength
    from ms_keras.sparsity.proximal import OuterProx

    keras.utils.set_random_seed(0)
    size = tuple(int(v) for v in _IMAGE_SIZE.value)
    dataset = tasks_lib.get_dataset("synthetic_nyu")
    specs = tasks_lib.parse_tasks(dataset, _TASKS.value)
    network = build_multitask_model(dataset, specs, _BACKBONE.value, size,
                                    aspp_rates=(2, 4, 6))
    trainer = MetaSparsityTrainer(
        network, specs, lam=SparsityStrength(0.5),
        prox=OuterProx(network.backbone), inner_steps=inner_steps,
        first_order=(order == "first"))
    trainer.compile(optimizer=keras.optimizers.Adam(1e-3))
    trainer(np.zeros((1, *size, 3), np.float32))

    rng = np.random.default_rng(0)
    batch = (1, _BATCH_SIZE.value, *size)

    def targets():
        return {
            "segmentation": rng.integers(0, 6, batch).astype(np.int32),
            "depth": rng.uniform(1, 5, (*batch, 1)).astype(np.float32),
            "normals": np.tile(np.float32([0, 0, -1]), (*batch, 1)),
            "edges": (rng.random((*batch, 1)) < 0.1).astype(np.float32),
        }

    data = {"support_images": rng.random((*batch, 3)).astype(np.float32),
            "support_targets": {s.name: targets()[s.name] for s in specs},
            "query_images": rng.random((*batch, 3)).astype(np.float32),
            "query_targets": {s.name: targets()[s.name] for s in specs},
            "episodes": np.ones((1, len(specs)), bool)}
    data = tf.nest.map_structure(tf.constant, data)
    step = tf.function(trainer.train_step, jit_compile=_JIT.value)
    times = []
    for i in range(_WARMUP.value + _STEPS.value):
        start = time.perf_counter()
        logs = step(data)
        float(logs["loss"])  # wait for the step
        if i >= _WARMUP.value:
            times.append(1000 * (time.perf_counter() - start))
    gpus = tf.config.list_logical_devices("GPU")
    if gpus:
        peak = tf.config.experimental.get_memory_info("GPU:0")["peak"]
        device = "GPU"
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        device = "CPU"
    return {"inner_steps": inner_steps, "order": order,
            "median_ms": float(np.median(times)),
            "ms": [round(t, 1) for t in times],
            "peak_memory_mib": round(peak / 2 ** 20, 1), "device": device,
            "backbone": _BACKBONE.value, "image_size": list(size),
            "batch_size": _BATCH_SIZE.value, "tasks": _TASKS.value}


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    if _SINGLE.value:
        steps, order = _SINGLE.value.split(",")
        print(json.dumps(_measure(int(steps), order)))
        return
    results = []
    passthrough = [arg for arg in sys.argv[1:] if not arg.startswith(
        "--single")]
    for steps in _INNER_STEPS.value:
        for order in _ORDERS.value:
            if order not in ("first", "second"):
                raise app.UsageError(
                    f"--orders: expected first or second, got '{order}'")
            child = subprocess.run(
                [sys.executable, os.path.abspath(__file__), *passthrough,
                 f"--single={int(steps)},{order}"],
                capture_output=True, text=True, check=False)
            if child.returncode:
                sys.stderr.write(child.stderr)
                sys.exit(child.returncode)
            results.append(json.loads(child.stdout.strip().splitlines()[-1]))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    app.run(main)
