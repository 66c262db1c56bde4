"""The sections of an experiment's configuration, and what each option may be.

Every option is one field with its help, allowed values and bounds
(`schema.option`); the flags are generated from these fields. The names of
registered things (datasets, backbones) are checked by their registries.
"""

import dataclasses
import typing


from ms_keras.config import choices
from ms_keras.config.schema import NEEDS
from ms_keras.config.schema import Section
from ms_keras.config.schema import option
from ms_keras.config.schema import require

def _target_sparsity(needs=None):
    """The parameter budget: one flag for meta-sparsity and pruning."""
    return option(
        None, "Backbone parameter sparsity to reach, in percent: the budget "
        "of --sparsity_control=budget or of --pruning.", above=0, below=100,
        needs=needs)


def _target_speedup(needs=None):
    """The FLOPs budget: one flag for meta-sparsity and pruning."""
    return option(
        None, "Structural FLOPs speed-up of the slim backbone to reach, > 1: "
        "the budget of --sparsity_control=budget or of --pruning.", above=1,
        needs=needs)


@dataclasses.dataclass(frozen=True)
class DataConfig(Section):
    """Where the examples of an experiment come from."""

    dataset: str = option("synthetic_nyu", "Dataset. synthetic_* are built "
                          "in; nyu and celeba read your files.")
    image_size: tuple[int, ...] = option(
        (64, 64), "height,width fed to the model; multiples of 8. Synthetic "
        "data is rendered at this size.", minimum=8)
    data_dir: typing.Optional[str] = option(
        None, "Directory with your files of a real dataset (nyu, celeba). "
        "Default: TFDS' manual-download place, <tfds_dir>/downloads/manual/"
        "<dataset>.", location=True)
    tfds_dir: typing.Optional[str] = option(
        None, "Where TFDS keeps prepared examples: the rendered synthetic "
        "datasets and the TFRecords prepared from your files (default: "
        "$TFDS_DATA_DIR or ~/tensorflow_datasets).", location=True)
    segmentation_classes: typing.Optional[int] = option(
        None, "Override the number of segmentation classes: 13 or 40 for "
        "nyu, 3 (background/hair/skin) or 19 for celeba.", minimum=2)
    synthetic_examples: tuple[int, ...] = option(
        choices.DEFAULT_SYNTHETIC_EXAMPLES, "train,validation,test sizes of a "
        "synthetic dataset.", minimum=1)
    synthetic_seed: int = option(0, "Seed of the synthetic data generator.")
    synthetic_holes: bool = option(
        True, "Punch Kinect-like holes (invalid depth and normals) into "
        "synthetic_nyu.")

    def check(self):
        size = self.image_size
        require(len(size) == 2 and not any(s % 8 for s in size),
                f"--image_size={','.join(map(str, size))}: expected "
                "height,width, two positive multiples of 8.")
        require(len(self.synthetic_examples) == 3,
                "--synthetic_examples="
                f"{','.join(map(str, self.synthetic_examples))}: expected "
                "train,validation,test, three positive counts.")
        require(not (self.dataset.startswith("synthetic_") and self.data_dir),
                f"--data_dir={self.data_dir}: dataset '{self.dataset}' is "
                "generated, not read from files (its examples go to "
                "--tfds_dir).")


@dataclasses.dataclass(frozen=True)
class ModelConfig(Section):
    """The multi-task network."""

    backbone: str = option("resnet_tiny", "Dilated ResNet backbone.")
    activation: str = option("relu", "Activation of every block.",
                             choices=choices.ACTIVATIONS)
    head_filters: int = option(0, "Width of the task heads (0: the "
                               "backbone's default).", minimum=0)
    aspp_rates: tuple[int, ...] = option(
        choices.DEFAULT_ASPP_RATES, "Dilation rates of the ASPP branches.",
        minimum=1)
    backbone_weights: typing.Optional[str] = option(
        None, "A keras.applications ResNet50 weights file (e.g. ImageNet's, "
        "saved with keras.applications.ResNet50(weights='imagenet', "
        "include_top=False).save_weights(...)) that --backbone=resnet50_d8 "
        "starts from.")

    def check(self):
        require(self.aspp_rates, "--aspp_rates: expected positive integers.")
        require(not self.backbone_weights or self.backbone == "resnet50_d8",
                f"--backbone_weights={self.backbone_weights} loads "
                "keras.applications ResNet50 weights into --backbone="
                f"resnet50_d8 (got --backbone={self.backbone}).")


@dataclasses.dataclass(frozen=True)
class TrainingConfig(Section):
    """The training loop (Alg. 1; the outer loop of Alg. 3)."""

    batch_size: int = option(8, "Examples per batch (per support and per "
                             "query batch in a meta run).", minimum=1)
    epochs: int = option(10, "Maximum number of epochs.", minimum=1)
    steps_per_epoch: int = option(
        0, "Optimizer steps per epoch (0: one pass over the training "
        "split).", minimum=0)
    validation_steps: int = option(
        0, "Validation batches per epoch (0: all).", minimum=0)
    learning_rate: float = option(1e-3, "(Outer) learning rate.", above=0)
    learning_rate_schedule: str = option(
        "constant", "constant; step: 10x smaller for the last quarter of the "
        "run's optimizer steps (the last epochs settle, so their "
        "evaluations are not the noise of a large step); cosine: decay to 0 "
        "over the run.", choices=choices.LEARNING_RATE_SCHEDULES)
    dtype_policy: str = option(
        "float32", "Keras dtype policy: mixed_bfloat16 or mixed_float16 "
        "compute the network in 16 bits (float16 with dynamic loss "
        "scaling); the weights, lambda, the losses and the prox stay "
        "float32.", choices=choices.DTYPE_POLICIES)
    optimizer: str = option("adam", "Optimizer of the weights.",
                            choices=choices.OPTIMIZERS)
    momentum: float = option(
        0.0, "Momentum of --optimizer=sgd (0: plain SGD, as Alg. 1 and 3 "
        "write it).", minimum=0, below=1)
    clip_norm: float = option(
        0.0, "Clip the (meta-)gradient of the weights to this global norm "
        "before the optimizer step (0: no clipping).", minimum=0)
    loss_weighting: str = option(
        "uncertainty", "uncertainty: Kendall et al. (Eq. 2); equal: plain "
        "sum.", choices=choices.LOSS_WEIGHTINGS)
    monitor: str = option(
        "task_losses", "Model selection (best checkpoint, early stopping) on "
        "the validation split: task_losses (unweighted sum of the task "
        "losses), delta_m (mean relative change of the task metrics against "
        "--delta_m_reference) or loss (the weighted objective, learned "
        "log-variances included).", choices=tuple(choices.MONITORS))
    delta_m_reference: typing.Optional[str] = option(
        None, "A finished run (e.g. dense MTL) whose validation metrics are "
        "the reference of --monitor=delta_m.")
    early_stopping_patience: int = option(
        5, "Epochs without a better --monitor value before stopping (0: "
        "never stop early).", minimum=0)
    seed: int = option(0, "Seed of initialisation, shuffling, augmentation "
                       "and episodes.")

    def check(self):
        require(self.optimizer == "sgd" or not self.momentum,
                f"--momentum={self.momentum} applies to --optimizer=sgd only.")
        require((self.monitor == "delta_m") == bool(self.delta_m_reference),
                "--monitor=delta_m needs --delta_m_reference=<finished run> "
                "and the reference is used by --monitor=delta_m only; got "
                f"--monitor={self.monitor} --delta_m_reference="
                f"{self.delta_m_reference}.")


@dataclasses.dataclass(frozen=True)
class RuntimeConfig(Section):
    """How a run executes and reports: may change when it is resumed, never
    what it computes (not part of its identity)."""

    strategy: str = option(
        "default", "tf.distribute strategy: default (one device), mirrored "
        "(this host's GPUs, else its logical CPUs), multi_worker (the "
        "cluster in TF_CONFIG) or tpu.", choices=choices.STRATEGIES)
    cpu_devices: int = option(
        1, "Split the CPU into this many logical devices (with --strategy="
        "mirrored: try data parallelism without accelerators).", minimum=1)
    deterministic: bool = option(
        False, "Deterministic ops and data order: two runs with one --seed "
        "write the same metrics.json.")
    jit_compile: bool = option(False, "Compile the train step with XLA.")
    verbose: int = option(1, "Progress output: 0 silent, 1 Keras' progress "
                          "bar, 2 one line per epoch.", minimum=0, maximum=2)
    sparsity_log_steps: int = option(
        1, "Steps between TensorBoard sparsity summaries (lambda, "
        "sparsity/parameter, sparsity/group, per-layer channels).",
        minimum=1)
    tuned_values: int = option(
        1, "How many values of this run's sparsity hyperparameter (lambda, "
        "pruning ratio, ...) were tried to arrive at it; recorded with the "
        "training time for the cost table (Table 6).", minimum=1)

    def check(self):
        require(self.cpu_devices == 1 or self.strategy == "mirrored",
                f"--cpu_devices={self.cpu_devices} splits the CPU for "
                f"--strategy=mirrored (got --strategy={self.strategy}).")


@dataclasses.dataclass(frozen=True)
class SparsityConfig(Section):
    """The sparsity penalty on the backbone convolutions."""

    kind: str = option(
        choices.CHANNEL, "Penalty on the backbone convs: none, channel (group "
        "lasso "
        "over input channels, Eq. 5) or unstructured (l1). Default: channel "
        "with --mode=meta, none with stl/mtl.", choices=choices.SPARSITY_KINDS,
        flag="sparsity")
    lam: float = option(0.0, "Fixed lambda of a sparse stl/mtl run (paper: "
                        "1e-3, 1e-4, 1e-5).", minimum=0)
    lambda_beta: float = option(
        1.0, "Softplus sharpness: lam = softplus(beta*raw)/beta.", above=0)
    prox_step: str = option(
        choices.ADAM_METRIC_RESET, "How the outer prox fits the optimizer: "
        "adam_metric (threshold scaled like Adam's step, lr*lam*sqrt(n_g)/"
        "mean(sqrt(v)+eps); the Euclidean step with SGD), reset_moments "
        "(Euclidean threshold, the optimizer's moments of zeroed groups "
        "reset), adam_metric_reset (both) or plain (Euclidean threshold "
        "only).", choices=choices.PROX_STEPS)
    preserve_norm: bool = option(
        True, "The outer prox keeps the norm of every conv kernel that batch "
        "norm follows: the network's function does not depend on it, so "
        "without this the penalty shrinks whole layers for free.")


@dataclasses.dataclass(frozen=True)
class MetaConfig(Section):
    """Meta-training (Alg. 3): episodes, the inner loop, sparsity control."""

    meta_batch_size: int = option(1, "Episodes per meta-update.", minimum=1)
    inner_steps: int = option(1, "SGD steps of the inner loop (k).",
                              minimum=1)
    inner_lr: float = option(1e-2, "Inner-loop learning rate.", above=0)
    first_order: bool = option(False, "First-order meta-gradients (FOMAML) "
                               "instead of second order.")
    inner_prox: str = option(
        "straight_through", "The prox after each inner step: differentiable "
        "(lambda gets its implicit meta-gradient, Eq. 15), straight_through "
        "(same values; a group zeroed inside the inner loop keeps its "
        "weights' meta-gradient) or off (Alg. 3 literally; lambda's "
        "gradient is then R alone, Eq. 14).", choices=choices.INNER_PROX,
        needs=choices.SPARSE)
    regrow_prob: float = option(
        0.0, "Probability that a zeroed group is re-initialised (Glorot) in "
        "the fast weights of an episode (Table 7).", minimum=0, maximum=1,
        needs=choices.SPARSE)
    inner_clip_norm: float = option(
        0.0, "Clip each inner-loop gradient to this global norm (0: off). "
        "Guards the inner step on kernels the prox has shrunk towards zero, "
        "whose gradients grow like 1/norm behind batch norm.", minimum=0)
    episode_sampler: str = option(
        choices.ALL_TASKS, "Episodes drawn per meta-step: "
        f"{choices.SAMPLER_HELP} (uniform: "
        "every non-empty task subset, Eq. 9).")
    sparsity_control: typing.Optional[str] = option(
        None, "How sparse a meta-sparsity run ends: tolerance (the sparsest "
        "backbone whose every task's validation loss stays within "
        "--quality_tolerance percent of a dense reference), budget "
        "(--target_sparsity or --target_flops_speedup) or paper (lambda "
        "follows its meta-gradient from --lambda_init, Eq. 15). Default: "
        "tolerance for a sparse meta run.", choices=choices.CONTROLS,
        needs=choices.SPARSE)
    quality_tolerance: typing.Optional[float] = option(
        None, "Validation loss each task may lose against the dense "
        "reference, in percent (--sparsity_control=tolerance; default "
        f"{choices.DEFAULT_QUALITY_TOLERANCE:g}).", above=0,
        needs=choices.TOLERANCE)
    quality_checks: int = option(
        4, "Evaluations of the validation task losses per epoch on which "
        "--sparsity_control=tolerance moves its sparsity (the last is the "
        "epoch's own validation).", minimum=1, needs=choices.TOLERANCE)
    settle_fraction: float = option(
        0.6, "Share of training after which --sparsity_control=tolerance no "
        "longer raises the sparsity (it still lowers it beyond the "
        "tolerance): the rest recovers at a settled sparsity.", above=0,
        maximum=1, needs=choices.TOLERANCE)
    reference_dir: typing.Optional[str] = option(
        None, "A finished dense run of the same tasks that --sparsity_control"
        "=tolerance compares with (default: the run first trains its own, "
        "same data, model and steps, into <model_dir>/reference).",
        needs=choices.TOLERANCE)
    target_sparsity: typing.Optional[float] = _target_sparsity(choices.BUDGET)
    target_flops_speedup: typing.Optional[float] = _target_speedup(
        choices.BUDGET)
    lambda_init: typing.Optional[float] = option(
        None, "Lambda's start value. Required by --sparsity_control=paper, "
        "where it decides the sparsity; in tolerance and budget modes it "
        "only enters the first step's inner prox (default "
        f"{choices.DEFAULT_LAMBDA_INIT:g}).", above=0, needs=choices.SPARSE)
    lambda_optimizer: str = option(
        "sgd", "Optimizer of lambda's raw weight (--sparsity_control=paper):"
        " sgd (steps proportional to its meta-gradient) or adam (steps of "
        "about --lambda_lr whatever the gradient's size).",
        choices=choices.LAMBDA_OPTIMIZERS, needs=choices.PAPER)
    lambda_lr: float = option(
        0.0, "Learning rate of lambda (--sparsity_control=paper; 0: "
        "--learning_rate).", minimum=0, needs=choices.PAPER)

    def check(self):
        choices.sampler_bound(self.episode_sampler)
        control = self.sparsity_control
        for field in dataclasses.fields(self):
            mode = field.metadata.get(NEEDS)
            if (mode not in (choices.TOLERANCE, choices.BUDGET)
                    or field.default is not None):
                continue
            name, value = field.name, getattr(self, field.name)
            got = (f"--sparsity_control={control}" if control
                   else "a dense meta run, --sparsity=none")
            require(value is None or control == mode,
                    f"--{name}={value} applies to --sparsity_control={mode} "
                    f"(got {got}).")
        if control == choices.TOLERANCE:
            require(self.quality_tolerance is not None,
                    "--sparsity_control=tolerance needs --quality_tolerance="
                    "<percent>.")
        if control == choices.BUDGET:
            require((self.target_sparsity is None)
                    != (self.target_flops_speedup is None),
                    "--sparsity_control=budget needs exactly one budget: "
                    "--target_sparsity=<percent> or --target_flops_speedup="
                    f"<x>; got --target_sparsity={self.target_sparsity} "
                    f"--target_flops_speedup={self.target_flops_speedup}.")
        if control == choices.PAPER:
            require(self.lambda_init is not None,
                    "--sparsity_control=paper needs --lambda_init=<value>: "
                    "lambda's start decides the sparsity there (README, "
                    "sparsity control).")

    @property
    def learns_lambda(self):
        """Whether lambda follows its meta-gradient (the paper's mode)."""
        return self.sparsity_control == choices.PAPER


@dataclasses.dataclass(frozen=True)
class PruningConfig(Section):
    """A pruning baseline (Table 5) at a parameter or FLOPs budget."""

    method: str = option(
        "one_shot", "Prune the backbone's input-channel groups to a budget "
        "(with --mode=stl/mtl, dense): one_shot (a trained --from_dir run "
        "once, then fine-tune), iterative (--pruning_rounds rounds), "
        "progressive (cubic ramp from random initialisation) or "
        "sparse_training (mask fixed at initialisation).",
        choices=choices.PRUNING_METHODS, flag="pruning")
    pruning_mask: str = option(
        choices.MAGNITUDE, "Which groups are pruned first: magnitude (group "
        "RMS over "
        "its layer's), random, or meta (the groups --mask_from zeroed).",
        choices=choices.MASK_SOURCES)
    target_sparsity: typing.Optional[float] = _target_sparsity()
    budget_from: typing.Optional[str] = option(
        None, "A finished run whose parameter sparsity is the budget (e.g. a "
        "meta-sparsity run), instead of --target_sparsity.")
    target_flops_speedup: typing.Optional[float] = _target_speedup()
    mask_from: typing.Optional[str] = option(
        None, "The meta-sparsity run whose zeroed groups --pruning_mask=meta "
        "prunes.")
    pruning_rounds: int = option(4, "Rounds of iterative pruning.",
                                 minimum=1)
    pruning_begin_step: int = option(
        0, "First step of progressive pruning's ramp.", minimum=0)
    pruning_end_step: int = option(
        0, "Last step of progressive pruning's ramp (0: two thirds of the "
        "training steps).", minimum=0)
    pruning_frequency: int = option(
        10, "Steps between progressive pruning updates.", minimum=1)

    def check(self):
        budgets = (self.target_sparsity, self.budget_from,
                   self.target_flops_speedup)
        require(sum(b is not None for b in budgets) == 1,
                f"--pruning={self.method} needs exactly one budget: "
                "--target_sparsity=<percent>, --budget_from=<finished run> "
                "or --target_flops_speedup=<x>; got --target_sparsity="
                f"{self.target_sparsity} --budget_from={self.budget_from} "
                f"--target_flops_speedup={self.target_flops_speedup}.")
        require((self.pruning_mask == choices.META) == bool(self.mask_from),
                "--pruning_mask=meta needs --mask_from=<meta-sparsity run>, "
                "and --mask_from is used by --pruning_mask=meta only; got "
                f"--pruning_mask={self.pruning_mask} "
                f"--mask_from={self.mask_from}.")
        require(not self.pruning_end_step
                or self.pruning_end_step > self.pruning_begin_step,
                f"--pruning_end_step={self.pruning_end_step} must come after "
                f"--pruning_begin_step={self.pruning_begin_step}.")


@dataclasses.dataclass(frozen=True)
class TransferConfig(Section):
    """Where a meta-testing (fine-tuning) or pruning run starts from."""

    from_dir: str = option(
        None, "The finished run to start from: the (meta-)training run a "
        "fine-tuning run adapts, or the dense run one-shot and iterative "
        "pruning prune.")
    train_scope: str = option(
        "all", "all: train backbone and every head (sparsity pattern kept); "
        "new_heads: train only the heads of tasks the source run did not "
        "have.", choices=choices.TRAIN_SCOPES)

    def check(self):
        require(self.from_dir, "A transfer needs --from_dir=<finished run>.")
