"""CelebAMask-HQ part masks -> one label map, and the 3-class merge.

CelebAMask-HQ ships one binary mask per face part. The official script paints
them into a label map in a fixed order (later parts overwrite earlier ones);
both the real-data reader and the synthetic faces use `paint_parts`.
"""

import numpy as np

from ms_keras.tasks import CELEBA_PART_NAMES

# Painting order: every part after background, in class-id order.
PAINT_ORDER = CELEBA_PART_NAMES[1:]

_MERGED_HAIR = ("hair",)
_MERGED_SKIN = ("skin", "nose", "eye_g", "l_eye", "r_eye", "l_brow", "r_brow",
                "l_ear", "r_ear", "mouth", "u_lip", "l_lip", "neck")


def paint_parts(part_masks, shape):
    """Paints binary part masks into a label map in the official order.

    Args:
        part_masks: dict from part name (see `CELEBA_PART_NAMES`) to a boolean
            array of `shape`; parts may be missing.
        shape: `(h, w)` of the label map.

    Returns:
        uint8 `(h, w)` labels, 0 = background.
    """
    labels = np.zeros(shape, np.uint8)
    for class_id, name in enumerate(PAINT_ORDER, start=1):
        mask = part_masks.get(name)
        if mask is not None:
            labels[mask] = class_id
    return labels


def merge_lookup():
    """uint8 lookup table mapping the 19 part classes to background/hair/skin.

    Hair is class 1; skin and every facial part on it (nose, eyes, brows,
    ears, mouth, lips, eyeglasses) and the neck are class 2; hat, earrings,
    necklace, cloth and background are class 0.
    """
    table = np.zeros(len(CELEBA_PART_NAMES), np.uint8)
    for class_id, name in enumerate(CELEBA_PART_NAMES):
        if name in _MERGED_HAIR:
            table[class_id] = 1
        elif name in _MERGED_SKIN:
            table[class_id] = 2
    return table


def mirror_lookup():
    """Class table (256 entries) that swaps left/right parts under a
    horizontal flip."""
    table = np.arange(256, dtype=np.int32)
    names = list(CELEBA_PART_NAMES)
    for left, right in (("l_eye", "r_eye"), ("l_brow", "r_brow"),
                        ("l_ear", "r_ear")):
        i, j = names.index(left), names.index(right)
        table[i], table[j] = j, i
    return table


def label_table(classes):
    """Stored part classes -> the task's: the background/hair/skin merge
    for 3 classes, else None (the 19 parts as stored)."""
    return merge_lookup() if classes == 3 else None


def mirror_table(classes):
    """The class swap under a horizontal flip: left/right parts for the 19
    part classes; None for the merged 3 (no side)."""
    return None if classes == 3 else mirror_lookup()
