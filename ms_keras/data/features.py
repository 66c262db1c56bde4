"""TFDS feature layouts shared by the synthetic and the real-data builders."""

import numpy as np
import tensorflow_datasets as tfds

from ms_keras.tasks import CELEBA_ATTRIBUTES


def nyu_features(height, width):
    """Features of an NYU-family example at a fixed resolution."""
    return tfds.features.FeaturesDict({
        "image": tfds.features.Image(shape=(height, width, 3)),
        "segmentation": tfds.features.Tensor(
            shape=(height, width), dtype=np.uint8, encoding="zlib"),
        "depth": tfds.features.Tensor(
            shape=(height, width), dtype=np.float32, encoding="zlib"),
        "normals": tfds.features.Tensor(
            shape=(height, width, 3), dtype=np.float32, encoding="zlib"),
        "edges": tfds.features.Tensor(
            shape=(height, width), dtype=np.uint8, encoding="zlib"),
    })


def celeba_features(height, width):
    """Features of a CelebA-family example at a fixed resolution."""
    return tfds.features.FeaturesDict({
        "image": tfds.features.Image(shape=(height, width, 3)),
        "segmentation": tfds.features.Tensor(
            shape=(height, width), dtype=np.uint8, encoding="zlib"),
        "attributes": tfds.features.Tensor(
            shape=(len(CELEBA_ATTRIBUTES),), dtype=np.int32),
    })
