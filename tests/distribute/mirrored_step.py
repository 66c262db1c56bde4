"""One meta-step on one device and the same step under MirroredStrategy over
two logical CPU devices (same weights, same episodes); prints the largest
relative differences as JSON. Run as a script: the logical devices must be
configured before TensorFlow starts."""

import json
import sys

from ms_keras import runtime

STRATEGY = runtime.start("mirrored", cpu_devices=2)

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from ms_keras import tasks  # noqa: E402
from ms_keras.models import build_multitask_model  # noqa: E402
from ms_keras.sparsity.lam import SparsityStrength  # noqa: E402
from ms_keras.sparsity.proximal import OuterProx  # noqa: E402
from ms_keras.trainers.meta_sparsity import MetaSparsityTrainer  # noqa: E402
from ms_keras.trainers.optimizers import FusedAdam  # noqa: E402


# float64, so that Adam's first step (about lr * sign(g)) does not turn the
# order of a float32 sum over replicas into a visible difference.
keras.config.set_floatx("float64")
keras.config.set_dtype_policy("float64")


def build(strategy, weights=None):
    with strategy.scope():
        keras.utils.set_random_seed(0)
        spec = tasks.get_dataset("synthetic_nyu")
        specs = tasks.parse_tasks(spec, ["segmentation", "depth"])
        network = build_multitask_model(spec, specs, "resnet_tiny", (16, 16),
                                        aspp_rates=(1,))
        trainer = MetaSparsityTrainer(
            network, specs, lam=SparsityStrength(0.002),
            prox=OuterProx(network.backbone), inner_steps=1)
        # The binaries' optimizer: its fused update on mirrored variables.
        trainer.compile(optimizer=FusedAdam(1e-2),
                        lambda_optimizer=keras.optimizers.SGD(1e-3))
        trainer(np.zeros((1, 16, 16, 3)))
        if weights is not None:
            for variable, value in zip(trainer.weights, weights):
                variable.assign(value)
    return trainer


def batch(meta_batch=4):
    rng = np.random.default_rng(0)
    shape = (meta_batch, 4, 16, 16)

    def targets():
        return {"segmentation": rng.integers(0, 6, shape).astype(np.int32),
                "depth": rng.uniform(1, 4, (*shape, 1))}

    return {"support_images": rng.random((*shape, 3)),
            "support_targets": targets(),
            "query_images": rng.random((*shape, 3)),
            "query_targets": targets(),
            "episodes": np.array([[1, 1], [1, 0], [0, 1], [1, 1]],
                                 np.int32)}


def step(trainer, strategy, data):
    dataset = tf.data.Dataset.from_tensors(data)
    distributed = strategy.experimental_distribute_dataset(dataset)

    @tf.function
    def run(inputs):
        strategy.run(trainer.train_step, args=(inputs,))

    for inputs in distributed:
        run(inputs)


def main():
    one = build(tf.distribute.get_strategy())
    two = build(STRATEGY, [np.asarray(w) for w in one.weights])
    data = batch()
    step(one, tf.distribute.get_strategy(), data)
    step(two, STRATEGY, data)
    report = {"replicas": STRATEGY.num_replicas_in_sync}
    groups = {
        "weights": (one.meta_variables, two.meta_variables),
        "lambda": ([one.lam.raw], [two.lam.raw]),
        "bn_statistics": (one.network.non_trainable_variables,
                          two.network.non_trainable_variables),
    }
    for name, (first, second) in groups.items():
        worst = 0.0
        for a, b in zip(first, second):
            a, b = np.asarray(a), np.asarray(b)
            scale = max(float(np.max(np.abs(a))), 1e-12)
            worst = max(worst, float(np.max(np.abs(a - b))) / scale)
        report[name] = worst
    fresh = build(tf.distribute.get_strategy())
    report["update_size"] = max(
        float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
        for a, b in zip(one.meta_variables, fresh.meta_variables))
    report["lambda_moved"] = abs(float(np.asarray(one.lam.raw))
                                 - float(np.asarray(fresh.lam.raw)))
    print(json.dumps(report))


if __name__ == "__main__":
    main()
    sys.exit(0)
