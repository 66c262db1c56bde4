"""Episodes: which subsets of the tasks a meta-step trains on (Eq. 9).

An episode is a boolean mask over the chosen tasks. The paper uses every
non-empty subset (the power set, 2^N - 1 episodes); since that explodes with
N, samplers may restrict it to the full task set or to subsets of size <= k.
"""

import itertools

import numpy as np
import tensorflow as tf

from ms_keras.config import ALL_TASKS
from ms_keras.config import UNIFORM
from ms_keras.config import sampler_bound
from ms_keras.data import pipeline


def power_set(num_tasks):
    """Every non-empty subset of `num_tasks` tasks as a bool matrix.

    Rows are ordered by size, then lexicographically; there are
    `2**num_tasks - 1` of them.
    """
    if num_tasks < 1:
        raise ValueError(
            f"`num_tasks` must be >= 1. Received: num_tasks={num_tasks}")
    rows = []
    for size in range(1, num_tasks + 1):
        for subset in itertools.combinations(range(num_tasks), size):
            row = np.zeros(num_tasks, bool)
            row[list(subset)] = True
            rows.append(row)
    return np.stack(rows)


def episode_table(sampler, num_tasks):
    """The episodes a sampler draws from, uniformly.

    Args:
        sampler: `uniform` (all non-empty subsets), `all_tasks` (only the
            full set, i.e. plain multi-task episodes) or `size<=k`.
        num_tasks: number of tasks.

    Raises:
        ValueError: for an unknown sampler or k outside 1..num_tasks.
    """
    bound = sampler_bound(sampler)
    if sampler == UNIFORM:
        return power_set(num_tasks)
    if sampler == ALL_TASKS:
        return np.ones((1, num_tasks), bool)
    if not 1 <= bound <= num_tasks:
        raise ValueError(
            f"--episode_sampler={sampler}: k must be in 1-{num_tasks} for "
            f"{num_tasks} tasks.")
    table = power_set(num_tasks)
    return table[table.sum(axis=1) <= bound]


def episode_stream(table, seed):
    """An endless `tf.data` stream of episodes drawn uniformly from `table`."""
    table = tf.constant(table)
    count = int(table.shape[0])

    def draw(step):
        index = tf.random.stateless_uniform(
            (), seed=tf.stack([tf.cast(seed, tf.int64), step]), minval=0,
            maxval=count, dtype=tf.int64)
        return tf.gather(table, index)

    return tf.data.Dataset.counter().map(draw)


def meta_batches(support, query, table, meta_batch_size, seed):
    """Zips support batches, query batches and episodes into meta-batches.

    Args:
        support: endless `(images, targets)` batches from one half of the
            training split.
        query: the same from the other, disjoint half.
        table: the episode table (`episode_table`).
        meta_batch_size: episodes per meta-step.
        seed: seed of the episode draws.

    Returns:
        A `tf.data.Dataset` of dicts `support_images`, `support_targets`,
        `query_images`, `query_targets` (leading axis `meta_batch_size`),
        `episodes` (`(meta_batch_size, num_tasks)` int32 0/1: tf.distribute
        averages a first batch to build the model, which bool cannot do).
    """
    if meta_batch_size < 1:
        raise ValueError(
            "`meta_batch_size` must be >= 1. Received: "
            f"meta_batch_size={meta_batch_size}")
    zipped = tf.data.Dataset.zip(
        (support, query, episode_stream(table, seed)))
    zipped = zipped.batch(meta_batch_size, drop_remainder=True)

    def as_dict(support_batch, query_batch, episodes):
        batch = {
            "support_images": support_batch[0],
            "support_targets": support_batch[1],
            "query_images": query_batch[0],
            "query_targets": query_batch[1],
            "episodes": tf.cast(episodes, tf.int32),
        }
        return batch

    return pipeline.shard_by_data(
        zipped.map(as_dict).prefetch(tf.data.AUTOTUNE))
