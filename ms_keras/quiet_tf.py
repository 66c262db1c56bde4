"""Imported first by the binaries: keeps TensorFlow's C++ start-up chatter
(CUDA probing, CPU feature notes) off the console unless the user asked for
it by setting TF_CPP_MIN_LOG_LEVEL themselves."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
