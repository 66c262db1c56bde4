"""`train`'s command line as a config: flags generated from the config's
fields, `--config=run.json` and `--section.field=value` overrides."""

import dataclasses
import json

import pytest
from absl.testing import flagsaver

from ms_keras import config as config_lib
from ms_keras import flag_config
from ms_keras import flags as ms_flags
from ms_keras import train  # noqa: F401  (defines train's flags)
from tests.helpers import assert_flag_error


@pytest.fixture(autouse=True)
def fresh_command_line():
    with flagsaver.flagsaver():
        yield
    ms_flags._EXTRA.update(config=None, overrides=[])


def config_of(*argv):
    ms_flags.parse_with_config(["train", "--model_dir=/tmp/unused", *argv])
    return flag_config.experiment_config()


def test_every_field_of_every_train_section_has_a_flag():
    for name in ("data", "model", "training", "runtime", "sparsity", "meta",
                 "pruning"):
        for field in dataclasses.fields(config_lib.SECTIONS[name]):
            flag = field.metadata.get("flag", field.name)
            assert flag in ms_flags.FLAGS, (name, flag)
            if field.name not in ("kind", "method"):
                assert ms_flags.FLAGS[flag].default == (
                    list(field.default) if isinstance(field.default, tuple)
                    else field.default), flag
                assert ms_flags.FLAGS[flag].help.endswith(
                    field.metadata["help"])


def test_a_runs_config_json_reproduces_its_config(tmp_path):
    recorded = config_of("--sparsity_control=budget", "--target_sparsity=30",
                         "--inner_steps=2", "--tasks=1,2", "--epochs=3")
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config_lib.to_dict(recorded)))
    ms_flags._EXTRA.update(config=None, overrides=[])
    with flagsaver.flagsaver():
        again = config_of(f"--config={path}")
    assert again.replace(model_dir=recorded.model_dir) == recorded


def test_flags_override_the_file_and_dotted_overrides_override_both(
        tmp_path):
    path = tmp_path / "run.json"
    path.write_text(json.dumps({"training": {"epochs": 3,
                                             "learning_rate": 0.01},
                                "tasks": ["depth"]}))
    config = config_of(f"--config={path}", "--learning_rate=0.02",
                       "--training.learning_rate=0.05", "--meta.inner_lr=0.1",
                       "--runtime.verbose=0")
    assert config.training.epochs == 3
    assert config.training.learning_rate == 0.05
    assert config.meta.inner_lr == 0.1 and config.runtime.verbose == 0
    assert config.tasks == ("depth",) and config.mode == "meta"


def test_dotted_overrides_work_without_a_file():
    config = config_of("--mode=mtl", "--model.head_filters=16",
                       "--data.image_size=32,48")
    assert config.model.head_filters == 16
    assert config.data.image_size == (32, 48)


@pytest.mark.parametrize("argv,message", [
    (["--trainig.epochs=3"], "no section 'trainig'"),
    (["--training.epoch=3"], "section 'training' has no field 'epoch'"),
    (["--config=/no/such.json"], "--config=/no/such.json: cannot read it"),
])
def test_a_bad_config_argument_is_one_line_and_exit_2(argv, message,
                                                      capsys):
    with pytest.raises(SystemExit) as exit_info:
        ms_flags.parse_with_config(["train", *argv])
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2
    assert message in err and len(err.splitlines()) == 1


def test_a_file_with_unknown_keys_is_refused(tmp_path, capsys):
    path = tmp_path / "run.json"
    path.write_text(json.dumps({"trainig": {"epochs": 3}}))
    with pytest.raises(SystemExit) as exit_info:
        ms_flags.parse_with_config(["train", f"--config={path}"])
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and len(err.splitlines()) == 1
    assert "unknown keys ['trainig']" in err


def test_the_other_binaries_do_not_take_config_arguments(capsys):
    assert_flag_error("evaluate", ["--training.epochs=3"],
                      "Unknown command line flag 'training.epochs'", capsys)
