"""NYUv2 from the user's files: layout detection, checks and readers.

Two prepared layouts are read directly:

- NYUD_MT (ASTMT / Multi-Task-Learning-PyTorch): `images/<id>.jpg`,
  `segmentation/<id>.png` (40 classes, 0 = unlabelled), `depth/<id>.npy`
  (metres), `normals/<id>.npy` (unit vectors, all-zero invalid),
  `edge/<id>.npy`, split lists `gt_sets/{train,val}.txt`.
- MTAN: `{train,val}/{image,label,depth,normal}/<i>.npy` (288x384, 13
  classes with -1 = ignore, depth 0 = invalid, image float in [0, 1]); it has
  no edges, so T4 is derived from segmentation boundaries (a pixel is an edge
  where a 4-neighbour has another label).

The official release (`nyu_depth_v2_labeled.mat`) is converted to NYUD_MT by
`tools/prepare_nyu.py`. Both layouts' `val` lists are the paper's test split;
validation is every 10th training id, so no test image is used for model
selection.
"""

import os

import numpy as np

from ms_keras.data import files
from ms_keras.data import geometry

NYUD_MT = "nyud_mt"
MTAN = "mtan"
OFFICIAL_MAT = "nyu_depth_v2_labeled.mat"
_NYUD_MT_FILES = (("images", ".jpg"), ("segmentation", ".png"),
                  ("depth", ".npy"), ("normals", ".npy"), ("edge", ".npy"))
_MTAN_PARTS = ("image", "label", "depth", "normal")
VALIDATION_EVERY = 10
MTAN_CLASSES = 13
NYUD_MT_CLASSES = 40


def _fail(data_dir, message):
    raise ValueError(f"--data_dir={data_dir}: {message}")


def detect_layout(data_dir):
    """Which NYUv2 layout `data_dir` holds.

    Raises:
        ValueError: naming what was found and what is missing.
    """
    if not os.path.isdir(data_dir):
        _fail(data_dir, "no such directory.")
    entries = set(os.listdir(data_dir))
    if not entries:
        _fail(data_dir, "the directory is empty; expected the NYUD_MT layout "
              "(images/, segmentation/, depth/, normals/, edge/, gt_sets/) "
              "or the MTAN layout (train/, val/).")
    if "gt_sets" in entries or "images" in entries:
        missing = [d for d, _ in _NYUD_MT_FILES if d not in entries]
        missing += [] if "gt_sets" in entries else ["gt_sets"]
        if missing:
            _fail(data_dir, "looks like the NYUD_MT layout but "
                  f"{', '.join(d + '/' for d in missing)} missing.")
        return NYUD_MT
    if "train" in entries or "val" in entries:
        missing = [f"{split}/{part}/" for split in ("train", "val")
                   for part in _MTAN_PARTS
                   if not os.path.isdir(os.path.join(data_dir, split, part))]
        if missing:
            _fail(data_dir, "looks like the MTAN layout but "
                  f"{', '.join(missing)} missing.")
        return MTAN
    if OFFICIAL_MAT in entries:
        _fail(data_dir, f"holds the official release ({OFFICIAL_MAT}); "
              "convert it first: python tools/prepare_nyu.py "
              f"--source={data_dir} --output_dir=<dir>, then pass "
              "--data_dir=<dir>.")
    _fail(data_dir, f"found {', '.join(sorted(entries)[:5])}, which is "
          "neither the NYUD_MT layout (images/, segmentation/, depth/, "
          "normals/, edge/, gt_sets/) nor the MTAN layout (train/, val/).")


def default_classes(layout):
    return MTAN_CLASSES if layout == MTAN else NYUD_MT_CLASSES


def classes_in(data_dir):
    """The class count of the labelling in `data_dir` (13 for the MTAN
    layout, 40 for NYUD_MT), or None where the directory cannot be
    inspected yet (`check_files` reports why)."""
    try:
        return default_classes(detect_layout(data_dir))
    except ValueError:
        return None


def check_files(data_dir, classes):
    """Checks the layout, its files and the class count without reading
    an image.

    Raises:
        ValueError: naming what was found and what is missing, or a class
            count the layout cannot give (NYUD_MT: 40 or 13; MTAN: 13).
    """
    layout = detect_layout(data_dir)
    if classes != default_classes(layout) and (
            layout == MTAN or classes not in (13, 40)):
        raise ValueError(
            f"--segmentation_classes={classes}: the {layout} layout in "
            f"{data_dir} has {default_classes(layout)} classes.")
    list_examples(data_dir, layout)


def _read_ids(path):
    with open(path) as f:
        return [line.strip() for line in f if line.strip()]


def _split_train(ids):
    validation = ids[::VALIDATION_EVERY]
    taken = set(validation)
    return [i for i in ids if i not in taken], validation


def list_examples(data_dir, layout):
    """`{split: [{modality: path}]}` for train, validation and test.

    Raises:
        ValueError: when a split list names an example with a missing file,
            or a split is empty.
    """
    if layout == NYUD_MT:
        def paths(example_id):
            return {d: os.path.join(data_dir, d, example_id + ext)
                    for d, ext in _NYUD_MT_FILES}
        lists = {}
        for name in ("train", "val"):
            path = os.path.join(data_dir, "gt_sets", f"{name}.txt")
            if not os.path.exists(path):
                _fail(data_dir, f"gt_sets/{name}.txt is missing.")
            lists[name] = _read_ids(path)
        train, validation = _split_train(lists["train"])
        splits = {"train": train, "validation": validation,
                  "test": lists["val"]}
        examples = {s: [paths(i) for i in ids] for s, ids in splits.items()}
        source = {"train": "gt_sets/train.txt", "validation":
                  "gt_sets/train.txt", "test": "gt_sets/val.txt"}
    else:
        def mtan_ids(split):
            folder = os.path.join(data_dir, split, "image")
            names = [n[:-4] for n in os.listdir(folder) if n.endswith(".npy")]
            return sorted(names, key=lambda n: (len(n), n))

        def paths(split, example_id):
            return {part: os.path.join(data_dir, split, part,
                                       example_id + ".npy")
                    for part in _MTAN_PARTS}
        train, validation = _split_train(mtan_ids("train"))
        examples = {"train": [paths("train", i) for i in train],
                    "validation": [paths("train", i) for i in validation],
                    "test": [paths("val", i) for i in mtan_ids("val")]}
        source = {"train": "train/image/", "validation": "train/image/",
                  "test": "val/image/"}
    for split, items in examples.items():
        if not items:
            _fail(data_dir, f"the {split} split is empty (from "
                  f"{source[split]}).")
        for item in items:
            for path in item.values():
                if not os.path.exists(path):
                    _fail(data_dir, f"{source[split]} lists an example whose "
                          f"file {os.path.relpath(path, data_dir)} is "
                          "missing.")
    return examples


def _check_shapes(example, paths):
    height, width = example["image"].shape[:2]
    for key, value in example.items():
        if value.shape[:2] != (height, width):
            raise ValueError(
                f"{paths.get(key, paths[next(iter(paths))])}: {key} is "
                f"{value.shape[:2]}, the image {height}x{width}.")
    return example


def _array(path, dtype=np.float32):
    return files.read_or_fail(path, np.load).astype(dtype)


def read_example(paths, layout):
    """One example in the stored convention (see `data.features`)."""
    if layout == NYUD_MT:
        labels = files.read_or_fail(paths["segmentation"],
                                    files.raw).astype(np.int32)
        if labels.ndim == 3:
            labels = labels[..., 0]
        segmentation = np.where(labels == 0, 255, labels - 1)
        example = {
            "image": files.read_or_fail(paths["images"], files.rgb),
            "segmentation": segmentation.astype(np.uint8),
            "depth": _array(paths["depth"]),
            "normals": _array(paths["normals"]),
            "edges": (_array(paths["edge"]) > 0).astype(np.uint8),
        }
        return _check_shapes(example, {"image": paths["images"],
                                       "segmentation": paths["segmentation"],
                                       "depth": paths["depth"],
                                       "normals": paths["normals"],
                                       "edges": paths["edge"]})
    labels = np.rint(_array(paths["label"])).astype(np.int32)
    segmentation = np.where(labels < 0, 255, labels).astype(np.uint8)
    depth = _array(paths["depth"])
    example = {
        "image": (np.clip(_array(paths["image"]), 0, 1) * 255
                  + 0.5).astype(np.uint8),
        "segmentation": segmentation,
        "depth": depth.reshape(depth.shape[:2]),
        "normals": _array(paths["normal"]),
        "edges": geometry.label_edges(segmentation),
    }
    return _check_shapes(example, {"image": paths["image"],
                                   "segmentation": paths["label"],
                                   "depth": paths["depth"],
                                   "normals": paths["normal"],
                                   "edges": paths["label"]})
