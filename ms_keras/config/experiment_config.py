"""`ExperimentConfig`: everything that defines a run, and how its sections
combine."""

import dataclasses
import typing

from ms_keras.config import choices
from ms_keras.config import sections
from ms_keras.config.schema import LOCATION
from ms_keras.config.schema import require

# Optional sections: present exactly when the run has that part.
OPTIONAL_SECTIONS = ("sparsity", "meta", "pruning", "transfer")
MODES = ("stl", "mtl", "meta")


@dataclasses.dataclass(frozen=True)
class ExperimentConfig:
    """Everything that defines a training run.

    The run's mode follows from the sections: `meta` (Alg. 3) with a
    `meta` section, else `stl` for one task and `mtl` (Alg. 1) for more.
    A sparse meta run without a stated `sparsity_control` chooses its
    sparsity within `DEFAULT_QUALITY_TOLERANCE`.

    Attributes:
        data: where the examples come from.
        tasks: task names, in order.
        model: the network.
        training: the training loop.
        runtime: how it executes (not part of its identity).
        sparsity: the penalty, or None for a dense run.
        meta: the meta-training settings, or None.
        pruning: a pruning baseline, or None.
        transfer: the run a fine-tuning run (or one-shot / iterative
            pruning) starts from, or None.
        model_dir: where the run's files go.
    """

    data: sections.DataConfig
    tasks: tuple
    model: sections.ModelConfig = sections.ModelConfig()
    training: sections.TrainingConfig = sections.TrainingConfig()
    runtime: sections.RuntimeConfig = sections.RuntimeConfig()
    sparsity: typing.Optional[sections.SparsityConfig] = None
    meta: typing.Optional[sections.MetaConfig] = None
    pruning: typing.Optional[sections.PruningConfig] = None
    transfer: typing.Optional[sections.TransferConfig] = None
    model_dir: typing.Optional[str] = dataclasses.field(
        default=None, metadata={LOCATION: True})

    def __post_init__(self):
        object.__setattr__(self, "tasks", tuple(self.tasks))
        require(self.tasks and all(isinstance(t, str) and t
                                   for t in self.tasks),
                f"`tasks` must be a non-empty list of task names. Received: "
                f"tasks={self.tasks!r}")
        for name, cls in SECTIONS.items():
            value = getattr(self, name)
            optional = name in OPTIONAL_SECTIONS
            require(isinstance(value, cls) or (optional and value is None),
                    f"`{name}` must be a {cls.__name__}"
                    f"{' or None' if optional else ''}. Received: {value!r}")
        check_lambda_setting(self.mode, self.sparsity and self.sparsity.lam)
        if self.meta is not None:
            self._check_meta()
        if self.pruning is not None:
            self._check_pruning()

    def _check_meta(self):
        bound = choices.sampler_bound(self.meta.episode_sampler)
        require(bound is None or 1 <= bound <= len(self.tasks),
                f"--episode_sampler={self.meta.episode_sampler}: k must be "
                f"in 1-{len(self.tasks)} for {len(self.tasks)} tasks.")
        control = self.meta.sparsity_control
        require(self.sparse or control is None,
                f"--sparsity_control={control} controls a sparse run; this "
                "one is dense (--sparsity=none).")
        if self.sparse and control is None:
            object.__setattr__(self, "meta", dataclasses.replace(
                self.meta, sparsity_control=choices.TOLERANCE,
                quality_tolerance=(self.meta.quality_tolerance
                                   or choices.DEFAULT_QUALITY_TOLERANCE)))

    def _check_pruning(self):
        method = self.pruning.method
        require(self.meta is None and self.sparsity is None,
                f"--pruning={method} trains a dense stl/mtl model and prunes "
                "it; it does not combine with --mode=meta or a sparsity "
                f"penalty (got --mode={self.mode} --sparsity="
                f"{self.sparsity.kind if self.sparsity else 'none'}).")
        trained = method in choices.PRUNES_A_TRAINED_RUN
        require(trained == (self.transfer is not None),
                f"--pruning={method} "
                + ("prunes a trained run: pass --from_dir=<finished dense "
                   "run>." if trained else "starts from random "
                   "initialisation; --from_dir does not apply."))

    @property
    def mode(self):
        """`meta`, `stl` or `mtl`, from the sections and the task count."""
        if self.meta is not None:
            return "meta"
        return "stl" if len(self.tasks) == 1 else "mtl"

    @property
    def sparse(self):
        return self.sparsity is not None

    @property
    def sparsity_control(self):
        """The control of a sparse meta run, else None."""
        if self.meta is None or not self.sparse:
            return None
        return self.meta.sparsity_control

    @property
    def learns_lambda(self):
        """Whether lambda follows its meta-gradient (the paper's mode)."""
        return self.sparsity_control == choices.PAPER

    @property
    def needs_own_reference(self):
        """Whether the run trains its own dense reference first."""
        return (self.sparsity_control == choices.TOLERANCE
                and not self.meta.reference_dir)

    def replace(self, **changes):
        """A copy with `changes` (section objects or top-level fields)."""
        return dataclasses.replace(self, **changes)

    def identity(self):
        """The config as a dict without its runtime section and locations:
        two runs with the same identity are the same experiment."""
        return _identity(self)


SECTIONS = {
    "data": sections.DataConfig, "model": sections.ModelConfig,
    "training": sections.TrainingConfig, "runtime": sections.RuntimeConfig,
    "sparsity": sections.SparsityConfig, "meta": sections.MetaConfig,
    "pruning": sections.PruningConfig, "transfer": sections.TransferConfig,
}


def _identity(value):
    result = {}
    for field in dataclasses.fields(value):
        if field.metadata.get(LOCATION) or field.name == "runtime":
            continue
        item = getattr(value, field.name)
        if dataclasses.is_dataclass(item):
            item = _identity(item)
        elif isinstance(item, tuple):
            item = list(item)
        result[field.name] = item
    return result


def check_lambda_setting(mode, lam):
    """A fixed lambda belongs to sparse stl/mtl runs; meta runs set it.

    Args:
        mode: `stl`, `mtl` or `meta`.
        lam: the fixed lambda of a sparse run, None for a dense run.
    """
    if lam is None:
        return
    require(mode == "meta" or lam > 0,
            f"--mode={mode} with sparsity needs a fixed --lam > 0 (the paper "
            f"uses 1e-3, 1e-4, 1e-5); got --lam={lam}.")
    require(mode != "meta" or not lam,
            "--lam fixes lambda for stl/mtl runs; --mode=meta learns it (set "
            "its start with --lambda_init).")


def for_finetuning(source, model_dir, transfer, tasks=None, training=None,
                   data=None, runtime=None):
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
        training, data, runtime: `{field: value}` replacing the source's
            fields of that section.
    """
    return source.replace(
        tasks=tuple(tasks or source.tasks),
        data=dataclasses.replace(source.data, **(data or {})),
        training=dataclasses.replace(source.training, **(training or {})),
        runtime=dataclasses.replace(source.runtime, **(runtime or {})),
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
        training=dataclasses.replace(config.training,
                                     steps_per_epoch=steps_per_epoch),
        sparsity=None, meta=None, pruning=None, transfer=None,
        model_dir=model_dir)
