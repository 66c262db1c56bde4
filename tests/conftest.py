"""Shared fixtures: quiet TensorFlow, one prepared synthetic dataset dir."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import pytest  # noqa: E402
from absl import flags  # noqa: E402
from absl.testing import absltest  # noqa: E402, F401  (defines test flags)

from ms_keras import runtime  # noqa: E402

# absltest helpers (create_tempdir) and the binaries read parsed flags.
flags.FLAGS.mark_as_parsed()
# As the binaries run (runtime.start): faster to trace and to run.
runtime.tune_graph_optimizations()

# Small enough for a 2-core CPU, large enough for every code path.
TINY_IMAGE = (32, 32)
TINY_EXAMPLES = (24, 8, 8)


@pytest.fixture(scope="session")
def tfds_dir(tmp_path_factory):
    """A TFDS data dir shared by every test (synthetic sets prepared once)."""
    return str(tmp_path_factory.mktemp("tfds"))


def set_precision(dtype):
    """Sets Keras' float type and its global dtype policy together.

    Keras caches a global policy the first time one is needed; changing only
    floatx afterwards would leave layers computing in the old type.
    """
    keras.config.set_floatx(dtype)
    keras.config.set_dtype_policy(dtype)


@pytest.fixture(autouse=True)
def default_floatx():
    """Tests that switch to float64 must not leak it into other tests."""
    set_precision("float32")
    yield
    set_precision("float32")


@pytest.fixture(scope="session")
def meta_run(tfds_dir, tmp_path_factory):
    """A finished meta-sparsity run on tasks 1-2 with a sparse backbone.

    Trained once for the whole session: under pytest-xdist the first worker
    that needs it trains it into the session's common temporary directory
    while the others wait on a lock, then read it (tests only read it).
    """
    import fcntl

    from tests.helpers import META_FLAGS
    from tests.helpers import run_train
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # shared by the workers of this session
    model_dir = root / "meta_source" / "run"
    with open(root / "meta_source.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (model_dir / "metrics.json").exists():
            run_train(tfds_dir, str(model_dir), **META_FLAGS)
    return str(model_dir)
