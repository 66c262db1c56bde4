"""Reading the user's image and array files, with errors that name them."""

import numpy as np
from PIL import Image


def read_or_fail(path, reader):
    """`reader(path)`, or ValueError naming the file that could not be read."""
    try:
        return reader(path)
    except Exception as e:  # any decoding failure is the file's fault
        raise ValueError(f"{path}: cannot read it ({e}).") from None


def rgb(path):
    """An image file as uint8 RGB `(h, w, 3)`."""
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"), np.uint8)


def raw(path):
    """An image file's pixel values, unconverted (e.g. label PNGs)."""
    with Image.open(path) as image:
        return np.asarray(image)


def mask(path):
    """A mask image as bool: True where non-zero."""
    with Image.open(path) as image:
        return np.asarray(image.convert("L")) > 0
