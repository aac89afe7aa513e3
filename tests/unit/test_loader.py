"""The training loader on grain (issue #21 item 2): bit for bit the batches of the thread-pool
loader it replaced, at every step, for one and two processes, however it is read (one
thread, grain's threads, random access), and resumable at any step."""

import numpy as np
import pytest

from ppool_jax.data import AugmentConfig, DatasetError, SyntheticSource
from ppool_jax.data.loader import TrainLoader, epoch_order
from support import bench_module

# The old loader, verbatim (experiments/bench/loader.py).
ThreadPoolLoader = bench_module("loader").ThreadPoolLoader

# 10 examples, global batch 8: steps 0-5 read 48 positions, epochs 0-4; step 1 (positions
# 8-15) and step 3 (24-31) straddle epoch boundaries.
STEPS = range(6)


@pytest.fixture(scope="module")
def source():
  return SyntheticSource(10, 32, seed=0)


def _old_host_batch(old, step):
  """The old loader's ``(devices, per_device, ...)`` batch as one host batch."""
  return {k: v.reshape((-1,) + v.shape[2:]) for k, v in old.batch(step).items()}


def _assert_same(a, b, what):
  assert set(a) == set(b) == {"image", "label"}, what
  for k in a:
    assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape, (what, k)
    np.testing.assert_array_equal(a[k], b[k], err_msg=f"{what}: {k}")


@pytest.mark.parametrize("process_count,devices", [(1, 2), (1, 8), (2, 1), (2, 4)])
def test_batches_equal_the_thread_pool_loaders_bit_for_bit(source, process_count, devices):
  """Steps across epoch boundaries, each process's share; the scale range pads some crops
  (mean colour, ignore label) and crops others."""
  cfg = AugmentConfig(crop_size=(24, 24))
  for p in range(process_count):
    old = ThreadPoolLoader(source, global_batch_size=8, num_devices=devices, seed=5, cfg=cfg,
                           process_index=p, process_count=process_count, num_workers=2)
    new = TrainLoader(source, global_batch_size=8, seed=5, cfg=cfg, process_index=p,
                      process_count=process_count, num_workers=3)
    iterated = new.iterate(0, len(STEPS))
    dataset = new.dataset(0, len(STEPS))
    for step in STEPS:
      want = _old_host_batch(old, step)
      assert want["image"].shape == (8 // process_count, 24, 24, 3)
      _assert_same(new.batch(step), want, f"batch({step}), process {p}/{process_count}")
      _assert_same(next(iterated), want, f"iterate step {step}, process {p}/{process_count}")
      _assert_same(dataset[step], want, f"dataset[{step}], process {p}/{process_count}")
    with pytest.raises(StopIteration):  # the stream ends at the stop step
      next(iterated)
    iterated.close()


def test_caffe_preprocessing_and_no_flip_equal_the_old_loader(source):
  cfg = AugmentConfig(crop_size=(40, 40), scale_range=(0.75, 1.5), flip=False,
                      preprocessing="caffe")
  old = ThreadPoolLoader(source, global_batch_size=4, num_devices=1, seed=0, cfg=cfg)
  new = TrainLoader(source, global_batch_size=4, seed=0, cfg=cfg, num_workers=2)
  it = new.iterate(7, 10)
  for step in range(7, 10):
    _assert_same(next(it), _old_host_batch(old, step), f"step {step}")
  it.close()


@pytest.mark.parametrize("num_workers,prefetch", [(0, 0), (1, 0), (1, 2), (4, 3)])
def test_resume_at_a_step_reads_the_uninterrupted_batches(source, num_workers, prefetch):
  """A run killed after step k resumes with ``iterate(k, ...)``: the batches an uninterrupted
  iteration gave from step k, for any number of threads and prefetch depth."""
  cfg = AugmentConfig(crop_size=(24, 24))
  make = lambda: TrainLoader(source, global_batch_size=4, seed=2, cfg=cfg,
                             num_workers=num_workers, prefetch=prefetch)
  whole = make().iterate(0, 9)
  straight = [next(whole) for _ in range(9)]
  whole.close()
  for k in (1, 3, 5, 8):   # 4 examples a step, 10 in the source: mid-epoch and boundaries
    resumed = make().iterate(k, 9)
    for step in range(k, 9):
      _assert_same(next(resumed), straight[step], f"resumed at {k}, step {step}")
    resumed.close()
  # An open-ended stream starts at the same place.
  endless = make().iterate(5)
  _assert_same(next(endless), straight[5], "iterate(5)")
  endless.close()


def test_epoch_order_is_a_cached_read_only_permutation():
  a = epoch_order(3, 7, 10)
  assert sorted(a.tolist()) == list(range(10)) and not a.flags.writeable
  assert epoch_order(3, 7, 10) is a
  np.testing.assert_array_equal(a, np.random.default_rng([3, 7]).permutation(10))


def test_errors_reach_the_caller_and_bad_arguments_are_named(source):
  class Broken:
    def __len__(self):
      return 4

    def __getitem__(self, i):
      raise DatasetError(f"cannot decode image {i}.jpg")

  cfg = AugmentConfig(crop_size=(24, 24))
  it = TrainLoader(Broken(), global_batch_size=2, seed=0, cfg=cfg, num_workers=2).iterate(0, 3)
  with pytest.raises(DatasetError, match=r"cannot decode image \d.jpg"):
    next(it)
  it.close()
  with pytest.raises(ValueError, match="the source is empty"):
    TrainLoader([], global_batch_size=2, seed=0, cfg=cfg)
  with pytest.raises(ValueError, match="num_workers"):
    TrainLoader(source, global_batch_size=2, seed=0, cfg=cfg, num_workers=-1)
  with pytest.raises(ValueError, match=r"steps \[5, 3\)"):
    TrainLoader(source, global_batch_size=2, seed=0, cfg=cfg).iterate(5, 3)
