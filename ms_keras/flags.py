"""Command-line flags of the binaries, one `define_*_flags()` per concern.

Each binary defines the concerns it honours (so it accepts no flag that would
do nothing) and maps them onto an `ExperimentConfig` with the functions at
the bottom. A flag's name is the config field it sets; the config validates
(one rule, one place) and every section's rule runs as an absl validator, so
a bad value is reported before any work starts.

Mistakes at the command line end as one line on stderr and a non-zero exit
code: flag errors (validators) exit with 2, problems found while preparing a
run (tasks against the dataset, the data files, the run directory) with 1.
Neither prints a traceback.
"""

import dataclasses
import datetime
import os
import re
import sys

from absl import flags
from absl import logging

from ms_keras import config as config_lib
from ms_keras import data as data_lib
from ms_keras import runtime
from ms_keras import tasks as tasks_lib
from ms_keras.meta import episodes as episodes_lib
from ms_keras.models import BACKBONES
from ms_keras.sparsity import control as control_lib
from ms_keras.sparsity import proximal
from ms_keras.sparsity import pruning as pruning_lib

FLAGS = flags.FLAGS
RUNS_DIR = "runs"

_DEFINED = set()
# Flag name -> (description of where it applies, predicate on flag values).
_APPLIES = {}


def _prunes():
    """Whether `--pruning` is given (a dense run: the pruning flags' checks
    report a meta mode)."""
    return "pruning" in FLAGS and FLAGS["pruning"].value not in (None,
                                                                  "none")


def sparsity_kind(values):
    """`--sparsity`, whose default depends on `--mode`: channel for a meta
    run (meta-sparsity), none for stl/mtl (dense)."""
    if values["sparsity"] is not None:
        return values["sparsity"]
    return "channel" if values["mode"] == "meta" else "none"


def _sparse_meta(values):
    return values["mode"] == "meta" and sparsity_kind(values) != "none"


def _controlled_by(control):
    return (f"--mode=meta --sparsity_control={control}",
            lambda v: _sparse_meta(v) and v["sparsity_control"] == control)


_META = ("--mode=meta only", lambda v: v["mode"] == "meta")
_SPARSE = ("--sparsity=channel or unstructured",
           lambda v: sparsity_kind(v) != "none")
_SPARSE_META = ("--mode=meta with --sparsity=channel or unstructured",
                _sparse_meta)
# The MetaConfig fields of each sparsity control.
CONTROL_FIELDS = {
    "quality_tolerance": control_lib.TOLERANCE,
    "reference_dir": control_lib.TOLERANCE,
    "target_sparsity": control_lib.BUDGET,
    "target_flops_speedup": control_lib.BUDGET,
    "lambda_optimizer": control_lib.PAPER,
    "lambda_lr": control_lib.PAPER,
}


def _once(define):
    """Defines a concern's flags once per process (binaries share them)."""
    def wrapper():
        if define.__name__ not in _DEFINED:
            _DEFINED.add(define.__name__)
            define()
    wrapper.__doc__ = define.__doc__
    wrapper.__name__ = define.__name__
    return wrapper


class _IntListParser(flags.ListParser):
    """A comma-separated list of integers."""

    def parse(self, argument):
        values = super().parse(argument)
        try:
            return [int(v) for v in values]
        except ValueError:
            raise ValueError("expected integers") from None

    def flag_type(self):
        return "comma separated list of integers"


def define_int_list(name, default, help_text):
    """A `--name=1,2,3` flag whose value is a list of ints."""
    return flags.DEFINE(_IntListParser(), name, default, help_text,
                        serializer=flags.CsvListSerializer(","))


def _section_validator(names, build):
    """Runs `build(values)` (a config section) when the flags are parsed."""
    def check(values):
        try:
            build(values)
        except ValueError as e:
            raise flags.ValidationError(str(e)) from None
        return True
    flags.register_multi_flags_validator(list(names), check)


def _fields(cls, values, **overrides):
    """`cls(**{field: flag value})` for the fields that have a flag."""
    kwargs = {f.name: values[f.name] for f in dataclasses.fields(cls)
              if f.name in values}
    kwargs.update(overrides)
    return cls(**kwargs)


# Concerns ---------------------------------------------------------------


@_once
def define_run_flags():
    """--model_dir, --overwrite, --verbose."""
    flags.DEFINE_string(
        "model_dir", None, "Directory of the run: config.json, checkpoints, "
        "TensorBoard logs (train/, validation/), metrics.json. Training "
        f"binaries default to a new directory under {RUNS_DIR}/.")
    flags.DEFINE_boolean(
        "overwrite", False, "Replace a finished run or another experiment in "
        "--model_dir instead of refusing.")
    flags.DEFINE_integer(
        "verbose", 1, "Keras progress output: 0 silent, 1 progress bar, "
        "2 one line per epoch.", lower_bound=0, upper_bound=2)


@_once
def define_tasks_flag():
    """--tasks."""
    flags.DEFINE_list(
        "tasks", None, "Tasks by number or name, e.g. 1,2,3 or "
        "segmentation,depth. Default: all tasks of the dataset (train), of "
        "the source run (finetune), or of the run (evaluate, export).")


@_once
def define_data_location_flags():
    """--data_dir, --tfds_dir: where the files are."""
    flags.DEFINE_string(
        "data_dir", None, "Directory with your files of a real dataset "
        "(nyu, celeba). Default: TFDS' manual-download place, "
        "<tfds_dir>/downloads/manual/<dataset> (~/tensorflow_datasets/"
        "downloads/manual/nyu). Binaries that read a finished run use it to "
        "override the recorded one.")
    flags.DEFINE_string(
        "tfds_dir", None, "Where TFDS keeps prepared examples: the rendered "
        "synthetic datasets and the TFRecords prepared from your files "
        f"(default: ${data_lib.TFDS_DIR_ENV} or ~/tensorflow_datasets).")


@_once
def define_data_flags():
    """The dataset: --dataset, --image_size, --segmentation_classes, ..."""
    define_tasks_flag()
    define_data_location_flags()
    flags.DEFINE_enum(
        "dataset", "synthetic_nyu", tasks_lib.DATASET_NAMES,
        "Dataset. synthetic_* are built in; nyu and celeba read your files.")
    define_int_list(
        "image_size", [64, 64], "height,width fed to the model; multiples of "
        "8. Synthetic data is rendered at this size.")
    flags.DEFINE_integer(
        "segmentation_classes", None, "Override the number of segmentation "
        "classes: 13 or 40 for nyu, 3 (background/hair/skin) or 19 for "
        "celeba.")
    define_int_list(
        "synthetic_examples", list(data_lib.DEFAULT_SYNTHETIC_EXAMPLES),
        "train,validation,test sizes of a synthetic dataset.")
    flags.DEFINE_integer(
        "synthetic_seed", 0, "Seed of the synthetic data generator.")
    flags.DEFINE_boolean(
        "synthetic_holes", True, "Punch Kinect-like holes (invalid depth and "
        "normals) into synthetic_nyu.")
    _section_validator(
        ("dataset", "image_size", "segmentation_classes",
         "synthetic_examples", "synthetic_seed", "synthetic_holes",
         "data_dir"),
        lambda v: _fields(data_lib.DataConfig, v))


@_once
def define_model_flags():
    """The network: --backbone, --activation, --head_filters, --aspp_rates."""
    flags.DEFINE_enum(
        "backbone", "resnet_tiny", list(BACKBONES), "Dilated ResNet backbone.")
    flags.DEFINE_enum(
        "activation", "relu", list(config_lib.ACTIVATIONS),
        "Activation of every block.")
    flags.DEFINE_integer(
        "head_filters", 0, "Width of the task heads (0: the backbone's "
        "default).")
    define_int_list(
        "aspp_rates", list(config_lib.ModelConfig().aspp_rates),
        "Dilation rates of the ASPP branches.")
    flags.DEFINE_string(
        "backbone_weights", None, "A keras.applications ResNet50 weights "
        "file (e.g. ImageNet's, saved with keras.applications.ResNet50("
        "weights='imagenet', include_top=False).save_weights(...)) that "
        "--backbone=resnet50_d8 starts from.")
    _section_validator(
        ("backbone", "activation", "head_filters", "aspp_rates",
         "backbone_weights"),
        lambda v: _fields(config_lib.ModelConfig, v))


@_once
def define_training_flags():
    """The training loop: --batch_size, --epochs, --learning_rate, ..."""
    define_tasks_flag()
    flags.DEFINE_integer("batch_size", 8, "Examples per batch (per support "
                         "and per query batch in a meta run).")
    flags.DEFINE_integer("epochs", 10, "Maximum number of epochs.")
    flags.DEFINE_integer(
        "steps_per_epoch", 0, "Optimizer steps per epoch (0: one pass over "
        "the training split).")
    flags.DEFINE_integer(
        "validation_steps", 0, "Validation batches per epoch (0: all).")
    flags.DEFINE_float("learning_rate", 1e-3, "(Outer) learning rate.")
    flags.DEFINE_enum("optimizer", "adam", list(config_lib.OPTIMIZERS),
                      "Optimizer of the weights.")
    flags.DEFINE_float(
        "momentum", 0.0, "Momentum of --optimizer=sgd (0: plain SGD, as "
        "Alg. 1 and 3 write it).")
    flags.DEFINE_float(
        "clip_norm", 0.0, "Clip the (meta-)gradient of the weights to this "
        "global norm before the optimizer step (0: no clipping).")
    flags.DEFINE_enum(
        "loss_weighting", "uncertainty", list(config_lib.LOSS_WEIGHTINGS),
        "uncertainty: Kendall et al. (Eq. 2); equal: plain sum.")
    flags.DEFINE_enum(
        "monitor", "task_losses", list(config_lib.MONITORS),
        "Model selection (best checkpoint, early stopping) on the validation "
        "split: task_losses (unweighted sum of the task losses), delta_m "
        "(mean relative change of the task metrics against "
        "--delta_m_reference) or loss (the weighted objective, learned "
        "log-variances included).")
    flags.DEFINE_string(
        "delta_m_reference", None, "A finished run (e.g. dense MTL) whose "
        "validation metrics are the reference of --monitor=delta_m.")
    flags.DEFINE_integer(
        "early_stopping_patience", 5, "Epochs without a better --monitor "
        "value before stopping (0: never stop early).")
    flags.DEFINE_integer("seed", 0, "Seed of initialisation, shuffling, "
                         "augmentation and episodes.")
    flags.DEFINE_boolean("jit_compile", False,
                         "Compile the train step with XLA.")
    flags.DEFINE_enum(
        "strategy", "default", list(runtime.STRATEGIES),
        "tf.distribute strategy: default (one device), mirrored (this host's "
        "GPUs, else its logical CPUs), multi_worker (the cluster in "
        "TF_CONFIG) or tpu.")
    flags.DEFINE_integer(
        "cpu_devices", 1, "Split the CPU into this many logical devices "
        "(with --strategy=mirrored: try and test data parallelism without "
        "accelerators).")
    flags.DEFINE_boolean(
        "deterministic", False, "Deterministic ops and data order: two runs "
        "with one --seed write the same metrics.json.")
    flags.DEFINE_integer(
        "tuned_values", 1, "How many values of this run's sparsity "
        "hyperparameter (lambda, pruning ratio, ...) were tried to arrive at "
        "it; recorded with the training time for the cost table (Table 6).")
    names = [f.name for f in dataclasses.fields(config_lib.TrainingConfig)]
    _section_validator(names,
                       lambda v: _fields(config_lib.TrainingConfig, v))


def _applies(name, where):
    _APPLIES[name] = where


@_once
def define_experiment_flags():
    """What is trained: --mode, --sparsity, lambda, meta-learning."""
    flags.DEFINE_enum(
        "mode", "meta", list(config_lib.MODES),
        "meta: meta-sparsity, MAML over multi-task episodes with a sparse "
        "backbone (Alg. 3); mtl: all --tasks jointly (Alg. 1); stl: one "
        "task.")
    # Sparsity
    flags.DEFINE_enum(
        "sparsity", None, ["none", *config_lib.SPARSITY_KINDS],
        "Penalty on the backbone convs: none, channel (group lasso over input "
        "channels, Eq. 5) or unstructured (l1). Default: channel with "
        "--mode=meta, none with stl/mtl.")
    flags.DEFINE_float(
        "lam", 0.0, "Fixed lambda of a sparse stl/mtl run (paper: 1e-3, "
        "1e-4, 1e-5).")
    flags.DEFINE_float(
        "lambda_beta", 1.0, "Softplus sharpness: lam = softplus(beta*raw)/"
        "beta.")
    flags.DEFINE_enum(
        "prox_step", proximal.ADAM_METRIC_RESET, list(proximal.PROX_STEPS),
        "How the outer prox fits the optimizer: adam_metric (threshold "
        "scaled like Adam's step, lr*lam*sqrt(n_g)/mean(sqrt(v)+eps); the "
        "Euclidean step with SGD), reset_moments (Euclidean threshold, the "
        "optimizer's moments of zeroed groups reset), adam_metric_reset "
        "(both) or plain (Euclidean threshold only).")
    flags.DEFINE_integer(
        "sparsity_log_steps", 1, "Steps between TensorBoard sparsity "
        "summaries (lambda, sparsity/parameter, sparsity/group, per-layer "
        "channels).")
    flags.DEFINE_boolean(
        "preserve_norm", True, "The outer prox keeps the norm of every conv "
        "kernel that batch norm follows: the network's function does not "
        "depend on it, so without this the penalty shrinks whole layers for "
        "free.")
    for name in ("lam", "lambda_beta", "prox_step", "preserve_norm",
                 "sparsity_log_steps"):
        _applies(name, _SPARSE)
    # Meta-learning
    flags.DEFINE_integer("meta_batch_size", 1, "Episodes per meta-update.")
    flags.DEFINE_integer("inner_steps", 1, "SGD steps of the inner loop (k).")
    flags.DEFINE_float("inner_lr", 1e-2, "Inner-loop learning rate.")
    flags.DEFINE_boolean(
        "first_order", False, "First-order meta-gradients (FOMAML) instead "
        "of second order.")
    flags.DEFINE_enum(
        "inner_prox", "straight_through", list(config_lib.INNER_PROX),
        "The prox after each inner step: differentiable (lambda gets its "
        "implicit meta-gradient, Eq. 15), straight_through (same values; a "
        "group zeroed inside the inner loop keeps its weights' "
        "meta-gradient) or off (Alg. 3 literally; lambda's gradient is then "
        "R alone, Eq. 14).")
    flags.DEFINE_float(
        "regrow_prob", 0.0, "Probability that a zeroed group is "
        "re-initialised (Glorot) in the fast weights of an episode "
        "(Table 7).")
    flags.DEFINE_float(
        "inner_clip_norm", 0.0, "Clip each inner-loop gradient to this global "
        "norm (0: off). Guards the inner step on kernels the prox has shrunk "
        "towards zero, whose gradients grow like 1/norm behind batch norm.")
    flags.DEFINE_string(
        "episode_sampler", episodes_lib.UNIFORM,
        f"Episodes drawn per meta-step: {episodes_lib.SAMPLER_HELP} "
        "(uniform: every non-empty task subset, Eq. 9).")
    flags.DEFINE_enum(
        "sparsity_control", control_lib.TOLERANCE, list(control_lib.CONTROLS),
        "How sparse a meta-sparsity run ends: tolerance (the sparsest "
        "backbone whose every task's validation loss stays within "
        "--quality_tolerance percent of a dense reference), budget "
        "(--target_sparsity or --target_flops_speedup) or paper (lambda "
        "follows its meta-gradient from --lambda_init, Eq. 15).")
    flags.DEFINE_float(
        "quality_tolerance", 2.0, "Validation loss each task may lose "
        "against the dense reference, in percent (--sparsity_control="
        "tolerance).")
    flags.DEFINE_string(
        "reference_dir", None, "A finished dense run of the same tasks that "
        "--sparsity_control=tolerance compares with (default: the run first "
        "trains its own, same data, model and steps, into "
        "<model_dir>/reference).")
    flags.DEFINE_float(
        "target_sparsity", None, "Backbone parameter sparsity to reach, in "
        "percent: the budget of --sparsity_control=budget or of --pruning.")
    flags.DEFINE_float(
        "target_flops_speedup", None, "Structural FLOPs speed-up of the slim "
        "backbone to reach, > 1: the budget of --sparsity_control=budget or "
        "of --pruning.")
    flags.DEFINE_float(
        "lambda_init", None, "Lambda's start value. Required by "
        "--sparsity_control=paper, where it decides the sparsity; in "
        "tolerance and budget modes it only enters the first step's inner "
        f"prox (default {control_lib.DEFAULT_LAMBDA_INIT}).")
    flags.DEFINE_enum(
        "lambda_optimizer", "sgd", list(config_lib.LAMBDA_OPTIMIZERS),
        "Optimizer of lambda's raw weight: sgd (steps proportional to its "
        "meta-gradient) or adam (steps of about --lambda_lr whatever the "
        "gradient's size).")
    flags.DEFINE_float(
        "lambda_lr", 0.0, "Learning rate of lambda in a meta-sparsity run "
        "(0: --learning_rate).")
    meta_names = [f.name for f in dataclasses.fields(config_lib.MetaConfig)]
    # Budgets of --pruning too; checked with the pruning flags.
    shared = ("target_sparsity", "target_flops_speedup")
    for name in meta_names:
        if name not in shared:
            _applies(name, _META)
    for name in ("inner_prox", "regrow_prob", "sparsity_control",
                 "lambda_init"):
        _applies(name, _SPARSE_META)
    for name, control in CONTROL_FIELDS.items():
        if name not in shared:
            _applies(name, _controlled_by(control))

    _section_validator(
        ["sparsity", "mode", *[f.name for f in dataclasses.fields(
            config_lib.SparsityConfig) if f.name != "kind"]],
        lambda v: sparsity_kind(v) == "none" or _fields(
            config_lib.SparsityConfig, v, kind=sparsity_kind(v)))
    _section_validator(
        ["mode", "sparsity", *meta_names],
        lambda v: v["mode"] != "meta" or _prunes() or meta_section(v))
    flags.register_multi_flags_validator(
        sorted({"mode", "sparsity", "lam", *_APPLIES}), _check_applicable)
    flags.register_multi_flags_validator(
        ["episode_sampler", "tasks", "dataset", "segmentation_classes"],
        _check_episode_sampler)


def _check_episode_sampler(values):
    try:
        spec = tasks_lib.get_dataset(values["dataset"],
                                     values["segmentation_classes"])
        count = len(values["tasks"]) if values["tasks"] else len(spec.tasks)
        episodes_lib.episode_table(values["episode_sampler"], count)
    except ValueError as e:
        raise flags.ValidationError(str(e)) from None
    return True


def set_by_user(name):
    """Whether the user gave `--name` (on the command line, in a flagfile,
    or by assignment, as `flagsaver` does)."""
    return FLAGS[name].present or not FLAGS[name].using_default_value


def _check_applicable(values):
    """Refuses flags given where they would do nothing, and bad mixtures."""
    for name, (where, applies) in _APPLIES.items():
        if FLAGS[name].present and not applies(values):
            got = f"--mode={values['mode']} --sparsity={sparsity_kind(values)}"
            if _sparse_meta(values):
                got += f" --sparsity_control={values['sparsity_control']}"
            raise flags.ValidationError(f"--{name} applies to {where} (got "
                                        f"{got})")
    try:
        config_lib.check_lambda_setting(
            values["mode"], None if sparsity_kind(values) == "none"
            else values["lam"])
    except ValueError as e:
        raise flags.ValidationError(str(e)) from None
    return True


@_once
def define_transfer_flags():
    """--from_dir: a finished run to start from."""
    flags.DEFINE_string(
        "from_dir", None, "The finished run to start from: the (meta-)"
        "training run a fine-tuning run adapts, or the dense run one-shot "
        "and iterative pruning prune.")


@_once
def define_pruning_flags():
    """Pruning baselines: --pruning, --pruning_mask, the budget, schedules."""
    define_transfer_flags()
    flags.DEFINE_enum(
        "pruning", "none", ["none", *config_lib.PRUNING_METHODS],
        "Prune the backbone's input-channel groups to a budget (with "
        "--mode=stl/mtl, dense): one_shot (a trained --from_dir run once, "
        "then fine-tune), iterative (--pruning_rounds rounds), progressive "
        "(cubic ramp from random initialisation) or sparse_training (mask "
        "fixed at initialisation).")
    flags.DEFINE_enum(
        "pruning_mask", pruning_lib.MAGNITUDE, list(pruning_lib.MASK_SOURCES),
        "Which groups are pruned first: magnitude (group RMS over its "
        "layer's), random, or meta (the groups --mask_from zeroed).")
    flags.DEFINE_string(
        "budget_from", None, "A finished run whose parameter sparsity is the "
        "budget (e.g. a meta-sparsity run), instead of --target_sparsity.")
    flags.DEFINE_string(
        "mask_from", None, "The meta-sparsity run whose zeroed groups "
        "--pruning_mask=meta prunes.")
    flags.DEFINE_integer("pruning_rounds", 4, "Rounds of iterative pruning.")
    flags.DEFINE_integer("pruning_begin_step", 0,
                         "First step of progressive pruning's ramp.")
    flags.DEFINE_integer(
        "pruning_end_step", 0, "Last step of progressive pruning's ramp (0: "
        "two thirds of the training steps).")
    flags.DEFINE_integer("pruning_frequency", 10,
                         "Steps between progressive pruning updates.")
    names = [f.name for f in dataclasses.fields(config_lib.PruningConfig)
             if f.name != "method"]
    _section_validator(
        ["pruning", *names],
        lambda v: v["pruning"] == "none" or _fields(
            config_lib.PruningConfig, v, method=v["pruning"]))

    def check_applicable(values):
        if values["pruning"] != "none" and values["mode"] == "meta":
            raise flags.ValidationError(
                f"--pruning={values['pruning']} trains and prunes a dense "
                "model: pass --mode=mtl or stl (--mode defaults to meta).")
        for name in names:
            if not FLAGS[name].present or values["pruning"] != "none":
                continue
            shared = name in ("target_sparsity", "target_flops_speedup")
            if shared and _sparse_meta(values) and (
                    values["sparsity_control"] == control_lib.BUDGET):
                continue
            also = (" or to --mode=meta --sparsity_control=budget"
                    if shared else "")
            raise flags.ValidationError(
                f"--{name} applies to --pruning=one_shot, iterative, "
                f"progressive or sparse_training{also} (got --pruning=none)")
        return True

    flags.register_multi_flags_validator(
        ["pruning", "mode", "sparsity", "sparsity_control", *names],
        check_applicable)


@_once
def define_finetune_flags():
    """Meta-testing: --from_dir, --train_scope."""
    define_transfer_flags()
    flags.DEFINE_enum(
        "train_scope", "all", list(config_lib.TRAIN_SCOPES),
        "all: train backbone and every head (sparsity pattern kept); "
        "new_heads: train only the heads of tasks the source run did not "
        "have.")


# Parsing and errors -----------------------------------------------------


def program_name():
    return os.path.basename(sys.argv[0]) if sys.argv else "ms_keras"


def parse(argv):
    """absl flags parser that reports a bad flag in one line (exit code 2).

    Unless `--verbosity` is given, library INFO logs (TFDS prints several per
    dataset access) are hidden so that Keras' progress output stays readable.
    """
    try:
        remaining = FLAGS(argv)
    except flags.Error as e:
        # Multi-flag validators get every checked value prepended; their
        # messages name the offending flag themselves.
        message = re.sub(r"^flags .*?: (?=--)", "", str(e), count=1)
        sys.stderr.write(f"{program_name()}: error: {message}\n")
        sys.exit(2)
    if not FLAGS["verbosity"].present:
        logging.set_verbosity(logging.ERROR)
    return remaining


def fail(error):
    """Ends the program with a one-line message (exit code 1)."""
    sys.stderr.write(f"{program_name()}: error: {error}\n")
    sys.exit(1)



# Flags -> config ---------------------------------------------------------


def _values(names):
    return {name: FLAGS[name].value for name in names if name in FLAGS}


def given(cls):
    """`{field: value}` of `cls`'s fields whose flag the user set."""
    return {f.name: FLAGS[f.name].value for f in dataclasses.fields(cls)
            if f.name in FLAGS and set_by_user(f.name)}


def meta_section(values):
    """The MetaConfig of `--mode=meta` flag values.

    Fields of a sparsity control other than the run's take no part (their
    defaults are dropped; one the user gave is refused by the config), and
    a dense meta run has no control.
    """
    control = values["sparsity_control"] if _sparse_meta(values) else None
    overrides = {"sparsity_control": control}
    defaults = {f.name: f.default
                for f in dataclasses.fields(config_lib.MetaConfig)}
    for name, owner in CONTROL_FIELDS.items():
        if owner != control and not (name in FLAGS and FLAGS[name].present):
            overrides[name] = defaults[name]
    if control is not None and control != control_lib.PAPER and (
            values["lambda_init"] is None):
        overrides["lambda_init"] = control_lib.DEFAULT_LAMBDA_INIT
    return _fields(config_lib.MetaConfig, values, **overrides)


def new_run_dir(dataset, mode):
    """A fresh directory name under `runs/`, never an existing run's."""
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    base = os.path.join(RUNS_DIR, f"{dataset}_{mode}_{stamp}")
    candidate, suffix = base, 1
    while os.path.exists(candidate):
        suffix += 1
        candidate = f"{base}_{suffix}"
    return candidate


def data_config():
    """The DataConfig of the data flags (a real dataset's files default to
    TFDS' manual-download place)."""
    values = _values([f.name for f in dataclasses.fields(
        data_lib.DataConfig)])
    spec = tasks_lib.get_dataset(values["dataset"])
    if not spec.synthetic and not values["data_dir"]:
        values["data_dir"] = data_lib.default_data_dir(values["dataset"],
                                                       values["tfds_dir"])
    values["segmentation_classes"] = data_lib.segmentation_classes(
        values["dataset"], values["data_dir"],
        values["segmentation_classes"])
    return data_lib.DataConfig(**values)


def resolve_tasks(spec, requested):
    """Task names for `--tasks` on a dataset (all of them when unset).

    Raises:
        ValueError: naming the flag, for tasks the dataset lacks.
    """
    if requested is None:
        return spec.task_names
    try:
        return tuple(t.name for t in tasks_lib.parse_tasks(spec, requested))
    except ValueError as e:
        raise ValueError(
            f"--tasks={','.join(requested)} --dataset={spec.name}: {e}"
        ) from None


def experiment_config():
    """The ExperimentConfig of `train`'s flags.

    Raises:
        ValueError: for a combination the config refuses.
    """
    data = data_config()
    tasks = resolve_tasks(data.spec, FLAGS.tasks)
    mode = FLAGS.mode
    values = {name: FLAGS[name].value for name in FLAGS}
    sparsity = None
    kind = sparsity_kind(values)
    if kind != "none":
        sparsity = _fields(config_lib.SparsityConfig, values, kind=kind)
    pruning = transfer = None
    if FLAGS.pruning != "none":
        pruning = _fields(config_lib.PruningConfig, values,
                          method=FLAGS.pruning)
    if FLAGS.from_dir:
        if pruning is None:
            raise ValueError(
                f"--from_dir={FLAGS.from_dir} applies to --pruning=one_shot "
                "or iterative (to fine-tune a run: python -m "
                "ms_keras.finetune --from_dir=...).")
        transfer = config_lib.TransferConfig(os.path.abspath(FLAGS.from_dir))
    return config_lib.ExperimentConfig(
        data=data, tasks=tasks, mode=mode,
        model=_fields(config_lib.ModelConfig, values),
        training=_fields(config_lib.TrainingConfig, values),
        sparsity=sparsity,
        meta=meta_section(values) if mode == "meta" else None,
        pruning=pruning, transfer=transfer,
        model_dir=FLAGS.model_dir or new_run_dir(data.dataset, mode))
