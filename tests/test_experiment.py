"""The experiment config and the trainer it builds."""

import dataclasses

import keras
import numpy as np
import pytest

from ms_keras import build
from ms_keras import config as config_lib
from ms_keras import tasks as tasks_lib
from ms_keras.trainers.meta_sparsity import MetaSparsityTrainer


def make_config(tmp_path, training=None, sparsity=None, meta=None,
                **overrides):
    data = config_lib.DataConfig(dataset="synthetic_nyu", image_size=(16, 16))
    values = dict(
        data=data, tasks=("depth",), model_dir=str(tmp_path),
        model=config_lib.ModelConfig(aspp_rates=(1,)),
        training=config_lib.TrainingConfig(**(training or {})),
        sparsity=None if sparsity is None
        else config_lib.SparsityConfig(**sparsity),
        meta=None if meta is None else config_lib.MetaConfig(**meta))
    values.update(overrides)
    return config_lib.ExperimentConfig(**values)


def test_config_round_trips_through_its_dict(tmp_path):
    config = make_config(tmp_path, sparsity={"kind": "channel"},
                         meta={"inner_steps": 2, "lambda_init": 0.3,
                               "sparsity_control": "paper"})
    payload = config_lib.to_dict(config)
    assert payload["version"] == config_lib.CONFIG_VERSION
    assert config_lib.from_dict(payload) == config
    assert config_lib.from_dict(payload).identity() == config.identity()


def test_a_sparse_meta_config_without_a_control_chooses_its_sparsity(
        tmp_path):
    config = make_config(tmp_path, sparsity={"kind": "channel"},
                         meta={})
    assert config.meta.sparsity_control == "tolerance"
    assert config.meta.quality_tolerance == (
        config_lib.DEFAULT_QUALITY_TOLERANCE)
    assert config.needs_own_reference and not config.learns_lambda
    dense = make_config(tmp_path, meta={})
    assert dense.meta.sparsity_control is None


def test_a_version_1_meta_sparsity_run_reads_as_the_paper_mode(tmp_path):
    config = make_config(tmp_path, sparsity={"kind": "channel"},
                         meta={"lambda_init": 0.3,
                               "sparsity_control": "paper"})
    payload = config_lib.to_dict(config)
    payload["version"] = 1
    for name in ("sparsity_control", "quality_tolerance", "reference_dir",
                 "target_sparsity", "target_flops_speedup"):
        del payload["meta"][name]
    assert config_lib.from_dict(payload) == config


def test_the_mode_follows_from_the_sections(tmp_path):
    assert make_config(tmp_path).mode == "stl"
    assert make_config(tmp_path, tasks=("depth", "normals")).mode == "mtl"
    assert make_config(tmp_path, meta={}).mode == "meta"
    assert config_lib.to_dict(make_config(tmp_path, meta={}))["mode"] == (
        "meta")


def test_a_version_2_config_reads_with_its_runtime_settings_moved(tmp_path):
    config = make_config(tmp_path, sparsity={"kind": "channel"}, meta={})
    payload = config_lib.to_dict(config)
    payload["version"] = 2
    runtime = payload.pop("runtime")
    log_steps = runtime.pop("sparsity_log_steps")
    payload["training"].update(runtime, jit_compile=True)
    payload["sparsity"]["sparsity_log_steps"] = log_steps
    payload["mode"] = "meta"
    read = config_lib.from_dict(payload)
    assert read.runtime.jit_compile and read.replace(
        runtime=config.runtime) == config


def test_dotted_overrides_set_any_field(tmp_path):
    config = make_config(tmp_path, sparsity={"kind": "channel"}, meta={})
    changed = config_lib.apply_overrides(config, [
        "training.learning_rate=1e-4", "meta.inner_steps=3",
        "meta.first_order=true", "model.aspp_rates=2,4",
        "meta.sparsity_control=budget", "meta.target_sparsity=44",
        "meta.quality_tolerance=none", "runtime.verbose=2"])
    assert changed.training.learning_rate == 1e-4
    assert changed.meta.inner_steps == 3 and changed.meta.first_order
    assert changed.model.aspp_rates == (2, 4)
    assert changed.meta.sparsity_control == "budget"
    assert changed.meta.target_sparsity == 44.0
    assert changed.runtime.verbose == 2


@pytest.mark.parametrize("override,message", [
    ("training.learning_rate", "expected --section.field=value"),
    ("trainig.learning_rate=1", "no section 'trainig'"),
    ("training.learnig_rate=1", "has no field 'learnig_rate'"),
    ("training.epochs=ten", "--training.epochs=ten: expected an integer"),
    ("training.learning_rate=-1", "--learning_rate=-1.0: must be > 0"),
    ("meta.first_order=maybe", "expected true or false"),
])
def test_bad_dotted_overrides_are_refused_in_one_line(tmp_path, override,
                                                      message):
    with pytest.raises(ValueError, match=message):
        config_lib.apply_overrides(make_config(tmp_path, meta={}),
                                   [override])


def test_runtime_settings_and_locations_are_not_identity(tmp_path):
    config = make_config(tmp_path)
    moved = config.replace(
        model_dir="/elsewhere",
        runtime=dataclasses.replace(config.runtime, verbose=0,
                                    jit_compile=True, deterministic=True,
                                    sparsity_log_steps=5),
        data=dataclasses.replace(config.data, tfds_dir="/x"))
    assert moved.identity() == config.identity()
    other = config.replace(training=dataclasses.replace(config.training,
                                                        seed=3))
    assert other.identity() != config.identity()


def test_another_version_is_refused(tmp_path):
    payload = config_lib.to_dict(make_config(tmp_path))
    payload["version"] = 0
    with pytest.raises(ValueError, match="config version 0"):
        config_lib.from_dict(payload)


def _xla_must_compile_flags(trainer):
    """`_XlaMustCompile` of every call in the traced train function."""
    traced = [cell.cell_contents for cell in trainer.train_function.__closure__
              if hasattr(cell.cell_contents, "_list_all_concrete_functions")]
    found = []
    for function in traced:
        for concrete in function._list_all_concrete_functions():
            for op in concrete.graph.get_operations():
                try:
                    found.append(op.get_attr("_XlaMustCompile"))
                except ValueError:
                    pass
    return found


@pytest.mark.parametrize("jit", [True, False])
def test_jit_compile_decides_whether_the_step_is_xla_compiled(tmp_path, jit):
    config = make_config(tmp_path)
    trainer = build.build_trainer(config.replace(
        runtime=dataclasses.replace(config.runtime, jit_compile=jit)))
    images = np.zeros((2, 16, 16, 3), np.float32)
    targets = {"depth": np.ones((2, 16, 16, 1), np.float32)}
    trainer.fit(images, targets, epochs=1, batch_size=2, verbose=0)
    assert _xla_must_compile_flags(trainer) == [jit]


def test_meta_config_builds_a_meta_trainer_with_its_settings(tmp_path):
    trainer = build.build_trainer(make_config(
        tmp_path, sparsity={"kind": "channel"},
        training={"clip_norm": 2.0},
        meta=dict(inner_steps=2, inner_lr=0.03, first_order=True,
                  sparsity_control="paper", lambda_init=0.25,
                  lambda_lr=1e-4, inner_clip_norm=3.0, regrow_prob=0.1)))
    assert isinstance(trainer, MetaSparsityTrainer)
    assert (trainer.inner_steps, trainer.inner_lr, trainer.first_order) == (
        2, 0.03, True)
    assert trainer.inner_clip_norm == 3.0 and trainer.regrow_prob == 0.1
    assert float(trainer.lam.value()) == pytest.approx(0.25, rel=1e-5)
    assert float(keras.ops.convert_to_numpy(
        trainer.lambda_optimizer.learning_rate)) == pytest.approx(1e-4)
    assert trainer.optimizer.global_clipnorm == 2.0


def test_fixed_lambda_is_not_trainable(tmp_path):
    trainer = build.build_trainer(make_config(
        tmp_path, sparsity={"kind": "channel", "lam": 1e-4}))
    assert not trainer.lam.learnable
    assert all("raw" not in v.path for v in trainer.trainable_variables)


@pytest.mark.parametrize("overrides,message", [
    (dict(sparsity={"kind": "channel"}), "needs a fixed --lam > 0"),
    (dict(sparsity={"kind": "channel", "lam": 0.1},
          meta={}), "--lam fixes lambda"),
    (dict(meta={"regrow_prob": 2.0}), "--regrow_prob=2.0: must be <= 1"),
    (dict(meta={"episode_sampler": "size<=3"}), "k must be in 1-1"),
    (dict(meta={"episode_sampler": "some"}), "expected uniform"),
    (dict(meta={"inner_prox": "sometimes"}), "--inner_prox=sometimes: "
     "expected one of differentiable"),
    (dict(meta={"target_sparsity": 40.0}), "applies to "
     "--sparsity_control=budget"),
    (dict(model=None), "`model` must be a ModelConfig"),
    (dict(tasks=()), "non-empty list of task names"),
])
def test_invalid_configs_are_refused(tmp_path, overrides, message):
    with pytest.raises(ValueError, match=message):
        make_config(tmp_path, **overrides)


def test_tasks_are_resolved_against_the_dataset(tmp_path):
    config = make_config(tmp_path, tasks=("depth", "colour"))
    with pytest.raises(ValueError, match="Unknown task 'colour'"):
        tasks_lib.task_specs(config)


@pytest.mark.parametrize("schedule,at_74,at_76,at_end", [
    ("constant", 1e-3, 1e-3, 1e-3),
    ("step", 1e-3, 1e-4, 1e-4),
    ("cosine", 1e-3 * (1 + np.cos(np.pi * 0.74)) / 2,
     1e-3 * (1 + np.cos(np.pi * 0.76)) / 2, 0.0),
])
def test_the_learning_rate_follows_its_schedule(schedule, at_74, at_76,
                                               at_end):
    optimizer = build.build_optimizer(config_lib.TrainingConfig(
        learning_rate=1e-3, learning_rate_schedule=schedule), 100)
    rates = []
    for step in (74, 76, 100):
        optimizer.iterations.assign(step)
        rates.append(float(keras.ops.convert_to_numpy(
            optimizer.learning_rate)))
    np.testing.assert_allclose(rates, [at_74, at_76, at_end], rtol=1e-5,
                               atol=1e-9)
