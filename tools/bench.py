"""Times training steps, side by side with the PyTorch reference; prints JSON
and a Markdown table.

    python tools/bench.py --threads=2 \\
        --reference_python=~/.venvs/torch-ref/bin/python

A row is one step configuration, `kind/k/order/meta_batch/compile/dtype`:

- `reference`: the step `../shared/perf/torch_meta_step.py` computes (the
  plain outer prox, the differentiable inner prox, Adam on lambda, one
  episode), the one the ratio to PyTorch is of;
- `training`: the meta-step training runs by default (`MetaSparsityTrainer`
  with the config's defaults: tolerance control solving lambda, the prox in
  Adam's metric with norm preservation, the straight-through inner prox,
  the batch-norm refresh), with `meta_batch` episodes;
- `dense`: `MultiTaskTrainer`'s step (Alg. 1) on one batch;

`k` inner steps of `order` (`first` or `second`), `compile` `graph` or
`xla` (`jit_compile`), `dtype` a Keras dtype policy. Every row runs in its
own process, ms_keras then (for `reference` rows, with `--reference_python`)
PyTorch, so that each process's memory is its own and the frameworks
alternate. Reported: `first_step_s` (the first call, tracing included),
`median_ms` of `--steps` timed steps after `--warmup`, `working_mib` (peak
resident memory, or peak accelerator memory on a GPU, minus what the built
model held) and `traces` (how often the step was traced: 1 unless
something retraced it).
"""

import json
import os
import resource
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))))

from absl import app  # noqa: E402
from absl import flags  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REFERENCE = os.path.join(os.path.dirname(REPO), "shared", "perf",
                         "torch_meta_step.py")
KINDS = ("reference", "training", "dense")
DEFAULT_ROWS = (
    "reference/1/first/1/graph/float32",
    "reference/1/second/1/graph/float32",
    "reference/3/first/1/graph/float32",
    "reference/3/second/1/graph/float32",
    "reference/1/second/1/xla/float32",
    "reference/3/second/1/xla/float32",
    "training/1/second/1/graph/float32",
    "training/1/second/2/graph/float32",
    "training/1/second/2/xla/float32",
    "training/1/second/2/graph/mixed_bfloat16",
    "dense/0/none/1/graph/float32",
    "dense/0/none/1/xla/float32",
    "dense/0/none/1/graph/mixed_bfloat16",
)

FLAGS = flags.FLAGS


def define_flags():
    flags.DEFINE_list("rows", list(DEFAULT_ROWS),
                      "Step configurations, kind/k/order/meta_batch/compile/"
                      f"dtype (kinds: {', '.join(KINDS)}).")
    flags.DEFINE_enum("backbone", "resnet18_d8",
                      ["resnet18_d8", "resnet_tiny", "resnet50_d8"],
                      "Backbone (the reference has resnet18_d8 and "
                      "resnet50_d8).")
    flags.DEFINE_list("image_size", ["64"], "H or H,W of the images.")
    flags.DEFINE_integer("batch_size", 4, "Support and query batch size "
                         "(each).", lower_bound=1)
    flags.DEFINE_list("tasks", ["segmentation", "depth"], "Tasks.")
    flags.DEFINE_list("aspp_rates", ["2", "4", "6"], "ASPP rates.")
    flags.DEFINE_float("inner_lr", 1e-2, "Inner learning rate.")
    flags.DEFINE_float("lam", 0.5, "Lambda of the reference step.")
    flags.DEFINE_integer("steps", 10, "Timed steps.", lower_bound=1)
    flags.DEFINE_integer("warmup", 2, "Untimed steps after the first.",
                         lower_bound=1)
    flags.DEFINE_integer("threads", 0, "Intra-op threads of both "
                         "frameworks (0: their defaults).", lower_bound=0)
    flags.DEFINE_string("reference_python", None, "A Python with PyTorch: "
                        "also run the reference of `reference` rows.")
    flags.DEFINE_string("single", None, "(internal) one row, in this "
                        "process.")
    flags.register_validator(
        "rows", lambda rows: all(_parse_row(r) for r in rows),
        "each row is kind/k/order/meta_batch/compile/dtype with kind in "
        f"{', '.join(KINDS)}, order first|second|none, compile graph|xla")


def _parse_row(text):
    parts = text.split("/")
    if len(parts) != 6:
        return None
    kind, steps, order, meta_batch, compile_, dtype = parts
    if (kind not in KINDS or not steps.isdigit() or not meta_batch.isdigit()
            or order not in ("first", "second", "none")
            or compile_ not in ("graph", "xla")
            or (kind == "dense") != (order == "none")):
        return None
    return {"kind": kind, "inner_steps": int(steps), "order": order,
            "meta_batch": int(meta_batch), "xla": compile_ == "xla",
            "dtype_policy": dtype}


def _rss_mib():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2 ** 20


def _image_size():
    sizes = [int(s) for s in FLAGS.image_size]
    return (sizes[0], sizes[-1])


def _trainer(row, specs, dataset):
    """The trainer of a row, built and compiled."""
    import keras  # noqa: PLC0415
    from ms_keras.models import build_multitask_model  # noqa: PLC0415
    from ms_keras.sparsity.lam import SparsityStrength  # noqa: PLC0415
    from ms_keras.sparsity.proximal import OuterProx  # noqa: PLC0415
    from ms_keras.trainers.meta_sparsity import (  # noqa: PLC0415
        MetaSparsityTrainer)
    from ms_keras.trainers.multitask import MultiTaskTrainer  # noqa: PLC0415
    from ms_keras.trainers.optimizers import FusedAdam  # noqa: PLC0415

    keras.config.set_dtype_policy(row["dtype_policy"])
    keras.utils.set_random_seed(0)
    network = build_multitask_model(
        dataset, specs, FLAGS.backbone, _image_size(),
        aspp_rates=tuple(int(r) for r in FLAGS.aspp_rates))
    if row["kind"] == "dense":
        trainer = MultiTaskTrainer(network, specs)
    elif row["kind"] == "reference":
        trainer = MetaSparsityTrainer(
            network, specs, lam=SparsityStrength(FLAGS.lam, learnable=True),
            prox=OuterProx(network.backbone, "channel", "plain",
                           preserve_norm=False),
            inner_steps=row["inner_steps"], inner_lr=FLAGS.inner_lr,
            first_order=row["order"] == "first",
            inner_prox="differentiable", sparsity_control="paper",
            lambda_init=FLAGS.lam, lambda_optimizer="adam",
            lambda_lr=1e-3, meta_batch_size=1)
    else:
        trainer = MetaSparsityTrainer(
            network, specs, inner_steps=row["inner_steps"],
            inner_lr=FLAGS.inner_lr, first_order=row["order"] == "first",
            meta_batch_size=row["meta_batch"], inner_clip_norm=1.0)
        trainer.controller.total_steps = 1000
    # The weights' optimizer the binaries build (`build.build_optimizer`).
    trainer.compile(optimizer=FusedAdam(1e-3))
    return trainer, network


def _batch(row, specs):
    import numpy as np  # noqa: PLC0415
    import tensorflow as tf  # noqa: PLC0415

    rng = np.random.default_rng(0)
    height, width = _image_size()
    meta = row["kind"] != "dense"
    shape = ((row["meta_batch"], FLAGS.batch_size) if meta
             else (FLAGS.batch_size,)) + (height, width)

    def targets():
        values = {
            "segmentation": rng.integers(0, 6, shape).astype(np.int32),
            "depth": rng.uniform(1, 5, (*shape, 1)).astype(np.float32),
            "normals": np.tile(np.float32([0, 0, -1]), (*shape, 1)),
            "edges": (rng.random((*shape, 1)) < 0.1).astype(np.float32)}
        return {s.name: values[s.name] for s in specs}

    if not meta:
        data = (rng.random((*shape, 3)).astype(np.float32), targets())
    else:
        data = {"support_images": rng.random((*shape, 3)).astype(np.float32),
                "support_targets": targets(),
                "query_images": rng.random((*shape, 3)).astype(np.float32),
                "query_targets": targets(),
                "episodes": np.ones((row["meta_batch"], len(specs)),
                                    np.int32)}
    return tf.nest.map_structure(tf.constant, data)


def _peak_mib(gpu):
    import tensorflow as tf  # noqa: PLC0415
    if gpu:
        return tf.config.experimental.get_memory_info("GPU:0")["peak"] / 2 ** 20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(row):
    """One row in this process; returns its JSON record."""
    from ms_keras import runtime  # noqa: PLC0415
    import tensorflow as tf  # noqa: PLC0415

    # Thread pools are fixed when TensorFlow initialises (runtime.start).
    if FLAGS.threads:
        tf.config.threading.set_intra_op_parallelism_threads(FLAGS.threads)
    runtime.start()
    from ms_keras import tasks as tasks_lib  # noqa: PLC0415

    gpu = bool(tf.config.list_logical_devices("GPU"))
    dataset = tasks_lib.get_dataset("synthetic_nyu")
    specs = tasks_lib.parse_tasks(dataset, FLAGS.tasks)
    rss_import = _rss_mib()
    trainer, network = _trainer(row, specs, dataset)
    data = _batch(row, specs)
    # As `fit` compiles it: a tf.function without AutoGraph (Keras marks its
    # step `do_not_convert`; the train step's loops are explicit).
    step = tf.function(trainer.train_step, jit_compile=row["xla"],
                       autograph=False)
    built = (tf.config.experimental.get_memory_info("GPU:0")["current"]
             / 2 ** 20 if gpu else _rss_mib())
    if gpu:
        tf.config.experimental.reset_memory_stats("GPU:0")
    times = []
    for _ in range(1 + FLAGS.warmup + FLAGS.steps):
        start = time.perf_counter()
        logs = step(data)
        float(logs["loss"])  # waits for the step
        times.append(1000.0 * (time.perf_counter() - start))
    peak = _peak_mib(gpu)
    timed = times[1 + FLAGS.warmup:]
    return {
        "framework": "ms_keras", "tensorflow": tf.__version__,
        "device": "gpu" if gpu else "cpu", "row": row,
        "backbone": FLAGS.backbone, "image_size": list(_image_size()),
        "batch_size": FLAGS.batch_size, "tasks": FLAGS.tasks,
        "first_step_s": round(times[0] / 1000.0, 2),
        "median_ms": round(statistics.median(timed), 1),
        "ms": [round(t, 1) for t in timed],
        "rss_import_mib": round(rss_import, 1),
        "built_mib": round(built, 1), "peak_mib": round(peak, 1),
        "working_mib": round(peak - built, 1),
        "traces": step.experimental_get_tracing_count(),
        "parameters": int(network.count_params())}


def _child(command):
    result = subprocess.run(command, capture_output=True, text=True,
                            check=False, cwd=REPO)
    if result.returncode:
        sys.stderr.write(result.stderr[-3000:])
        sys.exit(f"bench.py: error: {' '.join(command[:3])} ... failed "
                 f"(exit {result.returncode}).")
    return json.loads(result.stdout.strip().splitlines()[-1])


def _reference(row):
    """The PyTorch reference's record of a `reference` row."""
    size = ",".join(map(str, _image_size()))
    record = _child([
        os.path.expanduser(FLAGS.reference_python), REFERENCE,
        f"--backbone={FLAGS.backbone}", f"--image_size={size}",
        f"--batch_size={FLAGS.batch_size}",
        f"--tasks={','.join(FLAGS.tasks)}",
        f"--aspp_rates={','.join(FLAGS.aspp_rates)}",
        f"--inner_steps={row['inner_steps']}", f"--order={row['order']}",
        f"--inner_lr={FLAGS.inner_lr}", f"--lam={FLAGS.lam}",
        # Its warm-up counts the first step; ours does not.
        f"--steps={FLAGS.steps}", f"--warmup={FLAGS.warmup + 1}",
        f"--threads={FLAGS.threads}"])
    record["first_step_s"] = round(record.pop("first_step_ms") / 1000.0, 2)
    return record


def row_name(row):
    compiled = "XLA" if row["xla"] else "graph"
    if row["kind"] == "dense":
        what = "dense multi-task step"
    else:
        what = (f"{row['kind']} meta-step, k={row['inner_steps']} "
                f"{row['order']} order, {row['meta_batch']} episode"
                f"{'s' if row['meta_batch'] > 1 else ''}")
    return f"{what}, {compiled}, {row['dtype_policy']}"


def table(records):
    """Markdown table of every row, with PyTorch's figures and the ratio
    where the reference ran."""
    lines = [
        "| step | ms_keras ms | PyTorch ms | ratio | first step ms_keras / "
        "PyTorch (s) | working MiB ms_keras / PyTorch | traces |",
        "|---|---|---|---|---|---|---|"]
    for ours, theirs in records:
        if theirs:
            rest = (f"{theirs['median_ms']:,.0f} | "
                    f"{ours['median_ms'] / theirs['median_ms']:.2f}x | "
                    f"{ours['first_step_s']:.1f} / "
                    f"{theirs['first_step_s']:.1f} | "
                    f"{ours['working_mib']:,.0f} / "
                    f"{theirs['working_mib']:,.0f}")
        else:
            rest = (f"- | - | {ours['first_step_s']:.1f} / - | "
                    f"{ours['working_mib']:,.0f} / -")
        lines.append(f"| {row_name(ours['row'])} | {ours['median_ms']:,.0f}"
                     f" | {rest} | {ours['traces']} |")
    return "\n".join(lines)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    if FLAGS.single:
        print(json.dumps(measure(_parse_row(FLAGS.single))))
        return
    if FLAGS.reference_python and not os.path.exists(
            os.path.expanduser(FLAGS.reference_python)):
        sys.exit(f"bench.py: error: --reference_python="
                 f"{FLAGS.reference_python}: no such file.")
    passthrough = [a for a in sys.argv[1:]
                   if not a.startswith(("--single", "--reference", "--rows"))]
    results, records = [], []
    for text in FLAGS.rows:
        row = _parse_row(text)
        ours = _child([sys.executable, os.path.abspath(__file__),
                       *passthrough, f"--single={text}"])
        theirs = None
        if FLAGS.reference_python and row["kind"] == "reference":
            theirs = _reference(row)
            theirs["ratio_median"] = round(
                ours["median_ms"] / theirs["median_ms"], 2)
        results += [ours] + ([theirs] if theirs else [])
        records.append((ours, theirs))
    print(json.dumps(results, indent=2))
    print()
    print(table(records))


if __name__ == "__main__":
    define_flags()
    app.run(main)
