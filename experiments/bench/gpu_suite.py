"""One-command accelerator suite: correctness, operator timings, train-step timings, report.

  python experiments/bench/gpu_suite.py --out experiments/results/gpu.md      # on a GPU
  python experiments/bench/gpu_suite.py --smoke --out /tmp/gpu_smoke.md       # CPU, seconds

(a) p_pool on the device against a float64 NumPy reference on the host (values, d/dx,
    d/dalpha) for 2x2/2 and 3x3/2 SAME, float32 and bfloat16, alpha 0 / 2 / 20 / 1e4
    (largest error over the largest reference value; float32 within max(1e-4, 1e-7 alpha));
(b) p_pool vs max_pool / avg_pool, forward and forward+backward, ``pool_op.py``'s set (every
    alpha shape: dense map, per channel, scalar; 2x2/2 and 3x3/2 SAME) at (32,128,128,64) and
    (8,256,256,128), float32 and bfloat16, with the input's read bandwidth next to the
    device's measured copy bandwidth;
(c) the trainer's own step (``make_train_step`` through the pmap / mesh runner, alpha
    diagnostics on, as ``train()`` runs it) of VGG16-seg and ResNet-50-seg, P-pooling vs max
    pooling, batch 8 at 320x320, float32 and bfloat16: time and compiled temp memory;
(d) the input pipeline's host throughput (``TrainLoader.iterate`` batches/s on grain, the
    configured ``num_workers`` threads) against the step's consumption (P-pooling steps/s of
    each (c) row). The GPU image has no grain: carry its wheels (grain, array_record,
    portpicker; docs/benchmarks.md), or (d) times ``TrainLoader.batch`` in one thread and
    says so;
(e) a markdown report with device, driver, JAX version and every ratio.

Imports only what the lent GPU machines have (jax, flax, optax, numpy, PIL, absl; not
ml_collections or tensorflow-datasets), so the optimizer of (c) is SGD with momentum and the
side branches' 3x learning rate rather than the config's Caffe solver.
"""

from __future__ import annotations

import argparse
import itertools
import os
import subprocess
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from ppool_jax import p_pool
from ppool_jax.data import AugmentConfig, SyntheticSource
from ppool_jax.data.loader import TrainLoader
from ppool_jax.data.pipeline import DEFAULT_NUM_WORKERS
from ppool_jax.models import ResNet50Seg, VGG16Seg
from ppool_jax.models.vgg import VGG16_BLOCKS
from ppool_jax.nn import with_side_branch_lr
from ppool_jax.train.steps import AXIS
import pool_op
from timing import host_cpu, median_time
from trainer_step import TrainerStep, random_batch


# --- (a) correctness -------------------------------------------------------------------------
def reference(x, alpha, window, stride, ct):
  """float64 Eq. 1 / 3 / 4 over explicit SAME windows (padding excluded), NumPy."""
  x = np.asarray(x, np.float64)
  b, h, w, c = x.shape
  pads = [jax.lax.padtype_to_pads((n,), (window,), (stride,), "SAME")[0] for n in (h, w)]
  ho, wo = [(n + lo + hi - window) // stride + 1 for n, (lo, hi) in zip((h, w), pads)]
  y, ga, gx = np.zeros((b, ho, wo, c)), np.zeros((b, ho, wo, c)), np.zeros_like(x)
  for i, j in itertools.product(range(ho), range(wo)):
    rows = [r for r in range(i * stride - pads[0][0], i * stride - pads[0][0] + window) if 0 <= r < h]
    cols = [q for q in range(j * stride - pads[1][0], j * stride - pads[1][0] + window) if 0 <= q < w]
    v = x[:, rows][:, :, cols].reshape(b, -1, c)                 # (b, n, c)
    m = v.max(1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
      r = np.where(v > 0, v / np.where(m > 0, m, 1), 0.0)
      e = np.where(r > 0, r ** alpha, 1.0 if alpha == 0 else 0.0)
      e = np.where(v == m, 1.0, e)
      wgt = e / e.sum(1, keepdims=True)
      yy = (wgt * v).sum(1)
      dx = wgt * (1 + alpha * np.where(v > 0, (v - yy[:, None]) / np.where(v > 0, v, 1), 0.0))
      dx = np.where((v > 0) | (alpha == 0), dx, 0.0)
      da = (wgt * (v - yy[:, None]) * np.where(r > 0, np.log(np.where(r > 0, r, 1)), 0.0)).sum(1)
    y[:, i, j], ga[:, i, j] = yy, ct[:, i, j] * da
    g = (ct[:, i, j][:, None] * dx).reshape(b, len(rows), len(cols), c)
    gx[:, rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1] += g
  return y, gx, ga


def check_correctness(smoke: bool) -> list[dict]:
  shape = (2, 9, 10, 3) if smoke else (4, 33, 30, 16)
  rng = np.random.default_rng(0)
  x64 = rng.uniform(0.05, 2.0, shape)
  rows = []
  for (window, stride), dtype, alpha in itertools.product(((2, 2), (3, 2)),
                                                           (jnp.float32, jnp.bfloat16),
                                                           (0.0, 2.0, 20.0, 1e4)):
    x = jnp.asarray(x64, dtype)
    xr = np.asarray(x.astype(jnp.float32), np.float64)         # what the device saw
    f = lambda x, a: p_pool(x, a, (window, window), (stride, stride), "SAME")
    out = jax.jit(f)(x, jnp.float32(alpha))
    ct = rng.normal(size=out.shape)
    y, vjp = jax.vjp(f, x, jnp.full(out.shape, alpha, jnp.float32))
    gx, ga = jax.jit(vjp)(jnp.asarray(ct, dtype))
    ry, rgx, rga = reference(xr, alpha, window, stride, np.asarray(jnp.asarray(ct, dtype), np.float64))
    err = lambda a, b: float(np.abs(np.asarray(a, np.float64) - b).max() / (np.abs(b).max() + 1e-12))
    # A float32 weight (z / m)^a carries a relative error of about a times that of log(z / m)
    # (~1e-7 near z = m): at alpha 1e4 the gradients' 1e-4 is out of float32's reach on any
    # device (2.5e-4 to 4.5e-4 measured on the CPU at the full shape, before issue #23's
    # polynomials too). bf16 output: 8 bits of mantissa.
    tol = max(1e-4, 1e-7 * alpha) if dtype == jnp.float32 else 2e-2
    row = dict(window=f"{window}x{window}/{stride}", dtype=jnp.dtype(dtype).name, alpha=alpha,
               y=err(y, ry), gx=err(gx, rgx), galpha=err(ga, rga), tol=tol)
    row["ok"] = max(row["y"], row["gx"], row["galpha"]) <= tol
    rows.append(row)
  return rows


# --- (b) operator timings -------------------------------------------------------------------
def copy_bandwidth(n_bytes: int, repeats: int) -> float:
  x = jnp.ones((n_bytes // 4,), jnp.float32)
  t = median_time(jax.jit(lambda x: x + 1.0), x, repeats=repeats)
  return 2 * n_bytes / t  # read + write


def bench_ops(shapes, repeats, smoke=False) -> list[dict]:
  """``pool_op.bench``'s set (every alpha shape, 2x2/2 and 3x3/2, forward and
  forward+backward) in float32 and bfloat16, with the input's read bandwidth
  (``smoke``: float32 2x2/2 only)."""
  rows = []
  dtypes, windows = (pool_op.DTYPES[:1], pool_op.WINDOWS[:1]) if smoke else (
      pool_op.DTYPES, pool_op.WINDOWS)
  for shape, dtype, (window, strides, padding) in itertools.product(shapes, dtypes, windows):
    nbytes = np.prod(shape) * jnp.dtype(dtype).itemsize
    for r in pool_op.bench(shape, window, strides, repeats, padding, dtype):
      rows.append(dict(shape=str(shape), window=f"{window[0]}x{window[1]}/{strides[0]}",
                       dtype=dtype, mode=r["mode"], op=r["op"], ms=r["ms"], ratio=r["ratio"],
                       mem_ratio=r["mem_ratio"] if r["mem_ratio"] is not None else float("nan"),
                       read_gbps=nbytes / r["ms"] / 1e6))
  return rows


# --- (c) train steps --------------------------------------------------------------------------
def _model(arch, pooling, dtype, width, parallel, smoke):
  """BatchNorm synchronised over the pmap axis under pmap, as ``model_from_config`` builds it."""
  if arch == "vgg16_seg":
    blocks = ((8,), (8,)) if smoke else VGG16_BLOCKS  # deep nets compile slowly on a CPU
    return VGG16Seg(num_classes=21, pooling=pooling, width=width, dtype=dtype, blocks=blocks)
  return ResNet50Seg(num_classes=21, pooling=pooling, width=width, dtype=dtype,
                     bn_axis_name=AXIS if parallel == "pmap" else None)


def bench_train(size, batch, width, repeats, smoke=False) -> list[dict]:
  """The trainer's own step (``make_train_step`` through the runner, alpha diagnostics on),
  P-pooling vs max pooling timed round robin, and each compiled step's temp memory."""
  rows = []
  combos = list(itertools.product(("vgg16_seg", "resnet50_seg"), (None, jnp.bfloat16),
                                  ("pmap", "mesh")))
  if smoke:  # a 2-stage VGG-style net shows the path runs
    combos = [c for c in combos if c[0] == "vgg16_seg"]
  host_batch = random_batch(batch, size, 21)
  for arch, dtype, parallel in combos:
    steps = {}
    for pooling in ("max", "p"):
      model = _model(arch, pooling, dtype, width, parallel, smoke)
      # The config's Caffe solver needs ml_collections (not on the GPU image); its side-branch
      # x3 learning rate is kept. The optimizer is elementwise: a small share of the step.
      tx = with_side_branch_lr(lambda lr: optax.sgd(lr, momentum=0.9), 1e-3)
      steps[pooling] = TrainerStep(parallel, model, tx, host_batch, num_classes=21,
                                   devices=jax.local_devices()[:1])
    memory = {p: s.temp_bytes() for p, s in steps.items()}
    times = {p: [] for p in steps}
    for s in steps.values():
      s.step()  # compiles
    for _ in range(repeats):  # round robin: load changes hit both alike
      for p, s in steps.items():
        times[p].append(s.step())
    t = {p: float(np.median(v)) for p, v in times.items()}
    mib = {p: m / 2**20 if m else float("nan") for p, m in memory.items()}
    rows.append(dict(model=arch, dtype="bfloat16" if dtype else "float32", parallel=parallel,
                     max_ms=1e3 * t["max"], p_ms=1e3 * t["p"], ratio=t["p"] / t["max"],
                     max_mib=mib["max"], p_mib=mib["p"], mem_ratio=mib["p"] / mib["max"]))
  return rows


# --- (d) input pipeline vs the step -------------------------------------------------------------
LOADER_WORKERS = DEFAULT_NUM_WORKERS  # = the base config's dataset.num_workers


def loader_throughput(size, batch, num_workers, batches) -> tuple[float, str]:
  """Host batches/s of :class:`TrainLoader` (synthetic scenes at ``size``, the training
  augmentation with a ``size`` crop) over ``batches`` batches after one warm-up batch, and
  how: ``iterate`` with ``num_workers`` grain threads, as ``train()`` reads, or, where grain
  is not installed, ``batch(step)`` in this thread (a lower bound)."""
  source = SyntheticSource(max(2 * batch, 16), size, seed=0)
  loader = TrainLoader(source, global_batch_size=batch, seed=0,
                       cfg=AugmentConfig(crop_size=(size, size)), num_workers=num_workers)
  try:
    it, how = loader.iterate(0, batches + 1), f"grain, num_workers={num_workers}"
  except ImportError:
    it = (loader.batch(s) for s in range(batches + 1))
    how = "grain not installed: TrainLoader.batch in one thread, a lower bound"
  next(it)
  t0 = time.perf_counter()
  for _ in range(batches):
    next(it)
  rate = batches / (time.perf_counter() - t0)
  it.close()
  return rate, how


def pipeline_vs_step(train_rows, loader_rate) -> list[dict]:
  """Per (c) row: the P-pooling step's steps/s next to the loader's batches/s (headroom > 1:
  the host produces batches faster than the step consumes them)."""
  return [dict(model=r["model"], dtype=r["dtype"], parallel=r["parallel"],
               step_per_s=1e3 / r["p_ms"], loader_batch_per_s=loader_rate,
               headroom=loader_rate * r["p_ms"] / 1e3) for r in train_rows]


# --- (e) report -------------------------------------------------------------------------------
def _driver() -> str:
  try:
    out = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"],
                         capture_output=True, text=True, timeout=20)
    return out.stdout.strip() or "n/a"
  except (OSError, subprocess.SubprocessError):
    return "n/a (no nvidia-smi)"


def _table(rows, keys, fmt="{:.3g}"):
  lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
  for r in rows:
    lines.append("| " + " | ".join(fmt.format(r[k]) if isinstance(r[k], float) else str(r[k])
                                   for k in keys) + " |")
  return "\n".join(lines)


def main():
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--smoke", action="store_true", help="tiny shapes: checks the suite runs")
  ap.add_argument("--out", default="experiments/results/gpu.md")
  ap.add_argument("--num_workers", type=int, default=LOADER_WORKERS,
                  help="loader threads for (d) (default: the base config's dataset.num_workers)")
  args = ap.parse_args()
  t0 = time.time()
  dev = jax.devices()[0]
  repeats = 2 if args.smoke else 20
  correctness = check_correctness(args.smoke)
  shapes = [(2, 16, 16, 8)] if args.smoke else [(32, 128, 128, 64), (8, 256, 256, 128)]
  ops = bench_ops(shapes, repeats, args.smoke)
  bw = copy_bandwidth(2 ** 20 if args.smoke else 2 ** 30, repeats)
  size, batch, width = (32, 2, 1 / 16) if args.smoke else (320, 8, 1.0)
  train = bench_train(size, batch, width, repeats=repeats, smoke=args.smoke)
  loader_rate, loader_how = loader_throughput(size, batch, args.num_workers,
                                              3 if args.smoke else 50)
  pipeline = pipeline_vs_step(train, loader_rate)
  lines = [
      "# Accelerator suite" + (" (smoke run: tiny shapes, not a benchmark)" if args.smoke else ""),
      "",
      f"- device: {dev.device_kind} ({dev.platform}), driver: {_driver()}",
      f"- jax {jax.__version__}, host {host_cpu()}, "
      f"{time.strftime('%Y-%m-%d')}; wall time {time.time() - t0:.0f} s",
      f"- measured copy bandwidth (x + 1, read + write): {bw / 1e9:.1f} GB/s",
      "- inputs: random (synthetic); medians of "
      f"{repeats} runs after compilation",
      "", "## (a) p_pool on the device vs float64 host reference (max relative error)", "",
      _table(correctness, ["window", "dtype", "alpha", "y", "gx", "galpha", "tol", "ok"]),
      "", "## (b) operators (`pool_op.py`'s set; ratios to max_pool in the same loop)", "",
      _table(ops, ["shape", "window", "dtype", "mode", "op", "ms", "ratio", "mem_ratio",
                   "read_gbps"]),
      "", "## (c) the trainer's train step (batch of random images), P-pooling / max pooling",
      "", f"make_train_step through the runner, alpha diagnostics on, batch {batch} at "
      f"{size}x{size}; temp memory (MiB) of the compiled step from memory_analysis().", "",
      _table(train, ["model", "dtype", "parallel", "max_ms", "p_ms", "ratio", "max_mib", "p_mib",
                     "mem_ratio"]),
      "", "## (d) input pipeline (host) vs the step's consumption", "",
      f"TrainLoader ({loader_how}), synthetic scenes, training augmentation, {size}x{size} "
      f"crops, batch {batch}, on {os.cpu_count()} host cores; headroom = "
      "loader batches/s / P-pooling steps/s (< 1: the step waits for data).", "",
      _table(pipeline, ["model", "dtype", "parallel", "step_per_s", "loader_batch_per_s",
                        "headroom"]), ""]
  with open(args.out, "w") as f:
    f.write("\n".join(lines))
  print("\n".join(lines))
  if not all(r["ok"] for r in correctness):
    raise SystemExit("p_pool on the device disagrees with the float64 reference (see (a)).")


if __name__ == "__main__":
  main()
