"""Input pipeline: augmentation, normalisation, evaluation batches.

Sources are random-access (``len`` and ``[i] -> {"image" uint8 (H, W, 3), "label" uint8
(H, W)}``): ``SyntheticSource``, ``FolderSource`` or a ``tfds.data_source``. The training
batches (deterministic by step, resumable, on grain) are :mod:`ppool_jax.data.loader`'s.
Batches here and there are host batches, ``(n, ...)`` with no device axis: the runners
(:mod:`ppool_jax.train.parallel`) place them on the devices.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import numpy as np
from PIL import Image

from ppool_jax.labels import IGNORE

IMAGENET_MEAN = (123.675, 116.28, 103.53)   # torchvision's, in 0..255: pretrained weights expect it
IMAGENET_STD = (58.395, 57.12, 57.375)
# Caffe's VGG16 / FCN / DeepLab / HED preprocessing: BGR, 0-255, minus the ImageNet mean in BGR.
CAFFE_MEAN_BGR = (104.00698793, 116.66876762, 122.67891434)
PREPROCESSING = ("imagenet", "caffe")
# Threads decoding and augmenting training examples (``dataset.num_workers``'s default, and the
# loader's: ``ppool_jax.data.loader``; here so that reading it needs no grain).
DEFAULT_NUM_WORKERS = 4


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
  """Training augmentation (paper §4.1 follows the usual DeepLab recipe)."""
  crop_size: tuple[int, int] = (64, 64)
  scale_range: tuple[float, float] = (0.5, 2.0)
  flip: bool = True
  mean: tuple[float, float, float] = IMAGENET_MEAN
  std: tuple[float, float, float] = IMAGENET_STD
  ignore_label: int = IGNORE
  # "imagenet": RGB, (x - mean) / std (torchvision weights); "caffe": BGR, 0-255, minus
  # CAFFE_MEAN_BGR (Caffe-trained weights: the paper's models, HED). ``mean``/``std`` apply
  # to "imagenet" only.
  preprocessing: str = "imagenet"

  def __post_init__(self):
    if self.preprocessing not in PREPROCESSING:
      raise ValueError(f"unknown preprocessing {self.preprocessing!r}; choose from "
                       f"{PREPROCESSING}.")

  @property
  def fill_rgb(self) -> tuple[float, float, float]:
    """The colour that normalises to 0 (used to pad crops)."""
    return tuple(reversed(CAFFE_MEAN_BGR)) if self.preprocessing == "caffe" else self.mean


def normalize(image: np.ndarray, cfg: AugmentConfig) -> np.ndarray:
  """``uint8 (..., 3)`` RGB -> the network's ``float32`` input (``cfg.preprocessing``)."""
  x = image.astype(np.float32)
  if cfg.preprocessing == "caffe":
    return x[..., ::-1] - np.asarray(CAFFE_MEAN_BGR, np.float32)
  return (x - np.asarray(cfg.mean, np.float32)) / np.asarray(cfg.std, np.float32)


def _resize(image: np.ndarray, label: np.ndarray, scale: float):
  h, w = label.shape
  size = (max(1, round(w * scale)), max(1, round(h * scale)))
  image = np.asarray(Image.fromarray(image).resize(size, Image.BILINEAR))
  label = np.asarray(Image.fromarray(label).resize(size, Image.NEAREST))
  return image, label


def augment(image: np.ndarray, label: np.ndarray, rng: np.random.Generator,
            cfg: AugmentConfig) -> tuple[np.ndarray, np.ndarray]:
  """Random scale, crop (padding with the mean colour / ignore label) and flip.

  Returns a normalised ``float32 (crop_h, crop_w, 3)`` image and ``int32`` label.
  """
  if image.shape[:2] != label.shape:
    raise ValueError(f"augment: image {image.shape[:2]} and label {label.shape} sizes differ.")
  lo, hi = cfg.scale_range
  image, label = _resize(image, label, rng.uniform(lo, hi))
  ch, cw = cfg.crop_size
  h, w = label.shape
  ph, pw = max(ch - h, 0), max(cw - w, 0)
  if ph or pw:
    mean = np.round(np.asarray(cfg.fill_rgb)).astype(np.uint8)
    padded = np.empty((h + ph, w + pw, 3), np.uint8)
    padded[:] = mean
    padded[:h, :w] = image
    image = padded
    label = np.pad(label, ((0, ph), (0, pw)), constant_values=cfg.ignore_label)
  y0 = rng.integers(0, label.shape[0] - ch + 1)
  x0 = rng.integers(0, label.shape[1] - cw + 1)
  image, label = image[y0:y0 + ch, x0:x0 + cw], label[y0:y0 + ch, x0:x0 + cw]
  if cfg.flip and rng.random() < 0.5:
    image, label = image[:, ::-1], label[:, ::-1]
  return normalize(image, cfg), label.astype(np.int32)


def per_device_batch(global_batch_size: int, process_count: int, num_devices: int) -> int:
  """The per-device batch of a global batch split over ``process_count`` processes with
  ``num_devices`` local devices each; a ValueError unless it divides into them."""
  per_device, rem = divmod(global_batch_size, process_count * num_devices)
  if global_batch_size < 1 or rem:
    raise ValueError(f"global batch {global_batch_size} must divide into {process_count} "
                     f"processes x {num_devices} devices.")
  return per_device


def eval_batches(source, num_devices: int, cfg: AugmentConfig, multiple: int = 1,
                 limit: int | None = None, process_index: int = 0,
                 process_count: int = 1) -> Iterator[dict[str, np.ndarray]]:
  """Full-resolution evaluation batches of ``num_devices`` images: one per device once the
  runner places them (host batches, no device axis).

  Images are padded (normalised 0 / ignore label) to the group's largest size rounded
  up to ``multiple``; the last group is completed with fully ignored images so every
  device gets one. Yields ``image (D, H, W, 3)``, ``label (D, H, W)`` and ``valid
  (D, H, W)`` bool, True on the image's own pixels and False on padding and filler
  images: the metrics take it (``segmentation_counts(valid=)``) so that padding, unlike a
  real ignore region such as VOC's void band, is never scored, void or a boundary.

  Multi-host: process ``process_index`` of ``process_count`` gets the images
  ``process_index, process_index + process_count, ...`` of the first ``limit``, so every
  image is in exactly one process's share (a process may get one batch more than another,
  or none).
  """
  if not 0 <= process_index < process_count:
    raise ValueError(f"eval: process_index {process_index} is not in [0, {process_count}).")
  n = len(source) if limit is None else min(limit, len(source))
  share = range(process_index, n, process_count)
  for start in range(0, len(share), num_devices):
    indices = share[start:start + num_devices]
    items = [source[i] for i in indices]
    h = max(np.asarray(it["label"]).shape[0] for it in items)
    w = max(np.asarray(it["label"]).shape[1] for it in items)
    h, w = -(-h // multiple) * multiple, -(-w // multiple) * multiple
    images = np.zeros((num_devices, h, w, 3), np.float32)
    labels = np.full((num_devices, h, w), cfg.ignore_label, np.int32)
    valid = np.zeros((num_devices, h, w), bool)
    for d, (i, it) in enumerate(zip(indices, items)):
      lab = np.asarray(it["label"])
      img = np.asarray(it["image"])
      if img.shape[:2] != lab.shape:
        raise ValueError(f"eval: image {img.shape[:2]} and label {lab.shape} sizes differ "
                         f"(example {i}).")
      images[d, :lab.shape[0], :lab.shape[1]] = normalize(img, cfg)
      labels[d, :lab.shape[0], :lab.shape[1]] = lab
      valid[d, :lab.shape[0], :lab.shape[1]] = True
    yield {"image": images, "label": labels, "valid": valid}
