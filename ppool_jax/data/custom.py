"""``folder``: a segmentation dataset of one's own, described entirely by its config.

The fields follow mmsegmentation's ``CustomDataset`` (``img_dir``, ``ann_dir``,
``img_suffix``, ``seg_map_suffix``, ``split``, ``classes``, ``palette``,
``reduce_zero_label``, ``ignore_index``)::

  root/images/train/a.jpg   root/annotations/train/a.png   (img_dir="images/{split}",
  root/images/val/b.jpg     root/annotations/val/b.png      ann_dir="annotations/{split}")

``{split}`` in ``img_dir``, ``ann_dir`` or ``split_file`` is replaced by the split being read
(``dataset.train_split`` / ``dataset.eval_split``). Without a split file every image under
``img_dir`` whose name ends with ``img_suffix`` is an example (subfolders included; the key is
the path relative to ``img_dir`` without the suffix) and its label is
``ann_dir/<key><seg_map_suffix>``. With one (``split_file``, relative to ``root``), its lines
are the keys.

Label files hold class ids in one channel (greyscale or palette PNG). Raw ids map to train
ids as follows, everything else being out of range (an error naming the file):

* ``reduce_zero_label=False``: ``0..K-1`` -> ``0..K-1``;
* ``reduce_zero_label=True`` (0 means "other", as in ADE20K): ``0`` -> ignore,
  ``1..K`` -> ``0..K-1``;
* ``ignore_index`` (the raw value marking unlabelled pixels, default 255) -> 255
  (``ppool_jax.labels.IGNORE``, what the pipeline and the metrics ignore).
"""

from __future__ import annotations

import os

import numpy as np

from ppool_jax.data.folders import DatasetError, DatasetSpec, Example
from ppool_jax.labels import IGNORE

NAME = "folder"


def label_tables(num_classes: int, ignore_index: int = IGNORE,
                 reduce_zero_label: bool = False) -> tuple[np.ndarray, np.ndarray]:
  """``(label_map, valid_raw)``: the 256-entry tables of :class:`DatasetSpec` for raw ids as
  described in the module docstring.

  Raises:
    ValueError: ``num_classes`` outside ``[1, 254 or 255]``, ``ignore_index`` outside 0..255,
      or an ``ignore_index`` that is also a class id.
  """
  first = 1 if reduce_zero_label else 0
  if not 1 <= num_classes <= IGNORE - first:
    raise ValueError(f"{NAME}: {num_classes} classes; between 1 and {IGNORE - first} are "
                     f"supported{' with reduce_zero_label' if first else ''} (ids are uint8, "
                     f"{IGNORE} is the ignore label).")
  if not 0 <= ignore_index <= 255:
    raise ValueError(f"{NAME}: ignore_index must be a label value in 0..255, got {ignore_index}.")
  if first <= ignore_index < first + num_classes:
    raise ValueError(
        f"{NAME}: ignore_index {ignore_index} is also the raw id of class "
        f"{ignore_index - first} (raw ids {first}..{first + num_classes - 1} are the "
        f"{num_classes} classes{', after reduce_zero_label' if first else ''}).")
  table = np.full(256, IGNORE, np.uint8)
  table[first:first + num_classes] = np.arange(num_classes)
  valid = np.zeros(256, bool)
  valid[first:first + num_classes] = valid[ignore_index] = True
  if reduce_zero_label:
    valid[0] = True
  return table, valid


def _check_palette(palette, num_classes: int) -> tuple[tuple[int, int, int], ...]:
  palette = tuple(tuple(int(v) for v in colour) for colour in palette)
  if palette and (len(palette) != num_classes or
                  any(len(c) != 3 or not all(0 <= v <= 255 for v in c) for c in palette)):
    raise ValueError(f"{NAME}: palette must give one (r, g, b) colour in 0..255 per class "
                     f"({num_classes}), got {palette!r}.")
  return palette


def _keys_in(img_dir: str, img_suffix: str) -> list[str]:
  keys = []
  for parent, dirs, files in os.walk(img_dir):
    dirs.sort()
    rel = os.path.relpath(parent, img_dir)
    keys += [os.path.normpath(os.path.join(rel, f[:-len(img_suffix)]))
             for f in sorted(files) if f.endswith(img_suffix)]
  return keys


def list_examples(root: str, split: str, *, img_dir: str, ann_dir: str, img_suffix: str,
                  seg_map_suffix: str, split_file: str = "") -> list[Example]:
  """The examples of ``split`` (``{split}`` in the paths is replaced by it).

  Raises:
    DatasetError: a missing directory or split file, no image with ``img_suffix``, or images
      without their label file (all of them named, up to 10 listed).
  """
  def resolve(path: str) -> str:
    return os.path.join(root, os.path.expanduser(path.replace("{split}", split)))

  images, labels = resolve(img_dir), resolve(ann_dir)
  for path, what in ((images, "img_dir"), (labels, "ann_dir")):
    if not os.path.isdir(path):
      raise DatasetError(f"{NAME} ({split}): {what} not found: {path}")
  if split_file:
    path = resolve(split_file)
    if not os.path.isfile(path):
      raise DatasetError(f"{NAME} ({split}): split_file not found: {path}")
    with open(path) as f:
      keys = [line.strip() for line in f if line.strip()]
    if not keys:
      raise DatasetError(f"{NAME} ({split}): split file {path} lists no image")
  else:
    keys = _keys_in(images, img_suffix)
    if not keys:
      raise DatasetError(f"{NAME} ({split}): no *{img_suffix} image under {images} "
                         "(dataset.folder.img_suffix)")
  examples = [Example(k, os.path.join(images, k + img_suffix),
                      os.path.join(labels, k + seg_map_suffix)) for k in keys]
  missing = [p for e in examples for p in (e.image_path, e.label_path) if not os.path.isfile(p)]
  if missing:
    shown = "\n  ".join(missing[:10]) + (f"\n  ... and {len(missing) - 10} more"
                                         if len(missing) > 10 else "")
    raise DatasetError(f"{NAME} ({split}): {len(missing)} files of {len(examples)} examples not "
                       f"found (img_suffix {img_suffix!r}, seg_map_suffix {seg_map_suffix!r}):"
                       f"\n  {shown}")
  return examples


def folder_spec(classes, *, img_dir: str = "images/{split}",
                ann_dir: str = "annotations/{split}", img_suffix: str = ".jpg",
                seg_map_suffix: str = ".png", split_file: str = "", palette=(),
                ignore_index: int = IGNORE, reduce_zero_label: bool = False) -> DatasetSpec:
  """The :class:`DatasetSpec` of a ``folder`` dataset (read it with
  ``FolderSource(spec, root, split)``); ``classes``: the class names, so their number.

  Raises:
    ValueError: no or repeated class names, a palette that does not fit them, or the
      conditions of :func:`label_tables`.
  """
  classes = tuple(str(c) for c in classes)
  if not classes:
    raise ValueError(f"{NAME}: dataset.folder.classes is empty: give the class names "
                     "(--config.dataset.folder.classes=\"('background','road')\").")
  if len(set(classes)) != len(classes):
    raise ValueError(f"{NAME}: repeated class names in {classes}.")
  if not img_suffix or not seg_map_suffix:
    raise ValueError(f"{NAME}: img_suffix and seg_map_suffix must not be empty.")
  table, valid = label_tables(len(classes), ignore_index, reduce_zero_label)

  def examples(root: str, split: str) -> list[Example]:
    return list_examples(root, split, img_dir=img_dir, ann_dir=ann_dir, img_suffix=img_suffix,
                         seg_map_suffix=seg_map_suffix, split_file=split_file)

  return DatasetSpec(NAME, len(classes), examples, table, valid, splits=(),
                     class_names=classes, palette=_check_palette(palette, len(classes)))


def spec_from_config(folder) -> DatasetSpec:
  """:func:`folder_spec` of a config's ``dataset.folder`` block."""
  return folder_spec(folder.classes, img_dir=folder.img_dir, ann_dir=folder.ann_dir,
                     img_suffix=folder.img_suffix, seg_map_suffix=folder.seg_map_suffix,
                     split_file=folder.split_file, palette=folder.palette,
                     ignore_index=folder.ignore_index,
                     reduce_zero_label=folder.reduce_zero_label)


def check_splits(folder, train_split: str, eval_split: str) -> None:
  """Raises ``DatasetError`` when two different split names would read the same files (no
  ``{split}`` in ``img_dir``, ``ann_dir`` or ``split_file``): evaluation on the training
  images, unnoticed."""
  paths = (folder.img_dir, folder.ann_dir, folder.split_file)
  if train_split != eval_split and not any("{split}" in p for p in paths):
    raise DatasetError(
        f"{NAME}: img_dir {folder.img_dir!r}, ann_dir {folder.ann_dir!r} and split_file "
        f"{folder.split_file!r} contain no {{split}}, so train_split {train_split!r} and "
        f"eval_split {eval_split!r} would read the same images; put {{split}} where the split's "
        "folder or list file name goes (e.g. img_dir='images/{split}').")
