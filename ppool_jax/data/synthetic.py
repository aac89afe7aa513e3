"""The embedded default dataset: procedurally generated, detail-sensitive segmentation.

Every scene mixes large blobs, textured regions, thin structures (vertical poles,
1-3 px; oblique wires, 1 px) and small objects over a noisy background. Colour
alone does not give the class: poles share the blobs' colour distribution and
wires share the stripes of the textured regions, so a network must see *shape*
(a 1-3 px line vs. an area) to label them. Downsampling that averages a thin
bright line into its dark surroundings loses it; that is where pooling matters.

Classes (``CLASSES``): 0 background, 1 blob, 2 pole, 3 texture, 4 wire, 5 small object.
Label 255 (``IGNORE``) marks a 1 px band around blobs (ambiguous, VOC-style) and a
few random "void" rectangles.

Generation is deterministic from ``seed``: sample ``i`` depends only on ``(seed, i)``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np

from ppool_jax.labels import IGNORE

CLASSES = ("background", "blob", "pole", "texture", "wire", "small_object")
NUM_CLASSES = len(CLASSES)
# Classes whose pixels form the "small structure" mask of the detail metrics.
DETAIL_CLASSES = (2, 4, 5)


def _colour(rng, base, spread=0.12):
  return np.clip(np.asarray(base) + rng.normal(0, spread, 3), 0, 1)


def generate_sample(seed: int, index: int, size: int = 64) -> tuple[np.ndarray, np.ndarray]:
  """One ``(image uint8 (size, size, 3), label uint8 (size, size))`` pair."""
  if size < 16:
    raise ValueError(f"synthetic: size must be >= 16 pixels, got {size}.")
  rng = np.random.default_rng([seed, index])
  yy, xx = np.mgrid[:size, :size].astype(np.float32)
  bg = _colour(rng, (0.25, 0.25, 0.3), 0.08)
  img = np.broadcast_to(bg, (size, size, 3)).copy()
  img += rng.normal(0, 0.05, (size, size, 1))  # smooth-ish luminance noise
  label = np.zeros((size, size), np.uint8)
  ignore = np.zeros((size, size), bool)

  bright = (0.85, 0.7, 0.35)    # blobs and poles share this colour distribution
  stripes = (0.35, 0.75, 0.8)   # texture stripes and wires share this one

  for _ in range(rng.integers(1, 3)):  # large blobs
    cy, cx = rng.uniform(0.15, 0.85, 2) * size
    ry, rx = rng.uniform(0.12, 0.25, 2) * size
    d = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2
    inside = d < 1
    img[inside] = _colour(rng, bright)
    label[inside] = 1
    ignore |= (d >= 0.9) & (d < 1.2)  # ~1 px band straddling the outline

  for _ in range(rng.integers(1, 3)):  # textured regions: stripes on a dark field
    y0, x0 = rng.integers(0, size * 2 // 3, 2)
    h, w = rng.integers(size // 6, size // 3, 2)
    region = (yy >= y0) & (yy < y0 + h) & (xx >= x0) & (xx < x0 + w)
    period = rng.integers(3, 6)
    stripe = ((xx + yy * rng.choice([0, 1])) % period) < 1
    img[region] = _colour(rng, (0.15, 0.2, 0.2), 0.04)
    img[region & stripe] = _colour(rng, stripes)
    label[region] = 3

  for _ in range(rng.integers(1, 4)):  # poles: vertical, 1-3 px wide
    x0 = rng.integers(2, size - 4)
    width = rng.integers(1, 4)
    y0 = rng.integers(0, size // 2)
    y1 = rng.integers(y0 + size // 4, size + 1)
    pole = (xx >= x0) & (xx < x0 + width) & (yy >= y0) & (yy < y1)
    img[pole] = _colour(rng, bright)
    label[pole] = 2

  for _ in range(rng.integers(1, 3)):  # wires: 1 px oblique lines
    angle = rng.uniform(-0.6, 0.6)
    offset = rng.uniform(0.1, 0.9) * size
    wire = np.abs(yy - (np.tan(angle) * (xx - size / 2) + offset)) < 0.5
    img[wire] = _colour(rng, stripes)
    label[wire] = 4

  for _ in range(rng.integers(2, 6)):  # small objects: 2-4 px squares
    y0, x0 = rng.integers(0, size - 4, 2)
    s = rng.integers(2, 5)
    obj = (yy >= y0) & (yy < y0 + s) & (xx >= x0) & (xx < x0 + s)
    img[obj] = _colour(rng, (0.9, 0.3, 0.6))
    label[obj] = 5

  if rng.random() < 0.3:  # a void rectangle
    y0, x0 = rng.integers(0, size - 8, 2)
    ignore[y0:y0 + 6, x0:x0 + 6] = True

  img += rng.normal(0, 0.03, img.shape)
  label[ignore & ((label == 1) | (label == 0))] = IGNORE  # thin structures stay labelled
  return (np.clip(img, 0, 1) * 255).astype(np.uint8), label


@dataclasses.dataclass(frozen=True)
class SyntheticSpec:
  """A procedural dataset: its classes, the classes ``detail_miou`` averages, and
  ``generate_sample(seed, index, size) -> (image, label)``."""
  name: str
  classes: tuple[str, ...]
  detail_classes: tuple[int, ...]
  generate_sample: Callable[[int, int, int], tuple[np.ndarray, np.ndarray]]


def _specs() -> dict[str, SyntheticSpec]:
  from ppool_jax.data import detail
  return {"synthetic": SyntheticSpec("synthetic", CLASSES, DETAIL_CLASSES, generate_sample),
          "synthetic_detail": SyntheticSpec("synthetic_detail", detail.CLASSES,
                                            detail.DETAIL_CLASSES, detail.generate_sample)}


SYNTHETIC_NAMES = ("synthetic", "synthetic_detail")


def synthetic_spec(name: str) -> SyntheticSpec:
  specs = _specs()
  if name not in specs:
    raise ValueError(f"unknown synthetic dataset {name!r}; choose from {sorted(specs)}.")
  return specs[name]


def generate(num: int, size: int = 64, seed: int = 0,
             name: str = "synthetic") -> tuple[np.ndarray, np.ndarray]:
  """``num`` samples of dataset ``name`` stacked: images ``(num, size, size, 3) uint8``,
  labels ``(num, size, size) uint8``."""
  if num < 1:
    raise ValueError(f"{name}: num must be >= 1, got {num}.")
  sample = synthetic_spec(name).generate_sample
  pairs = [sample(seed, i, size) for i in range(num)]
  return np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])


class SyntheticSource:
  """Random-access source of synthetic samples (``len`` and ``[i]`` -> dict with
  ``image`` and ``label``), the same interface as ``tfds.data_source``. ``name`` selects
  the generator: ``"synthetic"`` (this module) or ``"synthetic_detail"``
  (``ppool_jax.data.detail``)."""

  def __init__(self, num: int, size: int = 64, seed: int = 0, name: str = "synthetic"):
    self.spec = synthetic_spec(name)
    self.images, self.labels = generate(num, size, seed, name)
    self.num_classes = len(self.spec.classes)

  def __len__(self):
    return len(self.images)

  def __getitem__(self, i):
    return {"image": self.images[i], "label": self.labels[i]}
