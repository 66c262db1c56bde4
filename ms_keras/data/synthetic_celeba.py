"""Analytic painted faces with CelebAMask-HQ part labels and six attributes.

Each face is drawn from simple shapes (superellipses, arcs, bands) in a
jittered face frame. The attributes change what is drawn, so the
segmentation and the attribute tasks are related:

- male: short hair, wider and squarer jaw, wider neck, rarely lipstick;
- smiling: an open mouth with upturned corners, narrower eyes;
- big_lips: thicker lips;
- high_cheekbones: cheek shading in the image (likelier when smiling);
- wearing_lipstick: red lips in the image;
- bushy_eyebrows: thicker brows.

Part masks are painted into labels in the official CelebAMask-HQ order by
`celeba_parts.paint_parts`, exactly as real annotations are.
"""

import numpy as np

from ms_keras.data.celeba_parts import paint_parts
from ms_keras.tasks import CELEBA_ATTRIBUTES

_SKIN_TONES = np.array([[0.96, 0.80, 0.69], [0.87, 0.67, 0.52],
                        [0.72, 0.52, 0.38], [0.50, 0.34, 0.24],
                        [0.93, 0.75, 0.62]])
_HAIR_COLOURS = np.array([[0.10, 0.07, 0.05], [0.35, 0.22, 0.12],
                          [0.80, 0.65, 0.35], [0.55, 0.55, 0.55],
                          [0.45, 0.15, 0.08]])


def sample_attributes(rng):
    """Draws the six attributes with CelebA-like rates and correlations."""
    male = rng.random() < 0.42
    smiling = rng.random() < 0.48
    return {
        "male": male,
        "smiling": smiling,
        "big_lips": rng.random() < (0.22 if male else 0.33),
        "high_cheekbones": rng.random() < (0.75 if smiling else 0.15),
        "wearing_lipstick": rng.random() < (0.03 if male else 0.75),
        "bushy_eyebrows": rng.random() < (0.35 if male else 0.08),
    }


def _ellipse(x, y, cx, cy, rx, ry, power=2.0):
    return (np.abs((x - cx) / rx) ** power + np.abs((y - cy) / ry) ** power
            <= 1.0)


def _band(x, y, centre_y, half_thickness, x_min, x_max):
    """Pixels within `half_thickness(x)` of the curve `centre_y(x)`."""
    inside = (x >= x_min) & (x <= x_max)
    return inside & (np.abs(y - centre_y) <= half_thickness)


def _part_masks(x, y, attrs, rng):
    male = attrs["male"]
    parts = {}
    jaw_power = np.where(y > -0.05, 2.8 if male else 2.0, 2.0)
    face_rx = 0.52 if male else 0.48
    face = _ellipse(x, y, 0.0, -0.05, face_rx, 0.66, jaw_power)
    parts["skin"] = face
    parts["nose"] = _ellipse(x, y, 0.0, 0.07, 0.065, 0.12)
    eye_ry = 0.024 if attrs["smiling"] else 0.035
    if rng.random() < (0.12 if male else 0.06):
        parts["eye_g"] = (_ellipse(x, y, -0.2, -0.13, 0.13, 0.08)
                          | _ellipse(x, y, 0.2, -0.13, 0.13, 0.08)
                          | _band(x, y, -0.15, 0.012, -0.08, 0.08))
    parts["l_eye"] = _ellipse(x, y, -0.2, -0.13, 0.085, eye_ry)
    parts["r_eye"] = _ellipse(x, y, 0.2, -0.13, 0.085, eye_ry)
    brow = 0.045 if attrs["bushy_eyebrows"] else 0.02
    for side, name in ((-1, "l_brow"), (1, "r_brow")):
        arc = -0.24 - 0.04 * (1 - ((side * x - 0.2) / 0.13) ** 2)
        lo, hi = sorted((side * 0.07, side * 0.33))
        parts[name] = _band(x, y, arc, brow, lo, hi)
    parts["l_ear"] = _ellipse(x, y, -face_rx - 0.03, -0.03, 0.07, 0.13)
    parts["r_ear"] = _ellipse(x, y, face_rx + 0.03, -0.03, 0.07, 0.13)

    smile = 1.0 if attrs["smiling"] else 0.0
    half_width = 0.2 if attrs["smiling"] else 0.16
    taper = np.sqrt(np.clip(1 - (x / half_width) ** 2, 0, 1))
    line = 0.34 - smile * 1.3 * x ** 2
    gap = 0.045 * smile * taper
    upper = (0.06 if attrs["big_lips"] else 0.032) * taper
    lower = (0.07 if attrs["big_lips"] else 0.038) * taper
    within = np.abs(x) < half_width
    if smile:
        parts["mouth"] = within & (y >= line) & (y <= line + gap)
    parts["u_lip"] = within & (y < line) & (y >= line - upper)
    parts["l_lip"] = within & (y > line + gap) & (y <= line + gap + lower)

    if male:
        outer = _ellipse(x, y, 0.0, -0.12, face_rx + 0.06, 0.76) & (y < -0.05)
        parts["hair"] = outer & ~(face & (y > -0.5))
    else:
        outer = (_ellipse(x, y, 0.0, -0.1, 0.68, 0.82)
                 | (_ellipse(x, y, 0.0, 0.2, 0.72, 0.55) & (np.abs(x) > 0.4)))
        parts["hair"] = outer & ~(face & (y > -0.42))
    if rng.random() < 0.04:
        parts["hat"] = _ellipse(x, y, 0.0, -0.62, 0.62, 0.22) & (y < -0.5)
    if not male and rng.random() < 0.25:
        parts["ear_r"] = (_ellipse(x, y, -face_rx - 0.02, 0.13, 0.025, 0.025)
                          | _ellipse(x, y, face_rx + 0.02, 0.13, 0.025, 0.025))
    necklace = None
    if not male and rng.random() < 0.12:
        necklace = _band(x, y, 0.62 + 0.15 * x ** 2, 0.012, -0.25, 0.25)
        parts["neck_l"] = necklace
    neck = (np.abs(x) < (0.25 if male else 0.2)) & (y > 0.3) & ~face
    if necklace is not None:
        neck &= ~necklace
    parts["neck"] = neck
    parts["cloth"] = y > 0.85 - 0.12 * np.minimum(np.abs(x), 1.0)
    return parts


def _shade(x, y, labels, attrs, rng):
    """RGB image for a label map; attributes decide colours and shading."""
    height, width = labels.shape
    skin = _SKIN_TONES[rng.integers(len(_SKIN_TONES))]
    hair = _HAIR_COLOURS[rng.integers(len(_HAIR_COLOURS))]
    lips = (np.array([0.78, 0.08, 0.16]) if attrs["wearing_lipstick"]
            else skin * np.array([0.85, 0.62, 0.62]))
    palette = np.zeros((19, 3))
    palette[0] = rng.uniform(0.1, 0.9, 3)
    palette[[1, 2, 8, 9, 17]] = skin
    palette[2] *= 0.93
    palette[3] = [0.15, 0.15, 0.18]
    palette[[4, 5]] = [0.95, 0.95, 0.95]
    palette[[6, 7, 13]] = hair
    palette[10] = [0.3, 0.05, 0.06]
    palette[[11, 12]] = lips
    palette[14] = rng.uniform(0.0, 1.0, 3)
    palette[15] = [0.85, 0.75, 0.2]
    palette[16] = [0.8, 0.8, 0.85]
    palette[18] = rng.uniform(0.0, 1.0, 3)
    image = palette[labels]
    image[labels == 0] *= (0.8 + 0.4 * (y[labels == 0] + 1) / 2)[:, None]
    irises = (_ellipse(x, y, -0.2, -0.13, 0.03, 0.03)
              | _ellipse(x, y, 0.2, -0.13, 0.03, 0.03))
    image[irises & ((labels == 4) | (labels == 5))] = [0.2, 0.12, 0.08]
    on_skin = labels == 1
    if attrs["high_cheekbones"]:
        hollow = (_ellipse(x, y, -0.3, 0.14, 0.12, 0.06)
                  | _ellipse(x, y, 0.3, 0.14, 0.12, 0.06))
        glow = (_ellipse(x, y, -0.3, 0.02, 0.12, 0.05)
                | _ellipse(x, y, 0.3, 0.02, 0.12, 0.05))
        image[hollow & on_skin] *= 0.8
        image[glow & on_skin] = np.minimum(image[glow & on_skin] * 1.15, 1.0)
    # Soft frontal lighting so that the face is not flat colour.
    image *= (1.0 - 0.25 * np.clip(x ** 2 + 0.5 * y ** 2, 0, 1))[..., None]
    image += rng.normal(0, 0.02, (height, width, 3))
    return (np.clip(image, 0, 1) * 255 + 0.5).astype(np.uint8)


def render_face(rng, height, width):
    """Renders one face.

    Args:
        rng: a `numpy.random.Generator`; the sample is a function of it alone.
        height: image height in pixels.
        width: image width in pixels.

    Returns:
        A dict with `image` uint8 (h, w, 3), `segmentation` uint8 (h, w) with
        the 19 CelebAMask-HQ classes, and `attributes` int32 (6,) in the
        order of `tasks.CELEBA_ATTRIBUTES`.
    """
    attrs = sample_attributes(rng)
    v, u = np.mgrid[0:height, 0:width].astype(np.float64)
    scale = rng.uniform(0.85, 1.05)
    x = ((u + 0.5) / width * 2 - 1 - rng.uniform(-0.06, 0.06)) / scale
    y = ((v + 0.5) / height * 2 - 1 - rng.uniform(-0.06, 0.06)) / scale
    labels = paint_parts(_part_masks(x, y, attrs, rng), (height, width))
    image = _shade(x, y, labels, attrs, rng)
    attributes = np.array([attrs[name] for name in CELEBA_ATTRIBUTES],
                          np.int32)
    return {"image": image, "segmentation": labels, "attributes": attributes}
