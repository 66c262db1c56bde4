"""Dataset registry: where each dataset's examples come from.

Each `--dataset` value registers here its TFDS builder and, for a real
dataset, how its files are laid out and checked; a dataset whose stored
class labels differ from its task's (CelebA's 3-class merge) or swap under a
horizontal flip (CelebA's left/right parts) registers the tables. Its tasks
are registered in `tasks.py`, which must load without TensorFlow. Nothing
outside a dataset's own modules branches on its name.
"""

import dataclasses
from typing import Callable

from ms_keras.data import celeba
from ms_keras.data import celeba_parts
from ms_keras.data import nyu
from ms_keras.data import real_builders
from ms_keras.data import synthetic_builders


def _none(*_):
    return None


@dataclasses.dataclass(frozen=True)
class Source:
    """How one dataset's examples are made, checked and read.

    Attributes:
        name: the `--dataset` value.
        builder: the TFDS builder class (`synthetic_builders.make_config` or
            `real_builders.make_config` configures it).
        layout: `files -> layout name` of a real dataset's files.
        check_files: `(files, classes) -> None`; raises ValueError naming
            what is wrong, without reading an image.
        classes_in: `files -> class count` the files' labelling has, or
            None (the dataset's default).
        label_table: `classes -> table or None`: stored class -> the task's
            class.
        mirror_table: `classes -> table or None`: class -> its mirror image's
            class under a horizontal flip.
    """

    name: str
    builder: type
    layout: Callable = _none
    check_files: Callable = _none
    classes_in: Callable = _none
    label_table: Callable = _none
    mirror_table: Callable = _none


def _check_celeba(files, classes):
    celeba.list_examples(files)


SOURCES = {source.name: source for source in (
    Source("synthetic_nyu", synthetic_builders.SyntheticNyu),
    Source("nyu", real_builders.NyuDepthV2Files, layout=nyu.detect_layout,
           check_files=nyu.check_files, classes_in=nyu.classes_in),
    Source("synthetic_celeba", synthetic_builders.SyntheticCeleba,
           label_table=celeba_parts.label_table,
           mirror_table=celeba_parts.mirror_table),
    Source("celeba", real_builders.CelebaMaskHqFiles,
           layout=lambda files: "official", check_files=_check_celeba,
           label_table=celeba_parts.label_table,
           mirror_table=celeba_parts.mirror_table),
)}


def get(name):
    """The `Source` of dataset `name`.

    Raises:
        ValueError: for a dataset without one.
    """
    if name not in SOURCES:
        raise ValueError(f"Unknown dataset '{name}'. Allowed: "
                         f"{', '.join(SOURCES)}")
    return SOURCES[name]
