"""Imported first by the binaries: keeps TensorFlow's start-up chatter off
the console.

TF 2.21 prints CUDA probing and CPU-feature notes from C++ before its logging
is initialised, so TF_CPP_MIN_LOG_LEVEL no longer hides them. The binaries
import TensorFlow and initialise its devices with file descriptor 2 pointed at
/dev/null, then restore it; a failure still reaches the console because the
exception propagates after the descriptor is restored. Set
TF_CPP_MIN_LOG_LEVEL=0 to see everything.
"""

import os

if os.environ.get("TF_CPP_MIN_LOG_LEVEL") not in ("0", "1"):
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
    _stderr = os.dup(2)
    _devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(_devnull, 2)
    try:
        import tensorflow as tf

        tf.constant(0)  # device initialisation logs happen here
    finally:
        os.dup2(_stderr, 2)
        os.close(_stderr)
        os.close(_devnull)
