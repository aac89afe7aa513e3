"""Run a trained model on one's own images: labels, overlays and P-pooling's alpha maps.

    from ppool_jax.inference import Predictor
    predictor = Predictor.from_workdir("runs/demo")              # config.json + latest checkpoint
    result = predictor.predict(image)                            # uint8 (H, W, 3) RGB, any size
    result.label                                                 # (H, W) uint8 train ids
    predictor.colorize(result.label), predictor.overlay(image, result.label)
    predictor.predict(image, alpha_maps=True).alpha              # {layer: (h, w) float32}

Two ways to cover an image (``mode``): ``"whole"`` runs the model once on the image padded
to a multiple of its output stride (:func:`ppool_jax.models.output_stride`); ``"slide"`` runs it on windows of the training crop
(``window``, overlapping by ``overlap``), averaging logits where they overlap (large
images, or models trained on crops). Either is combined with test-time augmentation
(``scales``, ``flip``: :func:`ppool_jax.models.tta.tta_logits`; defaults from the run's
``eval`` config). Batches are sharded over ``devices`` (default: the local devices); in
``"whole"`` mode images of equal size are batched together (:meth:`Predictor.predict_many`),
so each image's result does not depend on the others.

Alpha maps are the Fig. 6 view: the alpha of every P-pooling layer, averaged over channels,
from a whole-image pass at scale 1 without flip (whatever ``mode`` and TTA predict with).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from ppool_jax.labels import palette as dataset_palette
from ppool_jax.models import output_stride
from ppool_jax.models.tta import check_tta, pad_to_multiple, slide_logits, tta_logits

MODES = ("whole", "slide")


@dataclasses.dataclass
class Prediction:
  label: np.ndarray                          # (H, W) train ids (uint8 up to 256 classes)
  alpha: dict[str, np.ndarray] | None = None  # {layer: (h, w)} channel-mean alpha


class Predictor:
  """A trained model ready for images of any size (see the module docstring)."""

  def __init__(self, model, variables: dict, cfg, class_names: Sequence[str], *,
               mode: str = "whole", window: tuple[int, int] | None = None,
               overlap: float = 1 / 3, scales: Sequence[float] | None = None,
               flip: bool | None = None, batch_size: int = 8, devices=None):
    from ppool_jax.train.config import eval_tta
    from ppool_jax.train.inputs import augment_config, palette
    if mode not in MODES:
      raise ValueError(f"unknown mode {mode!r}; choose from {MODES}.")
    if not 0 <= overlap < 1:
      raise ValueError(f"overlap must be in [0, 1), got {overlap}.")
    default_scales, default_flip = eval_tta(cfg)
    self.scales, self.flip = check_tta(default_scales if scales is None else scales,
                                       default_flip if flip is None else flip)
    self.model, self.cfg, self.mode = model, cfg, mode
    self.class_names = tuple(class_names)
    self.num_classes = len(self.class_names)
    self.aug = augment_config(cfg)
    self.window = tuple(window or self.aug.crop_size)
    self.stride = tuple(max(1, int(w * (1 - overlap))) for w in self.window)
    self.multiple = output_stride(model)  # whole-image mode pads to multiples of it
    self.palette = np.asarray(dataset_palette(cfg.dataset.name, self.num_classes,
                                              palette(cfg)), np.uint8)
    self.devices = list(devices or jax.local_devices())
    self.batch_size = -(-batch_size // len(self.devices)) * len(self.devices)
    mesh = jax.sharding.Mesh(np.asarray(self.devices), ("batch",))
    self._sharded = NamedSharding(mesh, P("batch"))
    self.variables = jax.device_put(variables, NamedSharding(mesh, P()))

    apply = lambda v, x: model.apply(v, x, train=False).astype(jnp.float32)
    self._apply = jax.jit(apply)
    whole = lambda v, x: tta_logits(pad_to_multiple(lambda y: apply(v, y), self.multiple), x,
                                    self.scales, self.flip)
    self._whole_labels = jax.jit(lambda v, x: jnp.argmax(whole(v, x), -1))
    self._whole_logits = jax.jit(whole)
    self._alpha = jax.jit(self._alpha_fn)

  @classmethod
  def from_workdir(cls, workdir: str, step: int | None = None, cfg=None, **kwargs):
    """A run's model from its workdir (``ppool_jax.train.load_run``: ``config.json`` and the
    latest or given checkpoint; ``cfg`` only for runs without ``config.json``)."""
    from ppool_jax.train.inputs import class_names
    from ppool_jax.train.runs import load_run, read_record
    run = load_run(workdir, step, cfg)
    record = read_record(workdir)
    names = record["class_names"] if record else class_names(run.config)
    return cls(run.model, run.variables, run.config, names, **kwargs)

  # -- arrays -------------------------------------------------------------------------------

  def preprocess(self, images) -> np.ndarray:
    """``uint8 (B, H, W, 3)`` RGB -> the network's float32 input (the run's preprocessing)."""
    from ppool_jax.data.pipeline import normalize
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
      raise ValueError(f"images must be uint8 (B, H, W, 3) RGB, got {images.dtype} "
                       f"{images.shape}.")
    return normalize(images, self.aug)

  def _run(self, fn, x: np.ndarray) -> np.ndarray:
    """``fn(variables, x)`` with the batch padded to a multiple of the devices and sharded."""
    n = len(x)
    pad = -n % len(self.devices)
    if pad:
      x = np.concatenate([x, np.repeat(x[-1:], pad, 0)])
    out = fn(self.variables, jax.device_put(x, self._sharded))
    return jax.tree_util.tree_map(lambda a: np.asarray(a)[:n], out)

  def logits(self, images) -> np.ndarray:
    """``uint8 (B, H, W, 3)`` -> float32 ``(B, H, W, K)`` logits (``mode``, TTA), one size."""
    x = self.preprocess(images)
    if self.mode == "whole":
      return self._run(self._whole_logits, x)
    windows = slide_logits(lambda w: self._run(self._apply, np.asarray(w)), self.window,
                           self.stride, self.batch_size)
    return np.asarray(tta_logits(windows, x, self.scales, self.flip))

  def labels(self, images) -> np.ndarray:
    """Train ids ``(B, H, W)`` (uint8 up to 256 classes, else int32) of same-size images."""
    dtype = np.uint8 if self.num_classes <= 256 else np.int32
    if self.mode == "whole":
      return self._run(self._whole_labels, self.preprocess(images)).astype(dtype)
    return np.argmax(self.logits(images), -1).astype(dtype)

  def _alpha_fn(self, variables, x):
    h, w = x.shape[1:3]
    x = jnp.pad(x, ((0, 0), (0, -h % self.multiple), (0, -w % self.multiple), (0, 0)))
    _, inter = self.model.apply(variables, x, train=False, mutable=["intermediates"])
    sown = inter.get("intermediates", {}).get("backbone", {})
    return {k: jnp.mean(v["alpha"][0].astype(jnp.float32), -1)
            for k, v in sorted(sown.items()) if "alpha" in v}

  def alpha_maps(self, images) -> list[dict[str, np.ndarray]]:
    """Per image, ``{layer: (h, w)}``: every P-pooling layer's alpha averaged over channels,
    cropped to the image (``ceil(H * h_pad / H_pad)`` rows); empty without P-pooling."""
    x = self.preprocess(images)
    maps = self._run(self._alpha, x)
    hp, wp = (-(-n // self.multiple) * self.multiple for n in x.shape[1:3])
    crop = lambda m: m[:, :math.ceil(x.shape[1] * m.shape[1] / hp),
                       :math.ceil(x.shape[2] * m.shape[2] / wp)]
    maps = {k: crop(m) for k, m in maps.items()}
    return [{k: m[i] for k, m in maps.items()} for i in range(len(x))]

  # -- images ------------------------------------------------------------------------------

  def predict(self, image, alpha_maps: bool = False) -> Prediction:
    """One ``uint8 (H, W, 3)`` RGB image."""
    return self.predict_many([image], alpha_maps)[0]

  def predict_many(self, images: Sequence[Any], alpha_maps: bool = False) -> list[Prediction]:
    """Images of any sizes, in order; equal sizes batched together (``batch_size``)."""
    images = [np.asarray(im) for im in images]
    out: list[Prediction | None] = [None] * len(images)
    groups: dict[tuple, list[int]] = {}
    for i, im in enumerate(images):
      groups.setdefault(im.shape, []).append(i)
    step = self.batch_size if self.mode == "whole" else 1
    for idx in groups.values():
      for k in range(0, len(idx), step):
        chunk = idx[k:k + step]
        batch = np.stack([images[i] for i in chunk])
        labels = self.labels(batch)
        maps = self.alpha_maps(batch) if alpha_maps else [None] * len(chunk)
        for i, l, a in zip(chunk, labels, maps):
          out[i] = Prediction(l, a)
    return out

  def colorize(self, label: np.ndarray) -> np.ndarray:
    """``(H, W)`` train ids -> ``uint8 (H, W, 3)`` colours of the dataset's palette."""
    return self.palette[np.clip(label, 0, self.num_classes - 1)]

  def overlay(self, image: np.ndarray, label: np.ndarray, opacity: float = 0.5) -> np.ndarray:
    """The image with its label colours blended in at ``opacity``."""
    blend = (1 - opacity) * np.asarray(image, np.float32) + opacity * self.colorize(label)
    return np.round(blend).astype(np.uint8)
