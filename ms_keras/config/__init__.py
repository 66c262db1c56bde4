"""The experiment configuration: the schema every option comes from.

An `ExperimentConfig` is everything that defines a run: frozen sections
(data, model, training, runtime, sparsity | None, meta | None, pruning |
None, transfer | None), each validating its own fields from their metadata
(`schema.option`). The run directory keeps it as `config.json`
(`to_dict` / `from_dict`, versioned); `--section.field=value` overrides any
field (`apply_overrides`). The flags of the binaries are generated from the
fields, so a new hyperparameter is one field here and the line that uses
it. This package imports nothing else of ms_keras: every layer may read it.
"""

from ms_keras.config.experiment_config import MODES
from ms_keras.config.experiment_config import OPTIONAL_SECTIONS
from ms_keras.config.experiment_config import SECTIONS
from ms_keras.config.experiment_config import ExperimentConfig
from ms_keras.config.experiment_config import check_lambda_setting
from ms_keras.config.experiment_config import dense_reference
from ms_keras.config.experiment_config import for_finetuning
from ms_keras.config.io import CONFIG_VERSION
from ms_keras.config.io import apply_overrides
from ms_keras.config.io import from_dict
from ms_keras.config.io import parse_override
from ms_keras.config.io import read_partial
from ms_keras.config.io import section_fields
from ms_keras.config.io import to_dict
from ms_keras.config.choices import ACTIVATIONS
from ms_keras.config.choices import ADAM_METRIC
from ms_keras.config.choices import ADAM_METRIC_RESET
from ms_keras.config.choices import ALL_TASKS
from ms_keras.config.choices import BUDGET
from ms_keras.config.choices import CHANNEL
from ms_keras.config.choices import CONTROLS
from ms_keras.config.choices import DEFAULT_ASPP_RATES
from ms_keras.config.choices import DEFAULT_LAMBDA_INIT
from ms_keras.config.choices import DEFAULT_QUALITY_TOLERANCE
from ms_keras.config.choices import DEFAULT_SYNTHETIC_EXAMPLES
from ms_keras.config.choices import DTYPE_POLICIES
from ms_keras.config.sections import DataConfig
from ms_keras.config.choices import INNER_PROX
from ms_keras.config.choices import LAMBDA_OPTIMIZERS
from ms_keras.config.choices import LEARNING_RATE_SCHEDULES
from ms_keras.config.choices import LOSS_WEIGHTINGS
from ms_keras.config.choices import MAGNITUDE
from ms_keras.config.choices import MASK_SOURCES
from ms_keras.config.choices import META
from ms_keras.config.choices import MONITORS
from ms_keras.config.sections import MetaConfig
from ms_keras.config.sections import ModelConfig
from ms_keras.config.choices import NONE
from ms_keras.config.choices import OPTIMIZERS
from ms_keras.config.choices import PAPER
from ms_keras.config.choices import PLAIN
from ms_keras.config.choices import PROX_STEPS
from ms_keras.config.choices import PRUNES_A_TRAINED_RUN
from ms_keras.config.choices import PRUNING_METHODS
from ms_keras.config.sections import PruningConfig
from ms_keras.config.choices import RANDOM
from ms_keras.config.choices import RESET_MOMENTS
from ms_keras.config.sections import RuntimeConfig
from ms_keras.config.choices import SAMPLER_HELP
from ms_keras.config.choices import SPARSE
from ms_keras.config.choices import SPARSITY_KINDS
from ms_keras.config.choices import STEP_DECAY
from ms_keras.config.choices import STEP_DECAY_AT
from ms_keras.config.choices import STRATEGIES
from ms_keras.config.sections import SparsityConfig
from ms_keras.config.choices import TOLERANCE
from ms_keras.config.choices import TRAIN_SCOPES
from ms_keras.config.sections import TrainingConfig
from ms_keras.config.sections import TransferConfig
from ms_keras.config.choices import UNIFORM
from ms_keras.config.choices import UNSTRUCTURED
from ms_keras.config.choices import sampler_bound

__all__ = [
    "ACTIVATIONS",
    "ADAM_METRIC",
    "ADAM_METRIC_RESET",
    "ALL_TASKS",
    "BUDGET",
    "CHANNEL",
    "CONFIG_VERSION",
    "CONTROLS",
    "DEFAULT_ASPP_RATES",
    "DEFAULT_LAMBDA_INIT",
    "DEFAULT_QUALITY_TOLERANCE",
    "DEFAULT_SYNTHETIC_EXAMPLES",
    "DTYPE_POLICIES",
    "DataConfig",
    "ExperimentConfig",
    "INNER_PROX",
    "LAMBDA_OPTIMIZERS",
    "LEARNING_RATE_SCHEDULES",
    "LOSS_WEIGHTINGS",
    "MAGNITUDE",
    "MASK_SOURCES",
    "META",
    "MODES",
    "MONITORS",
    "MetaConfig",
    "ModelConfig",
    "NONE",
    "OPTIMIZERS",
    "OPTIONAL_SECTIONS",
    "PAPER",
    "PLAIN",
    "PROX_STEPS",
    "PRUNES_A_TRAINED_RUN",
    "PRUNING_METHODS",
    "PruningConfig",
    "RANDOM",
    "RESET_MOMENTS",
    "RuntimeConfig",
    "SAMPLER_HELP",
    "SECTIONS",
    "SPARSE",
    "SPARSITY_KINDS",
    "STEP_DECAY",
    "STEP_DECAY_AT",
    "STRATEGIES",
    "SparsityConfig",
    "TOLERANCE",
    "TRAIN_SCOPES",
    "TrainingConfig",
    "TransferConfig",
    "UNIFORM",
    "UNSTRUCTURED",
    "apply_overrides",
    "check_lambda_setting",
    "dense_reference",
    "for_finetuning",
    "from_dict",
    "parse_override",
    "read_partial",
    "sampler_bound",
    "section_fields",
    "to_dict",
]
