"""Helpers shared by the benchmarks and the experiment reports: the median time of a call, the
orders in which to time several ops, and the host CPU's description for a results file's
machine line. The benchmarks run as scripts (this folder is on sys.path:
``from timing import ...``); the reports import
``experiments.bench.timing``. Only the standard library, jax and numpy (the lent GPU machines
have no ml_collections)."""

import os
import platform
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


def balanced_orders(n):
  """A Williams design: ``n`` orders of ``range(n)`` (``2n`` for odd ``n``) in which every op
  takes every place equally often and follows every other op equally often (first-order
  carryover balanced). A plain rotation keeps each op's predecessor fixed."""
  base, lo, hi = [0], 1, n - 1
  while len(base) < n:
    base.append(lo)
    lo += 1
    if len(base) < n:
      base.append(hi)
      hi -= 1
  orders = [[(v + i) % n for v in base] for i in range(n)]
  return orders + [o[::-1] for o in orders] if n % 2 else orders


def balanced_schedule(names, repeats: int):
  """``names`` once per repeat, repeat ``r`` in ``balanced_orders``' order ``r`` (cyclically):
  the order in which to time them (use a multiple of the design's length as ``repeats``)."""
  orders = balanced_orders(len(names))
  for r in range(repeats):
    for i in orders[r % len(orders)]:
      yield names[i]


def host_cpu() -> str:
  """The host CPU's model name (``/proc/cpuinfo`` where there is one) and core count, for
  the machine line of results files."""
  model = platform.processor() or platform.machine()
  try:
    with open("/proc/cpuinfo") as f:
      model = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
  except (OSError, StopIteration):
    pass
  return f"{model}, {os.cpu_count()} cores"


def load_average() -> float:
  """The 1-minute load average (nan where the OS has none)."""
  return os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")


def device_line(shape, repeats: int, setting: str = "") -> str:
  """An op benchmark's machine line: device, host CPU, jax, the input ``shape`` (and
  ``setting``), the number of interleaved repeats and ``XLA_FLAGS``."""
  device = jax.devices()[0]
  return (f"device: {device.platform} ({device.device_kind}), host {host_cpu()}; "
          f"jax {jax.__version__}; shape {shape}{setting}; {repeats} interleaved repeats; "
          f"XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}")


def rate_cells(rates, reference: float) -> str:
  """``median | min | max | median / reference`` of repeated rates, as Markdown table cells."""
  return (f"{np.median(rates):.1f} | {min(rates):.1f} | {max(rates):.1f} | "
          f"{np.median(rates) / reference:.2f}")


def emit(lines, out=None) -> None:
  """Prints a results file's lines and, with ``out``, writes them there."""
  print("\n".join(lines))
  if out:
    with open(out, "w") as f:
      f.write("\n".join(lines) + "\n")
