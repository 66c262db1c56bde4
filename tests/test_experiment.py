import keras
import pytest

from ms_keras import data as data_lib
from ms_keras.meta.trainer import MetaSparsityTrainer
from ms_keras.training import config as config_lib
from ms_keras.training import experiment


def make_config(tmp_path, **overrides):
    data = data_lib.DataConfig(dataset="synthetic_nyu", image_size=(16, 16))
    values = dict(data=data, tasks=("depth",), model_dir=str(tmp_path),
                  aspp_rates=(1,))
    values.update(overrides)
    return config_lib.ExperimentConfig(**values)


def test_jit_compile_reaches_the_trainer(tmp_path):
    assert experiment.build_trainer(
        make_config(tmp_path, jit_compile=True)).jit_compile is True
    assert experiment.build_trainer(
        make_config(tmp_path)).jit_compile is False


def test_meta_config_builds_a_meta_trainer_with_its_settings(tmp_path):
    trainer = experiment.build_trainer(make_config(
        tmp_path, mode="meta", sparsity="channel", inner_steps=2,
        inner_lr=0.03, first_order=True, lambda_init=0.25, lambda_lr=1e-4,
        clip_norm=2.0, inner_clip_norm=3.0, regrow_prob=0.1))
    assert isinstance(trainer, MetaSparsityTrainer)
    assert (trainer.inner_steps, trainer.inner_lr, trainer.first_order) == (
        2, 0.03, True)
    assert trainer.inner_clip_norm == 3.0 and trainer.regrow_prob == 0.1
    assert float(trainer.lam.value()) == pytest.approx(0.25, rel=1e-5)
    assert float(keras.ops.convert_to_numpy(
        trainer.lambda_optimizer.learning_rate)) == pytest.approx(1e-4)
    assert trainer.optimizer.global_clipnorm == 2.0


def test_fixed_lambda_is_not_trainable(tmp_path):
    trainer = experiment.build_trainer(make_config(
        tmp_path, mode="mtl", sparsity="channel", lam=1e-4))
    assert not trainer.lam.learnable
    assert all("raw" not in v.path for v in trainer.trainable_variables)


@pytest.mark.parametrize("overrides,message", [
    (dict(mode="stl", tasks=("depth", "normals")), "--mode=stl trains one"),
    (dict(mode="mtl", sparsity="channel"), "needs a fixed --lam > 0"),
    (dict(regrow_prob=2.0), "--regrow_prob=2.0"),
    (dict(train_scope="new_heads"), "needs a run to start from"),
    (dict(mode="meta", episode_sampler="size<=3"), "k must be in 1-1"),
])
def test_invalid_configs_are_refused(tmp_path, overrides, message):
    with pytest.raises(ValueError, match=message):
        make_config(tmp_path, **overrides)
