"""The official NYUv2 release (`nyu_depth_v2_labeled.mat`) -> NYUD_MT layout.

`convert` reads `nyu_depth_v2_labeled.mat` (MATLAB v7.3 / HDF5, arrays
stored transposed), `splits.mat` (795 train / 654 test indices, 1-based) and
`classMapping40.mat` (894 -> 40 classes; `class13Mapping.mat` too for 13
classes) and writes `images/<id>.jpg`, `segmentation/<id>.png` (0 =
unlabelled, 1..C), `depth/<id>.npy` (metres), `normals/<id>.npy` (computed
from depth with the Kinect intrinsics), `edge/<id>.npy` (computed from
instance and label boundaries) and `gt_sets/{train,val}.txt` (val = the
official test split). `tools/prepare_nyu.py` is its command line.
"""

import os
import shutil
import tempfile

import h5py
import numpy as np
import scipy.io
from PIL import Image

from ms_keras.data import geometry

LABELED = "nyu_depth_v2_labeled.mat"
SPLITS = "splits.mat"
MAPPING_40 = "classMapping40.mat"
MAPPING_13 = "class13Mapping.mat"


def _required(source, classes):
    names = [LABELED, SPLITS, MAPPING_40]
    if classes == 13:
        names.append(MAPPING_13)
    missing = [n for n in names if not os.path.exists(os.path.join(source,
                                                                   n))]
    if missing:
        raise ValueError(f"--source={source}: {', '.join(missing)} missing "
                         f"(needed for --classes={classes}).")


def class_lookup(source, classes):
    """uint8 table: 894-class label (0 = unlabelled) -> 0..classes."""
    to_40 = scipy.io.loadmat(os.path.join(source, MAPPING_40))["mapClass"]
    table = np.concatenate([[0], np.asarray(to_40).ravel()]).astype(np.int64)
    if classes == 13:
        struct = scipy.io.loadmat(os.path.join(source,
                                               MAPPING_13))["classMapping13"]
        to_13 = np.concatenate([[0], np.asarray(struct[0][0][0]).ravel()])
        table = to_13.astype(np.int64)[table]
    return table.astype(np.uint8)


def _indices(values, name, source):
    """1-based MATLAB indices (stored as doubles) -> 0-based ints."""
    values = np.asarray(values).ravel()
    as_int = np.rint(values).astype(np.int64)
    if values.size == 0 or np.any(as_int != values) or as_int.min() < 1:
        raise ValueError(f"--source={source}: {SPLITS} field {name} holds no "
                         "positive whole-number indices.")
    return as_int - 1


def split_indices(source):
    """0-based (train, test) indices of the official split.

    MATLAB writes the indices as doubles; any numeric type is accepted.
    """
    splits = scipy.io.loadmat(os.path.join(source, SPLITS))
    return (_indices(splits["trainNdxs"], "trainNdxs", source),
            _indices(splits["testNdxs"], "testNdxs", source))


def convert(source, output_dir, classes, log=print):
    """Writes the NYUD_MT layout of the official release; returns the count.

    Raises:
        ValueError: for missing inputs or an existing `output_dir`.
    """
    _required(source, classes)
    if os.path.exists(output_dir):
        raise ValueError(f"--output_dir={output_dir} already exists.")
    lookup = class_lookup(source, classes)
    train, test = split_indices(source)
    parent = os.path.dirname(os.path.abspath(output_dir))
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=".tmp-nyu-", dir=parent)
    try:
        for folder in ("images", "segmentation", "depth", "normals", "edge",
                       "gt_sets"):
            os.makedirs(os.path.join(staging, folder))
        with h5py.File(os.path.join(source, LABELED), "r") as mat:
            count = mat["images"].shape[0]
            for index in range(count):
                # MATLAB stores column-major: (n, c, w, h) in HDF5.
                image = np.transpose(mat["images"][index], (2, 1, 0))
                depth = np.transpose(mat["depths"][index]).astype(np.float32)
                labels = lookup[np.transpose(mat["labels"][index])]
                instances = np.transpose(mat["instances"][index])
                height, width = depth.shape
                intrinsics = np.array(geometry.NYU_KINECT) * [
                    width / 640, height / 480, width / 640, height / 480]
                name = f"{index + 1:04d}"
                Image.fromarray(image.astype(np.uint8)).save(
                    os.path.join(staging, "images", name + ".jpg"),
                    quality=95)
                Image.fromarray(labels).save(
                    os.path.join(staging, "segmentation", name + ".png"))
                np.save(os.path.join(staging, "depth", name + ".npy"), depth)
                np.save(os.path.join(staging, "normals", name + ".npy"),
                        geometry.normals_from_depth(depth, intrinsics))
                np.save(os.path.join(staging, "edge", name + ".npy"),
                        geometry.label_edges(labels, instances))
        for split, indices in (("train", train), ("val", test)):
            with open(os.path.join(staging, "gt_sets", f"{split}.txt"),
                      "w") as f:
                f.writelines(f"{i + 1:04d}\n" for i in indices)
        os.replace(staging, output_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log(f"Wrote {count} examples ({len(train)} train, {len(test)} val) to "
        f"{output_dir}: segmentation mapped 894 -> {classes} classes; "
        "normals computed from depth (Kinect intrinsics); edges computed "
        "from instance and label boundaries.")
    return count
