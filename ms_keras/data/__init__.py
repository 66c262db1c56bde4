"""Datasets: one loading path for the synthetic and the real datasets.

`load(config, task_specs, split, ...)` returns `(image, targets)` batches; the
examples behind it come from a TFDS builder prepared once into `data_dir`.
"""

import contextlib
import io
import os

import tensorflow_datasets as tfds

from absl import logging

from ms_keras import tasks as tasks_lib
from ms_keras.data import pipeline
from ms_keras.data import real_builders
from ms_keras.data import sources
from ms_keras.data import synthetic_builders

# Decoded splits smaller than this are kept in memory after the first pass.
CACHE_BYTES = 2 * 2 ** 30
# float32 image and normals, int32 labels, depth and edges.
_DECODED_BYTES_PER_PIXEL = 4 * (3 + 3 + 1 + 1 + 1)

TFDS_DIR_ENV = "TFDS_DATA_DIR"  # TFDS' own variable for its data directory


def tfds_root(tfds_dir=None):
    """Where TFDS keeps prepared data: `tfds_dir`, else `$TFDS_DATA_DIR`,
    else `~/tensorflow_datasets` (TFDS' own default)."""
    return os.path.expanduser(
        tfds_dir or os.environ.get(TFDS_DIR_ENV, "~/tensorflow_datasets"))


def default_data_dir(dataset, tfds_dir=None):
    """The TFDS manual-download place of a real dataset's files:
    `<tfds root>/downloads/manual/<dataset>`."""
    return os.path.join(tfds_root(tfds_dir), "downloads", "manual", dataset)


def files_dir(config):
    """The directory of a real dataset's files: `data_dir`, else the TFDS
    manual-download place (`default_data_dir`)."""
    return config.data_dir or default_data_dir(config.dataset,
                                               config.tfds_dir)


def manual_instructions(dataset):
    """What to download and where to put it (the builder's instructions)."""
    return " ".join(sources.get(dataset).builder.MANUAL_DOWNLOAD_INSTRUCTIONS
                    .split())


def check_data_dir(config):
    """Checks a real dataset's `data_dir` without reading any image.

    Raises:
        ValueError: for a missing or empty directory, an unknown layout, a
            missing modality, or a split list naming a missing file; the
            message says what was found and where.
    """
    if tasks_lib.dataset_spec(config).synthetic:
        return
    files = files_dir(config)
    if not os.path.isdir(files):
        raise ValueError(
            f"--data_dir={files}: no such directory. "
            f"{manual_instructions(config.dataset)}")
    classes = tasks_lib.dataset_spec(config).tasks[0].output_channels
    sources.get(config.dataset).check_files(files, classes)


def segmentation_classes(dataset, data_dir, requested):
    """The class count to use: `requested`, else the data's own.

    NYUv2 in the MTAN layout has 13 classes, NYUD_MT 40; CelebA 19. A
    directory that cannot be inspected yet leaves the dataset's default (its
    problems are reported by `check_data_dir`).
    """
    if requested is not None or not data_dir:
        return requested
    return sources.get(dataset).classes_in(data_dir)


def _real_builder(config):
    files = files_dir(config)
    source = sources.get(config.dataset)
    height, width = config.image_size
    # The user's files stay read-only: prepared TFRecords go where TFDS
    # keeps its data, keyed by the source directory and the settings.
    return _prepared(
        lambda: source.builder(
            config=real_builders.make_config(source.layout(files), height,
                                             width, files),
            data_dir=tfds_root(config.tfds_dir)),
        tfds.download.DownloadConfig(manual_dir=files))


def _prepared(make, download_config=None):
    """`make()`'s builder, prepared, with TFDS' narration sent to the log.

    TFDS prints "Downloading and preparing dataset ..." even for data that
    is generated or read locally, which would interleave with Keras' output.
    When another process (a parallel study run, a second worker) finishes
    preparing the same examples first, a fresh builder reads theirs.
    """
    narration = io.StringIO()
    with contextlib.redirect_stdout(narration):
        result = make()
        try:
            result.download_and_prepare(download_config=download_config)
        except FileExistsError:
            result = make()
            result.download_and_prepare(download_config=download_config)
    if narration.getvalue().strip():
        logging.info("%s", narration.getvalue().strip())
    return result


# Prepared builders by their (frozen) DataConfig: a run asks for its
# examples several times (train, support, query, validation, test, sizes);
# the files are checked and the examples prepared once per process.
_PREPARED = {}


def builder(config):
    """Returns the prepared TFDS builder of `config`'s examples.

    The first call of a process checks the user's files (a real dataset)
    and prepares the examples (renders synthetic ones, or reads, checks and
    resizes the files); later calls return the same builder.

    Raises:
        ValueError: for unusable user files, naming the file and the problem.
    """
    if config in _PREPARED:
        return _PREPARED[config]
    check_data_dir(config)
    tfds.disable_progress_bar()
    source = sources.get(config.dataset)
    if tasks_lib.dataset_spec(config).synthetic:
        height, width = config.image_size
        train, validation, test = config.synthetic_examples
        builder_config = synthetic_builders.make_config(
            height, width, train, validation, test, config.synthetic_seed,
            config.synthetic_holes)
        prepared = _prepared(lambda: source.builder(
            config=builder_config, data_dir=tfds_root(config.tfds_dir)))
    else:
        prepared = _real_builder(config)
    _PREPARED[config] = prepared
    return prepared


def load(config, task_specs, split, batch_size, training, seed=0,
         stream=pipeline.TRAIN_STREAM):
    """Batches of `(image, targets)` for one split.

    Args:
        config: a DataConfig.
        task_specs: TaskSpecs whose targets to produce.
        split: a TFDS split expression (`train`, `validation`, `test`,
            `train[:50%]`, ...).
        batch_size: examples per batch.
        training: shuffle, augment and repeat forever; else one ordered pass.
        seed: seed of shuffling and augmentation.
        stream: the stream of random draws (`pipeline.*_STREAM`); support
            and query batches of one seed use different streams.
    """
    prepared = builder(config)
    examples = prepared.as_dataset(split=split, shuffle_files=training)
    count = prepared.info.splits[split].num_examples
    height, width = config.image_size
    return pipeline.make_batches(
        examples, tasks_lib.dataset_spec(config), task_specs,
        config.image_size, batch_size, training, seed=seed, stream=stream,
        cache=count * height * width * _DECODED_BYTES_PER_PIXEL < CACHE_BYTES)


def num_examples(config, split):
    """Number of examples in `split` (a plain split name)."""
    return builder(config).info.splits[split].num_examples
