"""Same-process A/B: p_pool as it was at a git commit against the working tree's.

Ratios to max_pool from different runs do not compare two versions of the operator on a
noisy VM (bfloat16 max_pool's 2x2/2 forward took 0.47-1.4 ms in one evening on the AMD EPYC
VM; issue #23). This loads the package at ``--base`` (``git archive`` into a temporary
folder, imported as ``ppool_base``) beside the working tree's ``ppool_jax`` and times both,
with flax's max_pool, in turn within every repeat in balanced orders
(``pool_op.interleaved``). Per window and alpha shape it reports the median over the repeats
of new / base, its range, the share of repeats in which the new code was faster, both
ratios to max_pool, and how far the outputs differ.

  XLA_FLAGS= python experiments/bench/ab_forward.py --base 0faded3 --dtype bfloat16 --repeats 42 \
      --out experiments/results/ab_bf16_forward.md
"""

from __future__ import annotations

import argparse
import importlib
import os
import re
import subprocess
import sys
import tempfile

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from ppool_jax import p_pool
from pool_op import ALPHAS, _alpha, interleaved
from timing import device_line, emit, load_average

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def load_base(commit: str, root: str = ROOT):
  """The ``ppool_jax`` package at ``commit`` of the repository at ``root``, imported as
  ``ppool_base`` (every ``ppool_jax`` in its sources renamed) from a temporary folder."""
  tmp = tempfile.mkdtemp(prefix="ppool_base_")
  archive = subprocess.run(["git", "-C", root, "archive", commit, "ppool_jax"],
                           check=True, capture_output=True).stdout
  subprocess.run(["tar", "-x", "-C", tmp], input=archive, check=True)
  package = os.path.join(tmp, "ppool_base")
  os.rename(os.path.join(tmp, "ppool_jax"), package)
  for folder, _, files in os.walk(package):
    for name in files:
      if name.endswith(".py"):
        path = os.path.join(folder, name)
        with open(path) as f:
          source = re.sub(r"\bppool_jax\b", "ppool_base", f.read())
        with open(path, "w") as f:
          f.write(source)
  sys.modules.pop("ppool_base", None)
  sys.path.insert(0, tmp)
  try:
    return importlib.import_module("ppool_base")
  finally:
    sys.path.remove(tmp)


def parse_windows(text: str):
  """``"2x2/2:VALID,3x3/2:SAME"`` -> ``[((2, 2), (2, 2), "VALID"), ((3, 3), (2, 2), "SAME")]``."""
  out = []
  for item in text.split(","):
    m = re.fullmatch(r"(\d+)x(\d+)/(\d+):(VALID|SAME)", item.strip())
    if not m:
      raise ValueError(f"window {item!r}: expected KxK/S:VALID or KxK/S:SAME")
    out.append(((int(m[1]), int(m[2])), (int(m[3]),) * 2, m[4]))
  return out


def rows(base_p_pool, shape, windows, alphas, dtype, repeats):
  """Per window and alpha shape: ``dict(window, alpha, new_ms, base_ms, ratio, lo, hi,
  faster, new_max, base_max, differ, max_rel)`` for the forward without gradient."""
  x = jax.random.uniform(jax.random.PRNGKey(0), shape, jnp.float32).astype(dtype)
  out = []
  for window, strides, padding in windows:
    out_shape = nn.max_pool(x, window, strides, padding).shape
    for kind in alphas:
      a = _alpha(kind, out_shape)
      fns = {"base": jax.jit(lambda x, a: base_p_pool(x, a, window, strides, padding)),
             "new": jax.jit(lambda x, a: p_pool(x, a, window, strides, padding)),
             "max_pool": jax.jit(lambda x, a: nn.max_pool(x, window, strides, padding))}
      y_new = np.asarray(fns["new"](x, a), np.float64)
      y_base = np.asarray(fns["base"](x, a), np.float64)
      timed = interleaved(fns, {name: (x, a) for name in fns}, repeats, "base")
      ratio = timed["new"][1]
      to_max = {k: np.median(timed[k][1] / timed["max_pool"][1]) for k in ("new", "base")}
      out.append(dict(
          window=f"{window[0]}x{window[1]}/{strides[0]} {padding}", alpha=kind,
          new_ms=timed["new"][0] * 1e3, base_ms=timed["base"][0] * 1e3,
          ratio=float(np.median(ratio)), lo=float(ratio.min()), hi=float(ratio.max()),
          faster=float(np.mean(ratio < 1)), new_max=float(to_max["new"]),
          base_max=float(to_max["base"]), differ=float(np.mean(y_new != y_base)),
          max_rel=float(np.max(np.abs(y_new - y_base) / np.maximum(np.abs(y_base), 1e-30)))))
  return out


def parse_args(argv=None):
  """The command line, checked before anything is compiled: an argument that is not a
  commit, a window, an alpha shape or an N,H,W,C shape stops with a message naming it.
  Returns the namespace with ``commit`` (short hash), ``shape``, ``windows`` and ``alphas``
  parsed."""
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument("--base", required=True, help="the git commit to compare against")
  parser.add_argument("--shape", default="8,128,128,64")
  parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
  parser.add_argument("--windows", default="2x2/2:VALID,3x3/2:SAME,5x5/1:SAME")
  parser.add_argument("--alphas", default="scalar,dense", help=f"from {', '.join(ALPHAS)}")
  parser.add_argument("--repeats", type=int, default=42,
                      help="a multiple of 6, the length of the balanced design for 3 ops")
  parser.add_argument("--out", default=None, help="write a markdown table here")
  args = parser.parse_args(argv)
  found = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "--verify", "--quiet",
                          f"{args.base}^{{commit}}"], capture_output=True, text=True)
  if found.returncode:
    parser.error(f"--base {args.base}: not a commit of {ROOT}")
  args.commit = found.stdout.strip()
  shape = args.shape.split(",")
  if len(shape) != 4 or not all(d.strip().isdigit() and int(d) > 0 for d in shape):
    parser.error(f"--shape {args.shape}: N,H,W,C with positive integers")
  args.shape = tuple(int(d) for d in shape)
  try:
    args.windows = parse_windows(args.windows)
  except ValueError as e:
    parser.error(f"--windows: {e}")
  args.alphas = args.alphas.split(",")
  unknown = [a for a in args.alphas if a not in ALPHAS]
  if unknown:
    parser.error(f"--alphas: {', '.join(unknown)} not in {', '.join(ALPHAS)}")
  return args


def main():
  args = parse_args()
  load = load_average()
  table = rows(load_base(args.commit).p_pool, args.shape, args.windows, args.alphas,
               args.dtype, args.repeats)
  header = device_line(args.shape, args.repeats, f", {args.dtype}, forward without gradient")
  header += f"; 1-min load average {load:.1f} at the start, {load_average():.1f} at the end"
  lines = ["| window | alpha | new (ms) | base (ms) | new / base (median; range) | new faster "
           "in | new / max_pool | base / max_pool | outputs that differ | largest rel. "
           "difference |", "|---|---|---|---|---|---|---|---|---|---|"]
  for r in table:
    lines.append(f"| {r['window']} | {r['alpha']} | {r['new_ms']:.2f} | {r['base_ms']:.2f} | "
                 f"{r['ratio']:.2f} ({r['lo']:.2f}-{r['hi']:.2f}) | {r['faster']:.0%} | "
                 f"{r['new_max']:.2f} | {r['base_max']:.2f} | {r['differ']:.1e} | "
                 f"{r['max_rel']:.1e} |")
  emit([f"# p_pool forward: the working tree against {args.commit}\n\n{header}\n",
        "Same process, balanced orders; a ratio is the median over the repeats of the two "
        "ops' times in the same repeat. Inputs uniform [0, 1); alpha 5 (scalar) or uniform "
        "in [0, 35) (dense map).\n", *lines], args.out)


if __name__ == "__main__":
  main()
