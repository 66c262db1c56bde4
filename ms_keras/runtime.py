"""The TensorFlow runtime of a run: logical devices, the `tf.distribute`
strategy, which process writes, and determinism.

Strategies (`--strategy`):

- `default`: one device (TensorFlow's default strategy).
- `mirrored`: `tf.distribute.MirroredStrategy` over this host's GPUs, or,
  with none, over its logical CPU devices (`--cpu_devices=N` splits the CPU
  into N, to try and test it on a laptop).
- `multi_worker`: `tf.distribute.MultiWorkerMirroredStrategy`; the cluster
  and this process's role come from the `TF_CONFIG` environment variable.
- `tpu`: `tf.distribute.TPUStrategy` on the TPU `TPUClusterResolver` finds.

Under every strategy only the chief writes the run's files
(`is_chief`); the other workers write to a temporary directory that is
removed at the end.
"""

import json
import os

import tensorflow as tf

from ms_keras import quiet_tf
from ms_keras.config import STRATEGIES
TF_CONFIG = "TF_CONFIG"


def configure_devices(cpu_devices):
    """Splits the physical CPU into `cpu_devices` logical devices.

    Must run before TensorFlow initialises its devices (`quiet_tf.start`).
    """
    if cpu_devices > 1:
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * cpu_devices)


def make_strategy(name):
    """The `tf.distribute.Strategy` called `name` (`STRATEGIES`).

    Raises:
        ValueError: when the strategy cannot start here (no TF_CONFIG for
            `multi_worker`, no TPU for `tpu`), saying what is missing.
    """
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        if tf.config.list_logical_devices("GPU"):
            return tf.distribute.MirroredStrategy()
        devices = [d.name for d in tf.config.list_logical_devices("CPU")]
        return tf.distribute.MirroredStrategy(devices)
    if name == "multi_worker":
        if not os.environ.get(TF_CONFIG):
            raise ValueError(
                "--strategy=multi_worker reads the cluster from the TF_CONFIG "
                "environment variable, which is not set (see the README's "
                "'Scaling out').")
        try:
            json.loads(os.environ[TF_CONFIG])
        except ValueError as e:
            raise ValueError(f"TF_CONFIG is not valid JSON ({e}).") from None
        return tf.distribute.MultiWorkerMirroredStrategy()
    if name == "tpu":
        try:
            resolver = tf.distribute.cluster_resolver.TPUClusterResolver()
            tf.config.experimental_connect_to_cluster(resolver)
            tf.tpu.experimental.initialize_tpu_system(resolver)
        except (ValueError, tf.errors.OpError) as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else ""
            raise ValueError(
                f"--strategy=tpu: no TPU found here ({first}).") from None
        return tf.distribute.TPUStrategy(resolver)
    raise ValueError(f"--strategy={name}: expected one of "
                     f"{', '.join(STRATEGIES)}.")


def tune_graph_optimizations():
    """Turns off three of Grappler's graph rewrites: the function optimizer,
    constant folding and the remapper.

    The meta-step nests tapes inside `tf.while_loop` bodies; inlining and
    specialising those functions made the graph TensorFlow runs larger and
    slower. Measured with `tools/bench.py` (resnet_tiny, 32x32, k=1, second
    order, same machine and sitting): first step 32 s -> 16 s, median step
    119 ms -> 62 ms. Constant folding and the remapper (op fusion) then
    spend the first call on the unrolled second-order graph for nothing the
    steps gain: with both off (resnet18_d8, 64x64, two alternating pairs per
    row, `tools/bench.py --single=...`) the first step of the k=1 / k=3
    second-order meta-step is 11 % / 14 % shorter, the training-default
    step's 13 %, the dense step's 8 %, working memory 1-9 % lower, the
    median step within 2 %. The computation is unchanged: only how the
    graph is rewritten before it runs.
    """
    tf.config.optimizer.set_experimental_options(
        {"function_optimization": False, "constant_folding": False,
         "remapping": False})


def start(strategy="default", cpu_devices=1, deterministic=False, seed=0):
    """Configures and initialises TensorFlow for a run; returns the strategy.

    The logical devices and a multi-worker strategy must exist before
    TensorFlow runs its first op, so binaries call this first (in a process
    that already ran ops, e.g. a test, only `default` and `mirrored` over the
    existing devices work).

    Raises:
        ValueError: when the strategy cannot start (see `make_strategy`).
    """
    if os.environ.get(TF_CONFIG, None) == "":
        # An empty TF_CONFIG means none; TensorFlow would fail to parse it.
        del os.environ[TF_CONFIG]
    made = {}

    def configure():
        configure_devices(cpu_devices)
        made["strategy"] = make_strategy(strategy)

    quiet_tf.start(configure)
    tune_graph_optimizations()
    if deterministic:
        enable_determinism(seed)
    return made["strategy"]


def is_chief(strategy):
    """Whether this process writes the run's files.

    Single-process strategies always do; under `multi_worker` the chief
    (task `chief`, or `worker` 0 when the cluster has no chief) does.
    """
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return True
    if resolver.task_type == "chief":
        return True
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return (resolver.task_type == "worker" and resolver.task_id == 0
            and not has_chief)


def enable_determinism(seed):
    """Deterministic ops and seeded Python, NumPy and TF randomness."""
    import keras  # noqa: PLC0415  (keras reads the dtype policy on import)
    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()
