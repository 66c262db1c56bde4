"""Channel pruning baselines (the paper's Table 5): which groups to prune to
reach a parameter or a FLOPs budget, and when.

Groups are the input-channel groups of the backbone convs that meta-sparsity
zeroes (`groups.py`), so the slim export and the FLOP counts apply unchanged.
A budget is a backbone *parameter* sparsity (% of conv-kernel weights that
are zero); groups differ in size (`n_g = kh * kw * out_channels`), so groups
are taken in score order and one that would overshoot the budget is passed
over for smaller ones, which lands within half a point of any budget on the
backbones here (their largest group is 1.2 % of resnet_tiny's weights).

Scores (lower is pruned first):
- `magnitude`: a group's RMS over its layer's RMS (the layers' scales differ
  and batch norm makes each layer's scale arbitrary);
- `random`: a seeded random order;
- `meta`: the groups a meta-sparsity run zeroed first (randomly ordered among
  themselves), then by magnitude.

Schedules: `one_shot` prunes once; `iterative` prunes the same fraction of
the remaining weights in each of `rounds` rounds (a staircase); `progressive`
follows Zhu & Gupta (2017)'s cubic ramp, as tfmot's `PolynomialDecay`.
"""

import dataclasses

import numpy as np

from ms_keras.config import MAGNITUDE
from ms_keras.config import MASK_SOURCES
from ms_keras.config import META
from ms_keras.config import RANDOM
from ms_keras.sparsity import groups as groups_lib
from ms_keras.sparsity import structure as structure_lib


@dataclasses.dataclass(frozen=True)
class Group:
    """One input-channel group of a backbone conv."""

    layer: str
    channel: int
    size: int


def groups_of(backbone):
    """Every input-channel group of the backbone's convs, in layer order."""
    found = []
    for layer in groups_lib.conv_layers(backbone):
        kh, kw, cin, cout = groups_lib.group_kernel(layer).shape
        found += [Group(layer.name, c, int(kh * kw * cout))
                  for c in range(cin)]
    return found


def magnitude_scores(kernels):
    """`{(layer, channel): group RMS / layer RMS}` (dead groups score 0)."""
    scores = {}
    for name, kernel in kernels.items():
        kernel = np.asarray(kernel, np.float64)
        layer_rms = np.sqrt(np.mean(kernel ** 2))
        group_rms = np.sqrt(np.mean(kernel ** 2, axis=(0, 1, 3)))
        for channel, value in enumerate(group_rms):
            scores[name, channel] = (value / layer_rms if layer_rms > 0
                                     else 0.0)
    return scores


def random_scores(groups, seed):
    """`{(layer, channel): uniform draw}`, a seeded random order."""
    draws = np.random.default_rng(seed).random(len(groups))
    return {(g.layer, g.channel): float(d) for g, d in zip(groups, draws)}


def meta_scores(kernels, source_masks, seed):
    """The groups `source_masks` zeroed first (random order among them), then
    the others by magnitude."""
    magnitude = magnitude_scores(kernels)
    order = np.random.default_rng(seed)
    scores = {}
    for (name, channel), value in magnitude.items():
        dead = not np.any(source_masks[name][:, :, channel, :])
        # Dead groups in [-2, -1), live ones >= 0: dead always come first.
        scores[name, channel] = (-2.0 + order.random()) if dead else value
    return scores


def select(groups, scores, target_percent, pruned=(), measure=None):
    """The groups to prune so that `target_percent` of the weights are zero
    (or, with `measure`, of what it measures).

    Args:
        groups: every group (`groups_of`).
        scores: `{(layer, channel): score}`, lower pruned first.
        target_percent: the parameter sparsity to reach (0-100).
        pruned: groups already pruned (kept pruned, counted in the budget).
        measure: optional `set of pruned (layer, channel) -> percent`, a
            measure that grows with every pruned group (the structural FLOPs
            removed, `FlopsMeasure`); the fewest groups in score order that
            reach the target are taken.

    Returns:
        The set of `(layer, channel)` pruned, a superset of `pruned`.
    """
    if measure is not None:
        return _select_by_measure(groups, scores, target_percent, pruned,
                                  measure)
    total = sum(g.size for g in groups)
    budget = target_percent / 100.0 * total
    chosen = set(pruned)
    count = sum(g.size for g in groups if (g.layer, g.channel) in chosen)
    smallest = min(g.size for g in groups)
    for group in sorted(groups, key=lambda g: scores[g.layer, g.channel]):
        key = (group.layer, group.channel)
        if key in chosen:
            continue
        if budget - count < smallest / 2:
            break
        # Pass over a group that would overshoot by more than it closes.
        if count + group.size - budget > budget - count:
            continue
        chosen.add(key)
        count += group.size
    return chosen


def _select_by_measure(groups, scores, target_percent, pruned, measure):
    ranked = [(g.layer, g.channel) for g in sorted(
        groups, key=lambda g: scores[g.layer, g.channel])
        if (g.layer, g.channel) not in set(pruned)]

    def reaches(count):
        return measure(set(pruned) | set(ranked[:count])) >= (
            target_percent - 1e-9)

    low, high = 0, len(ranked)
    while low < high:  # the smallest prefix that reaches the target
        middle = (low + high) // 2
        if reaches(middle):
            high = middle
        else:
            low = middle + 1
    return set(pruned) | set(ranked[:low])


class FlopsMeasure:
    """Percent of the backbone's FLOPs removed by pruned groups, in the
    structural count `stats.SparsityMeter` reports (`flops_speedup = 1 /
    (1 - percent / 100)`).

    Args:
        backbone: the functional backbone.
    """

    def __init__(self, backbone):
        layers = groups_lib.conv_layers(backbone)
        self._names = [layer.name for layer in layers]
        self._channels = [groups_lib.group_kernel(layer).shape[2]
                          for layer in layers]
        self._model = structure_lib.FlopsModel(backbone)

    def __call__(self, pruned):
        alive = np.concatenate([
            [(name, c) not in pruned for c in range(channels)]
            for name, channels in zip(self._names, self._channels)])
        return 100.0 * (1.0 - float(self._model.flops(alive))
                        / self._model.dense_flops)


def percent_for_speedup(speedup):
    """The removed-FLOPs percent of a FLOPs speed-up."""
    return 100.0 * (1.0 - 1.0 / speedup)


def masks_for(backbone, pruned):
    """`{conv name: bool mask}` that zeroes the pruned groups."""
    masks = {}
    for layer in groups_lib.conv_layers(backbone):
        mask = np.ones(groups_lib.group_kernel(layer).shape, bool)
        for name, channel in pruned:
            if name == layer.name:
                mask[:, :, channel, :] = False
        masks[layer.name] = mask
    return masks


def pruned_groups(masks):
    """The `(layer, channel)` groups a mask dict zeroes entirely."""
    return {(name, c) for name, mask in masks.items()
            for c in range(mask.shape[2]) if not np.any(mask[:, :, c, :])}


def parameter_percent(masks):
    """% of the weights a mask dict zeroes."""
    total = sum(mask.size for mask in masks.values())
    return 100.0 * sum(int((~mask).sum()) for mask in masks.values()) / total


def polynomial_target(step, final_percent, begin_step, end_step, frequency,
                      initial_percent=0.0, power=3):
    """Zhu & Gupta (2017): the sparsity in force at `step`.

    `s_t = s_f + (s_i - s_f) * (1 - (t - t_0) / (t_n - t_0))^power`, updated
    every `frequency` steps between `begin_step` and `end_step` (tfmot's
    `PolynomialDecay`); `initial_percent` before, `final_percent` after.
    """
    if step < begin_step:
        return initial_percent
    if step >= end_step:
        return final_percent
    step = begin_step + (step - begin_step) // frequency * frequency
    progress = (step - begin_step) / (end_step - begin_step)
    return final_percent + (initial_percent - final_percent) * (
        1.0 - progress) ** power


def iterative_targets(final_percent, rounds):
    """Targets of each round, pruning the same fraction of the remaining
    weights each time: `100 * (1 - (1 - s)^(k / rounds))`."""
    kept = 1.0 - final_percent / 100.0
    return [100.0 * (1.0 - kept ** (k / rounds)) for k in range(1, rounds + 1)]


SCHEDULES = ("one_shot", "iterative", "progressive", "sparse_training")


def ramp_end(total_steps, begin_step, end_step):
    """The last step of progressive pruning (0: two thirds of training)."""
    return end_step or max(begin_step + 1, 2 * total_steps // 3)


def schedule(method, final_percent, total_steps, rounds=4, begin_step=0,
             end_step=0, frequency=10):
    """`step -> percent in force` of a pruning method.

    `one_shot` and `sparse_training` prune to the budget before the first
    step; `iterative` splits training into `rounds` equal rounds, each
    starting with a prune (`iterative_targets`); `progressive` follows
    `polynomial_target`.
    """
    if method == "progressive":
        end = ramp_end(total_steps, begin_step, end_step)
        return lambda step: polynomial_target(step, final_percent,
                                              begin_step, end, frequency)
    if method == "iterative":
        targets = iterative_targets(final_percent, rounds)
        per_round = max(1, total_steps // rounds)
        return lambda step: targets[min(step // per_round, rounds - 1)]
    if method in SCHEDULES:
        return lambda step: final_percent
    raise ValueError(f"Unknown pruning method '{method}'. Allowed: "
                     f"{', '.join(SCHEDULES)}")


def budget_step(method, total_steps, rounds=4, begin_step=0, end_step=0):
    """The first step at which the final budget is in force."""
    if method == "iterative":
        return (rounds - 1) * max(1, total_steps // rounds)
    if method == "progressive":
        return ramp_end(total_steps, begin_step, end_step)
    return 0


def scorer(source, groups, seed=0, source_masks=None):
    """`{conv name: kernel} -> scores` of a mask source (`MASK_SOURCES`).

    Random scores are drawn once, so repeated pruning (iterative,
    progressive) keeps one random order.
    """
    if source == RANDOM:
        draws = random_scores(groups, seed)
        return lambda kernels: draws
    if source == META:
        return lambda kernels: meta_scores(kernels, source_masks, seed)
    if source == MAGNITUDE:
        return magnitude_scores
    raise ValueError(f"Unknown mask source '{source}'. Allowed: "
                     f"{', '.join(MASK_SOURCES)}")
