"""Benchmark: p_pool vs flax max_pool / avg_pool, forward and forward+backward.

Prints times measured side by side in one process, the ratios to max_pool, and
compiled temp memory from ``memory_analysis()``; with ``--out`` also writes a
markdown table. Run with ``XLA_FLAGS=`` unset so XLA sees one device.

  python experiments/bench/pool_op.py --out experiments/results/pool_op.md
"""

from __future__ import annotations

import argparse

import flax.linen as nn
import jax
import jax.numpy as jnp

from ppool_jax import p_pool
from timing import host_cpu, median_time


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


def bench(shape, window, strides, repeats, padding="VALID", dtype="float32", alphas=ALPHAS):
  """Rows ``(mode, op, ms, ratio, temp, mem_ratio)``: max_pool, avg_pool and p_pool with each
  alpha shape in ``alphas``, forward and forward+backward (p_pool w.r.t. x and alpha), on
  uniform [0, 1) inputs of ``dtype``; ratios to max_pool measured in the same loop."""
  x = jax.random.uniform(jax.random.PRNGKey(0), shape, jnp.float32).astype(dtype)
  out_shape = nn.max_pool(x, window, strides, padding).shape
  ct = jax.random.normal(jax.random.PRNGKey(2), out_shape, jnp.float32).astype(dtype)
  pool = {"max": lambda x, a: nn.max_pool(x, window, strides, padding),
          "avg": lambda x, a: nn.avg_pool(x, window, strides, padding)}
  args = {"max": jnp.zeros(()), "avg": jnp.zeros(())}
  for kind in alphas:
    pool[f"p ({kind} alpha)"] = lambda x, a: p_pool(x, a, window, strides, padding)
    args[f"p ({kind} alpha)"] = _alpha(kind, out_shape)

  def fwd_bwd(f, name):
    loss = lambda x, a: jnp.vdot(f(x, a).astype(jnp.float32), ct.astype(jnp.float32))
    if name.startswith("p"):  # max/avg pooling differentiate w.r.t. x only
      return lambda x, a: jax.grad(loss, argnums=(0, 1))(x, a)
    return lambda x, a: jax.grad(loss)(x, a)

  rows = []
  for mode in ("forward", "forward+backward"):
    res = {}
    for name, f in pool.items():
      fn = f if mode == "forward" else fwd_bwd(f, name)
      res[name] = (median_time(jax.jit(fn), x, args[name], repeats=repeats),
                   _temp_bytes(fn, x, args[name]))
    t_max, m_max = res["max"]
    for name, (t, mem) in res.items():
      rows.append(dict(mode=mode, op=name, ms=t * 1e3, ratio=t / t_max, temp=mem,
                       mem_ratio=(mem / m_max) if mem is not None and m_max else None))
  return rows


WINDOWS = (((2, 2), (2, 2), "VALID"), ((3, 3), (2, 2), "SAME"))


def main():
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument("--shape", default="8,128,128,64")
  parser.add_argument("--repeats", type=int, default=10)
  parser.add_argument("--dtypes", default=",".join(DTYPES))
  parser.add_argument("--out", default=None, help="write a markdown table here")
  args = parser.parse_args()
  shape = tuple(int(s) for s in args.shape.split(","))
  device = jax.devices()[0]
  header = (f"device: {device.platform} ({device.device_kind}), host {host_cpu()}; "
            f"jax {jax.__version__}; "
            f"shape {shape}; median of {args.repeats}")
  print(header)
  lines = [f"# p_pool benchmark\n\n{header}\n",
           "| window | dtype | mode | op | time (ms) | time / max_pool | temp memory (MiB) "
           "| temp / max_pool |", "|---|---|---|---|---|---|---|---|"]
  for dtype in args.dtypes.split(","):
    for window, strides, padding in WINDOWS:
      for r in bench(shape, window, strides, args.repeats, padding, dtype):
        mem = "n/a" if r["temp"] is None else f"{r['temp'] / 2**20:.1f}"
        mem_ratio = "n/a" if r["mem_ratio"] is None else f"{r['mem_ratio']:.2f}"
        line = (f"| {window[0]}x{window[1]}/{strides[0]} {padding} | {dtype} | {r['mode']} | "
                f"{r['op']} | {r['ms']:.2f} | {r['ratio']:.2f} | {mem} | {mem_ratio} |")
        print(line, flush=True)
        lines.append(line)
  if args.out:
    with open(args.out, "w") as f:
      f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
  main()
