"""Pruning baselines: budgets, scores, schedules, and masks that hold."""

import keras
import numpy as np
import pytest

from ms_keras import tasks
from ms_keras.models import build_backbone
from ms_keras.models import build_multitask_model
from ms_keras.sparsity import callbacks
from ms_keras.sparsity import groups as groups_lib
from ms_keras.sparsity import proximal
from ms_keras.sparsity import pruning
from ms_keras.trainers.multitask import MultiTaskTrainer


def kernels_of(backbone):
    return {layer.name: np.asarray(layer.kernel)
            for layer in backbone.layers
            if isinstance(layer, keras.layers.Conv2D)}


@pytest.fixture(scope="module")
def backbone():
    keras.utils.set_random_seed(0)
    return build_backbone("resnet_tiny", (32, 32))


@pytest.mark.parametrize("target", [5.0, 20.0, 44.0, 44.1159, 70.0, 95.0])
@pytest.mark.parametrize("source", ["magnitude", "random"])
def test_selection_lands_within_half_a_point_of_the_budget(backbone, target,
                                                           source):
    groups = pruning.groups_of(backbone)
    scores = (pruning.magnitude_scores(kernels_of(backbone))
              if source == "magnitude" else pruning.random_scores(groups, 3))
    chosen = pruning.select(groups, scores, target)
    masks = pruning.masks_for(backbone, chosen)
    assert abs(pruning.parameter_percent(masks) - target) <= 0.5
    assert pruning.pruned_groups(masks) == chosen


def test_magnitude_prunes_the_relatively_smallest_groups(backbone):
    kernels = kernels_of(backbone)
    kernels["stage5_block1_conv2"][:, :, 3, :] *= 1e-3
    scores = pruning.magnitude_scores(kernels)
    assert min(scores, key=scores.get) == ("stage5_block1_conv2", 3)


def test_meta_scores_put_the_meta_runs_zero_groups_first(backbone):
    kernels = kernels_of(backbone)
    source = {name: np.ones(k.shape, bool) for name, k in kernels.items()}
    source["stage4_block1_conv2"][:, :, [1, 5], :] = False
    scores = pruning.meta_scores(kernels, source, seed=0)
    first = sorted(scores, key=scores.get)[:2]
    assert set(first) == {("stage4_block1_conv2", 1),
                          ("stage4_block1_conv2", 5)}


def test_progressive_target_is_zhu_and_gupta_cubic_ramp():
    values = [pruning.polynomial_target(t, 60.0, 10, 110, 10)
              for t in range(0, 130)]
    assert values[0] == values[9] == 0.0
    assert values[110] == values[129] == 60.0
    for t in (10, 40, 75, 100):
        step = 10 + (t - 10) // 10 * 10
        expected = 60.0 * (1 - (1 - (step - 10) / 100) ** 3)
        assert values[t] == pytest.approx(expected)
    # Held between updates (every 10 steps), rising fastest at the start.
    assert values[41] == values[49]
    assert values[20] - values[10] > values[100] - values[90]


def test_iterative_targets_prune_the_same_fraction_of_what_remains():
    targets = pruning.iterative_targets(44.0, 4)
    remaining = [100 - t for t in [0.0, *targets]]
    ratios = [b / a for a, b in zip(remaining, remaining[1:])]
    np.testing.assert_allclose(ratios, ratios[0])
    assert targets[-1] == pytest.approx(44.0)


def make_trainer():
    keras.utils.set_random_seed(1)
    spec = tasks.get_dataset("synthetic_nyu")
    specs = tasks.parse_tasks(spec, ["depth"])
    network = build_multitask_model(spec, specs, "resnet_tiny", (16, 16),
                                    aspp_rates=(1,))
    masks = proximal.KernelMasks(network.backbone, name="kernel_masks")
    trainer = MultiTaskTrainer(network, specs, masks=masks)
    trainer.compile(optimizer=keras.optimizers.Adam(0.05))
    trainer(np.zeros((1, 16, 16, 3), np.float32))
    return trainer


def curve(schedule_fn, final, steps):
    trainer = make_trainer()
    schedule = callbacks.PruningSchedule(
        trainer.network.backbone, trainer.masks, schedule_fn, final,
        pruning.magnitude_scores)
    schedule.set_model(trainer)
    schedule.on_train_begin()
    percent = []
    for step in range(steps):
        trainer.optimizer.iterations.assign(step)
        schedule.on_train_batch_begin(step)
        percent.append(pruning.parameter_percent(trainer.masks.masks()))
    return np.array(percent)


def test_one_shot_is_a_single_step_to_the_budget():
    percent = curve(lambda step: 44.0, 44.0, 20)
    assert abs(percent[0] - 44.0) <= 0.5
    np.testing.assert_array_equal(percent, percent[0])


def test_iterative_is_a_staircase():
    targets = pruning.iterative_targets(44.0, 4)
    percent = curve(lambda step: targets[min(step // 5, 3)], 44.0, 20)
    steps = [percent[i] for i in (0, 5, 10, 15)]
    for got, want in zip(steps, targets):
        assert abs(got - want) <= 0.5
    for start in (0, 5, 10, 15):
        np.testing.assert_array_equal(percent[start:start + 5],
                                      percent[start])
    assert all(b > a for a, b in zip(steps, steps[1:]))


def test_the_target_is_reached_only_once_the_last_round_is_pruned():
    # The last round starts at step 15, the first step after an epoch that
    # ended at iteration 15: that epoch's weights are not at the budget, so
    # model selection must not keep them.
    trainer = make_trainer()
    targets = pruning.iterative_targets(44.0, 4)
    schedule = callbacks.PruningSchedule(
        trainer.network.backbone, trainer.masks,
        lambda step: targets[min(step // 5, 3)], 44.0,
        pruning.magnitude_scores)
    schedule.set_model(trainer)
    schedule.on_train_begin()
    reached = []
    for step in range(20):
        trainer.optimizer.iterations.assign(step)
        schedule.on_train_batch_begin(step)
        if step % 5 == 4:
            trainer.optimizer.iterations.assign(step + 1)
            logs = {}
            schedule.on_epoch_end(step // 5, logs)
            reached.append(logs["pruning_target_reached"])
            assert logs["pruning_sparsity"] == pytest.approx(
                pruning.parameter_percent(trainer.masks.masks()))
    assert reached == [0.0, 0.0, 0.0, 1.0]


def test_progressive_follows_the_cubic_ramp():
    ramp = lambda step: pruning.polynomial_target(step, 50.0, 2, 42, 4)
    percent = curve(ramp, 50.0, 50)
    wanted = np.array([ramp(t) for t in range(50)])
    assert np.all(np.abs(percent - wanted) <= 0.5)
    assert np.all(np.diff(percent) >= 0)
    assert percent[1] == 0.0 and abs(percent[-1] - 50.0) <= 0.5


def test_pruned_groups_never_revive_under_adam():
    trainer = make_trainer()
    schedule = callbacks.PruningSchedule(
        trainer.network.backbone, trainer.masks, lambda step: 40.0, 40.0,
        pruning.magnitude_scores)
    rng = np.random.default_rng(2)
    images = rng.uniform(size=(8, 16, 16, 3)).astype(np.float32)
    depth = rng.uniform(1, 3, size=(8, 16, 16, 1)).astype(np.float32)
    # Moments built while every weight was alive, then pruning, then more
    # training: the zeroed weights stay exactly zero.
    trainer.fit(images, {"depth": depth}, batch_size=4, epochs=2, verbose=0)
    trainer.fit(images, {"depth": depth}, batch_size=4, epochs=3, verbose=0,
                callbacks=[schedule])
    masks = trainer.masks.masks()
    for name, kernel in kernels_of(trainer.network.backbone).items():
        assert np.all(kernel[~masks[name]] == 0), name
    assert abs(pruning.parameter_percent(masks) - 40.0) <= 0.5


def test_flops_measure_counts_what_the_sparsity_meter_counts():
    from ms_keras.models.backbone import build_backbone
    from ms_keras.sparsity.stats import SparsityMeter
    backbone = build_backbone("resnet_tiny", (32, 32))
    groups = pruning.groups_of(backbone)
    rng = np.random.default_rng(0)
    pruned = {(g.layer, g.channel) for g in groups if rng.random() < 0.4}
    masks = pruning.masks_for(backbone, pruned)
    for layer in groups_lib.conv_layers(backbone):
        layer.kernel.assign(layer.kernel * masks[layer.name].astype(
            np.float32))
    measured = SparsityMeter(backbone).measure()
    percent = pruning.FlopsMeasure(backbone)(pruned)
    assert percent == pytest.approx(100 * (1 - 1 / measured["flops_speedup"]))
    # Selecting by the measure takes the fewest groups in score order.
    scores = pruning.random_scores(groups, seed=1)
    target = pruning.percent_for_speedup(1.4)
    chosen = pruning.select(groups, scores, target,
                            measure=pruning.FlopsMeasure(backbone))
    measure = pruning.FlopsMeasure(backbone)
    assert measure(chosen) >= target
    ranked = sorted(chosen, key=lambda key: scores[key])
    assert measure(set(ranked[:-1])) < target
