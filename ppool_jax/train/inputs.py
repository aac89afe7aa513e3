"""A config's dataset and input pipeline: its registry entry (:mod:`ppool_jax.data.registry`,
every dataset, synthetic included, the same way), its augmentation and its training loader.

``train`` computes the dataset's :class:`~ppool_jax.data.registry.DatasetInfo` and the
:class:`~ppool_jax.data.AugmentConfig` once and passes them down; the one-line helpers below
(``num_classes``, ``class_names``, ...) are for callers that hold only a config.
"""

from __future__ import annotations

import ml_collections
import numpy as np

from ppool_jax.data import AugmentConfig, normalize
from ppool_jax.data.registry import (  # noqa: F401  (MissingDataError re-exported)
    DatasetInfo, MissingDataError, describe, lookup, names)


def dataset_names() -> tuple[str, ...]:
  """Every ``dataset.name`` a config may give: the synthetic sets, the named folder readers
  and ``folder`` (a dataset of one's own)."""
  return names()


def dataset_info(cfg: ml_collections.ConfigDict) -> DatasetInfo:
  """Classes, detail classes, boundary protocol and palette of the config's dataset (reads
  no data; a ValueError naming the choices for an unknown dataset)."""
  return describe(cfg.dataset)


def num_classes(cfg: ml_collections.ConfigDict) -> int:
  return dataset_info(cfg).num_classes


def class_names(cfg: ml_collections.ConfigDict) -> tuple[str, ...]:
  """The dataset's class names (``class_<k>`` where the dataset names none)."""
  return dataset_info(cfg).class_names


def palette(cfg: ml_collections.ConfigDict) -> tuple[tuple[int, int, int], ...]:
  """One (r, g, b) per class where the dataset gives colours (``dataset.folder.palette``);
  empty otherwise."""
  return dataset_info(cfg).palette


def detail_classes(cfg: ml_collections.ConfigDict) -> tuple[int, ...]:
  """The classes ``detail_miou`` averages (empty: not reported)."""
  return dataset_info(cfg).detail_classes


def boundary_protocol(cfg: ml_collections.ConfigDict) -> str:
  """The dataset's boundary-metric protocol ("void_band" for VOC, else "label")."""
  return dataset_info(cfg).boundary_protocol


def order_seed(cfg: ml_collections.ConfigDict) -> int:
  """The seed of the training sample order and augmentations: ``dataset.order_seed``, or
  ``cfg.seed`` when it is -1 (the default). Separating it from the initialisation's seed lets
  an experiment vary one of the two."""
  seed = cfg.dataset.get("order_seed", -1)
  if seed < -1:
    raise ValueError(f"dataset.order_seed must be -1 (use the run's seed) or >= 0, got {seed}.")
  return cfg.seed if seed == -1 else seed


def augment_config(cfg: ml_collections.ConfigDict) -> AugmentConfig:
  d = cfg.dataset
  return AugmentConfig(crop_size=(d.crop_size, d.crop_size), scale_range=tuple(d.scale_range),
                       preprocessing=d.get("preprocessing", "imagenet"),
                       flip=d.flip)


def train_loader(cfg: ml_collections.ConfigDict, source, *, aug: AugmentConfig | None = None,
                 process_index: int = 0, process_count: int = 1):
  """The training loader of ``train`` (:class:`ppool_jax.data.loader.TrainLoader`): this
  process's share of the global batch, :func:`order_seed`, the augmentation ``aug`` (default:
  :func:`augment_config`), ``dataset.num_workers`` grain threads."""
  from ppool_jax.data.loader import TrainLoader
  return TrainLoader(source, global_batch_size=cfg.global_batch_size, seed=order_seed(cfg),
                     cfg=aug or augment_config(cfg), process_index=process_index,
                     process_count=process_count, num_workers=cfg.dataset.num_workers)


def sources(cfg: ml_collections.ConfigDict, check: bool = True,
            info: DatasetInfo | None = None):
  """(train_source, eval_source) for the config's dataset; ``check``: validate the labels of
  folder datasets first (:func:`ppool_jax.data.registry.validate_labels`); ``info``: the
  dataset's :func:`dataset_info` where the caller has it."""
  d = cfg.dataset
  entry = lookup(d.name)
  return entry.open(d, info or entry.describe(d), check)


def eval_images(cfg: ml_collections.ConfigDict, n: int, eval_source=None):
  """The first ``n`` images of the evaluation set (``eval_source``, default the config's) as
  the network sees them (:func:`augment_config`'s normalisation), stacked: ``(B, H, W, 3)``,
  ``B = min(n, len(eval_source))``; images of one size."""
  if eval_source is None:
    _, eval_source = sources(cfg)
  aug = augment_config(cfg)
  return np.stack([normalize(eval_source[i]["image"], aug)
                   for i in range(min(n, len(eval_source)))])
