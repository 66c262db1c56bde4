"""Flags of `train` that define the data, model, sparsity and meta-learning.

The training-loop flags shared with `finetune` are in `training_flags`.
"""

from absl import flags

from ms_keras import common_flags
from ms_keras import data as data_lib
from ms_keras import training_flags  # noqa: F401  (defines --tasks, ...)
from ms_keras import tasks as tasks_lib
from ms_keras.meta import episodes as episodes_lib
from ms_keras.sparsity import groups as groups_lib
from ms_keras.models import BACKBONES
from ms_keras.models.heads import DEFAULT_ASPP_RATES
from ms_keras.training import config as config_lib

# Data
DATASET = flags.DEFINE_enum(
    "dataset", "synthetic_nyu", tasks_lib.DATASET_NAMES,
    "Dataset. synthetic_* are built in; nyu and celeba read --data_dir.")
IMAGE_SIZE = flags.DEFINE_list(
    "image_size", ["64", "64"], "height,width fed to the model; multiples "
    "of 8. Synthetic data is rendered at this size.")
SEGMENTATION_CLASSES = flags.DEFINE_integer(
    "segmentation_classes", None, "Override the number of segmentation "
    "classes: 13 or 40 for nyu, 3 (background/hair/skin) or 19 for celeba.")
SYNTHETIC_EXAMPLES = flags.DEFINE_list(
    "synthetic_examples", [str(n) for n in data_lib.DEFAULT_SYNTHETIC_EXAMPLES],
    "train,validation,test sizes of a synthetic dataset.")
SYNTHETIC_SEED = flags.DEFINE_integer(
    "synthetic_seed", 0, "Seed of the synthetic data generator.")
SYNTHETIC_HOLES = flags.DEFINE_boolean(
    "synthetic_holes", True, "Punch Kinect-like holes (invalid depth and "
    "normals) into synthetic_nyu.")

# Model
BACKBONE = flags.DEFINE_enum(
    "backbone", "resnet_tiny", list(BACKBONES), "Dilated ResNet backbone.")
ACTIVATION = flags.DEFINE_enum(
    "activation", "relu", ["relu", "gelu"], "Activation of every block.")
HEAD_FILTERS = flags.DEFINE_integer(
    "head_filters", 0, "Width of the task heads (0: the backbone's default).",
    lower_bound=0)
ASPP_RATES = flags.DEFINE_list(
    "aspp_rates", [str(r) for r in DEFAULT_ASPP_RATES],
    "Dilation rates of the ASPP branches.")

# Training
MODE = flags.DEFINE_enum(
    "mode", "mtl", list(config_lib.MODES),
    "stl: one task; mtl: all --tasks jointly (Alg. 1); meta: MAML over "
    "multi-task episodes (Alg. 3).")
# Sparsity
SPARSITY = flags.DEFINE_enum(
    "sparsity", groups_lib.NONE, list(groups_lib.KINDS),
    "Penalty on the backbone convs: none, channel (group lasso over input "
    "channels, Eq. 5) or unstructured (l1).")
LAM = flags.DEFINE_float(
    "lam", 0.0, "Fixed lambda of a sparse stl/mtl run (paper: 1e-3, 1e-4, "
    "1e-5).")
LAMBDA_INIT = flags.DEFINE_float(
    "lambda_init", None, "Initial lambda of a meta run (default: drawn from "
    "U[0.1, 1] with --seed).")
LAMBDA_LR = flags.DEFINE_float(
    "lambda_lr", 0.0, "Learning rate of lambda in a meta run (0: "
    "--learning_rate).")
LAMBDA_BETA = flags.DEFINE_float(
    "lambda_beta", 1.0, "Softplus sharpness: lam = softplus(beta*raw)/beta.")
SPARSITY_LOG_STEPS = flags.DEFINE_integer(
    "sparsity_log_steps", 1, "Steps between TensorBoard sparsity summaries "
    "(lambda, sparsity/parameter, sparsity/group, per-layer channels).")

# Meta-learning
META_BATCH_SIZE = flags.DEFINE_integer(
    "meta_batch_size", 1, "Episodes per meta-update.")
INNER_STEPS = flags.DEFINE_integer(
    "inner_steps", 1, "SGD steps of the inner loop (k).")
INNER_LR = flags.DEFINE_float("inner_lr", 1e-2, "Inner-loop learning rate.")
FIRST_ORDER = flags.DEFINE_boolean(
    "first_order", False, "First-order meta-gradients (FOMAML) instead of "
    "second order.")
INNER_PROX = flags.DEFINE_boolean(
    "inner_prox", True, "Apply the prox after each inner step (lambda then "
    "gets its implicit meta-gradient, Eq. 15).")
REGROW_PROB = flags.DEFINE_float(
    "regrow_prob", 0.0, "Probability that a zeroed group is re-initialised "
    "(Glorot) in the fast weights of an episode (Table 7).")
INNER_CLIP_NORM = flags.DEFINE_float(
    "inner_clip_norm", 0.0, "Clip each inner-loop gradient to this global "
    "norm (0: off). Guards the inner step on kernels the prox has shrunk "
    "towards zero, whose gradients grow like 1/norm behind batch norm.",
    lower_bound=0.0)
EPISODE_SAMPLER = flags.DEFINE_string(
    "episode_sampler", episodes_lib.UNIFORM,
    f"Episodes drawn per meta-step: {episodes_lib.SAMPLER_HELP} "
    "(uniform: every non-empty task subset, Eq. 9).")



for _name in ("meta_batch_size", "inner_steps", "inner_lr", "lambda_init",
              "lambda_beta", "sparsity_log_steps"):
    common_flags.register_positive(_name)

flags.register_validator("lam", lambda v: v >= 0, message="must be >= 0")
flags.register_validator("lambda_lr", lambda v: v >= 0, message="must be >= 0")
flags.register_validator("regrow_prob", lambda v: 0 <= v <= 1,
                         message="must be in [0, 1]")

# Flags that only mean something in some modes; given elsewhere they would
# silently do nothing, so they are refused.
_META_ONLY = ("meta_batch_size", "inner_steps", "inner_lr", "first_order",
              "inner_prox", "regrow_prob", "episode_sampler", "lambda_init",
              "lambda_lr", "inner_clip_norm")
_SPARSE_ONLY = ("lam", "lambda_init", "lambda_lr", "lambda_beta",
                "regrow_prob", "inner_prox", "sparsity_log_steps")


def _given(name):
    return flags.FLAGS[name].present


@flags.multi_flags_validator(
    ["mode", "sparsity", *sorted(set(_META_ONLY + _SPARSE_ONLY))])
def _check_mode_specific_flags(values):
    mode, sparsity = values["mode"], values["sparsity"]
    for name in _META_ONLY:
        if mode != "meta" and _given(name):
            raise flags.ValidationError(
                f"--{name} applies to --mode=meta only (got --mode={mode})")
    for name in _SPARSE_ONLY:
        if sparsity == groups_lib.NONE and _given(name):
            raise flags.ValidationError(
                f"--{name} needs --sparsity=channel or unstructured (got "
                "--sparsity=none)")
    if mode == "meta" and _given("lam"):
        raise flags.ValidationError(
            "--lam fixes lambda for stl/mtl runs; --mode=meta learns it "
            "(set its start with --lambda_init)")
    if mode != "meta" and sparsity != groups_lib.NONE and not values["lam"]:
        raise flags.ValidationError(
            f"--mode={mode} --sparsity={sparsity} needs --lam > 0 (the paper "
            "uses 1e-3, 1e-4, 1e-5)")
    return True


@flags.multi_flags_validator(["episode_sampler", "tasks", "dataset",
                              "segmentation_classes"])
def _check_episode_sampler(values):
    try:
        spec = tasks_lib.get_dataset(values["dataset"],
                                     values["segmentation_classes"])
        count = len(values["tasks"]) if values["tasks"] else len(spec.tasks)
        episodes_lib.episode_table(values["episode_sampler"], count)
    except ValueError as e:
        raise flags.ValidationError(str(e)) from None
    return True


@flags.validator("image_size")
def _check_image_size(values):
    size = common_flags.parse_ints(values, "image_size")
    if len(size) != 2 or min(size) <= 0 or any(s % 8 for s in size):
        raise flags.ValidationError(
            f"--image_size={','.join(values)}: expected height,width, two "
            "positive multiples of 8")
    return True


common_flags.register_positive_ints(
    "synthetic_examples", count=3,
    expected="train,validation,test, three positive counts")
common_flags.register_positive_ints("aspp_rates")


@flags.multi_flags_validator(["dataset", "segmentation_classes"])
def _check_dataset(values):
    # --tasks is shared with other binaries (export accepts `none`), so it is
    # checked against the dataset when the run is configured, not here.
    try:
        tasks_lib.get_dataset(values["dataset"], values["segmentation_classes"])
    except ValueError as e:
        raise flags.ValidationError(
            f"--segmentation_classes={values['segmentation_classes']}: {e}"
        ) from None
    return True
