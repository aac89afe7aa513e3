"""Readers for the paper's datasets as users extract them on disk.

Each ``*_examples(root, split)`` lists ``Example``s from the official folder layout;
``read_example`` decodes one, maps its label ids to train ids (ignore = 255) and
checks it. Both the TFDS builders (``ppool_jax.data.tfds_builders``) and the
TensorFlow-free ``FolderSource`` use them. Layouts (``root`` is what you pass):

* **VOC 2012 + SBD** (``voc_aug``): ``root = VOCdevkit/VOC2012`` with ``JPEGImages/``,
  ``SegmentationClass/`` (palette PNGs), ``ImageSets/Segmentation/{train,val}.txt`` and
  the SBD augmentation as ``SegmentationClassAug/`` (PNGs of class ids, as distributed
  by DeepLab) with ``ImageSets/Segmentation/train_aug.txt`` (10,582 ids). Split ``val``
  has 1,449 images.
* **Cityscapes** (``cityscapes``): ``root`` holding ``leftImg8bit/{train,val}/<city>/
  <city>_<seq>_<frame>_leftImg8bit.png`` and ``gtFine/{train,val}/<city>/
  <city>_<seq>_<frame>_gtFine_labelIds.png``; label ids map to the 19 train ids. A file that
  has only ``..._gtFine_labelTrainIds.png`` (cityscapesScripts' ``createTrainIdLabelImgs``)
  is read as train ids (0..18, 255 = ignore).
* **ADE20K / SceneParse150** (``ade20k``): ``root = ADEChallengeData2016`` with
  ``images/{training,validation}/ADE_*.jpg`` and ``annotations/{training,validation}/ADE_*.png``
  (0 = "other" -> ignore, 1..150 -> 0..149).

A dataset of one's own (``folder``: directories, suffixes and classes from the config) is
built by ``ppool_jax.data.custom``; labels are validated up front by ``ppool_jax.data.check``.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable

import numpy as np
from PIL import Image

from ppool_jax.labels import IGNORE


class DatasetError(ValueError):
  """A dataset file or folder is missing or malformed; the message names it."""


@dataclasses.dataclass(frozen=True)
class LabelMap:
  """How raw label values become train ids."""
  table: np.ndarray  # uint8 lookup table: raw label value -> train id (255 = ignore)
  valid: np.ndarray  # bool table: raw label values that may appear in a label file


@dataclasses.dataclass(frozen=True)
class Example:
  key: str
  image_path: str
  label_path: str
  # The label file's own mapping where it differs from its dataset's (Cityscapes files that
  # hold train ids); None: the spec's.
  label_map: LabelMap | None = dataclasses.field(default=None, compare=False, repr=False)


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
  name: str
  num_classes: int
  list_examples: Callable[[str, str], list[Example]]
  label_map: np.ndarray  # uint8 lookup table: raw label value -> train id (255 = ignore)
  valid_raw: np.ndarray  # bool table: raw label values that may appear in a label file
  splits: tuple[str, ...]  # empty: any split name (``folder``: ``{split}`` in its paths)
  # How boundary metrics are scored (ppool_jax.metrics): "void_band" for VOC, which draws
  # a void band around every object; "label" where labelled classes touch.
  boundary_protocol: str = "label"
  # Class names (per-class IoU keys; empty: "class_<k>") and the classes ``detail_miou``
  # averages: the categories the paper names as helped most (§4.2, Fig. 5).
  class_names: tuple[str, ...] = ()
  detail_classes: tuple[int, ...] = ()
  # One (r, g, b) per class for coloured predictions; empty: none given.
  palette: tuple[tuple[int, int, int], ...] = ()

  def label_map_of(self, example: Example) -> LabelMap:
    """The mapping of ``example``'s label file (its own, else the dataset's)."""
    return example.label_map or LabelMap(self.label_map, self.valid_raw)


def _require_dir(path: str, what: str) -> str:
  if not os.path.isdir(path):
    raise DatasetError(f"{what}: directory not found: {path}")
  return path


def _require_file(path: str, what: str) -> str:
  if not os.path.isfile(path):
    raise DatasetError(f"{what}: file not found: {path}")
  return path


def _read_ids(path: str) -> list[str]:
  with open(_require_file(path, "image list")) as f:
    return [line.split()[0] for line in f if line.strip()]


# --- PASCAL VOC 2012 + SBD ------------------------------------------------------------------
def voc_examples(root: str, split: str) -> list[Example]:
  """``train_aug`` (VOC train + SBD, without VOC val), ``train`` or ``val``."""
  _require_dir(root, "VOC2012 root")
  lists = os.path.join(root, "ImageSets", "Segmentation")
  if split == "train_aug":
    label_dir = _require_dir(os.path.join(root, "SegmentationClassAug"),
                             "SBD augmentation (SegmentationClassAug)")
  else:
    label_dir = _require_dir(os.path.join(root, "SegmentationClass"), "VOC labels")
  ids = _read_ids(os.path.join(lists, f"{split}.txt"))
  return [Example(i, os.path.join(root, "JPEGImages", f"{i}.jpg"), os.path.join(label_dir, f"{i}.png"))
          for i in ids]


_VOC_MAP = np.full(256, IGNORE, np.uint8)
_VOC_MAP[:21] = np.arange(21)
_VOC_VALID = np.zeros(256, bool)
_VOC_VALID[:21] = _VOC_VALID[IGNORE] = True

# --- Cityscapes ---------------------------------------------------------------------------
# Official labelId -> trainId (cityscapesScripts labels.py); everything else is ignored.
CITYSCAPES_TRAIN_IDS = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9,
                        23: 10, 24: 11, 25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18}
_CS_MAP = np.full(256, IGNORE, np.uint8)
for _k, _v in CITYSCAPES_TRAIN_IDS.items():
  _CS_MAP[_k] = _v
_CS_VALID = np.zeros(256, bool)
_CS_VALID[:34] = True
# ``*_gtFine_labelTrainIds.png``: train ids already (0..18; 255 = ignore, as the scripts write).
_CS_TRAIN_ID_FILES = LabelMap(np.full(256, IGNORE, np.uint8), np.zeros(256, bool))
_CS_TRAIN_ID_FILES.table[:19] = np.arange(19)
_CS_TRAIN_ID_FILES.valid[:19] = _CS_TRAIN_ID_FILES.valid[IGNORE] = True


def _cityscapes_label(gt_dir: str, stem: str) -> tuple[str, LabelMap | None]:
  """``<stem>_gtFine_labelIds.png`` (label ids) when present, else
  ``<stem>_gtFine_labelTrainIds.png`` (train ids) when present; the label-id file (and a
  read error naming it) when neither is."""
  label_ids = os.path.join(gt_dir, f"{stem}_gtFine_labelIds.png")
  train_ids = os.path.join(gt_dir, f"{stem}_gtFine_labelTrainIds.png")
  if not os.path.isfile(label_ids) and os.path.isfile(train_ids):
    return train_ids, _CS_TRAIN_ID_FILES
  return label_ids, None


def cityscapes_examples(root: str, split: str) -> list[Example]:
  img_root = _require_dir(os.path.join(root, "leftImg8bit", split), "Cityscapes images")
  gt_root = _require_dir(os.path.join(root, "gtFine", split), "Cityscapes gtFine labels")
  examples = []
  for city in sorted(os.listdir(img_root)):
    for name in sorted(os.listdir(os.path.join(img_root, city))):
      if not name.endswith("_leftImg8bit.png"):
        continue
      stem = name[:-len("_leftImg8bit.png")]
      label, label_map = _cityscapes_label(os.path.join(gt_root, city), stem)
      examples.append(Example(stem, os.path.join(img_root, city, name), label, label_map))
  if not examples:
    raise DatasetError(f"Cityscapes: no *_leftImg8bit.png files under {img_root}")
  return examples


# --- ADE20K (SceneParse150) -----------------------------------------------------------------
def ade20k_examples(root: str, split: str) -> list[Example]:
  folder = {"train": "training", "val": "validation"}.get(split, split)
  img_dir = _require_dir(os.path.join(root, "images", folder), "ADE20K images")
  ann_dir = _require_dir(os.path.join(root, "annotations", folder), "ADE20K annotations")
  examples = [Example(n[:-4], os.path.join(img_dir, n), os.path.join(ann_dir, n[:-4] + ".png"))
              for n in sorted(os.listdir(img_dir)) if n.endswith(".jpg")]
  if not examples:
    raise DatasetError(f"ADE20K: no .jpg images under {img_dir}")
  return examples


_ADE_MAP = np.full(256, IGNORE, np.uint8)
_ADE_MAP[1:151] = np.arange(150)
_ADE_VALID = np.zeros(256, bool)
_ADE_VALID[:151] = True

VOC_CLASSES = ("background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car",
               "cat", "chair", "cow", "diningtable", "dog", "horse", "motorbike", "person",
               "pottedplant", "sheep", "sofa", "train", "tvmonitor")
CITYSCAPES_CLASSES = ("road", "sidewalk", "building", "wall", "fence", "pole", "traffic light",
                      "traffic sign", "vegetation", "terrain", "sky", "person", "rider", "car",
                      "truck", "bus", "train", "motorcycle", "bicycle")

DATASETS = {
    # Detail classes: the paper's 'table' and 'plant' (VOC), 'pole' and 'traffic sign'
    # (Cityscapes); ADE20K's ('chandelier', 'radiator', 'armchair') need its class list.
    "voc_aug": DatasetSpec("voc_aug", 21, voc_examples, _VOC_MAP, _VOC_VALID,
                           ("train_aug", "train", "val"), boundary_protocol="void_band",
                           class_names=VOC_CLASSES, detail_classes=(11, 16)),
    "cityscapes": DatasetSpec("cityscapes", 19, cityscapes_examples, _CS_MAP, _CS_VALID,
                              ("train", "val"), class_names=CITYSCAPES_CLASSES,
                              detail_classes=(5, 7)),
    "ade20k": DatasetSpec("ade20k", 150, ade20k_examples, _ADE_MAP, _ADE_VALID, ("train", "val")),
}


def get_spec(name: str) -> DatasetSpec:
  if name not in DATASETS:
    raise ValueError(f"unknown dataset {name!r}; known: {', '.join(sorted(DATASETS))}.")
  return DATASETS[name]


class ColourLabelError(DatasetError):
  """A label file is a colour (RGB/RGBA) image, not one channel of ids."""


def decode_label(path: str, what: str) -> np.ndarray:
  """The raw label values ``(H, W)`` of a single-channel label file: greyscale (``L``),
  palette (``P``: the palette indices are the ids), 1-bit, or 16-bit (``I;16``: values above
  255 are out of range for every dataset).

  Raises:
    ColourLabelError: a colour or alpha image (checked before any conversion: converting RGB
      to grey would turn colours into arbitrary ids); the message names the fix.
    DatasetError: the file cannot be decoded, or has another mode (e.g. ``LA``, ``F``).
  """
  try:
    with Image.open(path) as lb:
      mode = lb.mode
      if mode in ("L", "P"):
        return np.asarray(lb)
      if mode == "1" or mode.startswith("I"):
        return np.asarray(lb).astype(np.int32)
      if mode in ("RGB", "RGBA", "RGBX"):
        rgb = np.asarray(lb.convert("RGB"))
        grey = bool((rgb == rgb[..., :1]).all())
        raise ColourLabelError(
            f"{what}: label {path} is a colour ({mode}) image; labels must hold one class id "
            "per pixel in a single channel. Convert it to a greyscale ('L') or palette ('P') PNG "
            "of class ids" + (" (its three channels are equal: keep one)." if grey else
                           ": map each colour to its class id."))
      raise DatasetError(f"{what}: label {path} has mode {mode!r}; labels must be "
                         "single-channel PNGs of class ids (greyscale 'L' or palette 'P').")
  except OSError as e:
    raise DatasetError(f"{what}: cannot decode label {path}: {e}") from e


def invalid_values(raw: np.ndarray, valid: np.ndarray) -> list[int]:
  """The sorted distinct values of ``raw`` that ``valid`` (a 256-entry table) does not allow
  (values outside 0..255 never are)."""
  inside = (raw >= 0) & (raw < valid.size)
  bad = ~inside
  bad[inside] = ~valid[raw[inside]]
  return np.unique(raw[bad]).tolist()


def read_example(example: Example, spec: DatasetSpec) -> dict[str, np.ndarray]:
  """Decodes one example: ``image (H, W, 3) uint8`` and ``label (H, W) uint8`` train ids.

  Raises:
    DatasetError: missing file, unreadable image, colour label (:class:`ColourLabelError`),
      image/label size mismatch, or a label value outside the dataset's id range; the message
      names the file.
  """
  for path in (example.image_path, example.label_path):
    _require_file(path, f"{spec.name} example {example.key}")
  try:
    with Image.open(example.image_path) as im:
      image = np.asarray(im.convert("RGB"))
  except OSError as e:
    raise DatasetError(f"{spec.name}: cannot decode image {example.image_path}: {e}") from e
  raw = decode_label(example.label_path, spec.name)
  if image.shape[:2] != raw.shape:
    raise DatasetError(f"{spec.name}: image {example.image_path} is {image.shape[1]}x{image.shape[0]}"
                       f" but label {example.label_path} is {raw.shape[1]}x{raw.shape[0]}")
  mapping = spec.label_map_of(example)
  values = invalid_values(raw, mapping.valid)
  if values:
    raise DatasetError(f"{spec.name}: label {example.label_path} has ids out of range: {values}")
  return {"image": image, "label": mapping.table[raw]}


class FolderSource:
  """Random-access source over an extracted dataset folder; needs no TensorFlow.

  ``len(source)`` and ``source[i] -> {"image", "label"}``, the same interface as
  ``tfds.data_source`` so the input pipeline takes either.
  """

  def __init__(self, name: str | DatasetSpec, root: str, split: str):
    """``name``: a :data:`DATASETS` name or a spec (``ppool_jax.data.custom.folder_spec``)."""
    self.spec = get_spec(name) if isinstance(name, str) else name
    if self.spec.splits and split not in self.spec.splits:
      raise ValueError(f"{self.spec.name}: unknown split {split!r}; expected one of "
                       f"{self.spec.splits}.")
    self.examples = self.spec.list_examples(root, split)
    self.num_classes = self.spec.num_classes

  def __len__(self):
    return len(self.examples)

  def __getitem__(self, i):
    return read_example(self.examples[i], self.spec)
