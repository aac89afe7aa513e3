"""A ``folder`` dataset written on the fly, for the tests of the folder dataset and its label
check (tests/unit/test_custom_data.py) and of training on it (tests/integration/
test_folder_training.py)."""

import os

import numpy as np
from PIL import Image

import tiny_config

CLASSES = ("background", "road", "pole")


def write_png(path, array, mode=None):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  Image.fromarray(array, mode).save(path)


def block_label(seed, size=(20, 24), ids=3, ignore=255):
  """Class ids 0..ids-1 in blocks (so a tiny net can learn them), a row of ``ignore``."""
  rng = np.random.default_rng(seed)
  lab = np.repeat(np.repeat(rng.integers(0, ids, (size[0] // 4, size[1] // 4)), 4, 0), 4, 1)
  lab = lab.astype(np.uint8)
  lab[0] = ignore
  return lab


def make_folder(root, splits=(("train", 4), ("val", 2)), ignore=255, offset=0, nested=False):
  """``root/images/<split>/[sub/]img_<i>.png`` and ``root/annotations/<split>/...png``; the
  image is the label's colour code. Returns ``{(split, key): label}``."""
  labels = {}
  for s, (split, n) in enumerate(splits):
    for i in range(n):
      key = os.path.join("sub", f"img_{i}") if nested and i % 2 else f"img_{i}"
      lab = block_label(100 * s + i, ignore=ignore)
      lab[1, :3] = (0, 1, 2)  # every class in every file
      raw = np.where(lab == ignore, lab, lab + offset).astype(np.uint8)
      write_png(os.path.join(root, "images", split, key + ".png"),
                np.stack([lab * 80, 255 - lab * 80, lab * 40], -1).astype(np.uint8))
      write_png(os.path.join(root, "annotations", split, key + ".png"), raw)
      labels[(split, key)] = lab
  return labels


def folder_cfg(root, **folder):
  """The tiny config on the ``folder`` dataset at ``root`` (``CLASSES``, PNG images)."""
  cfg = tiny_config.get_config()
  cfg.dataset.name, cfg.dataset.root = "folder", str(root)
  cfg.dataset.folder.classes = CLASSES
  cfg.dataset.folder.img_suffix = ".png"
  for k, v in folder.items():
    cfg.dataset.folder[k] = v
  return cfg


def spoil_labels(root):
  """Two files with out-of-range ids (7 in both, 9 in one), one colour label, one size
  mismatch (val), one undecodable label."""
  ann = os.path.join(root, "annotations")
  for name, ids in (("img_0", (7,)), ("img_2", (7, 9))):
    lab = np.asarray(Image.open(os.path.join(ann, "train", name + ".png"))).copy()
    lab[2, : len(ids)] = ids
    write_png(os.path.join(ann, "train", name + ".png"), lab)
  write_png(os.path.join(ann, "train", "img_1.png"), np.zeros((20, 24, 3), np.uint8))
  with open(os.path.join(ann, "train", "img_3.png"), "wb") as f:
    f.write(b"not a png")
  write_png(os.path.join(ann, "val", "img_1.png"), np.zeros((10, 10), np.uint8))
