"""Task registry: which tasks each dataset has, how they are numbered and named.

Tasks are numbered as in the paper (T1..T4 for NYU, T1..T7 for CelebA) and also
have names; model outputs, losses and metrics are dicts keyed by task name.
"""

import dataclasses

# Kinds of task. What each needs (targets, augmentation, loss, metrics,
# primary metric, head) is registered in `task_kinds.KINDS`.
SEGMENTATION = "segmentation"
DEPTH = "depth"
NORMALS = "normals"
EDGES = "edges"
ATTRIBUTE = "attribute"

CUSTOM = "custom"  # a user's task: its own loss, metrics and head
BUILT_IN_KINDS = (SEGMENTATION, DEPTH, NORMALS, EDGES, ATTRIBUTE)

# Target conventions (DESIGN.md "Conventions").
IGNORE_LABEL = 255  # segmentation pixels that carry no label
INVALID_DEPTH = 0.0  # depth pixels without a measurement

CELEBA_ATTRIBUTES = (
    "male",
    "smiling",
    "big_lips",
    "high_cheekbones",
    "wearing_lipstick",
    "bushy_eyebrows",
)

# CelebAMask-HQ part classes, in the official painting order (later parts are
# painted over earlier ones); class 0 is background.
CELEBA_PART_NAMES = (
    "background", "skin", "nose", "eye_g", "l_eye", "r_eye", "l_brow",
    "r_brow", "l_ear", "r_ear", "mouth", "u_lip", "l_lip", "hair", "hat",
    "ear_r", "neck_l", "neck", "cloth",
)


@dataclasses.dataclass(frozen=True)
class TaskSpec:
    """One task of a dataset.

    Attributes:
        number: the paper's task number (1-based), e.g. 2 for NYU depth (0
            for a user's task).
        name: the task's name, the key of model outputs, losses and metrics.
        kind: one of `segmentation`, `depth`, `normals`, `edges`,
            `attribute`, or `custom` (a user's task, `ms_keras.Task`).
        output_channels: channels of the head's output (classes for
            segmentation, 1 for depth/edges/attributes, 3 for normals; None
            when a user's head decides).
        loss: a custom task's Keras loss (a name, a `keras.losses.Loss` or a
            function `(y_true, y_pred) -> loss`); None: the kind's loss.
        metrics: a custom task's Keras metrics (names, instances or
            functions).
        primary: `(metric name, higher is better)` that model selection by
            delta_m and the summaries use; None: the kind's (Table 2), or a
            custom task's first metric (higher is better for accuracy-like
            names), else its loss.
    """

    number: int
    name: str
    kind: str
    output_channels: int
    loss: object = dataclasses.field(default=None, compare=False)
    metrics: tuple = dataclasses.field(default=(), compare=False)
    primary: tuple = dataclasses.field(default=None, compare=False)


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """A dataset and its tasks.

    Attributes:
        name: the `--dataset` value (its files: `data/sources.py`).
        synthetic: True for the built-in procedural datasets.
        tasks: the dataset's tasks, ordered by number.
    """

    name: str
    synthetic: bool
    tasks: tuple

    @property
    def task_names(self):
        return tuple(t.name for t in self.tasks)

    def task(self, name):
        """Returns the TaskSpec called `name`."""
        for spec in self.tasks:
            if spec.name == name:
                return spec
        raise ValueError(
            f"Dataset '{self.name}' has no task named '{name}'. "
            f"Allowed: {', '.join(self.task_names)}"
        )


class Task(TaskSpec):
    """A task of a multi-task model: its name, loss and metrics.

    The name is the key of the model's outputs, of the targets a dataset
    yields and of every logged figure (`<name>_loss`, `val_<name>_<metric>`).
    Any Keras loss and metrics work (their second derivatives must exist
    for second-order meta-gradients); the built-in kinds carry the paper's
    losses and metrics (Table 2) and their target conventions.

    Example:

    >>> tasks = [ms_keras.Task("digit", loss="sparse_categorical_crossentropy",
    ...                        metrics=["sparse_categorical_accuracy"]),
    ...          ms_keras.Task.depth("depth")]

    Args:
        name: the task's name.
        loss: a Keras loss name, `keras.losses.Loss` or function
            `(y_true, y_pred) -> loss`.
        metrics: Keras metrics: names, `keras.metrics.Metric` instances
            (each trainer gets its own copy) or functions.
        primary: `(metric name, higher is better)` for model selection and
            summaries (default: see `TaskSpec`).
    """

    def __init__(self, name, loss=None, metrics=(), primary=None, *,
                 kind=CUSTOM, output_channels=None, number=0):
        if not isinstance(name, str) or not name:
            raise ValueError(f"A task needs a name. Received: name={name!r}")
        if kind == CUSTOM and loss is None:
            raise ValueError(
                f"Task '{name}' needs a `loss` (or a built-in kind: "
                "Task.segmentation, .depth, .normals, .edges, .attribute).")
        if kind not in (CUSTOM, *BUILT_IN_KINDS):
            raise ValueError(
                f"Unknown task kind '{kind}'. Allowed: "
                f"{', '.join((CUSTOM, *BUILT_IN_KINDS))}")
        if primary is not None and (len(primary) != 2
                                    or not isinstance(primary[0], str)):
            raise ValueError(
                "`primary` must be (metric name, higher is better). "
                f"Received: primary={primary!r}")
        values = dict(number=number, name=name, kind=kind,
                      output_channels=output_channels, loss=loss,
                      metrics=tuple(metrics or ()),
                      primary=None if primary is None else tuple(primary))
        for field, value in values.items():
            object.__setattr__(self, field, value)

    @classmethod
    def segmentation(cls, name="segmentation", classes=2):
        """Semantic segmentation: int labels `(b, h, w)`, 255 = ignore;
        pixel cross-entropy, mIoU and pixel accuracy."""
        return cls(name, kind=SEGMENTATION, output_channels=int(classes))

    @classmethod
    def depth(cls, name="depth"):
        """Depth in metres `(b, h, w, 1)`, 0 = no measurement; Hu et al.'s
        loss, MAE and absolute relative error."""
        return cls(name, kind=DEPTH, output_channels=1)

    @classmethod
    def normals(cls, name="normals"):
        """Surface normals `(b, h, w, 3)`, all-zero = invalid; 1 - cosine,
        cosine similarity and angle statistics."""
        return cls(name, kind=NORMALS, output_channels=3)

    @classmethod
    def edges(cls, name="edges"):
        """Edges in {0, 1} `(b, h, w, 1)`; weighted binary cross-entropy,
        MAE."""
        return cls(name, kind=EDGES, output_channels=1)

    @classmethod
    def attribute(cls, name):
        """A binary image attribute in {0, 1} `(b, 1)`, predicted as a
        logit; binary cross-entropy, accuracy and balanced accuracy."""
        return cls(name, kind=ATTRIBUTE, output_channels=1)


SYNTHETIC_NYU_CLASSES = 6  # floor, wall, ceiling, box, sphere, cylinder
NYU_CLASSES = 40
CELEBA_CLASSES = len(CELEBA_PART_NAMES)
CELEBA_MERGED_CLASSES = 3  # background, hair, skin


def _nyu_tasks(num_classes):
    return (
        TaskSpec(1, "segmentation", SEGMENTATION, num_classes),
        TaskSpec(2, "depth", DEPTH, 1),
        TaskSpec(3, "normals", NORMALS, 3),
        TaskSpec(4, "edges", EDGES, 1),
    )


def _celeba_tasks(num_classes):
    attributes = tuple(
        TaskSpec(i + 2, name, ATTRIBUTE, 1)
        for i, name in enumerate(CELEBA_ATTRIBUTES)
    )
    return (TaskSpec(1, "segmentation", SEGMENTATION, num_classes),) + attributes


# Each dataset's tasks: `(tasks of a class count, synthetic, default classes)`.
_DATASETS = {
    "synthetic_nyu": (_nyu_tasks, True, SYNTHETIC_NYU_CLASSES),
    "nyu": (_nyu_tasks, False, NYU_CLASSES),
    "synthetic_celeba": (_celeba_tasks, True, CELEBA_CLASSES),
    "celeba": (_celeba_tasks, False, CELEBA_CLASSES),
}

DATASET_NAMES = tuple(_DATASETS)


def get_dataset(name, segmentation_classes=None):
    """Returns the DatasetSpec of dataset `name`.

    Args:
        name: one of `DATASET_NAMES`.
        segmentation_classes: overrides the number of segmentation classes
            (e.g. 13 for NYUv2's 13-class labelling, 3 for CelebA's
            background/hair/skin merge). None keeps the dataset's default.

    Raises:
        ValueError: for an unknown dataset or a non-positive class count.
    """
    if name not in _DATASETS:
        raise ValueError(
            f"Unknown dataset '{name}'. Allowed: {', '.join(DATASET_NAMES)}"
        )
    make_tasks, synthetic, classes = _DATASETS[name]
    if segmentation_classes is not None:
        if segmentation_classes < 2:
            raise ValueError(
                "`segmentation_classes` must be >= 2. "
                f"Received: segmentation_classes={segmentation_classes}"
            )
        classes = segmentation_classes
    return DatasetSpec(name, synthetic, make_tasks(classes))


def parse_tasks(dataset, tasks):
    """Resolves task numbers or names to TaskSpecs, in the order given.

    Args:
        dataset: a DatasetSpec.
        tasks: iterable of task numbers (int or digit strings) or names;
            `[1, 2]`, `["1", "depth"]` and `["segmentation", "depth"]` are
            accepted.

    Returns:
        A tuple of TaskSpecs.

    Raises:
        ValueError: when `tasks` is empty, names an unknown task or a number
            outside the dataset's range, or repeats a task.
    """
    items = [str(t).strip() for t in tasks]
    n = len(dataset.tasks)
    allowed = f"numbers 1-{n} or names {', '.join(dataset.task_names)}"
    if not items or any(not item for item in items):
        raise ValueError(
            f"`tasks` must be a non-empty list of {allowed} for dataset "
            f"'{dataset.name}'. Received: tasks={','.join(items)!r}"
        )
    resolved = []
    for item in items:
        if item.isdigit():
            number = int(item)
            if not 1 <= number <= n:
                raise ValueError(
                    f"Task {number} is outside dataset '{dataset.name}' "
                    f"(tasks 1-{n}). Received: tasks={','.join(items)}"
                )
            spec = dataset.tasks[number - 1]
        elif item in dataset.task_names:
            spec = dataset.task(item)
        else:
            raise ValueError(
                f"Unknown task '{item}' for dataset '{dataset.name}'; "
                f"allowed: {allowed}. Received: tasks={','.join(items)}"
            )
        if spec in resolved:
            raise ValueError(
                f"Task '{spec.name}' (T{spec.number}) is listed twice. "
                f"Received: tasks={','.join(items)}"
            )
        resolved.append(spec)
    return tuple(resolved)


def dataset_spec(data):
    """The DatasetSpec of a `config.DataConfig` (its class count applied).

    Raises:
        ValueError: for an unknown dataset or class count.
    """
    try:
        return get_dataset(data.dataset, data.segmentation_classes)
    except ValueError as e:
        raise ValueError(f"--dataset={data.dataset}: {e}") from None


def task_specs(config):
    """The TaskSpecs of an `ExperimentConfig`'s tasks, in its order.

    Raises:
        ValueError: for a task its dataset does not have.
    """
    return parse_tasks(dataset_spec(config.data), config.tasks)
