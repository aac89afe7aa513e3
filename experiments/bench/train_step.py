"""Benchmark: the trainer's own train step of VGG16-seg, P-pooling vs max pooling.

The step is the one ``train()`` runs (``experiments/bench/trainer_step.py``):
``make_train_step`` with the alpha diagnostics on (training's default), the non-finite record,
jit/pmap'd by the runner of ``--parallel`` (the base config's mode by default), the base
config's optimizer and loss normalisation (the paper's Caffe SGD, side branches at 3x).
Every pooling is timed in one process, in turn within every repeat, in balanced orders
(``timing.balanced_schedule``: each pooling follows each other equally often; median of
``--repeats`` steps after a warm-up), with the compiled step's temp memory from
``memory_analysis()``; ``--out`` writes a markdown table. Run with ``XLA_FLAGS=`` unset so XLA sees one device.

  python experiments/bench/train_step.py --out experiments/results/train_step.md
"""

from __future__ import annotations

import argparse

import jax
import numpy as np

from ppool_jax.train.config import base_config
from ppool_jax.train.optim import make_optimizer
from ppool_jax.train.runs import build_model
from ppool_jax.train.steps import AXIS
from timing import balanced_schedule, host_cpu
from trainer_step import TrainerStep, random_batch

NUM_CLASSES = 21  # VOC's


def trainer_step(pooling: str, mode: str, batch: int, size: int) -> TrainerStep:
  """The trainer's step of the base config (VGG16-seg) with ``pooling`` everywhere, on one
  device and a random batch of ``batch`` ``size``x``size`` images."""
  cfg = base_config()
  cfg.model.pooling, cfg.parallel = pooling, mode
  cfg.global_batch_size, cfg.dataset.crop_size = batch, size  # the solver's mapping reads them
  model = build_model(cfg, NUM_CLASSES, bn_axis_name=AXIS if mode == "pmap" else None)
  return TrainerStep(mode, model, make_optimizer(cfg), random_batch(batch, size, NUM_CLASSES),
                     num_classes=NUM_CLASSES, normalization=cfg.loss.normalization,
                     devices=jax.local_devices()[:1], diagnostics=cfg.alpha_diagnostics)


def main():
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument("--batch", type=int, default=4)
  parser.add_argument("--size", type=int, default=128)
  parser.add_argument("--repeats", type=int, default=6)  # one cycle of balanced_orders(3)
  parser.add_argument("--parallel", default=base_config().parallel, choices=("pmap", "mesh"))
  parser.add_argument("--poolings", default="max,p",
                      help="comma-separated pooling names; ratios are to the first")
  parser.add_argument("--out", default=None)
  args = parser.parse_args()
  device = jax.devices()[0]
  header = (f"device: {device.platform} ({device.device_kind}), host {host_cpu()}; "
            f"jax {jax.__version__}; VGG16-seg (21 classes), input "
            f"({args.batch}, {args.size}, {args.size}, 3) float32; the trainer's step "
            f"(make_train_step, alpha diagnostics on, {args.parallel} runner, base config's "
            f"Caffe SGD); median of {args.repeats} steps after warm-up, balanced orders")
  print(header)
  names = args.poolings.split(",")
  steps = {p: trainer_step(p, args.parallel, args.batch, args.size) for p in names}
  memory = {p: s.temp_bytes() for p, s in steps.items()}
  for s in steps.values():
    s.step()  # compiles
  # Every repeat times each pooling once (load changes on a shared machine hit all alike), in
  # balanced orders: the op after max pooling's fwd+bwd read slower in pool_op.py.
  times = {p: [] for p in names}
  for p in balanced_schedule(names, args.repeats):
    times[p].append(steps[p].step())
  rows = {p: (float(np.median(times[p])), memory[p]) for p in names}
  lines = [f"# Train-step benchmark\n\n{header}\n",
           f"| pooling | step time (ms) | ratio to {names[0]} | temp memory (MiB) | ratio to {names[0]} |",
           "|---|---|---|---|---|"]
  base_t, base_m = rows[names[0]]
  for pooling, (t, m) in rows.items():
    mem = "n/a | n/a" if m is None or not base_m else f"{m / 2**20:.1f} | {m / base_m:.3f}"
    line = f"| {pooling} | {t * 1e3:.1f} | {t / base_t:.3f} | {mem} |"
    print(line)
    lines.append(line)
  if args.out:
    with open(args.out, "w") as f:
      f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
  main()
