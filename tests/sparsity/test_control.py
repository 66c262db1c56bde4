"""Sparsity control: the budget solve, the FLOPs model, the tolerance
controller and the reference curve."""

import dataclasses

import keras
import numpy as np
import pytest
import tensorflow as tf

from ms_keras.models.backbone import build_backbone
from ms_keras import config as config_lib
from ms_keras.sparsity import budget
from ms_keras.sparsity import control
from ms_keras.sparsity import reference
from ms_keras.sparsity import groups as groups_lib
from ms_keras.sparsity import proximal
from ms_keras.sparsity import structure
from ms_keras.sparsity.stats import SparsityMeter


def trained_backbone(seed=0, steps=3):
    """resnet_tiny after a few Adam steps of random gradients (so that the
    prox's Adam metric differs between groups)."""
    keras.utils.set_random_seed(seed)
    backbone = build_backbone("resnet_tiny", (32, 32))
    optimizer = keras.optimizers.Adam(1e-2)
    variables = backbone.trainable_variables
    optimizer.build(variables)
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        optimizer.apply([tf.constant(rng.normal(size=v.shape)
                                     * rng.uniform(0.1, 2.0), v.dtype)
                         for v in variables], variables)
    return backbone, optimizer


def test_cubic_ramp_starts_at_zero_and_holds_after_its_fraction():
    assert float(control.cubic_ramp(0, 100)) == 0.0
    assert float(control.cubic_ramp(25, 100)) == pytest.approx(1 - 0.5 ** 3)
    assert float(control.cubic_ramp(50, 100)) == pytest.approx(1.0)
    assert float(control.cubic_ramp(90, 100)) == pytest.approx(1.0)


def test_inverse_softplus_round_trips_down_to_tiny_values():
    for value in (1e-9, 1e-4, 0.3, 5.0):
        for beta in (1.0, 3.0):
            raw = control.inverse_softplus(tf.constant(value, tf.float64),
                                           beta)
            back = float(tf.math.softplus(beta * raw) / beta)
            assert back == pytest.approx(value, rel=1e-6)


@pytest.mark.parametrize("percent", [5.0, 30.0, 60.0])
def test_budget_lambda_zeroes_the_requested_share_of_parameters(percent):
    backbone, optimizer = trained_backbone()
    prox = proximal.OuterProx(backbone, "channel")
    ranking = budget.GroupRanking(prox, backbone)
    lams = ranking.death_lambdas(optimizer)
    lam = ranking.lambda_for_parameters(lams, percent) * (1 + 1e-5)
    prox.apply(optimizer, lam)
    achieved = SparsityMeter(backbone).measure()["parameter_percent"]
    largest = 100.0 * ranking.sizes.max() / ranking.total
    assert abs(achieved - percent) <= largest / 2 + 1e-6
    # The groups that went are the ones with the smallest lambdas.
    order = np.argsort(np.asarray(lams))
    dead = np.concatenate([
        np.asarray(prox_norms(k)) == 0 for k in prox.kernels])
    assert dead[order[:int(dead.sum())]].all()


def prox_norms(kernel):
    return tf.sqrt(tf.reduce_sum(tf.square(kernel), axis=(0, 1, 3)))


def test_flops_model_counts_what_the_sparsity_meter_counts():
    backbone, _ = trained_backbone()
    kernels = [k.variable for k in groups_lib.penalised_kernels(backbone)]
    model = structure.FlopsModel(backbone)
    rng = np.random.default_rng(1)
    for rate in (0.0, 0.3, 0.7, 1.0):
        alive = []
        for kernel in kernels:
            keep = rng.uniform(size=kernel.shape[2]) >= rate
            kernel.assign(kernel * keep[None, None, :, None].astype(
                np.float32))
            alive.append(np.any(np.asarray(kernel) != 0, axis=(0, 1, 3)))
        measured = SparsityMeter(backbone).measure()
        flops = float(model.flops(tf.constant(np.concatenate(alive))))
        assert flops == pytest.approx(measured["structural_flops"])
        assert model.dense_flops == measured["flops"]


@pytest.mark.parametrize("speedup", [1.3, 2.0])
def test_budget_lambda_reaches_a_flops_speedup_with_the_fewest_groups(
        speedup):
    backbone, optimizer = trained_backbone()
    prox = proximal.OuterProx(backbone, "channel")
    ranking = budget.GroupRanking(prox, backbone)
    lams = ranking.death_lambdas(optimizer)
    lam = ranking.lambda_for_speedup(lams, speedup)
    prox.apply(optimizer, lam * (1 + 1e-5))
    achieved = SparsityMeter(backbone).measure()["flops_speedup"]
    assert achieved >= speedup
    # One group fewer (the last one zeroed revived) would not reach it.
    alive = np.asarray(lams) > float(lam) * (1 + 1e-5)
    ranked = np.argsort(np.asarray(lams))
    last = ranked[int((~alive).sum()) - 1]
    alive[last] = True
    assert float(ranking.structure.speedup(tf.constant(alive))) < speedup


TOLERANCE_2 = config_lib.MetaConfig(sparsity_control="tolerance",
                                    quality_tolerance=2.0)


def budget_options(**budget):
    return config_lib.MetaConfig(sparsity_control="budget", **budget)


def test_controller_refuses_an_unreachable_flops_budget():
    backbone, _ = trained_backbone()
    prox = proximal.OuterProx(backbone, "channel")
    most = budget.GroupRanking(prox, backbone).structure.max_speedup()
    controller = control.SparsityController(budget_options(
        target_flops_speedup=most + 0.5), 10)
    with pytest.raises(ValueError, match="reaches at most"):
        controller.attach(prox, backbone)


def test_flops_budget_needs_channel_sparsity():
    backbone, _ = trained_backbone()
    controller = control.SparsityController(budget_options(
        target_flops_speedup=1.5), 10)
    with pytest.raises(ValueError, match="channel sparsity"):
        controller.attach(proximal.OuterProx(backbone, "unstructured"),
                          backbone)


def test_setpoint_rises_with_slack_holds_in_the_band_and_falls_beyond():
    tolerance, rate = 0.02, 1.0
    aim = control.TOLERANCE_AIM * tolerance
    step = lambda gap, **kw: float(control.next_setpoint(
        10.0, gap, tolerance, rate, **kw))
    assert step(-0.05) == pytest.approx(11.0)
    assert step(0.0) == pytest.approx(11.0)
    assert 10.0 < step(0.9 * aim) < 10.2
    assert step(aim) == pytest.approx(10.0)
    assert step(tolerance) == pytest.approx(10.0)
    slow = rate / control.LOWERING_SLOWDOWN
    assert step(1.5 * tolerance) == pytest.approx(10.0 - slow / 2)
    assert step(3.0 * tolerance) == pytest.approx(10.0 - slow)
    # Settled: no more rising; still falling beyond the tolerance.
    assert step(0.0, settled=True) == pytest.approx(10.0)
    assert step(tolerance, settled=True) == pytest.approx(10.0)
    assert step(1.5 * tolerance, settled=True) == pytest.approx(
        10.0 - slow / 2)
    assert float(control.next_setpoint(0.1, 1.0, tolerance, rate)) == 0.0
    assert float(control.next_setpoint(98.9, -1.0, tolerance, rate)) == (
        pytest.approx(control.MAX_SETPOINT_PERCENT))


def make_tolerance_controller(reference_losses):
    curve = reference.ReferenceCurve([0.1, 1.0], [reference_losses,
                                                reference_losses])
    return control.SparsityController(
        TOLERANCE_2, 100, reference=curve, num_tasks=len(reference_losses))


def test_controller_moves_its_setpoint_with_the_measured_quality():
    controller = make_tolerance_controller([1.0, 2.0])
    # Checks every 5 steps, the tasks 1 % better than the reference.
    for step in range(20, 45, 5):
        gap = controller.observe(tf.constant([0.99, 1.98]), step)
    assert float(gap) == pytest.approx(-0.01, abs=1e-6)
    high = float(controller.setpoint)
    # Each check moves it by the rate times the steps since the last.
    assert high == pytest.approx(40 * controller.rate)
    # One task 5 % worse than the reference: the running gap (an average
    # that halves each older check's weight) reaches 2 %, then 3.5 %, and
    # beyond the tolerance the setpoint falls.
    controller.observe(tf.constant([1.0, 2.1]), 45)
    middle = float(controller.setpoint)
    assert high - 0.1 * controller.rate < middle <= high
    controller.observe(tf.constant([1.0, 2.1]), 50)
    gap = float(controller.gap())
    assert gap == pytest.approx(0.035, abs=1e-3)
    assert float(controller.setpoint) == pytest.approx(
        middle - 5 * controller.rate / control.LOWERING_SLOWDOWN
        * (gap - 0.02) / 0.02)
    # Once settled it no longer rises.
    before = float(controller.setpoint)
    controller.observe(tf.constant([0.5, 1.0]), 80)
    controller.observe(tf.constant([0.5, 1.0]), 85)
    assert float(controller.setpoint) == pytest.approx(before)


def test_controller_compares_with_the_reference_at_the_same_point():
    curve = reference.ReferenceCurve([0.25, 1.0], [[4.0], [1.0]])
    controller = control.SparsityController(TOLERANCE_2, 100,
                                            reference=curve)
    # Before the curve starts nothing is compared and nothing moves.
    assert float(controller.observe(tf.constant([40.0]), 10)) == 0.0
    assert float(controller.setpoint) == 0.0
    assert float(controller.average_weight) == 0.0
    # At step 25 the reference stood at 4.0: a loss of 3.9 has slack.
    controller.observe(tf.constant([3.9]), 25)
    assert float(controller.setpoint) > 0
    # At step 55 it stands at 2.0: the same 3.9 is far too much.
    before = float(controller.setpoint)
    controller.observe(tf.constant([3.9]), 55)
    assert float(controller.setpoint) < before


def test_reference_curve_interpolates_in_log_loss_and_holds_at_the_ends():
    curve = reference.ReferenceCurve([0.25, 0.5, 1.0],
                                   [[4.0, 1.0], [1.0, 1.0], [0.5, 2.0]])
    np.testing.assert_allclose(curve.at(0.1), [4.0, 1.0])
    np.testing.assert_allclose(curve.at(0.375), [2.0, 1.0], rtol=1e-6)
    np.testing.assert_allclose(curve.at(2.0), [0.5, 2.0])
    assert curve.first_fraction == 0.25
    for fraction in (0.0, 0.1, 0.3, 0.375, 0.75, 1.0):
        np.testing.assert_allclose(
            curve.tensor_at(tf.constant(fraction)), curve.at(fraction),
            rtol=1e-5)


def test_a_references_finished_quality_averages_its_last_quarter():
    losses = np.array([[8.0], [4.0], [2.0], [1.2], [1.0], [1.3], [1.1],
                       [0.9]])
    np.testing.assert_allclose(reference.final_losses(losses), [1.0])
    curve = reference.ReferenceCurve(np.arange(1, 9) / 8, losses)
    np.testing.assert_allclose(curve.final, [1.0])
    np.testing.assert_allclose(reference.final_losses([[3.0, 2.0]]),
                               [3.0, 2.0])


def test_reference_curve_refuses_unusable_points():
    with pytest.raises(ValueError, match="increase"):
        reference.ReferenceCurve([0.5, 0.5], [[1.0], [1.0]])
    with pytest.raises(ValueError, match="positive"):
        reference.ReferenceCurve([1.0], [[0.0]])


def test_quality_gap_is_the_worst_tasks_relative_excess():
    assert reference.quality_gap([1.1, 1.0], [1.0, 1.0]) == pytest.approx(0.1)
    assert reference.quality_gap([0.9, 0.8], [1.0, 1.0]) == pytest.approx(-0.1)


def test_the_setpoint_stops_rising_at_the_settle_fraction():
    def setpoint_after(settle, steps):
        curve = reference.ReferenceCurve([0.1, 1.0], [[1.0], [1.0]])
        controller = control.SparsityController(
            dataclasses.replace(TOLERANCE_2, settle_fraction=settle), 100,
            reference=curve)
        for step in steps:
            controller.observe(tf.constant([0.5]), step)
        return float(controller.setpoint)

    rate = 100.0 / 100  # the full swing over the run
    assert setpoint_after(0.6, (10, 50)) == pytest.approx(50 * rate)
    assert setpoint_after(0.3, (10, 29, 31, 50)) == pytest.approx(29 * rate)
    assert setpoint_after(1.0, (10, 99)) == pytest.approx(99 * rate)
