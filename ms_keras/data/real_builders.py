"""TFDS builders that prepare the user's NYUv2 / CelebAMask-HQ files.

The files are read from TFDS' manual directory (the user's `--data_dir`,
by default `~/tensorflow_datasets/downloads/manual/<dataset>`), checked,
resized to the training resolution with the pipeline's rules (nearest for
labels, edges and depth; normals renormalised) and written once as TFRecords
into TFDS' data directory (`--tfds_dir`), keyed by the source directory and
the settings, after which training reads them like any TFDS dataset. The
user's files are only read.
"""

import dataclasses
import hashlib
import os

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from ms_keras.data import celeba
from ms_keras.data import features
from ms_keras.data import nyu
from ms_keras.data import pipeline

SPLITS = ("train", "validation", "test")


@dataclasses.dataclass
class RealConfig(tfds.core.BuilderConfig):
    """Layout and stored resolution of a prepared real dataset."""

    layout: str = ""
    height: int = 256
    width: int = 256


def make_config(layout, height, width, source_dir):
    """A config named by the layout, the size and the source directory."""
    source = hashlib.sha256(
        os.path.realpath(source_dir).encode()).hexdigest()[:10]
    return RealConfig(name=f"{layout}_{height}x{width}_src{source}",
                      layout=layout, height=height, width=width)


def _to_numpy(example):
    return {k: np.asarray(v) for k, v in example.items()}


class NyuDepthV2Files(tfds.core.GeneratorBasedBuilder):
    """NYUv2 (NYUD_MT or MTAN layout) from the user's files."""

    VERSION = tfds.core.Version("1.0.0")
    MANUAL_DOWNLOAD_INSTRUCTIONS = """
    Put NYUv2 into ~/tensorflow_datasets/downloads/manual/nyu (or pass
    --data_dir) in one of two layouts: NYUD_MT (images/, segmentation/,
    depth/, normals/, edge/, gt_sets/{train,val}.txt; download NYUD_MT.tgz
    via https://github.com/SimonVandenhende/Multi-Task-Learning-PyTorch) or
    MTAN (train|val/image|label|depth|normal/<i>.npy; download via
    https://github.com/lorenmt/mtan). The official release
    (nyu_depth_v2_labeled.mat, splits.mat, classMapping40.mat from
    https://cs.nyu.edu/~fergus/datasets/nyu_depth_v2.html) is converted to
    NYUD_MT by tools/prepare_nyu.py.
    """

    def _info(self):
        config = self.builder_config
        return tfds.core.DatasetInfo(
            builder=self, description=self.__doc__,
            features=features.nyu_features(config.height, config.width))

    def _split_generators(self, dl_manager):
        layout = self.builder_config.layout
        examples = nyu.list_examples(str(dl_manager.manual_dir), layout)
        return {split: self._generate_examples(examples[split])
                for split in SPLITS}

    def _generate_examples(self, items):
        config = self.builder_config
        for index, paths in enumerate(items):
            example = nyu.read_example(paths, config.layout)
            tensors = {k: tf.constant(v) for k, v in example.items()}
            resized = pipeline.resize_stored_example(
                tensors, (config.height, config.width))
            yield index, _to_numpy(resized)


class CelebaMaskHqFiles(tfds.core.GeneratorBasedBuilder):
    """CelebAMask-HQ (official release) from the user's files."""

    VERSION = tfds.core.Version("1.0.0")
    MANUAL_DOWNLOAD_INSTRUCTIONS = """
    Unpack the official CelebAMask-HQ release (CelebA-HQ-img/,
    CelebAMask-HQ-mask-anno/, CelebAMask-HQ-attribute-anno.txt,
    CelebA-HQ-to-CelebA-mapping.txt; download via
    https://github.com/switchablenorms/CelebAMask-HQ) into
    ~/tensorflow_datasets/downloads/manual/celeba (or pass --data_dir).
    """

    def _info(self):
        config = self.builder_config
        return tfds.core.DatasetInfo(
            builder=self, description=self.__doc__,
            features=features.celeba_features(config.height, config.width))

    def _split_generators(self, dl_manager):
        examples = celeba.list_examples(str(dl_manager.manual_dir))
        return {split: self._generate_examples(examples[split])
                for split in SPLITS}

    def _generate_examples(self, items):
        size = (self.builder_config.height, self.builder_config.width)
        for item in items:
            example = celeba.read_example(item)
            image = tf.image.resize(example["image"], size, method="bilinear")
            labels = tf.image.resize(example["segmentation"][..., None], size,
                                     method="nearest")[..., 0]
            yield item["index"], {
                "image": np.asarray(tf.cast(tf.round(image), tf.uint8)),
                "segmentation": np.asarray(labels),
                "attributes": example["attributes"],
            }
