"""TFDS builders of the built-in synthetic datasets.

Each configuration (resolution, split sizes, seed, holes) is its own TFDS
config, prepared once into `data_dir` and then read like any TFDS dataset, so
synthetic and real data share one loading path. Example `i` of a split is a
function of `(seed, split, i)` alone.
"""

import dataclasses

import numpy as np
import tensorflow_datasets as tfds

from ms_keras.data import features
from ms_keras.data import synthetic_celeba
from ms_keras.data import synthetic_nyu

SPLITS = ("train", "validation", "test")


@dataclasses.dataclass
class SyntheticConfig(tfds.core.BuilderConfig):
    """Resolution, split sizes and seed of a synthetic dataset."""

    height: int = 64
    width: int = 64
    num_train: int = 1000
    num_validation: int = 200
    num_test: int = 200
    seed: int = 0
    holes: bool = True


def make_config(height, width, num_train=1000, num_validation=200,
                num_test=200, seed=0, holes=True):
    """A SyntheticConfig whose name encodes every field (one cache entry each)."""
    name = (f"{height}x{width}_n{num_train}-{num_validation}-{num_test}"
            f"_seed{seed}{'_holes' if holes else ''}")
    return SyntheticConfig(
        name=name, height=height, width=width, num_train=num_train,
        num_validation=num_validation, num_test=num_test, seed=seed,
        holes=holes)


class _SyntheticBuilder(tfds.core.GeneratorBasedBuilder):
    """Shared split logic; subclasses define `_features` and `_render`."""

    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        config = self.builder_config
        return tfds.core.DatasetInfo(
            builder=self,
            description=self.__doc__,
            features=self._features(config.height, config.width),
        )

    def _split_generators(self, dl_manager):
        config = self.builder_config
        sizes = (config.num_train, config.num_validation, config.num_test)
        return {split: self._generate_examples(split_id, size)
                for split_id, (split, size) in enumerate(zip(SPLITS, sizes))}

    def _generate_examples(self, split_id, size):
        config = self.builder_config
        for index in range(size):
            rng = np.random.default_rng([config.seed, split_id, index])
            yield index, self._render(rng, config)


class SyntheticNyu(_SyntheticBuilder):
    """Procedural indoor scenes with segmentation, depth, normals and edges."""

    def _features(self, height, width):
        return features.nyu_features(height, width)

    def _render(self, rng, config):
        return synthetic_nyu.render_scene(rng, config.height, config.width,
                                          holes=config.holes)


class SyntheticCeleba(_SyntheticBuilder):
    """Painted faces with 19-class part labels and six attributes."""

    def _features(self, height, width):
        return features.celeba_features(height, width)

    def _render(self, rng, config):
        return synthetic_celeba.render_face(rng, config.height, config.width)

