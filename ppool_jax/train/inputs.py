"""Builds the train and eval sources of a config, with a clear error when data is missing."""

from __future__ import annotations

import os
import time

import ml_collections
import numpy as np
from absl import logging

from ppool_jax.data import (AugmentConfig, FolderSource, SyntheticSource, TrainLoader, custom,
                            normalize)
from ppool_jax.data.check import check_labels, raise_for
from ppool_jax.data.folders import DATASETS, DatasetSpec, get_spec
from ppool_jax.data.synthetic import SYNTHETIC_NAMES, synthetic_spec


class MissingDataError(FileNotFoundError):
  pass


def dataset_names() -> tuple[str, ...]:
  """Every ``dataset.name`` a config may give: the synthetic sets, the named folder readers
  and ``folder`` (a dataset of one's own)."""
  return tuple(sorted((*SYNTHETIC_NAMES, *DATASETS, custom.NAME)))


def dataset_spec(cfg: ml_collections.ConfigDict) -> DatasetSpec:
  """The spec of a file dataset: a named one (``voc_aug``, ...) or ``folder``, built from
  ``dataset.folder`` (``ppool_jax.data.custom``). Not for the synthetic datasets."""
  d = cfg.dataset
  if d.name == custom.NAME:
    return custom.spec_from_config(d.folder)
  if d.name not in DATASETS:
    raise ValueError(f"unknown dataset {d.name!r}; choose from {', '.join(dataset_names())}.")
  return get_spec(d.name)


def num_classes(cfg: ml_collections.ConfigDict) -> int:
  return len(class_names(cfg))


def class_names(cfg: ml_collections.ConfigDict) -> tuple[str, ...]:
  """The dataset's class names (``class_<k>`` where the dataset names none)."""
  name = cfg.dataset.name
  if name in SYNTHETIC_NAMES:
    return synthetic_spec(name).classes
  spec = dataset_spec(cfg)
  return spec.class_names or tuple(f"class_{k}" for k in range(spec.num_classes))


def palette(cfg: ml_collections.ConfigDict) -> tuple[tuple[int, int, int], ...]:
  """One (r, g, b) per class where the dataset gives colours (``dataset.folder.palette``);
  empty otherwise."""
  return () if cfg.dataset.name in SYNTHETIC_NAMES else dataset_spec(cfg).palette


def detail_classes(cfg: ml_collections.ConfigDict) -> tuple[int, ...]:
  """The classes ``detail_miou`` averages (empty: not reported)."""
  name = cfg.dataset.name
  return (synthetic_spec(name) if name in SYNTHETIC_NAMES else dataset_spec(cfg)).detail_classes


def boundary_protocol(cfg: ml_collections.ConfigDict) -> str:
  """The dataset's boundary-metric protocol ("void_band" for VOC, else "label")."""
  d = cfg.dataset
  return "label" if d.name in SYNTHETIC_NAMES else dataset_spec(cfg).boundary_protocol


def order_seed(cfg: ml_collections.ConfigDict) -> int:
  """The seed of the training sample order and augmentations: ``dataset.order_seed``, or
  ``cfg.seed`` when it is -1 (the default). Separating it from the initialisation's seed lets
  an experiment vary one of the two."""
  seed = cfg.dataset.get("order_seed", -1)
  if seed < -1:
    raise ValueError(f"dataset.order_seed must be -1 (use the run's seed) or >= 0, got {seed}.")
  return cfg.seed if seed == -1 else seed


def train_loader(cfg: ml_collections.ConfigDict, source, num_devices: int, process_index: int = 0,
                 process_count: int = 1) -> TrainLoader:
  """The training loader of ``train``: global batch, :func:`order_seed`, augmentations."""
  return TrainLoader(source, global_batch_size=cfg.global_batch_size, num_devices=num_devices,
                     seed=order_seed(cfg), cfg=augment_config(cfg), process_index=process_index,
                     process_count=process_count, num_workers=cfg.dataset.num_workers)


def augment_config(cfg: ml_collections.ConfigDict) -> AugmentConfig:
  d = cfg.dataset
  return AugmentConfig(crop_size=(d.crop_size, d.crop_size), scale_range=tuple(d.scale_range),
                       preprocessing=d.get("preprocessing", "imagenet"),
                       flip=d.flip)


def eval_images(cfg: ml_collections.ConfigDict, n: int, eval_source=None) -> np.ndarray:
  """The first ``n`` images of the evaluation set (``eval_source``, default the config's) as
  the network sees them (:func:`augment_config`'s normalisation), stacked: ``(B, H, W, 3)``,
  ``B = min(n, len(eval_source))``; images of one size."""
  if eval_source is None:
    _, eval_source = sources(cfg)
  aug = augment_config(cfg)
  return np.stack([normalize(eval_source[i]["image"], aug)
                   for i in range(min(n, len(eval_source)))])


def _check_root(d) -> None:
  if d.reader == "folder":
    if not d.root:
      raise MissingDataError(
          f"config.dataset.root is empty: {d.name} needs its extracted folder on disk "
          f"(see docs/data.md, 'Real datasets'); pass --config.dataset.root=/path/to/{d.name}.")
    if not os.path.isdir(os.path.expanduser(d.root)):
      raise MissingDataError(f"{d.name}: dataset folder not found: {d.root} (see docs/data.md, "
                             "'Real datasets').")
  elif d.reader == "tfds":
    if not d.data_dir:
      raise MissingDataError(f"config.dataset.data_dir is empty: prepare {d.name} with "
                             "`python -m ppool_jax.data.prepare` and pass its --data_dir.")
  else:
    raise ValueError(f"unknown dataset reader {d.reader!r}; choose folder or tfds.")


def validate_labels(cfg: ml_collections.ConfigDict, train, evaluation) -> None:
  """Validates every label file of each folder split with at most ``dataset.check_labels``
  images (-1: any size, 0: never) before training (``ppool_jax.data.check``); raises one
  error listing every problem of both splits."""
  d = cfg.dataset
  limit = d.get("check_labels", 0)
  if limit < -1:
    raise ValueError(f"dataset.check_labels must be -1 (always), 0 (never) or a maximum number "
                     f"of images, got {limit}.")
  reports = []
  for split, src in ((d.train_split, train), (d.eval_split, evaluation)):
    if isinstance(src, FolderSource) and (limit == -1 or 0 < len(src) <= limit):
      t0 = time.perf_counter()
      reports.append(check_labels(src, split, d.num_workers))
      logging.info("checked %d label files of %s in %.1f s", len(src), reports[-1].name,
                   time.perf_counter() - t0)
      if reports[-1].absent_classes():
        logging.warning("%s: no label pixel of %s", reports[-1].name,
                        ", ".join(reports[-1].absent_classes()))
  raise_for(reports)


def sources(cfg: ml_collections.ConfigDict, check: bool = True):
  """(train_source, eval_source) for the config's dataset; ``check``: validate the labels of
  folder datasets first (:func:`validate_labels`)."""
  d = cfg.dataset
  if d.name in SYNTHETIC_NAMES:
    train = SyntheticSource(d.synthetic_train, d.synthetic_size, d.synthetic_seed, d.name)
    # A disjoint seed: evaluation scenes are never seen in training.
    evaluation = SyntheticSource(d.synthetic_eval, d.synthetic_size, d.synthetic_seed + 10_000,
                                 d.name)
    return train, evaluation
  spec = dataset_spec(cfg)
  if d.name == custom.NAME and d.reader != "folder":
    raise ValueError(f"dataset {custom.NAME} reads its files directly: set "
                     f"dataset.reader='folder', not {d.reader!r}.")
  _check_root(d)
  if d.reader == "folder":
    root = os.path.expanduser(d.root)
    if d.name == custom.NAME:
      custom.check_splits(d.folder, d.train_split, d.eval_split)
    train, evaluation = FolderSource(spec, root, d.train_split), FolderSource(spec, root,
                                                                              d.eval_split)
    if check:
      validate_labels(cfg, train, evaluation)
    return train, evaluation
  from ppool_jax.data.tfds_builders import TfdsSource
  data_dir = os.path.expanduser(d.data_dir)
  return TfdsSource(d.name, d.train_split, data_dir), TfdsSource(d.name, d.eval_split, data_dir)
