"""Benchmark: one jit'd train step of VGG16-seg with P-pooling vs max pooling.

Times both in one process (median of --repeats after a warm-up), prints the ratio and
compiled memory from ``memory_analysis()``; ``--out`` writes a markdown table.

  python experiments/bench/train_step.py --out experiments/results/train_step.md
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from ppool_jax.models import VGG16Seg
from ppool_jax.nn import with_side_branch_lr


def make_step(pooling, num_classes, shape):
  model = VGG16Seg(num_classes=num_classes, pooling=pooling)
  x = jnp.zeros(shape, jnp.float32)
  params = jax.jit(model.init)(jax.random.PRNGKey(0), x)["params"]
  tx = with_side_branch_lr(lambda lr: optax.sgd(lr, momentum=0.9), 1e-3)
  opt = tx.init(params)

  def step(params, opt, x, y):
    def loss_fn(p):
      logits = model.apply({"params": p}, x)
      return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt = tx.update(grads, opt, params)
    return optax.apply_updates(params, updates), opt, loss

  return step, params, opt


def main():
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument("--batch", type=int, default=4)
  parser.add_argument("--size", type=int, default=128)
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument("--poolings", default="max,p",
                      help="comma-separated pooling names; ratios are to the first")
  parser.add_argument("--out", default=None)
  args = parser.parse_args()
  shape = (args.batch, args.size, args.size, 3)
  x = jax.random.normal(jax.random.PRNGKey(1), shape)
  y = jax.random.randint(jax.random.PRNGKey(2), shape[:3], 0, 21)
  device = jax.devices()[0]
  header = (f"device: {device.platform} ({device.device_kind}), {os.cpu_count()} cpu cores, "
            f"{platform.machine()}; jax {jax.__version__}; VGG16-seg (21 classes), input "
            f"{shape} float32, SGD+momentum; median of {args.repeats} steps after warm-up, round robin")
  print(header)
  names = args.poolings.split(",")
  compiled, memory, state = {}, {}, {}
  for pooling in names:
    step, params, opt = make_step(pooling, 21, shape)
    compiled[pooling] = jax.jit(step).lower(params, opt, x, y).compile()
    mem = compiled[pooling].memory_analysis()
    memory[pooling] = mem.temp_size_in_bytes if mem else None
    state[pooling] = (params, opt)
    jax.block_until_ready(compiled[pooling](params, opt, x, y))
  # Round robin: every repeat times each pooling once, so load changes on a shared
  # machine hit all of them alike.
  times = {pooling: [] for pooling in names}
  for _ in range(args.repeats):
    for pooling in names:
      t0 = time.perf_counter()
      jax.block_until_ready(compiled[pooling](*state[pooling], x, y))
      times[pooling].append(time.perf_counter() - t0)
  rows = {p: (float(np.median(times[p])), memory[p]) for p in names}
  lines = [f"# Train-step benchmark\n\n{header}\n",
           f"| pooling | step time (ms) | ratio to {names[0]} | temp memory (MiB) | ratio to {names[0]} |",
           "|---|---|---|---|---|"]
  for pooling, (t, m) in rows.items():
    base_t, base_m = rows[names[0]]
    mem = "n/a | n/a" if m is None else f"{m / 2**20:.1f} | {m / base_m:.3f}"
    line = f"| {pooling} | {t * 1e3:.1f} | {t / base_t:.3f} | {mem} |"
    print(line)
    lines.append(line)
  if args.out:
    with open(args.out, "w") as f:
      f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
  main()
