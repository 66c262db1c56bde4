import numpy as np
import pytest
import tensorflow as tf

from ms_keras.meta import episodes


def test_power_set_has_every_non_empty_subset_once():
    table = episodes.power_set(4)
    assert table.shape == (15, 4)
    assert len({tuple(row) for row in table}) == 15
    assert table.sum(axis=1).min() == 1
    assert table.sum(axis=1).tolist() == sorted(table.sum(axis=1).tolist())


@pytest.mark.parametrize("sampler,rows,max_size", [
    ("uniform", 127, 7), ("all_tasks", 1, 7), ("size<=2", 28, 2),
    ("size<=1", 7, 1)])
def test_samplers_restrict_the_table(sampler, rows, max_size):
    table = episodes.episode_table(sampler, 7)
    assert table.shape == (rows, 7)
    assert table.sum(axis=1).max() == max_size


@pytest.mark.parametrize("sampler,message", [
    ("size<=0", "k must be in 1-3"), ("size<=4", "k must be in 1-3"),
    ("random", "expected uniform | all_tasks | size<=k")])
def test_bad_samplers_are_rejected(sampler, message):
    with pytest.raises(ValueError, match=message):
        episodes.episode_table(sampler, 3)


def test_stream_is_uniform_and_seeded():
    table = episodes.power_set(3)
    draws = [tuple(e.numpy()) for e in
             episodes.episode_stream(table, seed=5).take(1400)]
    again = [tuple(e.numpy()) for e in
             episodes.episode_stream(table, seed=5).take(1400)]
    assert draws == again
    counts = np.array([draws.count(tuple(row)) for row in table])
    assert counts.min() > 140 and counts.max() < 260  # ~200 each


def test_meta_batches_stack_support_query_and_episodes():
    images = tf.data.Dataset.from_tensors(
        (tf.zeros((2, 4, 4, 3)), {"depth": tf.zeros((2, 4, 4, 1))})).repeat()
    batch = next(iter(episodes.meta_batches(
        images, images, episodes.power_set(2), 3, seed=0)))
    assert batch["support_images"].shape == (3, 2, 4, 4, 3)
    assert batch["query_targets"]["depth"].shape == (3, 2, 4, 4, 1)
    assert batch["episodes"].shape == (3, 2)
    assert batch["episodes"].dtype == tf.int32  # 0/1; bool cannot be averaged
