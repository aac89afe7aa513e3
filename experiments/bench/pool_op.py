"""Benchmark: p_pool vs flax max_pool / avg_pool, forward and forward+backward.

Prints times measured side by side in one process, the ratios to max_pool, and
compiled temp memory from ``memory_analysis()``; with ``--out`` also writes a
markdown table. Run with ``XLA_FLAGS=`` unset so XLA sees one device.

  python experiments/bench/pool_op.py --out experiments/results/pool_op.md
"""

from __future__ import annotations

import argparse
import os
import platform

import flax.linen as nn
import jax
import jax.numpy as jnp

from ppool_jax import p_pool
from timing import median_time


def _temp_bytes(fn, *args):
  analysis = jax.jit(fn).lower(*args).compile().memory_analysis()
  return None if analysis is None else analysis.temp_size_in_bytes


def bench(shape, window, strides, repeats):
  x = jax.random.uniform(jax.random.PRNGKey(0), shape, jnp.float32)
  out = nn.max_pool(x, window, strides)
  alpha = jax.random.uniform(jax.random.PRNGKey(1), out.shape, jnp.float32, 0.0, 35.0)
  ct = jax.random.normal(jax.random.PRNGKey(2), out.shape, jnp.float32)

  fwd = {
      "max": lambda x, a: nn.max_pool(x, window, strides),
      "avg": lambda x, a: nn.avg_pool(x, window, strides),
      "p": lambda x, a: p_pool(x, a, window, strides),
  }
  # max/avg pooling differentiate w.r.t. x only; p_pool w.r.t. x and alpha.
  fwd_bwd = {
      "max": lambda x, a: jax.grad(lambda x: jnp.vdot(fwd["max"](x, a), ct))(x),
      "avg": lambda x, a: jax.grad(lambda x: jnp.vdot(fwd["avg"](x, a), ct))(x),
      "p": lambda x, a: jax.grad(lambda x, a: jnp.vdot(fwd["p"](x, a), ct), argnums=(0, 1))(x, a),
  }
  rows = []
  for mode, fns in [("forward", fwd), ("forward+backward", fwd_bwd)]:
    res = {}
    for name, fn in fns.items():
      jitted = jax.jit(fn)
      res[name] = (median_time(jitted, x, alpha, repeats=repeats), _temp_bytes(fn, x, alpha))
    for name, (t, mem) in res.items():
      rows.append(dict(mode=mode, op=name, ms=t * 1e3, ratio=t / res["max"][0], temp=mem,
                       mem_ratio=(mem / res["max"][1]) if mem is not None and res["max"][1] else None))
  return rows


def main():
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument("--shape", default="8,128,128,64")
  parser.add_argument("--repeats", type=int, default=10)
  parser.add_argument("--out", default=None, help="write a markdown table here")
  args = parser.parse_args()
  shape = tuple(int(s) for s in args.shape.split(","))
  device = jax.devices()[0]
  header = (f"device: {device.platform} ({device.device_kind}), {os.cpu_count()} cpu cores, "
            f"{platform.processor() or platform.machine()}; jax {jax.__version__}; "
            f"shape {shape} float32; median of {args.repeats}")
  print(header)
  lines = [f"# p_pool benchmark\n\n{header}\n",
           "| window | mode | op | time (ms) | time / max_pool | temp memory (MiB) | temp / max_pool |",
           "|---|---|---|---|---|---|---|"]
  for window, strides in [((2, 2), (2, 2)), ((3, 3), (2, 2))]:
    for r in bench(shape, window, strides, args.repeats):
      mem = "n/a" if r["temp"] is None else f"{r['temp'] / 2**20:.1f}"
      mem_ratio = "n/a" if r["mem_ratio"] is None else f"{r['mem_ratio']:.2f}"
      line = (f"| {window[0]}x{window[1]}/{strides[0]} | {r['mode']} | {r['op']} | {r['ms']:.2f} | "
              f"{r['ratio']:.2f} | {mem} | {mem_ratio} |")
      print(line)
      lines.append(line)
  if args.out:
    with open(args.out, "w") as f:
      f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
  main()
