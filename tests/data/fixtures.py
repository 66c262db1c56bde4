"""Tiny datasets in the real on-disk formats, written by the tests."""

import os

import h5py
import numpy as np
import scipy.io
from PIL import Image

from ms_keras.data import synthetic_celeba
from ms_keras.data import synthetic_nyu
from ms_keras.tasks import CELEBA_PART_NAMES

NYU_SIZE = (24, 32)


def _scene(index, size=NYU_SIZE):
    return synthetic_nyu.render_scene(np.random.default_rng(index), *size,
                                      holes=True)


def write_nyud_mt(root, train=10, val=3, size=NYU_SIZE):
    """NYUD_MT layout: jpg images, png labels (0 = unlabelled), npy maps."""
    for folder in ("images", "segmentation", "depth", "normals", "edge",
                   "gt_sets"):
        os.makedirs(os.path.join(root, folder), exist_ok=True)
    ids = [f"{i:06d}" for i in range(1, train + val + 1)]
    for index, name in enumerate(ids):
        scene = _scene(index, size)
        Image.fromarray(scene["image"]).save(
            os.path.join(root, "images", name + ".jpg"))
        labels = scene["segmentation"].astype(np.uint8) + 1
        labels[0, :3] = 0  # unlabelled
        Image.fromarray(labels).save(
            os.path.join(root, "segmentation", name + ".png"))
        np.save(os.path.join(root, "depth", name + ".npy"), scene["depth"])
        np.save(os.path.join(root, "normals", name + ".npy"),
                scene["normals"])
        np.save(os.path.join(root, "edge", name + ".npy"),
                scene["edges"].astype(np.float32))
    for split, names in (("train", ids[:train]), ("val", ids[train:])):
        with open(os.path.join(root, "gt_sets", f"{split}.txt"), "w") as f:
            f.write("\n".join(names) + "\n")
    return ids


def write_mtan(root, train=10, val=3):
    """MTAN layout: npy float image, label (-1 ignore), depth HxWx1, normal."""
    for split, count, offset in (("train", train, 0), ("val", val, 100)):
        for part in ("image", "label", "depth", "normal"):
            os.makedirs(os.path.join(root, split, part), exist_ok=True)
        for i in range(count):
            scene = _scene(offset + i)
            labels = scene["segmentation"].astype(np.float32)
            labels[0, :3] = -1
            arrays = {"image": scene["image"].astype(np.float32) / 255,
                      "label": labels, "depth": scene["depth"][..., None],
                      "normal": scene["normals"]}
            for part, array in arrays.items():
                np.save(os.path.join(root, split, part, f"{i}.npy"), array)


def write_official_nyu(root, count=8, classes_894=20):
    """nyu_depth_v2_labeled.mat (HDF5, transposed) + v5 splits/mappings."""
    os.makedirs(root, exist_ok=True)
    height, width = NYU_SIZE
    scenes = [_scene(i) for i in range(count)]
    images = np.stack([s["image"] for s in scenes])  # n, h, w, 3
    depths = np.stack([np.where(s["depth"] > 0, s["depth"], 2.0)
                       for s in scenes]).astype(np.float32)
    labels = np.stack([(s["segmentation"].astype(np.uint16) * 3) % classes_894
                       for s in scenes])
    with h5py.File(os.path.join(root, "nyu_depth_v2_labeled.mat"), "w") as f:
        f["images"] = np.transpose(images, (0, 3, 2, 1))
        f["depths"] = np.transpose(depths, (0, 2, 1))
        f["labels"] = np.transpose(labels, (0, 2, 1))
        f["instances"] = np.transpose(labels % 2, (0, 2, 1)).astype(np.uint8)
    # MATLAB stores numbers as doubles, the split indices included.
    scipy.io.savemat(os.path.join(root, "splits.mat"), {
        "trainNdxs": np.arange(1, count - 1, dtype=np.float64)[:, None],
        "testNdxs": np.arange(count - 1, count + 1, dtype=np.float64)[:, None]})
    # 894 classes in the real file; the fixture maps its few ids to 1..40.
    mapping = (np.arange(894) % 40 + 1)[None, :]
    scipy.io.savemat(os.path.join(root, "classMapping40.mat"),
                     {"mapClass": mapping.astype(np.float64)})
    return labels


def write_celeba(root, count=12, size=32):
    """The official CelebAMask-HQ release at a tiny resolution."""
    images = os.path.join(root, "CelebA-HQ-img")
    os.makedirs(images, exist_ok=True)
    rows = []
    mapping = ["idx orig_idx orig_file"]
    # Original CelebA numbers: 1-162770 train, -182637 val, rest test.
    originals = [1000 + i for i in range(count - 4)] + [170000, 170001,
                                                         190000, 190001]
    for index in range(count):
        face = synthetic_celeba.render_face(np.random.default_rng(index),
                                            size, size)
        Image.fromarray(face["image"]).save(os.path.join(images,
                                                         f"{index}.jpg"))
        folder = os.path.join(root, "CelebAMask-HQ-mask-anno",
                              str(index // 2000))
        os.makedirs(folder, exist_ok=True)
        small = face["segmentation"][::2, ::2]
        for class_id, part in enumerate(CELEBA_PART_NAMES[1:], start=1):
            mask = small == class_id
            if mask.any():
                Image.fromarray((mask * 255).astype(np.uint8)).save(
                    os.path.join(folder, f"{index:05d}_{part}.png"))
        values = ["-1"] * 40
        for column, value in zip((20, 31, 6, 19, 36, 12), face["attributes"]):
            values[column] = "1" if value else "-1"
        # The official file pads with irregular runs of spaces.
        rows.append(f"{index}.jpg " + "  ".join(
            (" " if i % 3 else "") + v for i, v in enumerate(values)))
        mapping.append(f"{index}    {originals[index] - 1}   "
                       f"{originals[index]:06d}.jpg")
    names = ["5_o_Clock_Shadow", "Arched_Eyebrows", "Attractive",
             "Bags_Under_Eyes", "Bald", "Bangs", "Big_Lips", "Big_Nose",
             "Black_Hair", "Blond_Hair", "Blurry", "Brown_Hair",
             "Bushy_Eyebrows", "Chubby", "Double_Chin", "Eyeglasses",
             "Goatee", "Gray_Hair", "Heavy_Makeup", "High_Cheekbones", "Male",
             "Mouth_Slightly_Open", "Mustache", "Narrow_Eyes", "No_Beard",
             "Oval_Face", "Pale_Skin", "Pointy_Nose", "Receding_Hairline",
             "Rosy_Cheeks", "Sideburns", "Smiling", "Straight_Hair",
             "Wavy_Hair", "Wearing_Earrings", "Wearing_Hat",
             "Wearing_Lipstick", "Wearing_Necklace", "Wearing_Necktie",
             "Young"]
    with open(os.path.join(root, "CelebAMask-HQ-attribute-anno.txt"),
              "w") as f:
        f.write(f"{count}\n" + " ".join(names) + "\n" + "\n".join(rows)
                + "\n")
    with open(os.path.join(root, "CelebA-HQ-to-CelebA-mapping.txt"),
              "w") as f:
        f.write("\n".join(mapping) + "\n")
