"""What options may be: the enumerations and defaults the config checks
against (every layer reads them from here)."""

import re

from ms_keras.config.schema import require

OPTIMIZERS = ("adam", "sgd")
LEARNING_RATE_SCHEDULES = ("constant", "step", "cosine")
DTYPE_POLICIES = ("float32", "mixed_bfloat16", "mixed_float16")
# `step` divides the learning rate by STEP_DECAY from this share of the run.
STEP_DECAY_AT, STEP_DECAY = 0.75, 10.0
LOSS_WEIGHTINGS = ("uncertainty", "equal")
ACTIVATIONS = ("relu", "gelu")
TRAIN_SCOPES = ("all", "new_heads")
STRATEGIES = ("default", "mirrored", "multi_worker", "tpu")
# Sparsity kinds; `none` is the absence of a sparsity section.
CHANNEL, UNSTRUCTURED, NONE = "channel", "unstructured", "none"
SPARSITY_KINDS = (CHANNEL, UNSTRUCTURED)
# How the outer prox fits the optimizer (`sparsity.proximal`).
ADAM_METRIC_RESET, ADAM_METRIC = "adam_metric_reset", "adam_metric"
RESET_MOMENTS, PLAIN = "reset_moments", "plain"
PROX_STEPS = (ADAM_METRIC_RESET, ADAM_METRIC, RESET_MOMENTS, PLAIN)
INNER_PROX = ("differentiable", "straight_through", "off")
LAMBDA_OPTIMIZERS = ("sgd", "adam")
# Sparsity control of a sparse meta run (`sparsity.control`).
TOLERANCE, BUDGET, PAPER = "tolerance", "budget", "paper"
# A meta field that acts only in a sparse meta run (`schema.NEEDS`).
SPARSE = "sparse"
CONTROLS = (TOLERANCE, BUDGET, PAPER)
DEFAULT_QUALITY_TOLERANCE = 2.0
DEFAULT_LAMBDA_INIT = 1e-3
# Episode samplers (`meta.episodes`).
UNIFORM, ALL_TASKS = "uniform", "all_tasks"
SAMPLER_HELP = "uniform | all_tasks | size<=k"
_BOUNDED = re.compile(r"^size<=(\d+)$")
# Model selection: the validation figure followed, and whether lower is
# better.
MONITORS = {"task_losses": True, "delta_m": False, "loss": True}
PRUNING_METHODS = ("one_shot", "iterative", "progressive", "sparse_training")
# Methods that prune a trained run (--from_dir) rather than a fresh model.
PRUNES_A_TRAINED_RUN = ("one_shot", "iterative")
MAGNITUDE, RANDOM, META = "magnitude", "random", "meta"
MASK_SOURCES = (MAGNITUDE, RANDOM, META)
DEFAULT_SYNTHETIC_EXAMPLES = (1000, 200, 200)
DEFAULT_ASPP_RATES = (12, 24, 36)  # DeepLabv3 at output stride 8


def sampler_bound(sampler):
    """k of a `size<=k` sampler, else None.

    Raises:
        ValueError: unless `sampler` is `uniform`, `all_tasks` or `size<=k`.
    """
    if sampler in (UNIFORM, ALL_TASKS):
        return None
    match = _BOUNDED.match(sampler or "")
    require(match, f"--episode_sampler={sampler}: expected {SAMPLER_HELP}.")
    return int(match.group(1))
