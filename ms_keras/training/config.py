"""ExperimentConfig: every setting of a training run, validated."""

import dataclasses

from ms_keras import data as data_lib
from ms_keras import tasks as tasks_lib
from ms_keras.meta import episodes as episodes_lib
from ms_keras.models.heads import DEFAULT_ASPP_RATES
from ms_keras.sparsity import groups as groups_lib

MODES = ("stl", "mtl", "meta")
OPTIMIZERS = ("adam", "sgd")

# ExperimentConfig fields stored under the same name in flags.json.
SETTING_FIELDS = (
    "mode", "backbone", "activation", "head_filters", "batch_size", "epochs",
    "steps_per_epoch", "validation_steps", "learning_rate", "optimizer",
    "loss_weighting", "early_stopping_patience", "seed", "jit_compile",
    "sparsity", "lam", "lambda_init", "lambda_lr", "lambda_beta",
    "meta_batch_size", "inner_steps", "inner_lr", "first_order",
    "inner_prox", "regrow_prob", "episode_sampler", "sparsity_log_steps",
    "clip_norm", "inner_clip_norm", "init_from", "train_scope")

TRAIN_SCOPES = ("all", "new_heads")


def _check(condition, message):
    if not condition:
        raise ValueError(message)


@dataclasses.dataclass(frozen=True)
class ExperimentConfig:
    """Everything that defines a training run.

    Attributes:
        data: where the examples come from (`data.DataConfig`).
        tasks: task names, in order.
        model_dir: where artifacts go.
        mode: `stl` (one task), `mtl` (Alg. 1) or `meta` (Alg. 3).
        backbone: backbone name.
        activation: `relu` or `gelu`.
        head_filters: head width (0: the backbone's default).
        aspp_rates: ASPP dilation rates.
        batch_size: examples per batch (per support/query batch in meta).
        epochs: maximum number of epochs.
        steps_per_epoch: optimizer steps per epoch (0: one pass over train).
        validation_steps: validation batches per epoch (0: the whole split).
        learning_rate: (outer) learning rate.
        optimizer: `adam` or `sgd`.
        clip_norm: clip the (meta-)gradient to this global norm (0: off).
        loss_weighting: `uncertainty` or `equal`.
        early_stopping_patience: epochs without validation improvement before
            stopping (0 disables early stopping).
        seed: seed of initialisation, shuffling, augmentation, episodes.
        jit_compile: compile the train step with XLA.
        verbose: Keras progress output (0, 1, 2).
        sparsity: `none`, `channel` (group lasso) or `unstructured` (l1).
        lam: fixed lambda of a sparse stl/mtl run.
        lambda_init: initial lambda of a meta run (None: U[0.1, 1]).
        lambda_lr: lambda's learning rate (0: `learning_rate`).
        lambda_beta: softplus sharpness of lambda.
        meta_batch_size: episodes per meta-update.
        inner_steps: inner-loop SGD steps (k).
        inner_lr: inner-loop learning rate.
        first_order: first-order meta-gradients (FOMAML).
        inner_prox: apply the prox inside the inner loop.
        regrow_prob: regrowth probability of zero groups in the inner loop.
        inner_clip_norm: bound on the global norm of each inner gradient
            (0: no bound).
        episode_sampler: `uniform`, `all_tasks` or `size<=k`.
        sparsity_log_steps: steps between sparsity summaries.
        init_from: a finished run whose backbone (and the heads of tasks it
            shares) start this one, its sparsity pattern kept (meta-testing).
        train_scope: `all` trains backbone and heads; `new_heads` only the
            heads of tasks `init_from` did not have.
    """

    data: data_lib.DataConfig
    tasks: tuple
    model_dir: str
    mode: str = "mtl"
    backbone: str = "resnet_tiny"
    activation: str = "relu"
    head_filters: int = 0
    aspp_rates: tuple = DEFAULT_ASPP_RATES
    batch_size: int = 8
    epochs: int = 10
    steps_per_epoch: int = 0
    validation_steps: int = 0
    learning_rate: float = 1e-3
    optimizer: str = "adam"
    clip_norm: float = 0.0
    loss_weighting: str = "uncertainty"
    early_stopping_patience: int = 5
    seed: int = 0
    jit_compile: bool = False
    verbose: int = 1
    sparsity: str = groups_lib.NONE
    lam: float = 0.0
    lambda_init: float = None
    lambda_lr: float = 0.0
    lambda_beta: float = 1.0
    meta_batch_size: int = 1
    inner_steps: int = 1
    inner_lr: float = 1e-2
    first_order: bool = False
    inner_prox: bool = True
    regrow_prob: float = 0.0
    inner_clip_norm: float = 0.0
    episode_sampler: str = episodes_lib.UNIFORM
    sparsity_log_steps: int = 1
    init_from: str = None
    train_scope: str = "all"

    def __post_init__(self):
        _check(self.mode in MODES,
               f"--mode={self.mode}: expected one of {', '.join(MODES)}.")
        _check(self.mode != "stl" or len(self.tasks) == 1,
               f"--mode=stl trains one task; got {len(self.tasks)} "
               f"(tasks={','.join(self.tasks)}).")
        _check(self.sparsity in groups_lib.KINDS,
               f"--sparsity={self.sparsity}: expected one of "
               f"{', '.join(groups_lib.KINDS)}.")
        for name in ("batch_size", "epochs", "meta_batch_size", "inner_steps",
                     "sparsity_log_steps"):
            value = getattr(self, name)
            _check(value > 0, f"--{name}={value}: must be positive.")
        for name in ("steps_per_epoch", "validation_steps",
                     "early_stopping_patience", "head_filters", "lambda_lr",
                     "clip_norm", "inner_clip_norm"):
            value = getattr(self, name)
            _check(value >= 0, f"--{name}={value}: must be >= 0.")
        for name in ("learning_rate", "inner_lr", "lambda_beta"):
            value = getattr(self, name)
            _check(value > 0, f"--{name}={value}: must be positive.")
        _check(0.0 <= self.regrow_prob <= 1.0,
               f"--regrow_prob={self.regrow_prob}: must be in [0, 1].")
        _check(self.lambda_init is None or self.lambda_init > 0,
               f"--lambda_init={self.lambda_init}: must be positive.")
        sparse_fixed = self.mode != "meta" and self.sparsity != groups_lib.NONE
        _check(not sparse_fixed or self.lam > 0,
               f"--mode={self.mode} --sparsity={self.sparsity} needs a fixed "
               f"--lam > 0 (the paper uses 1e-3, 1e-4, 1e-5); got "
               f"--lam={self.lam}.")
        _check(self.lam >= 0, f"--lam={self.lam}: must be >= 0.")
        episodes_lib.episode_table(self.episode_sampler, len(self.tasks))
        _check(self.train_scope in TRAIN_SCOPES,
               f"--train_scope={self.train_scope}: expected one of "
               f"{', '.join(TRAIN_SCOPES)}.")
        _check(self.train_scope == "all" or self.init_from,
               "--train_scope=new_heads needs a run to start from.")

    @property
    def task_specs(self):
        return tasks_lib.parse_tasks(self.data.spec, self.tasks)

    @property
    def sparse(self):
        return self.sparsity != groups_lib.NONE

    @property
    def learns_lambda(self):
        return self.mode == "meta" and self.sparse
