"""Times meta-steps side by side with the PyTorch reference; prints JSON.

    python tools/bench.py --backbone=resnet18_d8 --image_size=64 \\
        --batch_size=4 --tasks=segmentation,depth --inner_steps=1,3 \\
        --orders=first,second --threads=2 \\
        --reference_python=~/.venvs/torch-ref/bin/python

Every (inner steps, order) configuration runs in its own process, ms_keras
then the reference (`../shared/perf/torch_meta_step.py`, when
`--reference_python` names a Python with PyTorch), so that each process's
memory is its own and the frameworks alternate. A meta-step is one
`MetaSparsityTrainer.train_step` with one episode of every task (support and
query batches of `--batch_size`), which includes the outer prox, lambda's
update and the batch-norm refresh at the meta weights; the reference does
the same work but the refresh. Reported per framework: `first_step_s` (the
first call, tracing included), `median_ms` of `--steps` timed steps after
`--warmup`, resident memory after the imports, after building the model and
at its peak, and `working_mib` (peak - after build). With the reference, a
Markdown table of the ratios follows the JSON.
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

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REFERENCE = os.path.join(os.path.dirname(REPO), "shared", "perf",
                         "torch_meta_step.py")


def _rss_mib():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2 ** 20


def measure(args, inner_steps, order):
    """One configuration in this process; returns the JSON record."""
    from ms_keras import runtime  # noqa: PLC0415
    import tensorflow as tf  # noqa: PLC0415

    # Thread pools are fixed when TensorFlow initialises (runtime.start).
    if args.threads:
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    if args.inter_op_threads:
        tf.config.threading.set_inter_op_parallelism_threads(
            args.inter_op_threads)
    runtime.start()
    import keras  # noqa: PLC0415
    import numpy as np  # noqa: PLC0415
    from ms_keras import tasks as tasks_lib  # noqa: PLC0415
    from ms_keras.models import build_multitask_model  # noqa: PLC0415
    from ms_keras.sparsity.lam import SparsityStrength  # noqa: PLC0415
    from ms_keras.sparsity.proximal import OuterProx  # noqa: PLC0415
    from ms_keras.trainers.meta_sparsity import (  # noqa: PLC0415
        MetaSparsityTrainer)

    rss_import = _rss_mib()
    keras.utils.set_random_seed(0)
    size = args.image_size
    dataset = tasks_lib.get_dataset("synthetic_nyu")
    specs = tasks_lib.parse_tasks(dataset, args.tasks.split(","))
    network = build_multitask_model(
        dataset, specs, args.backbone, (size, size),
        aspp_rates=tuple(int(r) for r in args.aspp_rates.split(",")))
    trainer = MetaSparsityTrainer(
        network, specs, lam=SparsityStrength(args.lam),
        prox=OuterProx(network.backbone, "channel", args.prox_step,
                       preserve_norm=False),
        inner_steps=inner_steps, inner_lr=args.inner_lr,
        first_order=(order == "first"), inner_prox=args.inner_prox)
    trainer.compile(optimizer=keras.optimizers.Adam(1e-3),
                    lambda_optimizer=keras.optimizers.Adam(1e-3))
    rng = np.random.default_rng(0)
    batch = (1, args.batch_size, size, size)

    def targets():
        return {"segmentation": rng.integers(0, 6, batch).astype(np.int32),
                "depth": rng.uniform(1, 5, (*batch, 1)).astype(np.float32),
                "normals": np.tile(np.float32([0, 0, -1]), (*batch, 1)),
                "edges": (rng.random((*batch, 1)) < 0.1).astype(np.float32)}

    data = {"support_images": rng.random((*batch, 3)).astype(np.float32),
            "support_targets": {s.name: targets()[s.name] for s in specs},
            "query_images": rng.random((*batch, 3)).astype(np.float32),
            "query_targets": {s.name: targets()[s.name] for s in specs},
            "episodes": np.ones((1, len(specs)), np.int32)}
    data = tf.nest.map_structure(tf.constant, data)
    # As `fit` compiles it: a tf.function without AutoGraph (Keras marks its
    # step `do_not_convert`; the train step's loops are explicit).
    step = tf.function(trainer.train_step, jit_compile=args.jit_compile,
                       autograph=False)
    rss_built = _rss_mib()
    times = []
    for _ in range(args.warmup + args.steps):
        start = time.perf_counter()
        logs = step(data)
        float(logs["loss"])  # waits for the step
        times.append(1000.0 * (time.perf_counter() - start))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "framework": "ms_keras", "tensorflow": tf.__version__,
        "backbone": args.backbone, "image_size": size,
        "batch_size": args.batch_size, "tasks": args.tasks.split(","),
        "inner_steps": inner_steps, "order": order,
        "first_step_s": round(times[0] / 1000.0, 2),
        "median_ms": round(statistics.median(times[args.warmup:]), 1),
        "ms": [round(t, 1) for t in times[args.warmup:]],
        "rss_import_mib": round(rss_import, 1),
        "rss_built_mib": round(rss_built, 1), "peak_mib": round(peak, 1),
        "working_mib": round(peak - rss_built, 1),
        "parameters": int(network.count_params())}


def _child(command):
    result = subprocess.run(command, capture_output=True, text=True,
                            check=False, cwd=REPO)
    if result.returncode:
        sys.stderr.write(result.stderr[-3000:])
        sys.exit(f"bench.py: error: {' '.join(command[:3])} ... failed "
                 f"(exit {result.returncode}).")
    return json.loads(result.stdout.strip().splitlines()[-1])


def _reference_record(record):
    """The reference's output with our field names."""
    record = dict(record)
    record["first_step_s"] = round(record.pop("first_step_ms") / 1000.0, 2)
    return record


def table(pairs):
    """Markdown table of ms_keras vs the reference, with ratios."""
    lines = [
        "| meta-step | ms_keras ms | PyTorch ms | ratio | first step "
        "ms_keras / PyTorch (s) | working MiB ms_keras / PyTorch |",
        "|---|---|---|---|---|---|"]
    for ours, theirs in pairs:
        lines.append(
            f"| k={ours['inner_steps']} {ours['order']} order | "
            f"{ours['median_ms']:,.0f} | {theirs['median_ms']:,.0f} | "
            f"{ours['median_ms'] / theirs['median_ms']:.2f}x | "
            f"{ours['first_step_s']:.1f} / {theirs['first_step_s']:.1f} | "
            f"{ours['working_mib']:,.0f} / {theirs['working_mib']:,.0f} |")
    return "\n".join(lines)


def parse(argv):
    import argparse  # noqa: PLC0415
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default="resnet18_d8",
                        choices=["resnet18_d8", "resnet_tiny"])
    parser.add_argument("--image_size", type=int, default=64)
    parser.add_argument("--batch_size", type=int, default=4,
                        help="support and query batch size (each)")
    parser.add_argument("--tasks", default="segmentation,depth")
    parser.add_argument("--aspp_rates", default="2,4,6")
    parser.add_argument("--inner_steps", default="1,3",
                        help="comma-separated inner-step counts")
    parser.add_argument("--orders", default="first,second",
                        help="comma-separated: first, second")
    parser.add_argument("--inner_lr", type=float, default=1e-2)
    parser.add_argument("--lam", type=float, default=0.5)
    parser.add_argument("--prox_step", default="plain",
                        help="the outer prox (plain: the reference's)")
    parser.add_argument("--inner_prox", default="differentiable",
                        choices=["differentiable", "straight_through"],
                        help="the inner prox (differentiable: the "
                        "reference's)")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=0,
                        help="intra-op threads of both frameworks (0: "
                        "their defaults)")
    parser.add_argument("--inter_op_threads", type=int, default=0,
                        help="TensorFlow's inter-op threads (0: default)")
    parser.add_argument("--jit_compile", action="store_true")
    parser.add_argument("--reference_python", default=None,
                        help="a Python with PyTorch: also run the reference")
    parser.add_argument("--single", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    for order in args.orders.split(","):
        if order not in ("first", "second"):
            parser.error(f"--orders: expected first or second, got {order!r}")
    try:
        args.inner_step_list = [int(k) for k in args.inner_steps.split(",")]
    except ValueError:
        parser.error(f"--inner_steps={args.inner_steps}: expected integers")
    if min(args.inner_step_list) < 1 or args.steps < 1 or args.warmup < 1:
        parser.error("--inner_steps, --steps and --warmup must be >= 1")
    if args.reference_python and not os.path.exists(
            os.path.expanduser(args.reference_python)):
        parser.error(f"--reference_python={args.reference_python}: no such "
                     "file")
    return args


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    args = parse(argv)
    if args.single:
        steps, order = args.single.split(",")
        print(json.dumps(measure(args, int(steps), order)))
        return
    passthrough = [a for a in argv if not a.startswith(("--single",
                                                        "--reference"))]
    results, pairs = [], []
    for steps in args.inner_step_list:
        for order in args.orders.split(","):
            ours = _child([sys.executable, os.path.abspath(__file__),
                           *passthrough, f"--single={steps},{order}"])
            results.append(ours)
            if args.reference_python:
                theirs = _reference_record(_child([
                    os.path.expanduser(args.reference_python), REFERENCE,
                    f"--backbone={args.backbone}",
                    f"--image_size={args.image_size}",
                    f"--batch_size={args.batch_size}",
                    f"--tasks={args.tasks}",
                    f"--aspp_rates={args.aspp_rates}",
                    f"--inner_steps={steps}", f"--order={order}",
                    f"--inner_lr={args.inner_lr}", f"--lam={args.lam}",
                    f"--steps={args.steps}", f"--warmup={args.warmup}",
                    f"--threads={args.threads}"]))
                theirs["ratio_median"] = round(
                    ours["median_ms"] / theirs["median_ms"], 2)
                results.append(theirs)
                pairs.append((ours, theirs))
    print(json.dumps(results, indent=2))
    if pairs:
        print()
        print(table(pairs))


if __name__ == "__main__":
    main()
