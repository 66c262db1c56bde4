"""CelebAMask-HQ from the official release: checks and readers.

Expected in `--data_dir`:

- `CelebA-HQ-img/<i>.jpg` (1024x1024),
- `CelebAMask-HQ-mask-anno/<i // 2000>/<i:05d>_<part>.png` (512x512, a file
  only where the part is present), painted into 19 classes in the official
  order (`celeba_parts.paint_parts`),
- `CelebAMask-HQ-attribute-anno.txt` (a count line, the 40 attribute names,
  then `<i>.jpg` and 40 values of +-1 per row, irregularly spaced),
- `CelebA-HQ-to-CelebA-mapping.txt` (`idx orig_idx orig_file`), which places
  every image in the standard CelebA partition: original images 1-162770
  train, 162771-182637 validation, the rest test.
"""

import os

import numpy as np

from ms_keras.data import files

from ms_keras.data.celeba_parts import PAINT_ORDER
from ms_keras.data.celeba_parts import paint_parts

IMAGES = "CelebA-HQ-img"
MASKS = "CelebAMask-HQ-mask-anno"
ATTRIBUTES = "CelebAMask-HQ-attribute-anno.txt"
MAPPING = "CelebA-HQ-to-CelebA-mapping.txt"
# Columns of tasks T2-T7, in the order of `tasks.CELEBA_ATTRIBUTES`.
_ATTRIBUTE_COLUMNS = ("Male", "Smiling", "Big_Lips", "High_Cheekbones",
                      "Wearing_Lipstick", "Bushy_Eyebrows")
# Last original CelebA image (1-based) of the train and validation splits.
_TRAIN_END, _VALIDATION_END = 162770, 182637


def _fail(data_dir, message):
    raise ValueError(f"--data_dir={data_dir}: {message}")


def _read_attributes(data_dir):
    path = os.path.join(data_dir, ATTRIBUTES)
    with open(path) as f:
        lines = [line.split() for line in f if line.strip()]
    if len(lines) < 3:
        _fail(data_dir, f"{ATTRIBUTES} has no rows.")
    names = lines[1]
    missing = [c for c in _ATTRIBUTE_COLUMNS if c not in names]
    if missing:
        _fail(data_dir, f"{ATTRIBUTES} lacks the columns {missing}.")
    columns = [names.index(c) for c in _ATTRIBUTE_COLUMNS]
    attributes = {}
    for row in lines[2:]:
        if len(row) != len(names) + 1:
            _fail(data_dir, f"{ATTRIBUTES}: row '{' '.join(row[:3])} ...' has "
                  f"{len(row) - 1} values, expected {len(names)}.")
        index = int(os.path.splitext(row[0])[0])
        values = [int(row[1 + c]) for c in columns]
        attributes[index] = np.array([v > 0 for v in values], np.int32)
    return attributes


def _read_partition(data_dir):
    path = os.path.join(data_dir, MAPPING)
    splits = {"train": [], "validation": [], "test": []}
    with open(path) as f:
        rows = [line.split() for line in f if line.strip()]
    for row in rows[1:]:
        index = int(row[0])
        original = int(os.path.splitext(row[2])[0])
        if original <= _TRAIN_END:
            splits["train"].append(index)
        elif original <= _VALIDATION_END:
            splits["validation"].append(index)
        else:
            splits["test"].append(index)
    return splits


def _paths(data_dir, index):
    folder = os.path.join(data_dir, MASKS, str(index // 2000))
    return {"image": os.path.join(data_dir, IMAGES, f"{index}.jpg"),
            "masks": {part: os.path.join(folder, f"{index:05d}_{part}.png")
                      for part in PAINT_ORDER}}


def list_examples(data_dir):
    """`{split: [example]}`; an example holds its paths and attributes.

    Raises:
        ValueError: naming the missing directory, file or malformed line.
    """
    if not os.path.isdir(data_dir):
        _fail(data_dir, "no such directory.")
    entries = set(os.listdir(data_dir))
    if not entries:
        _fail(data_dir, f"the directory is empty; expected {IMAGES}/, "
              f"{MASKS}/, {ATTRIBUTES} and {MAPPING}.")
    missing = [name for name in (IMAGES, MASKS, ATTRIBUTES, MAPPING)
               if name not in entries]
    if missing:
        _fail(data_dir, f"{', '.join(missing)} missing (found "
              f"{', '.join(sorted(entries)[:6])}).")
    attributes = _read_attributes(data_dir)
    examples = {}
    for split, indices in _read_partition(data_dir).items():
        if not indices:
            _fail(data_dir, f"{MAPPING} puts no image in the {split} split.")
        items = []
        for index in indices:
            paths = _paths(data_dir, index)
            if not os.path.exists(paths["image"]):
                _fail(data_dir, f"{MAPPING} lists image {index} but "
                      f"{IMAGES}/{index}.jpg is missing.")
            if index not in attributes:
                _fail(data_dir, f"{ATTRIBUTES} has no row for {index}.jpg.")
            items.append({"index": index, "paths": paths,
                          "attributes": attributes[index]})
        examples[split] = items
    return examples


def read_example(example):
    """Image, 19-class labels at mask resolution and the six attributes.

    Parts without a mask file are absent from that face.
    """
    masks = {}
    shape = None
    for part, path in example["paths"]["masks"].items():
        if os.path.exists(path):
            masks[part] = files.read_or_fail(path, files.mask)
            shape = masks[part].shape
    image = files.read_or_fail(example["paths"]["image"], files.rgb)
    if shape is None:
        shape = (image.shape[0] // 2, image.shape[1] // 2)
    return {"image": image, "segmentation": paint_parts(masks, shape),
            "attributes": example["attributes"]}

