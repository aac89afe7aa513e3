"""Every dataset a config may name, synthetic ones included, behind one registry.

``REGISTRY[name]`` is a :class:`Dataset` with three functions of the config's ``dataset``
block ``d``:

* ``describe(d)`` -> :class:`DatasetInfo`: what a run needs to know besides the images (class
  names, the classes ``detail_miou`` averages, the boundary protocol, a palette) and the
  reader's spec; it reads no data. ``train`` calls it once and passes the result down.
* ``open(d, info, check)`` -> ``(train, eval)`` random-access sources (``len``, ``[i] ->
  {"image", "label"}``); ``check``: validate a folder dataset's label files first.
* ``problems(d, info)`` -> what is wrong before any data is read (a list; errors it raises
  are problems too): the preflight (:mod:`ppool_jax.train.preflight`) asks every dataset the
  same way.

Entries: ``synthetic``, ``synthetic_detail`` (generated, :mod:`ppool_jax.data.synthetic`),
``voc_aug``, ``cityscapes``, ``ade20k`` (:mod:`ppool_jax.data.folders`, extracted folders or
prepared TFDS) and ``folder`` (one's own, :mod:`ppool_jax.data.custom`).
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable
from typing import Any

from absl import logging

from ppool_jax.data import custom, folders
from ppool_jax.data.check import check_labels, raise_for
from ppool_jax.data.synthetic import SYNTHETIC_NAMES, SyntheticSource, synthetic_spec


class MissingDataError(FileNotFoundError):
  pass


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
  """What a run knows about its dataset before reading it (module docstring)."""
  name: str
  class_names: tuple[str, ...]      # one per class (``class_<k>`` where the dataset names none)
  detail_classes: tuple[int, ...] = ()
  boundary_protocol: str = "label"  # "void_band" for VOC (ppool_jax.metrics)
  palette: tuple[tuple[int, int, int], ...] = ()   # one (r, g, b) per class, or none
  spec: Any = dataclasses.field(default=None, compare=False, repr=False)  # the reader's

  @property
  def num_classes(self) -> int:
    return len(self.class_names)


@dataclasses.dataclass(frozen=True)
class Dataset:
  describe: Callable[[Any], DatasetInfo]
  open: Callable[[Any, DatasetInfo, bool], tuple]
  problems: Callable[[Any, DatasetInfo], list[str]]


# --- generated ------------------------------------------------------------------------------
def _describe_synthetic(d) -> DatasetInfo:
  spec = synthetic_spec(d.name)
  return DatasetInfo(d.name, spec.classes, spec.detail_classes, spec=spec)


def _open_synthetic(d, info: DatasetInfo, check: bool = True):
  train = SyntheticSource(d.synthetic_train, d.synthetic_size, d.synthetic_seed, d.name)
  # A disjoint seed: evaluation scenes are never seen in training.
  evaluation = SyntheticSource(d.synthetic_eval, d.synthetic_size, d.synthetic_seed + 10_000,
                               d.name)
  return train, evaluation


def _synthetic_problems(d, info: DatasetInfo) -> list[str]:
  problems = [f"dataset.{field} must be >= 1, got {d[field]}."
              for field in ("synthetic_train", "synthetic_eval") if d[field] < 1]
  try:
    info.spec.generate_sample(0, 0, d.synthetic_size)
  except ValueError as e:
    problems.append(str(e))
  return problems


# --- files ----------------------------------------------------------------------------------
def _describe_files(d) -> DatasetInfo:
  spec = (custom.spec_from_config(d.folder) if d.name == custom.NAME
          else folders.get_spec(d.name))
  names = spec.class_names or tuple(f"class_{k}" for k in range(spec.num_classes))
  return DatasetInfo(d.name, names, spec.detail_classes, spec.boundary_protocol, spec.palette,
                     spec=spec)


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


def validate_labels(d, train, evaluation) -> None:
  """Validates every label file of each folder split with at most ``d.check_labels`` images
  (-1: any size, 0: never) before training (``ppool_jax.data.check``); raises one error
  listing every problem of both splits."""
  limit = d.get("check_labels", 0)
  if limit < -1:
    raise ValueError(f"dataset.check_labels must be -1 (always), 0 (never) or a maximum number "
                     f"of images, got {limit}.")
  reports = []
  for split, src in ((d.train_split, train), (d.eval_split, evaluation)):
    if isinstance(src, folders.FolderSource) and (limit == -1 or 0 < len(src) <= limit):
      t0 = time.perf_counter()
      reports.append(check_labels(src, split, d.num_workers))
      logging.info("checked %d label files of %s in %.1f s", len(src), reports[-1].name,
                   time.perf_counter() - t0)
      if reports[-1].absent_classes():
        logging.warning("%s: no label pixel of %s", reports[-1].name,
                        ", ".join(reports[-1].absent_classes()))
  raise_for(reports)


def _open_files(d, info: DatasetInfo, check: bool = True):
  if d.name == custom.NAME and d.reader != "folder":
    raise ValueError(f"dataset {custom.NAME} reads its files directly: set "
                     f"dataset.reader='folder', not {d.reader!r}.")
  _check_root(d)
  if d.reader == "folder":
    root = os.path.expanduser(d.root)
    if d.name == custom.NAME:
      custom.check_splits(d.folder, d.train_split, d.eval_split)
    train = folders.FolderSource(info.spec, root, d.train_split)
    evaluation = folders.FolderSource(info.spec, root, d.eval_split)
    if check:
      validate_labels(d, train, evaluation)
    return train, evaluation
  from ppool_jax.data.tfds_builders import TfdsSource
  data_dir = os.path.expanduser(d.data_dir)
  return TfdsSource(d.name, d.train_split, data_dir), TfdsSource(d.name, d.eval_split, data_dir)


def _file_problems(d, info: DatasetInfo) -> list[str]:
  # Lists the files (e.g. VOC's SBD folder and split lists), reads none of them: the labels
  # are checked by ``open`` in ``train``.
  _open_files(d, info, check=False)
  return []


_SYNTHETIC = Dataset(_describe_synthetic, _open_synthetic, _synthetic_problems)
_FILES = Dataset(_describe_files, _open_files, _file_problems)
REGISTRY: dict[str, Dataset] = {**{name: _SYNTHETIC for name in SYNTHETIC_NAMES},
                                **{name: _FILES for name in (*folders.DATASETS, custom.NAME)}}


def names() -> tuple[str, ...]:
  """Every ``dataset.name`` a config may give."""
  return tuple(sorted(REGISTRY))


def lookup(name: str) -> Dataset:
  if name not in REGISTRY:
    raise ValueError(f"unknown dataset {name!r}; choose from {', '.join(names())}.")
  return REGISTRY[name]


def describe(d) -> DatasetInfo:
  """The :class:`DatasetInfo` of the config's ``dataset`` block ``d`` (reads no data)."""
  return lookup(d.name).describe(d)
