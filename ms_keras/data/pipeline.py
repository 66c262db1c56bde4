"""From stored examples to model-ready `(image, targets)` batches.

Stored examples (TFDS feature dicts) are converted to the conventions of
DESIGN.md: images float32 in [0, 1], segmentation int32 with 255 = ignore,
depth `(h, w, 1)` metres with 0 = invalid, normals `(h, w, 3)` unit vectors
with all-zero = invalid, edges `(h, w, 1)` in {0, 1}, attributes `(1,)` in
{0, 1}. Targets are a dict keyed by task name.
"""

import tensorflow as tf

from ms_keras import task_kinds
from ms_keras.data import sources


def _resize_nearest(x, size):
    return tf.image.resize(x, size, method="nearest")


def resize_stored_example(example, size):
    """Resizes a stored example (TFDS layout), keeping dtypes and holes.

    The image is resized bilinearly; segmentation, edges and depth by nearest
    neighbour (labels stay labels, invalid depth stays 0); normals bilinearly
    and renormalised, zero where the nearest source normal was invalid.
    """
    out = dict(example)
    image = tf.image.resize(example["image"], size, method="bilinear")
    if example["image"].dtype == tf.uint8:
        image = tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8)
    out["image"] = image
    for key in ("segmentation", "edges", "depth"):
        if key in example:
            out[key] = _resize_nearest(example[key][..., None], size)[..., 0]
    if "normals" in example:
        normals = tf.cast(example["normals"], tf.float32)
        valid = tf.cast(tf.reduce_any(normals != 0, axis=-1, keepdims=True),
                        tf.float32)
        valid = _resize_nearest(valid, size)
        smooth = tf.math.l2_normalize(
            tf.image.resize(normals, size, method="bilinear"), axis=-1)
        out["normals"] = smooth * valid
    return out


def _to_targets(example, dataset, task_specs):
    targets = {}
    for task in task_specs:
        kind = task_kinds.kind_of(task)
        value = example[kind.feature]
        if not kind.dense:
            # One stored vector holds every task of the kind, in the
            # dataset's task order (CelebA's attributes).
            shared = [t.name for t in dataset.tasks if t.kind == task.kind]
            index = shared.index(task.name)
            value = value[index:index + 1]
        value = tf.cast(value, kind.target_dtype)
        if kind.channel_axis:
            value = value[..., None]
        table = sources.get(dataset.name).label_table(task.output_channels)
        if kind.class_labels and table is not None:
            value = tf.gather(tf.constant(table, tf.int32), value)
        targets[task.name] = value
    return targets


def example_to_inputs(example, dataset, task_specs, image_size):
    """Converts one stored example to `(image, targets)`.

    Args:
        example: dict of stored features (TFDS layout of `data.features`).
        dataset: the DatasetSpec.
        task_specs: TaskSpecs whose targets to produce.
        image_size: `(height, width)` the model expects.
    """
    stored = tuple(example["image"].shape[:2])
    if stored != tuple(image_size):
        example = resize_stored_example(example, image_size)
    image = tf.cast(example["image"], tf.float32)
    if example["image"].dtype == tf.uint8:
        image = image / 255.0
    return image, _to_targets(example, dataset, task_specs)


def flip_horizontally(image, targets, dataset, task_specs):
    """Mirrors an example left-right, keeping every target consistent.

    Each kind says how its values turn (`TaskKind.flip_sign`: normals get
    their x component negated); a dataset's class labels swap by its
    `Source.mirror_table` (CelebA's left/right parts).
    """
    image = tf.reverse(image, axis=[1])
    flipped = {}
    for task in task_specs:
        kind = task_kinds.kind_of(task)
        value = targets[task.name]
        if kind.dense:
            value = tf.reverse(value, axis=[1])
        if kind.flip_sign is not None:
            value = value * tf.constant(kind.flip_sign, value.dtype)
        table = sources.get(dataset.name).mirror_table(task.output_channels)
        if kind.class_labels and table is not None:
            value = tf.gather(tf.constant(table, tf.int32), value)
        flipped[task.name] = value
    return image, flipped


MAX_SCALE = 1.5


# Streams of random draws; each gets its own key (`stream_key`).
TRAIN_STREAM, SUPPORT_STREAM, QUERY_STREAM = 0, 1, 2


def stream_key(seed, stream):
    """The stateless key of one stream of draws under `seed`."""
    return tf.random.experimental.stateless_fold_in(
        tf.constant([seed, 0], tf.int64), stream)


def augmentation_keys(key, index):
    """Independent keys `(flip, zoom, crop)` of example `index` of a stream.

    Derived with `stateless_fold_in` and `stateless_split`, so no two draws
    of any stream, example or purpose share a key.
    """
    per_example = tf.random.experimental.stateless_fold_in(key, index)
    return tf.unstack(tf.random.experimental.stateless_split(per_example, 3))


def random_scale_crop(image, targets, task_specs, zoom_key, crop_key,
                      max_scale=MAX_SCALE):
    """Zooms in by a random factor in [1, max_scale] and crops back.

    Image bilinear, dense targets nearest-neighbour; depth is divided by the
    factor (a zoomed view is a closer camera). Normals do not change under
    scaling; attributes are untouched. Stateless in the two keys.
    """
    height, width = image.shape[0], image.shape[1]
    scale = tf.random.stateless_uniform((), seed=zoom_key, minval=1.0,
                                        maxval=max_scale)
    size = tf.cast(tf.math.ceil(scale * [height, width]), tf.int32)
    offsets = tf.random.stateless_uniform(
        (2,), seed=crop_key, minval=0.0, maxval=1.0)
    top = tf.cast(offsets[0] * tf.cast(size[0] - height + 1, tf.float32),
                  tf.int32)
    left = tf.cast(offsets[1] * tf.cast(size[1] - width + 1, tf.float32),
                   tf.int32)

    def crop(x, method):
        x = tf.image.resize(x, size, method=method)
        return x[top:top + height, left:left + width]

    image = crop(image, "bilinear")
    scaled = {}
    for task in task_specs:
        kind = task_kinds.kind_of(task)
        value = targets[task.name]
        if kind.dense:
            expand = len(value.shape) == 2
            resized = crop(value[..., None] if expand else value, "nearest")
            value = resized[..., 0] if expand else resized
            if kind.zoom_divides:
                value = value / scale
        scaled[task.name] = value
    return image, scaled


def augment(image, targets, dataset, task_specs, keys):
    """Random horizontal flip (probability 1/2), then a random scale-crop.

    Both keep every target consistent with the image; stateless in `keys`
    (`augmentation_keys`).
    """
    flip_key, zoom_key, crop_key = keys
    coin = tf.random.stateless_uniform((), seed=flip_key)
    image, targets = tf.cond(
        coin < 0.5,
        lambda: flip_horizontally(image, targets, dataset, task_specs),
        lambda: (image, targets))
    return random_scale_crop(image, targets, task_specs, zoom_key, crop_key)


def make_batches(examples, dataset, task_specs, image_size, batch_size,
                 training, seed=0, cache=True, stream=TRAIN_STREAM):
    """Turns a dataset of stored examples into `(image, targets)` batches.

    Args:
        examples: `tf.data.Dataset` of stored feature dicts.
        dataset: the DatasetSpec.
        task_specs: TaskSpecs whose targets to produce.
        image_size: `(height, width)` the model expects.
        batch_size: examples per batch.
        training: shuffle, augment and repeat forever (batches of exactly
            `batch_size`); otherwise one ordered pass.
        seed: seed of shuffling and augmentation.
        cache: keep converted examples in memory after the first pass.
        stream: which stream of draws (`TRAIN_STREAM`, `SUPPORT_STREAM`,
            `QUERY_STREAM`): one seed gives independent streams.

    Returns:
        A batched, prefetched `tf.data.Dataset`.
    """
    ds = examples.map(
        lambda ex: example_to_inputs(ex, dataset, task_specs, image_size),
        num_parallel_calls=tf.data.AUTOTUNE)
    if cache:
        ds = ds.cache()
    if training:
        key = stream_key(seed, stream)
        shuffle_seed = int(key.numpy()[0] % (2 ** 31 - 1))
        ds = ds.shuffle(2048, seed=shuffle_seed,
                        reshuffle_each_iteration=True).repeat()
        ds = ds.enumerate().map(
            lambda i, pair: augment(pair[0], pair[1], dataset, task_specs,
                                    augmentation_keys(key, i)),
            num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.batch(batch_size, drop_remainder=training)
    return shard_by_data(ds.prefetch(tf.data.AUTOTUNE))


def shard_by_data(ds):
    """Lets tf.distribute shard `ds` over workers by element.

    The examples live in one TFRecord file per split, too few for the default
    file-based sharding of a multi-worker strategy.
    """
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = (
        tf.data.experimental.AutoShardPolicy.DATA)
    return ds.with_options(options)
