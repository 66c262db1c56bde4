"""Measures data preparation and the training input pipeline; prints JSON.

    python tools/bench_input.py --dataset=nyu --data_dir=<files> --image_size=256,256
    python tools/bench_input.py --dataset=synthetic_nyu --tfds_dir=/tmp/tfds \
        --image_size=256,256 --synthetic_examples=300,20,20

Reports the preparation rate (examples/s, when this call prepared the data),
the samples/s of a first pass of `--batches` batches (read and decode from
TFRecords, flip, scale-crop, batch) and the median samples/s of `--passes`
further passes (from the in-memory cache when the split is small enough).
"""

import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))))

from ms_keras import config as config_lib
from ms_keras import quiet_tf  # noqa: E402,F401  (must precede TensorFlow)

from absl import app  # noqa: E402
from absl import flags  # noqa: E402

_DATASET = flags.DEFINE_string("dataset", "synthetic_nyu", "Dataset.")
_DATA_DIR = flags.DEFINE_string(
    "data_dir", None, "Your files of a real dataset (default: the TFDS "
    "manual-download place).")
_TFDS_DIR = flags.DEFINE_string("tfds_dir", None, "TFDS data directory.")
_IMAGE_SIZE = flags.DEFINE_list("image_size", ["256", "256"], "height,width.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 8, "Batch size.")
_BATCHES = flags.DEFINE_integer("batches", 50, "Batches per pass.")
_PASSES = flags.DEFINE_integer("passes", 3, "Timed passes.")
_EXAMPLES = flags.DEFINE_list("synthetic_examples", ["300", "20", "20"],
                              "Synthetic split sizes.")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    from ms_keras import data as data_lib  # noqa: PLC0415

    size = tuple(int(v) for v in _IMAGE_SIZE.value)
    config = config_lib.DataConfig(
        dataset=_DATASET.value, image_size=size, data_dir=_DATA_DIR.value,
        tfds_dir=_TFDS_DIR.value,
        segmentation_classes=data_lib.segmentation_classes(
            _DATASET.value, _DATA_DIR.value, None),
        synthetic_examples=tuple(int(v) for v in _EXAMPLES.value))
    start = time.perf_counter()
    builder = data_lib.builder(config)
    prepare_s = time.perf_counter() - start
    total = sum(split.num_examples for split in builder.info.splits.values())
    batches = data_lib.load(config, config.spec.tasks, "train",
                            _BATCH_SIZE.value, training=True)
    iterator = iter(batches)
    start = time.perf_counter()
    for _ in range(_BATCHES.value):  # read from TFRecords (fills any cache)
        next(iterator)
    first = _BATCHES.value * _BATCH_SIZE.value / (time.perf_counter() - start)
    rates = []
    for _ in range(_PASSES.value):
        start = time.perf_counter()
        for _ in range(_BATCHES.value):
            next(iterator)
        rates.append(_BATCHES.value * _BATCH_SIZE.value
                     / (time.perf_counter() - start))
    print(json.dumps({
        "dataset": _DATASET.value, "image_size": list(size),
        "examples": total, "prepare_seconds": round(prepare_s, 2),
        "prepare_examples_per_s": round(total / prepare_s, 1),
        "first_pass_samples_per_s": round(first, 1),
        "pipeline_samples_per_s_median": round(statistics.median(rates), 1),
        "pipeline_samples_per_s": [round(r, 1) for r in rates],
        "cpu_count": os.cpu_count()}, indent=2))


if __name__ == "__main__":
    app.run(main)
