"""Timing helper shared by the benchmarks (run as scripts: this folder is on sys.path)."""

import time

import jax
import numpy as np


def median_time(fn, *args, repeats: int) -> float:
  """Median wall time of ``fn(*args)`` over ``repeats`` runs, after one compile + warm-up."""
  jax.block_until_ready(fn(*args))
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - t0)
  return float(np.median(times))
