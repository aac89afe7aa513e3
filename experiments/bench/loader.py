"""Benchmark: host images/s of the training loader on grain (issue #21 item 2) against the
thread-pool loader it replaced, side by side in one process.

Both read the same source with the same augmentation (DeepLab-style scale, crop, flip,
normalisation) and the same seeds, so they produce the same batches bit for bit (checked here
on the first batch of every row, and in ``tests/test_loader.py``). Sources:

* ``files``: a folder of JPEG images and PNG labels written to a temporary directory
  (``--image_size``, VOC-like 500x375 by default), read by :class:`~ppool_jax.data.FolderSource`
  (decode + label mapping + augmentation, ``--crop`` crops);
* ``synthetic``: :class:`~ppool_jax.data.SyntheticSource` scenes held in memory (augmentation
  only).

Rows, repeated ``--repeats`` times round robin (median, min-max): the thread-pool loader
(``batch(step)`` called back to back, as the training loop called it, ``--workers`` threads);
grain per example (:meth:`TrainLoader.iterate`: ``--workers`` threads, 2 batches ahead, what
``train()`` runs); grain with other thread counts; grain per batch (threads over whole
batches: :meth:`TrainLoader.dataset` to an iterator). images/s counts the ``--batches``
batches, timed from making the loader (thread start-up included, and no batch prepared
before the clock starts); every source is read once before the first row (file cache).

  python experiments/bench/loader.py --out experiments/results/loader.md

:class:`ThreadPoolLoader` is the old loader (``ppool_jax/data/pipeline.py`` before issue #21
item 2) verbatim but for its name: the reference of the equality tests.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import grain
import numpy as np
from PIL import Image

from ppool_jax.data import AugmentConfig, FolderSource, SyntheticSource
from ppool_jax.data.custom import folder_spec
from ppool_jax.data.loader import TrainLoader
from ppool_jax.data.pipeline import augment, per_device_batch


class ThreadPoolLoader:
  """Deterministic, resumable training batches shaped for ``pmap``.

  ``loader.batch(step)`` returns ``{"image": (D, b, h, w, 3) float32, "label": (D, b, h, w)
  int32}`` where ``D`` is the number of local devices and ``b = global_batch_size /
  (process_count * D)``. With several processes (multi-host) each reads only its own
  contiguous share of the global batch.
  """

  def __init__(self, source, *, global_batch_size: int, num_devices: int, seed: int,
               cfg: AugmentConfig, process_index: int = 0, process_count: int = 1,
               num_workers: int = 4):
    per_device_batch(global_batch_size, process_count, num_devices)  # checks the division
    per_process = global_batch_size // process_count
    if len(source) == 0:
      raise ValueError("TrainLoader: the source is empty.")
    self.source, self.cfg, self.seed = source, cfg, seed
    self.global_batch_size, self.num_devices = global_batch_size, num_devices
    self.per_process = per_process
    self.offset = process_index * per_process
    self._perm_epoch, self._perm = None, None
    self._pool = ThreadPoolExecutor(num_workers) if num_workers > 1 else None

  def _index(self, position: int) -> int:
    epoch, pos = divmod(position, len(self.source))
    if epoch != self._perm_epoch:
      self._perm = np.random.default_rng([self.seed, epoch]).permutation(len(self.source))
      self._perm_epoch = epoch
    return int(self._perm[pos])

  def _sample(self, index: int, step: int, i: int):
    ex = self.source[index]
    rng = np.random.default_rng([self.seed, 1, step, i])
    return augment(np.asarray(ex["image"]), np.asarray(ex["label"]), rng, self.cfg)

  def batch(self, step: int) -> dict[str, np.ndarray]:
    # Indices are resolved in order (the permutation cache is not thread-safe), then
    # examples are decoded and augmented in parallel.
    jobs = [(self._index(step * self.global_batch_size + i), step, i)
            for i in range(self.offset, self.offset + self.per_process)]
    run = self._pool.map if self._pool else map
    samples = list(run(lambda job: self._sample(*job), jobs))
    shape = (self.num_devices, self.per_process // self.num_devices)
    images = np.stack([s[0] for s in samples]).reshape(shape + samples[0][0].shape)
    labels = np.stack([s[1] for s in samples]).reshape(shape + samples[0][1].shape)
    return {"image": images, "label": labels}

  def iterate(self, start_step: int = 0) -> Iterator[dict[str, np.ndarray]]:
    step = start_step
    while True:
      yield self.batch(step)
      step += 1


def write_folder(root: str, num: int, width: int, height: int, classes: int = 21) -> None:
  """``num`` JPEG images (smooth colour fields with noise, so they compress as photos do) and
  PNG labels (blocks of class ids) under ``root/images/train`` and ``root/annotations/train``."""
  rng = np.random.default_rng(0)
  for sub in ("images/train", "annotations/train"):
    os.makedirs(os.path.join(root, sub), exist_ok=True)
  yy, xx = np.mgrid[:height, :width] / max(height, width)
  for i in range(num):
    base = rng.uniform(0, 255, 3) * np.stack([np.sin(3 * xx + i), np.cos(2 * yy), xx * yy], -1)
    image = np.clip(np.abs(base) + rng.normal(0, 12, (height, width, 3)), 0, 255)
    label = rng.integers(0, classes, (height // 25 + 1, width // 25 + 1), dtype=np.uint8)
    label = np.kron(label, np.ones((25, 25), np.uint8))[:height, :width]
    Image.fromarray(image.astype(np.uint8)).save(
        os.path.join(root, "images/train", f"{i:04d}.jpg"), quality=90)
    Image.fromarray(label).save(os.path.join(root, "annotations/train", f"{i:04d}.png"))


def rows(source, batch: int, crop: int, workers: int):
  """(name, make an iterator of host batches from step 0, the thread count) per row."""
  cfg = AugmentConfig(crop_size=(crop, crop))
  old = lambda w: ThreadPoolLoader(source, global_batch_size=batch, num_devices=1, seed=0,
                                   cfg=cfg, num_workers=w)
  new = lambda w, prefetch=2: TrainLoader(source, global_batch_size=batch, seed=0, cfg=cfg,
                                          num_workers=w, prefetch=prefetch)

  def per_batch(w):
    ds = new(w).dataset(0, None).to_iter_dataset(
        grain.ReadOptions(num_threads=w, prefetch_buffer_size=max(w, 2)))
    return iter(ds)

  out = [("thread pool (old)", lambda: old(workers).iterate(0), workers),
         ("grain, per example", lambda: new(workers).iterate(0), workers)]
  out += [("grain, per example", lambda w=w: new(w).iterate(0), w)
          for w in sorted({1, 2, 2 * workers} - {workers})]
  out.append(("grain, per batch", lambda: per_batch(workers), workers))
  return out


def images_per_second(make, batches: int, batch: int) -> tuple[float, dict]:
  """images/s of ``batches`` batches from a fresh loader, its making and thread start-up
  included (grain's prefetch cannot start ahead of the clock); also returns the first batch."""
  t0 = time.perf_counter()
  it = make()
  first = next(it)
  for _ in range(batches - 1):
    next(it)
  rate = batches * batch / (time.perf_counter() - t0)
  if hasattr(it, "close"):
    it.close()
  return rate, first


def main():
  from timing import emit, host_cpu, load_average, rate_cells
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--sources", default="files,synthetic")
  ap.add_argument("--batch", type=int, default=10, help="global batch (base config's)")
  ap.add_argument("--batches", type=int, default=16, help="files: batches per run")
  ap.add_argument("--synthetic_batches", type=int, default=128, help="synthetic: batches per run")
  ap.add_argument("--workers", type=int, default=4, help="threads (base config's num_workers)")
  ap.add_argument("--image_size", default="500x375", help="files: width x height")
  ap.add_argument("--crop", type=int, default=321, help="files: crop (base config's)")
  ap.add_argument("--synthetic_size", type=int, default=64)
  ap.add_argument("--repeats", type=int, default=3)
  ap.add_argument("--note", default="", help="said under the machine, e.g. that it was shared")
  ap.add_argument("--out", default=None)
  args = ap.parse_args()
  width, height = map(int, args.image_size.split("x"))
  load_before = load_average()
  tmp = tempfile.TemporaryDirectory()
  sources = {}
  for name in args.sources.split(","):
    if name == "files":
      write_folder(tmp.name, 4 * args.batch, width, height)
      spec = folder_spec([f"c{k}" for k in range(21)], img_dir="images/{split}",
                         ann_dir="annotations/{split}")
      sources[name] = (FolderSource(spec, tmp.name, "train"), args.crop,
                       f"{4 * args.batch} JPEG {width}x{height} + PNG labels on disk, "
                       f"{args.crop}x{args.crop} crops, {args.batches} batches a run",
                       args.batches)
    elif name == "synthetic":
      sources[name] = (SyntheticSource(4 * args.batch, args.synthetic_size, seed=0),
                       args.synthetic_size, f"{4 * args.batch} synthetic scenes "
                       f"{args.synthetic_size}x{args.synthetic_size} in memory, "
                       f"{args.synthetic_size}x{args.synthetic_size} crops, "
                       f"{args.synthetic_batches} batches a run", args.synthetic_batches)
    else:
      raise SystemExit(f"unknown source {name!r}; choose from files, synthetic.")
    for i in range(len(sources[name][0])):  # the files in the page cache before any row
      sources[name][0][i]
  table = {(s, n, w): [] for s, (src, crop, _, _) in sources.items()
           for n, _, w in rows(src, args.batch, crop, args.workers)}
  for _ in range(args.repeats):  # round robin: load changes hit every row alike
    for s, (src, crop, _, batches) in sources.items():
      reference = None
      for name, make, w in rows(src, args.batch, crop, args.workers):
        rate, first = images_per_second(make, batches, args.batch)
        first = {k: np.asarray(v).reshape((args.batch,) + v.shape[-3 + (k == "label"):])
                 for k, v in first.items()}
        if reference is None:
          reference = first
        for k in reference:  # the same batch, bit for bit
          np.testing.assert_array_equal(first[k], reference[k], err_msg=f"{s} {name} {w}: {k}")
        table[(s, name, w)].append(rate)
        print(f"{s}: {name}, {w} threads: {rate:.1f} images/s", flush=True)
  load_after = load_average()
  lines = ["# Training-loader benchmark: grain vs the thread-pool loader (issue #21 item 2)", "",
           f"- machine: {host_cpu()}; grain {grain.__version__}; {time.strftime('%Y-%m-%d')}",
           f"- load average (1 min) before / after: {load_before:.1f} / {load_after:.1f}"
           + (f"; {args.note}" if args.note else ""),
           f"- global batch {args.batch} (one process), each run timed from making the loader; "
           f"{args.repeats} repeats, round robin; the same batches bit for bit in every row "
           "(checked)"]
  lines += [f"- {s}: {desc}" for s, (_, _, desc, _) in sources.items()]
  lines += ["", "| source | loader | threads | images/s (median) | min | max | vs. old |",
            "|---|---|---|---|---|---|---|"]
  for s in sources:
    old = float(np.median(table[(s, "thread pool (old)", args.workers)]))
    for (src, name, w), r in table.items():
      if src == s:
        lines.append(f"| {s} | {name} | {w} | {rate_cells(r, old)} |")
  emit(lines, args.out)
  tmp.cleanup()


if __name__ == "__main__":
  main()
