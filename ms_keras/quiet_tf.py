"""Imported first by the binaries and tools: keeps TensorFlow's start-up
chatter off the console.

TF 2.21 prints CUDA probing and CPU-feature notes from C++ before its logging
is initialised, so TF_CPP_MIN_LOG_LEVEL no longer hides them. TensorFlow is
imported, and later its devices are initialised (`start`), with file
descriptor 2 pointed at /dev/null, then restored; a failure still reaches the
console because the exception propagates after the descriptor is restored.
Set TF_CPP_MIN_LOG_LEVEL=0 to see everything.
"""

import contextlib
import os

_QUIET = os.environ.get("TF_CPP_MIN_LOG_LEVEL") not in ("0", "1")
if _QUIET:
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"


@contextlib.contextmanager
def _silenced():
    if not _QUIET:
        yield
        return
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


with _silenced():
    import tensorflow as tf  # noqa: E402

    # Probing the platforms prints CUDA notes; devices stay configurable.
    tf.config.list_physical_devices()


def start(configure=None):
    """Initialises TensorFlow's devices quietly.

    Args:
        configure: called first, while devices can still be configured
            (e.g. splitting the CPU into logical devices).
    """
    with _silenced():
        if configure is not None:
            configure()
        tf.constant(0)  # device initialisation logs happen here
