"""What sparsity control adds to an experiment: which epoch it keeps, the
constraint it checks every epoch, and a FLOPs budget's feasibility."""

import os

from ms_keras import build
from ms_keras import config as config_lib
from ms_keras import run_dir
from ms_keras.sparsity import callbacks as sparsity_callbacks
from ms_keras.sparsity import structure as sparsity_structure
from ms_keras.trainers import checkpoint


def monitored(training):
    """`(log name, mode)` of the model-selection figure."""
    lower_is_better = config_lib.MONITORS[training.monitor]
    return f"val_{training.monitor}", "min" if lower_is_better else "max"


def selection(config):
    """The `checkpoint.EpochRanking` arguments of the best checkpoint.

    A tolerance-mode run keeps its sparsest epoch that meets the tolerance
    (or, if none does, the one closest to it; within one point of sparsity
    the one closest to the reference); a budget run the best `--monitor`
    value among epochs on the budget; a pruning run the best among epochs
    with its budget in force.
    """
    monitor, mode = monitored(config.training)
    control = config.sparsity_control
    if control == config_lib.TOLERANCE:
        return dict(checkpoint.TOLERANCE_SELECTION)
    if control == config_lib.BUDGET:
        return dict(monitor=monitor, mode=mode, eligible="constraint_holds")
    if config.pruning:
        return dict(monitor=monitor, mode=mode,
                    eligible="pruning_target_reached")
    return dict(monitor=monitor, mode=mode)


def sparsity_constraint(config, trainer):
    """The `SparsityConstraint` callback of a budget or tolerance run."""
    meta = config.meta
    reference = None
    if config.sparsity_control == config_lib.TOLERANCE:
        reference = build.reference_losses(build.reference_run_dir(config),
                                           config.tasks)
    return sparsity_callbacks.SparsityConstraint(
        trainer.network.backbone, config.sparsity_control,
        target_sparsity=meta.target_sparsity,
        target_flops_speedup=meta.target_flops_speedup,
        quality_tolerance=meta.quality_tolerance, reference=reference,
        task_names=config.tasks)



def check_flops_target(config, speedup):
    """Raises ValueError for a FLOPs speed-up the backbone cannot reach."""
    backbone = build.build_network(config).backbone
    most = sparsity_structure.FlopsModel(backbone).max_speedup()
    if speedup >= most:
        raise ValueError(
            f"--target_flops_speedup={speedup}: this backbone reaches at most "
            f"{most:.2f}x, with every group zeroed.")



def is_reference(config):
    """Whether `config` is a tolerance-mode run's own dense reference."""
    return (config.meta is None and os.path.basename(os.path.normpath(
        config.model_dir)) == run_dir.REFERENCE_DIR)
