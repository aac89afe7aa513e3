"""Training batches on grain: deterministic by step, resumable, the host's share of the
global batch, no device layout.

The batch of training step ``s`` is a pure function of ``(seed, s)``. Slot ``i`` of the global
batch (``B`` examples) is position ``p = s * B + i`` of the sample stream: epoch ``p // n`` of
an ``n``-example source, read in the order ``default_rng([seed, epoch]).permutation(n)``, and
augmented (:func:`~ppool_jax.data.pipeline.augment`) with ``default_rng([seed, 1, s, i])``.
Resuming at step ``s`` therefore needs no iterator state in the checkpoint: the stream starts
at ``s`` and yields exactly the batches an uninterrupted run would have seen. These are the
formulas of the thread-pool loader this replaces (issue #21 item 2): its batches, bit for bit.

Each process reads its contiguous share of the global batch: process ``k`` of ``K`` gets the
slots ``k * B/K ... (k+1) * B/K - 1``, as a host batch ``image (B/K, h, w, 3) float32``,
``label (B/K, h, w) int32``. The runners (:mod:`ppool_jax.train.parallel`) place it on the
devices: pmap splits it over the local devices, the mesh runner makes it the process's part
of one global array.

grain does the parallel work: :meth:`TrainLoader.iterate` is ``MapDataset.range`` over this
process's example positions, ``.map`` (read, augment), ``to_iter_dataset`` with
``num_workers`` threads and a prefetch buffer, ``.batch``. :meth:`TrainLoader.batch` computes
one batch in the calling thread with the same functions (random access for tests and tools).

grain is imported on first use of :meth:`~TrainLoader.iterate` or :meth:`~TrainLoader.dataset`:
the batch functions are plain NumPy (the GPU benchmark suite runs where grain is not installed).
"""

from __future__ import annotations

import functools
import sys

import numpy as np

from ppool_jax.data.pipeline import DEFAULT_NUM_WORKERS, AugmentConfig, augment


@functools.lru_cache(maxsize=16)
def epoch_order(seed: int, epoch: int, size: int) -> np.ndarray:
  """The read order of epoch ``epoch`` of a ``size``-example source (read-only; cached, and
  safe to call from grain's threads)."""
  order = np.random.default_rng([seed, epoch]).permutation(size)
  order.flags.writeable = False
  return order


def sample_index(seed: int, position: int, size: int) -> int:
  """The source index read at stream position ``position`` (module docstring)."""
  epoch, pos = divmod(position, size)
  return int(epoch_order(seed, epoch, size)[pos])


def _grain():
  try:
    import grain
  except ImportError as e:
    raise ImportError("the training loader iterates with grain: pip install 'grain>=0.2.18' "
                      "(a core dependency of ppool_jax).") from e
  return grain


class TrainLoader:
  """Deterministic, resumable training batches: this process's share of the global batch.

  ``batch(step)`` and the batches of ``iterate(start, stop)`` are ``{"image": (b, h, w, 3)
  float32, "label": (b, h, w) int32}`` with ``b = global_batch_size / process_count``.
  ``num_workers``: grain's threads (0: read in the calling thread); ``prefetch``: batches
  grain prepares ahead of the one asked for.
  """

  def __init__(self, source, *, global_batch_size: int, seed: int, cfg: AugmentConfig,
               process_index: int = 0, process_count: int = 1,
               num_workers: int = DEFAULT_NUM_WORKERS, prefetch: int = 2):
    if process_count < 1 or not 0 <= process_index < process_count:
      raise ValueError(f"TrainLoader: process_index {process_index} is not in "
                       f"[0, {process_count}).")
    if global_batch_size < 1 or global_batch_size % process_count:
      raise ValueError(f"global batch {global_batch_size} must divide into {process_count} "
                       "processes.")
    if len(source) == 0:
      raise ValueError("TrainLoader: the source is empty.")
    if num_workers < 0 or prefetch < 0:
      raise ValueError(f"TrainLoader: num_workers ({num_workers}) and prefetch ({prefetch}) "
                       "must be >= 0.")
    self.source, self.cfg, self.seed = source, cfg, seed
    self.global_batch_size = global_batch_size
    self.per_process = global_batch_size // process_count
    self.offset = process_index * self.per_process
    self.num_workers, self.prefetch = num_workers, prefetch
    # The stream's length in steps: as long as grain's datasets may be (len() <= sys.maxsize).
    self.max_steps = sys.maxsize // self.per_process

  def index(self, step: int, slot: int) -> int:
    """The source index of slot ``slot`` (of the global batch) at step ``step``."""
    return sample_index(self.seed, step * self.global_batch_size + slot, len(self.source))

  def example(self, position: int) -> dict[str, np.ndarray]:
    """Example ``position`` of this process's stream: slot ``offset + position % b`` of step
    ``position // b``, read and augmented."""
    step, j = divmod(position, self.per_process)
    slot = self.offset + j
    ex = self.source[self.index(step, slot)]
    rng = np.random.default_rng([self.seed, 1, step, slot])
    image, label = augment(np.asarray(ex["image"]), np.asarray(ex["label"]), rng, self.cfg)
    return {"image": image, "label": label}

  def batch(self, step: int) -> dict[str, np.ndarray]:
    """The host batch of ``step``, computed in the calling thread."""
    first = step * self.per_process
    examples = [self.example(first + j) for j in range(self.per_process)]
    return {k: np.stack([e[k] for e in examples]) for k in ("image", "label")}

  def _bounds(self, start_step: int, stop_step: int | None) -> tuple[int, int]:
    stop = self.max_steps if stop_step is None else stop_step
    if not 0 <= start_step <= stop <= self.max_steps:
      raise ValueError(f"TrainLoader: steps [{start_step}, {stop}) are not a range of steps "
                       f"in [0, {self.max_steps}).")
    return start_step * self.per_process, stop * self.per_process

  def examples(self, start_step: int = 0, stop_step: int | None = None):
    """``grain.MapDataset`` of this process's examples of steps ``[start_step, stop_step)``
    (None: no end), in order: the stream of all steps, sliced."""
    grain = _grain()
    start, stop = self._bounds(start_step, stop_step)
    stream = grain.MapDataset.range(self.max_steps * self.per_process).map(self.example)
    return stream[start:stop]

  def dataset(self, start_step: int = 0, stop_step: int | None = None):
    """``grain.MapDataset`` of the batches of steps ``[start_step, stop_step)``: element ``k``
    is the batch of step ``start_step + k`` (random access)."""
    return self.examples(start_step, stop_step).batch(self.per_process, drop_remainder=True)

  def iterate(self, start_step: int = 0, stop_step: int | None = None):
    """The batches of steps ``[start_step, stop_step)`` in order, examples read and augmented
    in ``num_workers`` grain threads, ``prefetch`` batches ahead; a ``grain.DatasetIterator``
    (``close()`` stops its threads)."""
    grain = _grain()
    threads = self.num_workers
    buffer = max(self.prefetch * self.per_process, threads) if threads else 0
    ds = self.examples(start_step, stop_step).to_iter_dataset(
        grain.ReadOptions(num_threads=threads, prefetch_buffer_size=buffer))
    return iter(ds.batch(self.per_process, drop_remainder=True))
