"""Benchmark: p_pool vs flax max_pool / avg_pool, forward and forward+backward.

Every alpha shape (the side branch's dense map, per channel, scalar), 2x2/2 VALID and
3x3/2 SAME, float32 and bfloat16. The ops of a group are timed in turn within every repeat,
so a change of load hits them alike; prints and (``--out``) writes each op's median time,
its ratio to max_pool (median over the repeats, with their range), compiled temp memory from
``memory_analysis()``, and issue #23's targets against the worst alpha shape. Run with
``XLA_FLAGS=`` unset so XLA sees one device.

  XLA_FLAGS= python experiments/bench/pool_op.py --repeats 20 --out experiments/results/pool_op.md
"""

from __future__ import annotations

import argparse
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from ppool_jax import p_pool
from timing import balanced_schedule, device_line, emit, load_average


ALPHAS = ("dense", "channel", "scalar")  # the side branch's map, (C,), ()
DTYPES = ("float32", "bfloat16")


def _temp_bytes(fn, *args):
  analysis = jax.jit(fn).lower(*args).compile().memory_analysis()
  return None if analysis is None else analysis.temp_size_in_bytes


def _alpha(kind, out_shape):
  """alpha of ``kind`` at the value 5 (random in [0, 35) for the dense map)."""
  if kind == "dense":
    return jax.random.uniform(jax.random.PRNGKey(1), out_shape, jnp.float32, 0.0, 35.0)
  return jnp.full(out_shape[-1:] if kind == "channel" else (), 5.0, jnp.float32)


def _sample(fn, args, calls):
  """Mean wall time of ``calls`` consecutive calls of ``fn(*args)``."""
  t0 = time.perf_counter()
  for _ in range(calls):
    out = fn(*args)
  jax.block_until_ready(out)
  return (time.perf_counter() - t0) / calls


def interleaved(fns, args, repeats, reference, min_sample_s=0.03):
  """``{name: (median s, per-repeat ratios to fns[reference])}``: every repeat times each
  function in turn (a load change hits all of them alike), each sample the mean of enough
  consecutive calls to last ``min_sample_s`` (a 1 ms max_pool is otherwise timer noise).
  The orders follow ``balanced_schedule`` (use a multiple of its length as ``repeats``): the
  op timed right after max_pool's fwd+bwd (176 MiB of temp memory) reads slower, by
  0.03-0.09x max_pool in same-code A/B runs, so no op may always take that place."""
  calls = {}
  for name, fn in fns.items():
    jax.block_until_ready(fn(*args[name]))  # compile and warm up
    calls[name] = max(1, int(min_sample_s / _sample(fn, args[name], 1)))
  times = {name: [] for name in fns}
  for name in balanced_schedule(list(fns), repeats):
    times[name].append(_sample(fns[name], args[name], calls[name]))
  ref = np.array(times[reference])
  return {name: (float(np.median(t)), np.array(t) / ref) for name, t in times.items()}


def bench(shape, window, strides, repeats, padding="VALID", dtype="float32", alphas=ALPHAS):
  """Rows ``(mode, op, ms, ratio, ratio_min, ratio_max, temp, mem_ratio)``: max_pool,
  avg_pool and p_pool with each alpha shape in ``alphas``, forward and forward+backward
  (p_pool w.r.t. x and alpha), on uniform [0, 1) inputs of ``dtype``. The ops are timed in
  turn within every repeat (``interleaved``); ``ratio`` is the median over the repeats of
  the op's time over max_pool's in the same repeat, ``ratio_min``/``ratio_max`` their range."""
  x = jax.random.uniform(jax.random.PRNGKey(0), shape, jnp.float32).astype(dtype)
  out_shape = nn.max_pool(x, window, strides, padding).shape
  ct = jax.random.normal(jax.random.PRNGKey(2), out_shape, jnp.float32).astype(dtype)
  pool = {"max": lambda x, a: nn.max_pool(x, window, strides, padding),
          "avg": lambda x, a: nn.avg_pool(x, window, strides, padding)}
  args = {"max": (x, jnp.zeros(())), "avg": (x, jnp.zeros(()))}
  for kind in alphas:
    pool[f"p ({kind} alpha)"] = lambda x, a: p_pool(x, a, window, strides, padding)
    args[f"p ({kind} alpha)"] = (x, _alpha(kind, out_shape))

  def fwd_bwd(f, name):
    # The cotangent is an argument: closed over, XLA constant-folds avg_pool's whole
    # gradient (it does not depend on x) at compile time, minutes for 3x3 bfloat16.
    loss = lambda x, a, ct: jnp.vdot(f(x, a).astype(jnp.float32), ct.astype(jnp.float32))
    if name.startswith("p"):  # max/avg pooling differentiate w.r.t. x only
      return lambda x, a, ct: jax.grad(loss, argnums=(0, 1))(x, a, ct)
    return lambda x, a, ct: jax.grad(loss)(x, a, ct)

  rows = []
  for mode in ("forward", "forward+backward"):
    fns = {name: f if mode == "forward" else fwd_bwd(f, name) for name, f in pool.items()}
    margs = args if mode == "forward" else {name: (*a, ct) for name, a in args.items()}
    mem = {name: _temp_bytes(fn, *margs[name]) for name, fn in fns.items()}
    timed = interleaved({name: jax.jit(fn) for name, fn in fns.items()}, margs, repeats, "max")
    for name, (t, ratios) in timed.items():
      rows.append(dict(mode=mode, op=name, ms=t * 1e3, ratio=float(np.median(ratios)),
                       ratio_min=float(ratios.min()), ratio_max=float(ratios.max()),
                       temp=mem[name], mem_ratio=(mem[name] / mem["max"])
                       if mem[name] is not None and mem["max"] else None))
  return rows


WINDOWS = (((2, 2), (2, 2), "VALID"), ((3, 3), (2, 2), "SAME"))


# Issue #23's targets for p_pool / max_pool on the CPU: (time, temp memory) forward+backward,
# and time forward, per window.
TARGETS = {"2x2/2 VALID": dict(fwd_bwd=0.5, fwd_bwd_mem=0.25, forward=2.5),
           "3x3/2 SAME": dict(fwd_bwd=0.75, fwd_bwd_mem=0.5, forward=2.5)}


def target_lines(table):
  """Issue #23's targets against the worst alpha shape of each window and dtype."""
  lines = ["| window | dtype | target | worst p_pool / max_pool (median; range) | met |",
           "|---|---|---|---|---|"]
  for (window, dtype), rows in table.items():
    goals = TARGETS.get(window, {})
    for key, mode, field, what in (("forward", "forward", "ratio", "forward time"),
                                   ("fwd_bwd", "forward+backward", "ratio", "fwd+bwd time"),
                                   ("fwd_bwd_mem", "forward+backward", "mem_ratio",
                                    "fwd+bwd temp memory")):
      ps = [r for r in rows if r["mode"] == mode and r["op"].startswith("p ")]
      if key not in goals or not ps or any(r[field] is None for r in ps):
        continue
      worst = max(ps, key=lambda r: r[field])
      value = (f"{worst['ratio']:.2f}x ({worst['ratio_min']:.2f}-{worst['ratio_max']:.2f})"
               if field == "ratio" else f"{worst['mem_ratio']:.2f}x")
      met = "yes" if worst[field] <= goals[key] else "**no**"
      lines.append(f"| {window} | {dtype} | {what} <= {goals[key]}x | {value} "
                   f"({worst['op']}) | {met} |")
  return lines


def main():
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument("--shape", default="8,128,128,64")
  parser.add_argument("--repeats", type=int, default=10)
  parser.add_argument("--dtypes", default=",".join(DTYPES))
  parser.add_argument("--out", default=None, help="write a markdown table here")
  args = parser.parse_args()
  shape = tuple(int(s) for s in args.shape.split(","))
  load = load_average()
  header = device_line(shape, args.repeats)
  print(header, flush=True)
  rows_out = ["| window | dtype | mode | op | time (ms) | time / max_pool (median) | range "
              "| temp memory (MiB) | temp / max_pool |", "|---|---|---|---|---|---|---|---|---|"]
  table = {}
  for dtype in args.dtypes.split(","):
    for window, strides, padding in WINDOWS:
      name = f"{window[0]}x{window[1]}/{strides[0]} {padding}"
      table[name, dtype] = bench(shape, window, strides, args.repeats, padding, dtype)
      for r in table[name, dtype]:
        mem = "n/a" if r["temp"] is None else f"{r['temp'] / 2**20:.1f}"
        mem_ratio = "n/a" if r["mem_ratio"] is None else f"{r['mem_ratio']:.2f}"
        line = (f"| {name} | {dtype} | {r['mode']} | {r['op']} | {r['ms']:.2f} | "
                f"{r['ratio']:.2f} | {r['ratio_min']:.2f}-{r['ratio_max']:.2f} | {mem} | "
                f"{mem_ratio} |")
        print(line, flush=True)
        rows_out.append(line)
  load_end = load_average()
  emit([f"# p_pool benchmark\n\n{header}; 1-min load average {load:.1f} at the start, "
        f"{load_end:.1f} at the end\n",
        "Each repeat times every op of a (window, dtype, mode) group in turn; a ratio is the "
        "median over the repeats of the op's time over max_pool's in the same repeat, the range "
        "its minimum and maximum. Temp memory is XLA's compiled `temp_size_in_bytes` (exact).\n",
        "## Issue #23's targets (stated for shape (8, 128, 128, 64))\n", *target_lines(table),
        "", "## All ops\n", *rows_out],
       args.out)


if __name__ == "__main__":
  main()
