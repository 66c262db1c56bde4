"""Every flagfile in flags/ parses and describes a valid run."""

import glob
import os

import pytest
from absl.testing import flagsaver

from ms_keras import finetune  # noqa: F401  (defines finetune's flags)
from ms_keras import flag_config
from ms_keras import flags as ms_flags
from ms_keras import train  # noqa: F401  (defines train's flags)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FLAGFILES = sorted(glob.glob(os.path.join(REPO, "flags", "*.cfg")))


@pytest.mark.parametrize("path", FLAGFILES, ids=os.path.basename)
def test_flagfile_parses_into_a_valid_run(path, monkeypatch):
    monkeypatch.chdir(REPO)  # flagfiles include flags/<dataset>_common.cfg
    with flagsaver.flagsaver():
        ms_flags.parse(["prog", f"--flagfile={path}",
                        "--model_dir=/tmp/unused"])
        if os.path.basename(path).startswith("metatest_"):
            assert ms_flags.FLAGS["train_scope"].present
            return
        config = flag_config.experiment_config()
        name = os.path.basename(path)
        # What a flagfile trains is written in it, not left to defaults.
        assert ms_flags.FLAGS["mode"].present or name.endswith("_common.cfg")
        if "meta_sparsity" in name or name == "quickstart.cfg":
            assert config.mode == "meta" and config.sparsity.kind == "channel"
            assert ms_flags.FLAGS["sparsity_control"].present
        if "meta_sparsity" in name:
            assert config.meta.sparsity_control == "paper"
            assert config.meta.lambda_init == 1e-3
        if name == "quickstart.cfg":
            assert config.meta.sparsity_control == "tolerance"


def test_every_paper_configuration_has_a_flagfile():
    names = {os.path.basename(p) for p in FLAGFILES}
    for dataset in ("nyu", "celeba"):
        for kind in ("stl", "mtl", "fixed_stl", "fixed_mtl", "meta_baseline"):
            assert f"{dataset}_{kind}.cfg" in names
    for name in ("nyu_meta_sparsity_t123.cfg", "nyu_meta_sparsity_t234.cfg",
                 "nyu_meta_sparsity_t1234.cfg",
                 "celeba_meta_sparsity_t1_7.cfg",
                 "celeba_meta_sparsity_t2_7.cfg",
                 "celeba_meta_sparsity_t1237.cfg", "quickstart.cfg",
                 "metatest_same_tasks.cfg", "metatest_new_task_head.cfg",
                 "metatest_new_task_all.cfg"):
        assert name in names
