"""Converts the official NYUv2 release to the NYUD_MT layout.

    python tools/prepare_nyu.py --source=<dir> --output_dir=<dir> [--classes=40]

See `ms_keras/data/nyu_official.py` for what is read and written. The output
directory appears only when complete.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))))

from ms_keras import quiet_tf  # noqa: E402,F401  (must precede TensorFlow)

from absl import app  # noqa: E402
from absl import flags  # noqa: E402

from ms_keras.data import nyu_official  # noqa: E402

_SOURCE = flags.DEFINE_string("source", None,
                              "Directory with the official .mat files.")
_OUTPUT_DIR = flags.DEFINE_string("output_dir", None,
                                  "Destination (must not exist yet).")
_CLASSES = flags.DEFINE_enum("classes", "40", ["40", "13"],
                             "Segmentation classes to map the 894 labels to.")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    try:
        nyu_official.convert(_SOURCE.value, _OUTPUT_DIR.value,
                             int(_CLASSES.value))
    except (ValueError, OSError) as e:  # OSError: unreadable .mat files
        sys.exit(f"prepare_nyu.py: error: {e}")


if __name__ == "__main__":
    flags.mark_flags_as_required(["source", "output_dir"])
    app.run(main)
