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
