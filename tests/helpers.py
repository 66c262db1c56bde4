"""Helpers that drive the train binary with tiny settings."""

import json
import os
import subprocess
import sys

import numpy as np

import pytest
from absl.testing import flagsaver

from ms_keras import flags as ms_flags
from ms_keras import train
from tests.conftest import TINY_EXAMPLES


def tiny_flags(tfds_dir, model_dir, **overrides):
    # Tests name the mode they train; the binary's default (meta-sparsity
    # in tolerance mode) is tested on its own.
    values = dict(
        mode="mtl", dataset="synthetic_nyu", tasks=["1", "2", "3", "4"],
        image_size=[32, 32], synthetic_examples=list(TINY_EXAMPLES),
        backbone="resnet_tiny", aspp_rates=[1, 2], batch_size=4,
        epochs=1, steps_per_epoch=2, validation_steps=1, tfds_dir=tfds_dir,
        model_dir=model_dir, verbose=0)
    values.update(overrides)
    return values


def run_train(tfds_dir, model_dir, **overrides):
    with flagsaver.flagsaver(**tiny_flags(tfds_dir, model_dir, **overrides)):
        train.main(["train"])


def read(model_dir, name):
    with open(os.path.join(model_dir, name)) as f:
        return json.load(f)


META_FLAGS = dict(mode="meta", sparsity="channel", sparsity_control="paper",
                  meta_batch_size=2, inner_steps=1, lambda_init=0.06,
                  learning_rate=0.01,
                  steps_per_epoch=3, tasks=["1", "2"])


def assert_flag_error(program, argv, message, capsys):
    """Parsing `argv` exits with 2 and one stderr line containing `message`."""
    with flagsaver.flagsaver():
        with pytest.raises(SystemExit) as exit_info:
            ms_flags.parse([program, *argv])
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2
    assert message in err
    assert len(err.splitlines()) == 1


def serve_without_ms_keras(saved_model_dir, images, tmp_path):
    """The outputs of a SavedModel's `serve` on `images`, computed in a
    fresh Python that never imports ms_keras (as a user's server would)."""
    np.save(tmp_path / "images.npy", images)
    script = (
        "import sys, numpy as np, tensorflow as tf\n"
        f"m = tf.saved_model.load({str(saved_model_dir)!r})\n"
        f"out = m.serve(np.load({str(tmp_path / 'images.npy')!r}))\n"
        "assert not any(k.startswith('ms_keras') for k in sys.modules)\n"
        f"np.savez({str(tmp_path / 'out.npz')!r}, "
        "**{k: v.numpy() for k, v in out.items()})\n")
    result = subprocess.run([sys.executable, "-c", script],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    return np.load(tmp_path / "out.npz")
