"""The experiment configuration: nested, frozen, validated once, versioned.

An `ExperimentConfig` is everything that defines a run. Its sections are
frozen dataclasses (data, model, training, sparsity or None, meta or None,
transfer or None); each validates its own fields when constructed, and the
experiment checks how the sections combine. The run directory keeps it as
`config.json` (with `CONFIG_VERSION`); `from_dict(to_dict(c)) == c`.

Field names equal the command-line flags that set them (`flags.py` maps
flags onto sections by name), so a new hyperparameter is one field here, one
flag and its use. Fields marked `RUN_CONTROL` (where files are, how verbose)
may change when a run is resumed; every other field is the experiment's
identity.
"""

import dataclasses
import typing

from ms_keras import runtime
from ms_keras import tasks as tasks_lib
from ms_keras.data import DataConfig
from ms_keras.meta import episodes as episodes_lib
from ms_keras.models import BACKBONES
from ms_keras.models.heads import DEFAULT_ASPP_RATES
from ms_keras.sparsity import control as control_lib
from ms_keras.sparsity import groups as groups_lib
from ms_keras.sparsity import proximal
from ms_keras.sparsity import pruning as pruning_lib

CONFIG_VERSION = 2
# Version 1 had no sparsity control: its sparse meta runs followed lambda's
# meta-gradient, which is version 2's `paper` mode.
_READABLE_VERSIONS = (1, CONFIG_VERSION)
MODES = ("stl", "mtl", "meta")
OPTIMIZERS = ("adam", "sgd")
LOSS_WEIGHTINGS = ("uncertainty", "equal")
ACTIVATIONS = ("relu", "gelu")
TRAIN_SCOPES = ("all", "new_heads")
SPARSITY_KINDS = (groups_lib.CHANNEL, groups_lib.UNSTRUCTURED)
# Model selection: the validation figure the best checkpoint and early
# stopping follow, and whether lower is better.
MONITORS = {"task_losses": True, "delta_m": False, "loss": True}
INNER_PROX = ("differentiable", "straight_through", "off")
PRUNING_METHODS = ("one_shot", "iterative", "progressive", "sparse_training")
# Methods that prune a trained run (--from_dir) rather than a fresh model.
PRUNES_A_TRAINED_RUN = ("one_shot", "iterative")
LAMBDA_OPTIMIZERS = ("sgd", "adam")

# A sparse meta run without a stated control chooses its sparsity within
# this loss tolerance (percent).
DEFAULT_QUALITY_TOLERANCE = 2.0

# Field metadata: settings that may differ between runs of one experiment.
RUN_CONTROL = {"run_control": True}


def _field(default, run_control=False):
    return dataclasses.field(default=default,
                             metadata=RUN_CONTROL if run_control else {})


def _check(condition, message):
    if not condition:
        raise ValueError(message)


def _check_positive(section, *names):
    for name in names:
        value = getattr(section, name)
        _check(value > 0, f"--{name}={value}: must be positive.")


def _check_non_negative(section, *names):
    for name in names:
        value = getattr(section, name)
        _check(value >= 0, f"--{name}={value}: must be >= 0.")


def _check_choice(section, name, allowed):
    value = getattr(section, name)
    _check(value in allowed,
           f"--{name}={value}: expected one of {', '.join(allowed)}.")


def _as_tuple(section, name):
    """Stores a list-valued field as a tuple (hashable, JSON round-trip)."""
    value = getattr(section, name)
    if value is not None and not isinstance(value, tuple):
        object.__setattr__(section, name, tuple(value))


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """The multi-task network.

    Attributes:
        backbone: dilated ResNet name (`models.BACKBONES`).
        activation: `relu` or `gelu`.
        head_filters: head width (0: the backbone's default).
        aspp_rates: dilation rates of the ASPP branches.
        backbone_weights: a `keras.applications.ResNet50` weights file the
            `resnet50_d8` backbone starts from (e.g. ImageNet's; see
            `models.backbone.load_resnet50_weights`).
    """

    backbone: str = "resnet_tiny"
    activation: str = "relu"
    head_filters: int = 0
    aspp_rates: tuple = DEFAULT_ASPP_RATES
    backbone_weights: typing.Optional[str] = None

    def __post_init__(self):
        _as_tuple(self, "aspp_rates")
        _check_choice(self, "backbone", tuple(BACKBONES))
        _check(not self.backbone_weights or self.backbone == "resnet50_d8",
               f"--backbone_weights={self.backbone_weights} loads "
               "keras.applications ResNet50 weights into --backbone="
               f"resnet50_d8 (got --backbone={self.backbone}).")
        _check_choice(self, "activation", ACTIVATIONS)
        _check_non_negative(self, "head_filters")
        _check(self.aspp_rates and min(self.aspp_rates) > 0,
               f"--aspp_rates={','.join(map(str, self.aspp_rates))}: expected "
               "positive integers.")


@dataclasses.dataclass(frozen=True)
class TrainingConfig:
    """The training loop (Alg. 1; the outer loop of Alg. 3).

    Attributes:
        batch_size: examples per batch (per support / query batch in meta).
        epochs: maximum number of epochs.
        steps_per_epoch: optimizer steps per epoch (0: one pass over train).
        validation_steps: validation batches per epoch (0: the whole split).
        learning_rate: (outer) learning rate.
        optimizer: `adam` or `sgd`.
        momentum: SGD's momentum (0: plain SGD, as Alg. 1 and 3 write it).
        clip_norm: clip the (meta-)gradient to this global norm (0: off).
        loss_weighting: `uncertainty` (Eq. 2) or `equal`.
        monitor: what model selection (best checkpoint, early stopping)
            follows on the validation split: `task_losses` (the unweighted
            sum of the task losses), `delta_m` (mean relative change of the
            tasks' metrics against `delta_m_reference`, higher is better) or
            `loss` (the weighted training objective, with Eq. 2's learned
            log-variances).
        delta_m_reference: a finished run whose validation metrics are the
            reference of `delta_m`.
        early_stopping_patience: epochs without validation improvement before
            stopping (0: never stop early).
        seed: seed of initialisation, shuffling, augmentation and episodes.
        jit_compile: compile the train step with XLA.
        verbose: Keras progress output (0, 1, 2).
        tuned_values: how many values of the run's sparsity hyperparameter
            (lambda, a pruning ratio, ...) were tried to arrive at it; the
            cost table (Table 6) reports it with the training time.
        strategy: the `tf.distribute` strategy (`runtime.STRATEGIES`).
        cpu_devices: logical CPU devices to split the CPU into (for
            `mirrored` without accelerators).
        deterministic: deterministic ops and data order, so that two runs
            with one seed write the same metrics.
    """

    batch_size: int = 8
    epochs: int = 10
    steps_per_epoch: int = 0
    validation_steps: int = 0
    learning_rate: float = 1e-3
    optimizer: str = "adam"
    momentum: float = 0.0
    clip_norm: float = 0.0
    loss_weighting: str = "uncertainty"
    monitor: str = "task_losses"
    delta_m_reference: typing.Optional[str] = None
    early_stopping_patience: int = 5
    seed: int = 0
    jit_compile: bool = _field(False, run_control=True)
    verbose: int = _field(1, run_control=True)
    tuned_values: int = _field(1, run_control=True)
    strategy: str = _field("default", run_control=True)
    cpu_devices: int = _field(1, run_control=True)
    deterministic: bool = _field(False, run_control=True)

    def __post_init__(self):
        _check_positive(self, "batch_size", "epochs", "learning_rate")
        _check_non_negative(self, "steps_per_epoch", "validation_steps",
                            "clip_norm", "early_stopping_patience")
        _check_choice(self, "optimizer", OPTIMIZERS)
        _check(0.0 <= self.momentum < 1.0,
               f"--momentum={self.momentum}: must be in [0, 1).")
        _check(self.optimizer == "sgd" or not self.momentum,
               f"--momentum={self.momentum} applies to --optimizer=sgd only.")
        _check_choice(self, "loss_weighting", LOSS_WEIGHTINGS)
        _check_choice(self, "monitor", tuple(MONITORS))
        _check((self.monitor == "delta_m") == bool(self.delta_m_reference),
               "--monitor=delta_m needs --delta_m_reference=<finished run> "
               "and the reference is used by --monitor=delta_m only; got "
               f"--monitor={self.monitor} --delta_m_reference="
               f"{self.delta_m_reference}.")
        _check(self.verbose in (0, 1, 2),
               f"--verbose={self.verbose}: expected 0, 1 or 2.")
        _check_positive(self, "tuned_values", "cpu_devices")
        _check_choice(self, "strategy", runtime.STRATEGIES)
        _check(self.cpu_devices == 1 or self.strategy == "mirrored",
               f"--cpu_devices={self.cpu_devices} splits the CPU for "
               f"--strategy=mirrored (got --strategy={self.strategy}).")


@dataclasses.dataclass(frozen=True)
class SparsityConfig:
    """The sparsity penalty on the backbone convolutions.

    Attributes:
        kind: `channel` (group lasso over input channels, Eq. 5) or
            `unstructured` (l1); the `--sparsity` flag (`none`: no section).
        lam: fixed lambda of a stl/mtl run (0 in a meta run, which learns it).
        lambda_beta: softplus sharpness, `lam = softplus(beta * raw) / beta`.
        prox_step: how the outer prox fits the optimizer
            (`sparsity.proximal.PROX_STEPS`): `adam_metric_reset`,
            `adam_metric`, `reset_moments` or `plain`.
        preserve_norm: the outer prox keeps the norm of every kernel that
            batch norm follows (see `sparsity.proximal`).
        sparsity_log_steps: steps between TensorBoard sparsity summaries.
    """

    kind: str = groups_lib.CHANNEL
    lam: float = 0.0
    lambda_beta: float = 1.0
    prox_step: str = proximal.ADAM_METRIC_RESET
    preserve_norm: bool = True
    sparsity_log_steps: int = 1

    def __post_init__(self):
        _check_choice(self, "prox_step", proximal.PROX_STEPS)
        _check(self.kind in SPARSITY_KINDS,
               f"--sparsity={self.kind}: expected one of none, "
               f"{', '.join(SPARSITY_KINDS)}.")
        _check_non_negative(self, "lam")
        _check_positive(self, "lambda_beta", "sparsity_log_steps")


@dataclasses.dataclass(frozen=True)
class MetaConfig:
    """Meta-training (Alg. 3): episodes, the inner loop, a learned lambda.

    Attributes:
        meta_batch_size: episodes per meta-update.
        inner_steps: inner-loop SGD steps (k).
        inner_lr: inner-loop learning rate.
        first_order: first-order meta-gradients (FOMAML).
        inner_prox: the prox inside the inner loop of a sparse run:
            `differentiable`, `straight_through` (zeroed groups keep their
            weights' meta-gradient) or `off` (Alg. 3 literally).
        regrow_prob: regrowth probability of zero groups in the inner loop.
        inner_clip_norm: bound on the global norm of each inner gradient
            (0: none).
        episode_sampler: `uniform`, `all_tasks` or `size<=k`.
        sparsity_control: how the sparsity a sparse meta run ends at is
            decided (`sparsity.control.CONTROLS`): `tolerance` (the sparsest
            backbone whose every task's validation loss stays within
            `quality_tolerance` percent of a dense reference), `budget`
            (`target_sparsity` or `target_flops_speedup`) or `paper` (lambda
            follows its meta-gradient from `lambda_init`, Eq. 15). A dense
            meta run has none; a sparse one without it gets `tolerance`
            (within `DEFAULT_QUALITY_TOLERANCE` unless stated).
        quality_tolerance: the loss each task may lose against the dense
            reference, in percent (`tolerance`).
        reference_dir: a finished dense run of the same tasks to compare
            against (`tolerance`; None: the run trains its own dense
            reference with the same data, model and steps first).
        target_sparsity: parameter sparsity budget in percent (`budget`).
        target_flops_speedup: structural FLOPs speed-up budget, > 1
            (`budget`).
        lambda_init: lambda's start value (required by `paper`; in the
            controlled modes it only enters the first step's inner prox,
            the controller sets lambda from then on).
        lambda_optimizer: `sgd` (a step proportional to lambda's gradient,
            so lambda slows where its gradient shrinks) or `adam` (steps of
            about `lambda_lr` whatever the gradient); `paper` only.
        lambda_lr: lambda's learning rate (0: the training learning rate);
            `paper` only.
    """

    meta_batch_size: int = 1
    inner_steps: int = 1
    inner_lr: float = 1e-2
    first_order: bool = False
    inner_prox: str = "straight_through"
    regrow_prob: float = 0.0
    inner_clip_norm: float = 0.0
    episode_sampler: str = episodes_lib.UNIFORM
    sparsity_control: typing.Optional[str] = None
    quality_tolerance: typing.Optional[float] = None
    reference_dir: typing.Optional[str] = None
    target_sparsity: typing.Optional[float] = None
    target_flops_speedup: typing.Optional[float] = None
    lambda_init: typing.Optional[float] = None
    lambda_optimizer: str = "sgd"
    lambda_lr: float = 0.0

    def __post_init__(self):
        _check_positive(self, "meta_batch_size", "inner_steps", "inner_lr")
        _check_choice(self, "inner_prox", INNER_PROX)
        _check_choice(self, "lambda_optimizer", LAMBDA_OPTIMIZERS)
        _check_non_negative(self, "inner_clip_norm", "lambda_lr")
        _check(0.0 <= self.regrow_prob <= 1.0,
               f"--regrow_prob={self.regrow_prob}: must be in [0, 1].")
        _check(self.lambda_init is None or self.lambda_init > 0,
               f"--lambda_init={self.lambda_init}: must be positive.")
        episodes_lib.check_sampler(self.episode_sampler)
        self._check_sparsity_control()

    def _check_sparsity_control(self):
        control = self.sparsity_control
        _check(control is None or control in control_lib.CONTROLS,
               f"--sparsity_control={control}: expected one of "
               f"{', '.join(control_lib.CONTROLS)}.")
        _check(self.quality_tolerance is None or self.quality_tolerance > 0,
               f"--quality_tolerance={self.quality_tolerance}: a loss "
               "increase in percent, > 0.")
        _check(self.target_sparsity is None
               or 0.0 < self.target_sparsity < 100.0,
               f"--target_sparsity={self.target_sparsity}: a parameter "
               "sparsity in percent, between 0 and 100 (exclusive).")
        _check(self.target_flops_speedup is None
               or self.target_flops_speedup > 1.0,
               f"--target_flops_speedup={self.target_flops_speedup}: a FLOPs "
               "speed-up over the dense backbone, > 1.")
        uses = {
            "quality_tolerance": control_lib.TOLERANCE,
            "reference_dir": control_lib.TOLERANCE,
            "target_sparsity": control_lib.BUDGET,
            "target_flops_speedup": control_lib.BUDGET,
        }
        for name, mode in uses.items():
            value = getattr(self, name)
            got = (f"--sparsity_control={control}" if control
                   else "a dense meta run, --sparsity=none")
            _check(value is None or control == mode,
                   f"--{name}={value} applies to --sparsity_control={mode} "
                   f"(got {got}).")
        if control == control_lib.TOLERANCE:
            _check(self.quality_tolerance is not None,
                   "--sparsity_control=tolerance needs --quality_tolerance="
                   "<percent>.")
        if control == control_lib.BUDGET:
            _check((self.target_sparsity is None)
                   != (self.target_flops_speedup is None),
                   "--sparsity_control=budget needs exactly one budget: "
                   "--target_sparsity=<percent> or --target_flops_speedup=<x>;"
                   f" got --target_sparsity={self.target_sparsity} "
                   f"--target_flops_speedup={self.target_flops_speedup}.")
        if control == control_lib.PAPER:
            _check(self.lambda_init is not None,
                   "--sparsity_control=paper needs --lambda_init=<value>: "
                   "lambda's start decides the sparsity there (README, "
                   "sparsity control).")


@dataclasses.dataclass(frozen=True)
class PruningConfig:
    """A pruning baseline (Table 5) at a parameter-sparsity budget.

    Attributes:
        method: `one_shot` (prune the trained `--from_dir` run once, then
            fine-tune), `iterative` (prune the same fraction of the remaining
            weights in each of `pruning_rounds` rounds of the fine-tuning),
            `progressive` (from random initialisation, Zhu & Gupta's cubic
            ramp between `pruning_begin_step` and `pruning_end_step`) or
            `sparse_training` (a mask fixed at initialisation); the
            `--pruning` flag.
        pruning_mask: which groups go first: `magnitude`, `random` or `meta`
            (those `mask_from` zeroed).
        target_sparsity: the backbone parameter sparsity to reach (%).
        budget_from: a finished run whose parameter sparsity is the budget
            (instead of `target_sparsity`).
        target_flops_speedup: the structural FLOPs speed-up to reach
            (instead of a parameter budget).
        mask_from: the meta-sparsity run whose zeroed groups `meta` prunes.
        pruning_rounds: rounds of `iterative`.
        pruning_begin_step: first step of `progressive`'s ramp.
        pruning_end_step: last step of the ramp (0: two thirds of training).
        pruning_frequency: steps between `progressive`'s pruning updates.
    """

    method: str
    pruning_mask: str = pruning_lib.MAGNITUDE
    target_sparsity: typing.Optional[float] = None
    budget_from: typing.Optional[str] = None
    target_flops_speedup: typing.Optional[float] = None
    mask_from: typing.Optional[str] = None
    pruning_rounds: int = 4
    pruning_begin_step: int = 0
    pruning_end_step: int = 0
    pruning_frequency: int = 10

    def __post_init__(self):
        _check(self.method in PRUNING_METHODS,
               f"--pruning={self.method}: expected one of none, "
               f"{', '.join(PRUNING_METHODS)}.")
        _check_choice(self, "pruning_mask", pruning_lib.MASK_SOURCES)
        budgets = (self.target_sparsity, self.budget_from,
                   self.target_flops_speedup)
        _check(sum(b is not None for b in budgets) == 1,
               f"--pruning={self.method} needs exactly one budget: "
               "--target_sparsity=<percent>, --budget_from=<finished run> "
               "or --target_flops_speedup=<x>; got --target_sparsity="
               f"{self.target_sparsity} --budget_from={self.budget_from} "
               f"--target_flops_speedup={self.target_flops_speedup}.")
        _check(self.target_flops_speedup is None
               or self.target_flops_speedup > 1.0,
               f"--target_flops_speedup={self.target_flops_speedup}: a FLOPs "
               "speed-up over the dense backbone, > 1.")
        _check(self.target_sparsity is None
               or 0.0 < self.target_sparsity < 100.0,
               f"--target_sparsity={self.target_sparsity}: a parameter "
               "sparsity in percent, between 0 and 100 (exclusive).")
        _check((self.pruning_mask == pruning_lib.META) == bool(
            self.mask_from),
               "--pruning_mask=meta needs --mask_from=<meta-sparsity run>, "
               "and --mask_from is used by --pruning_mask=meta only; got "
               f"--pruning_mask={self.pruning_mask} "
               f"--mask_from={self.mask_from}.")
        _check_positive(self, "pruning_rounds", "pruning_frequency")
        _check_non_negative(self, "pruning_begin_step", "pruning_end_step")
        _check(not self.pruning_end_step
               or self.pruning_end_step > self.pruning_begin_step,
               f"--pruning_end_step={self.pruning_end_step} must come after "
               f"--pruning_begin_step={self.pruning_begin_step}.")


@dataclasses.dataclass(frozen=True)
class TransferConfig:
    """Where a meta-testing (fine-tuning) run starts from.

    Attributes:
        from_dir: the finished run whose backbone (and the heads of the tasks
            both have) start this one; its sparsity pattern is kept.
        train_scope: `all` trains backbone and heads; `new_heads` only the
            heads of tasks `from_dir` did not have.
    """

    from_dir: str
    train_scope: str = "all"

    def __post_init__(self):
        _check_choice(self, "train_scope", TRAIN_SCOPES)


def check_lambda_setting(mode, lam):
    """A fixed lambda belongs to sparse stl/mtl runs; meta runs learn it.

    Args:
        mode: `stl`, `mtl` or `meta`.
        lam: the fixed lambda of a sparse run, None for a dense run.
    """
    if lam is None:
        return
    _check(mode == "meta" or lam > 0,
           f"--mode={mode} with sparsity needs a fixed --lam > 0 (the paper "
           f"uses 1e-3, 1e-4, 1e-5); got --lam={lam}.")
    _check(mode != "meta" or not lam,
           "--lam fixes lambda for stl/mtl runs; --mode=meta learns it (set "
           "its start with --lambda_init).")


@dataclasses.dataclass(frozen=True)
class ExperimentConfig:
    """Everything that defines a training run.

    Attributes:
        data: where the examples come from (`data.DataConfig`).
        tasks: task names, in order.
        mode: `stl` (one task), `mtl` (Alg. 1) or `meta` (Alg. 3).
        model: the network.
        training: the training loop.
        sparsity: the penalty, or None for a dense run.
        meta: the meta-training settings; set exactly when `mode` is `meta`.
        pruning: a pruning baseline, or None.
        transfer: the run a fine-tuning run (or one-shot / iterative
            pruning) starts from, or None.
        model_dir: where the run's files go.
    """

    data: DataConfig
    tasks: tuple
    mode: str = "mtl"
    model: ModelConfig = ModelConfig()
    training: TrainingConfig = TrainingConfig()
    sparsity: typing.Optional[SparsityConfig] = None
    meta: typing.Optional[MetaConfig] = None
    pruning: typing.Optional[PruningConfig] = None
    transfer: typing.Optional[TransferConfig] = None
    model_dir: str = _field(None, run_control=True)

    def __post_init__(self):
        _as_tuple(self, "tasks")
        for name, cls in _SECTIONS.items():
            value = getattr(self, name)
            optional = name in ("sparsity", "meta", "pruning", "transfer")
            _check(isinstance(value, cls) or (optional and value is None),
                   f"`{name}` must be a {cls.__name__}"
                   f"{' or None' if optional else ''}. Received: {value!r}")
        _check_choice(self, "mode", MODES)
        _check(self.mode != "stl" or len(self.tasks) == 1,
               f"--mode=stl trains one task; got {len(self.tasks)} "
               f"(tasks={','.join(self.tasks)}).")
        _check((self.mode == "meta") == (self.meta is not None),
               f"--mode={self.mode}: meta settings are "
               f"{'missing' if self.meta is None else 'given'}; they belong "
               "to --mode=meta exactly.")
        check_lambda_setting(self.mode,
                             self.sparsity and self.sparsity.lam)
        if self.meta is not None:
            episodes_lib.episode_table(self.meta.episode_sampler,
                                       len(self.tasks))
            control = self.meta.sparsity_control
            _check(self.sparse or control is None,
                   f"--sparsity_control={control} controls a sparse run; "
                   "this one is dense (--sparsity=none).")
            if self.sparse and control is None:
                # The default: the run chooses its sparsity.
                object.__setattr__(self, "meta", dataclasses.replace(
                    self.meta, sparsity_control=control_lib.TOLERANCE,
                    quality_tolerance=(self.meta.quality_tolerance
                                       or DEFAULT_QUALITY_TOLERANCE)))
        if self.pruning is not None:
            method = self.pruning.method
            _check(self.mode != "meta" and self.sparsity is None,
                   f"--pruning={method} trains a dense stl/mtl model and "
                   "prunes it; it does not combine with --mode=meta or a "
                   f"sparsity penalty (got --mode={self.mode} --sparsity="
                   f"{self.sparsity.kind if self.sparsity else 'none'}).")
            trained = method in PRUNES_A_TRAINED_RUN
            _check(trained == (self.transfer is not None),
                   f"--pruning={method} "
                   + ("prunes a trained run: pass --from_dir=<finished dense "
                      "run>." if trained else "starts from random "
                      "initialisation; --from_dir does not apply."))
        # Resolves the names against the dataset (raises for unknown ones).
        self.task_specs  # noqa: B018

    @property
    def task_specs(self):
        return tasks_lib.parse_tasks(self.data.spec, self.tasks)

    @property
    def sparse(self):
        return self.sparsity is not None

    @property
    def learns_lambda(self):
        """Whether lambda follows its meta-gradient (the paper's mode)."""
        return self.sparsity_control == control_lib.PAPER

    @property
    def sparsity_control(self):
        """The control of a sparse meta run, else None."""
        if self.meta is None or not self.sparse:
            return None
        return self.meta.sparsity_control

    @property
    def needs_own_reference(self):
        """Whether the run trains its own dense reference first."""
        return (self.sparsity_control == control_lib.TOLERANCE
                and not self.meta.reference_dir)

    def replace(self, **changes):
        """A copy with `changes` (section objects or top-level fields)."""
        return dataclasses.replace(self, **changes)

    def identity(self):
        """The config as a dict without run-control fields: two runs with the
        same identity are the same experiment."""
        return _strip_run_control(self)


def for_finetuning(source, model_dir, transfer, tasks=None, training=None,
                   data=None):
    """The config of a meta-testing run that starts from `source`'s run.

    Data and model are the source's; the tasks (default: the source's) and
    the training loop are replaced by what the user gave; the source's
    sparsity and meta-learning settings are dropped (its sparsity pattern
    itself is kept by the trainer).

    Args:
        source: the source run's ExperimentConfig.
        model_dir: the new run's directory.
        transfer: a TransferConfig naming the source.
        tasks: task names, or None for the source's.
        training: `{field: value}` replacing the source's training fields.
        data: `{field: value}` replacing the source's data fields (where
            the files are).
    """
    tasks = tuple(tasks or source.tasks)
    return source.replace(
        tasks=tasks, mode="stl" if len(tasks) == 1 else "mtl",
        data=dataclasses.replace(source.data, **(data or {})),
        training=dataclasses.replace(source.training, **(training or {})),
        sparsity=None, meta=None, pruning=None, transfer=transfer,
        model_dir=model_dir)


def dense_reference(config, model_dir, steps_per_epoch):
    """The dense run a tolerance-mode run compares itself with: the same
    data, model, tasks, seed, optimizer and number of optimizer steps,
    trained as plain multi-task (single-task for one task) learning.

    Args:
        config: the tolerance-mode ExperimentConfig.
        model_dir: where the reference run goes.
        steps_per_epoch: the meta run's optimizer steps per epoch.
    """
    return config.replace(
        mode="stl" if len(config.tasks) == 1 else "mtl",
        training=dataclasses.replace(config.training,
                                     steps_per_epoch=steps_per_epoch),
        sparsity=None, meta=None, pruning=None, transfer=None,
        model_dir=model_dir)


_SECTIONS = {
    "data": DataConfig, "model": ModelConfig, "training": TrainingConfig,
    "sparsity": SparsityConfig, "meta": MetaConfig,
    "pruning": PruningConfig, "transfer": TransferConfig,
}


def _strip_run_control(config):
    result = {}
    for field in dataclasses.fields(config):
        if field.metadata.get("run_control"):
            continue
        value = getattr(config, field.name)
        if dataclasses.is_dataclass(value):
            value = _strip_run_control(value)
        elif isinstance(value, tuple):
            value = list(value)
        result[field.name] = value
    return result


def to_dict(config):
    """The JSON-ready dict of `config`, with `version`."""
    payload = dataclasses.asdict(config)
    payload["version"] = CONFIG_VERSION
    return _lists(payload)


def _lists(value):
    if isinstance(value, dict):
        return {k: _lists(v) for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        return [_lists(v) for v in value]
    return value


def from_dict(payload):
    """Rebuilds (and so re-validates) a config written by `to_dict`.

    Raises:
        ValueError: for another version, unknown fields or invalid values.
    """
    payload = dict(payload)
    version = payload.pop("version", None)
    _check(version in _READABLE_VERSIONS,
           f"config version {version} is not one of "
           f"{', '.join(map(str, _READABLE_VERSIONS))} (written by another "
           "ms_keras).")
    if version == 1 and payload.get("meta") and payload.get("sparsity"):
        payload["meta"] = {**payload["meta"],
                           "sparsity_control": control_lib.PAPER}
    try:
        for name, cls in _SECTIONS.items():
            if payload.get(name) is not None:
                payload[name] = cls(**payload[name])
        return ExperimentConfig(**payload)
    except TypeError as e:
        raise ValueError(f"config has unknown or missing fields ({e}).") from None
