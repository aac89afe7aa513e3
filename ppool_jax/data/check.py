"""Label validation before training: every label file of a split read once, every problem
reported together with the files that hold it.

  python -m ppool_jax.data.check --config my_dataset.py [--config.dataset.root=...]

checks the train and eval splits of a config's dataset (``reader="folder"``) and prints each
split's class frequencies; the exit status is 1 when a label file has a problem. Training
runs the same check up front (``dataset.check_labels``, see ``ppool_jax.train.inputs``).

Problems: label ids outside the dataset's range (with the files holding each id), colour
(RGB) label images (with the fix), image/label size mismatches, missing or undecodable files.
Images are opened for their size only, not decoded.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from PIL import Image

from ppool_jax.data.folders import (ColourLabelError, DatasetError, FolderSource, decode_label,
                                    invalid_values)
from ppool_jax.labels import IGNORE

SHOWN = 10  # files listed per problem


class LabelCheckError(DatasetError):
  """Label files with problems; the message lists every problem and the files."""


@dataclasses.dataclass
class LabelReport:
  """What :func:`check_labels` found in one split."""
  name: str                          # "<dataset>/<split>"
  num_files: int
  class_names: tuple[str, ...]
  valid_ids: str                     # the raw ids the dataset allows, e.g. "0..2, 255"
  out_of_range: dict[int, list[str]] = dataclasses.field(default_factory=dict)  # id -> files
  colour: list[str] = dataclasses.field(default_factory=list)
  size_mismatch: list[str] = dataclasses.field(default_factory=list)
  unreadable: list[str] = dataclasses.field(default_factory=list)
  pixels: np.ndarray | None = None   # (K + 1,) pixels of each train id; last: ignored

  @property
  def bad_files(self) -> int:
    """Distinct files with at least one problem."""
    paths = {p for ps in self.out_of_range.values() for p in ps} | set(self.colour)
    return len(paths) + len(self.size_mismatch) + len(self.unreadable)

  def problems(self) -> list[str]:
    """One line per kind of problem, naming the files (empty: the split is fine)."""
    lines = []
    if self.out_of_range:
      lines.append(f"ids out of range (allowed: {self.valid_ids}): " + "; ".join(
          f"id {v} in {_files(ps)}" for v, ps in sorted(self.out_of_range.items())))
    if self.colour:
      lines.append("colour (RGB) label images, not class ids: convert each to a greyscale "
                   f"('L') or palette ('P') PNG holding one class id per pixel: "
                   f"{_files(self.colour)}")
    if self.size_mismatch:
      lines.append(f"image/label size mismatch: {_listing(self.size_mismatch)}")
    if self.unreadable:
      lines.append(f"missing, unreadable or unsupported: {_listing(self.unreadable)}")
    return lines

  def absent_classes(self) -> list[str]:
    """The classes no label pixel of the split holds (a warning, not an error)."""
    if self.pixels is None:
      return []
    return [n for n, c in zip(self.class_names, self.pixels[:-1]) if c == 0]

  def frequencies(self) -> str:
    """``"name 61.2%, ..., ignored 2.1%"``: each class's share of the label pixels."""
    total = max(int(self.pixels.sum()), 1)
    names = self.class_names + ("ignored",)
    return ", ".join(f"{n} {100 * c / total:.1f}%" for n, c in zip(names, self.pixels))


def _listing(items: list[str]) -> str:
  more = f", ... and {len(items) - SHOWN} more" if len(items) > SHOWN else ""
  return ", ".join(items[:SHOWN]) + more


def _files(paths: list[str]) -> str:
  return f"{len(paths)} file{'s' if len(paths) > 1 else ''}: {_listing(paths)}"


def _ranges(valid: np.ndarray) -> str:
  """``"0..20, 255"`` for a boolean table."""
  ids = np.flatnonzero(valid).tolist()
  spans, start = [], None
  for i, v in enumerate(ids):
    start = v if start is None else start
    if i + 1 == len(ids) or ids[i + 1] != v + 1:
      spans.append(str(v) if start == v else f"{start}..{v}")
      start = None
  return ", ".join(spans)


def _check_one(example, spec):
  """``(kind, detail, pixel counts)`` of one example; kind "" when it is fine."""
  lab = example.label_path
  missing = [p for p in (example.image_path, lab) if not os.path.isfile(p)]
  if missing:
    return "unreadable", " and ".join(missing) + " not found", None
  try:
    raw = decode_label(lab, spec.name)
    with Image.open(example.image_path) as im:
      width, height = im.size
  except ColourLabelError:
    return "colour", lab, None
  except (DatasetError, OSError) as e:  # OSError: missing or undecodable image
    return "unreadable", str(e), None
  if (height, width) != raw.shape:
    return ("size", f"{example.image_path} is {width}x{height} but {lab} is "
            f"{raw.shape[1]}x{raw.shape[0]}", None)
  mapping = spec.label_map_of(example)
  ok = (raw >= 0) & (raw < 256)
  ok[ok] = mapping.valid[raw[ok]]
  counts = np.bincount(mapping.table[raw[ok]].ravel(), minlength=256)
  pixels = np.append(counts[:spec.num_classes], counts[IGNORE])
  bad = invalid_values(raw, mapping.valid)
  return ("range", (lab, bad), pixels) if bad else ("", None, pixels)


def check_labels(source: FolderSource, split: str, num_workers: int = 4) -> LabelReport:
  """Reads every label file of ``source`` (and each image's size) and collects all problems."""
  spec = source.spec
  names = spec.class_names or tuple(f"class_{k}" for k in range(spec.num_classes))
  report = LabelReport(f"{spec.name}/{split}", len(source.examples), names,
                       _ranges(spec.valid_raw), pixels=np.zeros(len(names) + 1, np.int64))
  with ThreadPoolExecutor(max(1, num_workers)) as pool:
    results = pool.map(lambda e: _check_one(e, spec), source.examples)
    for kind, detail, pixels in results:
      if pixels is not None:
        report.pixels += pixels
      if kind == "range":
        for v in detail[1]:
          report.out_of_range.setdefault(v, []).append(detail[0])
      elif kind:
        {"colour": report.colour, "size": report.size_mismatch,
         "unreadable": report.unreadable}[kind].append(detail)
  return report


def raise_for(reports: list[LabelReport]) -> None:
  """Raises :class:`LabelCheckError` listing the problems of every report that has any."""
  bad = [r for r in reports if r.problems()]
  if bad:
    raise LabelCheckError("label problems found before training (`python -m ppool_jax.data."
                          "check --config ...` lists them; dataset.check_labels=0 skips it):\n" +
                          "\n".join(f"{r.name}: {r.bad_files} of {r.num_files} files:\n  " +
                                    "\n  ".join(r.problems()) for r in bad))


def define_flags() -> None:
  """The CLI's flags; defined only when the module runs, so importing it registers none."""
  from absl import flags

  from ppool_jax.configs import define_config_flag
  define_config_flag("config")
  flags.DEFINE_integer("num_workers", os.cpu_count() or 4, "Threads reading label files.")
  flags.DEFINE_bool("verbose", False, "On failure, print the full traceback.")
  flags.mark_flags_as_required(["config"])


def main(_) -> int:
  from absl import flags

  # The entry point sits above the data layer: it builds the config's sources like training.
  from ppool_jax.train.inputs import sources
  cfg = flags.FLAGS.config
  try:
    if cfg.dataset.reader != "folder":
      raise DatasetError(f"dataset.reader is {cfg.dataset.reader!r}; the check reads extracted "
                         "folders (--config.dataset.reader=folder --config.dataset.root=...).")
    srcs = sources(cfg, check=False)
    if not all(isinstance(s, FolderSource) for s in srcs):
      raise DatasetError(f"{cfg.dataset.name} is generated, not read from files: nothing to check.")
  except (DatasetError, FileNotFoundError, ValueError) as e:
    if flags.FLAGS.verbose:
      raise
    print(f"ppool_jax.data.check: error: {e}", file=sys.stderr)
    return 2
  status = 0
  for split, src in zip((cfg.dataset.train_split, cfg.dataset.eval_split), srcs):
    report = check_labels(src, split, flags.FLAGS.num_workers)
    problems = report.problems()
    print(f"{report.name}: {report.num_files} label files, "
          f"{'OK' if not problems else f'{report.bad_files} with problems'}")
    for line in problems:
      print(f"  {line}")
    print(f"  pixels: {report.frequencies()}")
    if report.absent_classes():
      print(f"  warning: no pixel of {', '.join(report.absent_classes())}")
    status = status or int(bool(problems))
  return status


if __name__ == "__main__":
  from absl import app
  define_flags()
  app.run(lambda argv: sys.exit(main(argv)))
