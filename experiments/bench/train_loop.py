"""Benchmark: steps/s of the training loop on the CPU with a small model (dispatch matters),
before and after issue #22's asynchronous metrics and device prefetch, side by side.

Rows, all in one process, repeated ``--repeats`` times round robin (median, min-max):

* ``runner, every step``: the loop before #22, emulated on the trainer's runner: the metrics
  fetched (``jax.device_get``) after every step, batches placed when the step asks (prefetch 0);
* ``runner, logging steps``: the current loop's pattern on the same runner, prefetch 0 and 2;
* ``train()``: the real training loop (``ppool_jax.train.train``), prefetch 0 and 2 (default).

Every row runs the same config: ``synthetic_demo`` shrunk to a tiny VGG-style net (alpha
diagnostics on, as by default), evaluation only at the end (on one image) and one checkpoint
at the end. steps/s is measured from the first logging step after step 1 (``--log_every``;
compiling is before it) to the last step, between two points where the host holds the step's
metrics, i.e. the step has completed. For ``train()`` those times come from ``metrics.csv``:
its ``steps_per_second`` is the rate since the loop started, so step ``k`` completed at
``k / steps_per_second``.

  XLA_FLAGS= python experiments/bench/train_loop.py --out experiments/results/train_loop.md
"""

from __future__ import annotations

import argparse
import csv
import os
import tempfile
import time

import jax
import numpy as np

from ppool_jax.configs import get_config
from ppool_jax.train import model_from_config, train
from ppool_jax.train.guard import new_record
from ppool_jax.train.inputs import boundary_protocol, num_classes, sources, train_loader
from ppool_jax.train.loop import init_state
from ppool_jax.train.optim import make_optimizer
from ppool_jax.train.parallel import make_runner
from ppool_jax.train.runtime import prefetch
from timing import emit, host_cpu, load_average, rate_cells

# (name, loop, metrics fetched, prefetch): the first row is the "before".
ROWS = (("runner, every step", "runner", "every step", 0),
        ("runner, logging steps", "runner", "logging steps", 0),
        ("runner, logging steps, prefetch", "runner", "logging steps", 2),
        ("train()", "train", "logging steps", 0),
        ("train(), prefetch", "train", "logging steps", 2))


def config(steps: int, log_every: int, size: int, batch: int, pooling: str):
  """``synthetic_demo`` shrunk: a 2-stage VGG-style net, ``size`` crops of ``size`` scenes,
  evaluation (one image) and a checkpoint only at the end, no progress bar."""
  c = get_config("synthetic_demo")
  c.total_steps, c.log_every, c.global_batch_size = steps, log_every, batch
  c.eval_every = c.checkpoint_every = 10 * steps  # both run once, after the last step
  c.eval_limit, c.keep_checkpoints, c.progress_bar = 1, 1, False
  c.dataset.crop_size = c.dataset.synthetic_size = size
  c.dataset.synthetic_train, c.dataset.synthetic_eval = 64, 1
  c.dataset.num_workers = 1          # a small model on 2 cores: threads only contend
  c.model.blocks, c.model.pooling = ((8,), (8,)), pooling
  return c


def seconds_between(stamps: dict[int, float], first: int, last: int) -> float:
  """Steps/s from step ``first`` to step ``last`` given the time each completed."""
  if stamps[last] <= stamps[first]:
    raise ValueError(f"step {last} did not complete after step {first}: {stamps}")
  return (last - first) / (stamps[last] - stamps[first])


class RunnerLoop:
  """The loop's runner and data, built as ``train()`` builds them (once: compiled once)."""

  def __init__(self, cfg):
    self.cfg = cfg
    model, tx = model_from_config(cfg), make_optimizer(cfg)
    source, _ = sources(cfg)
    self.loader = train_loader(cfg, source)
    self.state = jax.device_get(init_state(cfg, model, tx, (cfg.dataset.crop_size,) * 2 + (3,)))
    self.runner = make_runner(cfg.parallel, model, tx, num_classes(cfg), cfg.loss.normalization,
                              boundary_protocol(cfg), diagnostics=cfg.alpha_diagnostics)

  def completed(self, fetch_every_step: bool, prefetch_size: int) -> dict[int, float]:
    """Runs ``total_steps`` from a fresh state; the time each logging step completed (its
    metrics on the host). ``fetch_every_step``: also ``jax.device_get`` every step's metrics,
    as the loop did before #22 (the host waits for each step before loading the next batch)."""
    cfg, runner = self.cfg, self.runner
    rstate = runner.place(self.state)
    record = runner.place(new_record(cfg.max_consecutive_nonfinite))
    host = self.loader.iterate(0, cfg.total_steps)  # the loop's loader: grain's threads
    batches = prefetch(host, runner.put, prefetch_size)
    t0, stamps = time.perf_counter(), {}
    for step in range(cfg.total_steps):
      rstate, record, metrics = runner.train_step(rstate, record, next(batches))
      done = step + 1
      if fetch_every_step:
        jax.device_get(metrics)
      if done % cfg.log_every == 0 or done == cfg.total_steps:
        runner.to_host(metrics)
        stamps[done] = time.perf_counter() - t0
    host.close()
    return stamps


def train_completed(cfg) -> dict[int, float]:
  """Runs ``train(cfg)`` in a fresh workdir; the time each logged step completed, from
  ``metrics.csv``'s ``steps_per_second`` (the rate since the loop started)."""
  with tempfile.TemporaryDirectory() as workdir:
    train(cfg, workdir)
    with open(os.path.join(workdir, "metrics.csv")) as f:
      rates = {int(r["step"]): float(r["value"]) for r in csv.DictReader(f)
               if r["split"] == "train" and r["metric"] == "steps_per_second"}
  return {step: step / rate for step, rate in rates.items()}


def main():
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--steps", type=int, default=120)
  ap.add_argument("--log_every", type=int, default=20)
  ap.add_argument("--size", type=int, default=32, help="crop (and synthetic scene) size")
  ap.add_argument("--batch", type=int, default=4)
  ap.add_argument("--pooling", default="p")
  ap.add_argument("--repeats", type=int, default=3)
  ap.add_argument("--note", default="", help="said under the machine, e.g. that it was shared")
  ap.add_argument("--out", default=None)
  args = ap.parse_args()
  if not 1 <= args.log_every < args.steps:
    raise SystemExit(f"--log_every must be in [1, --steps), got {args.log_every}.")
  cfg = config(args.steps, args.log_every, args.size, args.batch, args.pooling)
  load_before = load_average()
  loop = RunnerLoop(cfg)
  rates = {name: [] for name, *_ in ROWS}
  for _ in range(args.repeats):  # round robin: load changes hit every row alike
    for name, kind, fetch, size in ROWS:
      c = cfg.copy_and_resolve_references()
      c.prefetch = size
      stamps = (loop.completed(fetch == "every step", size) if kind == "runner"
                else train_completed(c))
      rates[name].append(seconds_between(stamps, args.log_every, args.steps))
      print(f"{name}: {rates[name][-1]:.1f} steps/s", flush=True)
  load_after = load_average()
  before = float(np.median(rates[ROWS[0][0]]))
  lines = [
      "# Training-loop benchmark: per-step host sync and device prefetch (issue #22)", "",
      f"- machine: {host_cpu()}; jax {jax.__version__}, {jax.local_device_count()} "
      f"{jax.devices()[0].platform} device(s); {time.strftime('%Y-%m-%d')}",
      f"- load average (1 min) before / after: {load_before:.1f} / {load_after:.1f}"
      + (f"; {args.note}" if args.note else ""),
      f"- model: synthetic_demo's VGG-style net shrunk to blocks {cfg.model.blocks}, pooling "
      f"{args.pooling!r}, alpha diagnostics on; batch {args.batch} of {args.size}x{args.size} "
      f"crops, {cfg.dataset.num_workers} loader worker, {cfg.parallel}",
      f"- {args.steps} steps a run, logging every {args.log_every}; steps/s from step "
      f"{args.log_every} to step {args.steps}; {args.repeats} repeats, round robin",
      "", "| loop | metrics fetched | prefetch | steps/s (median) | min | max | vs. before |",
      "|---|---|---|---|---|---|---|"]
  for name, kind, fetch, size in ROWS:
    r = rates[name]
    lines.append(f"| {name} | {fetch} | {size} | {rate_cells(r, before)} |")
  emit(lines, args.out)


if __name__ == "__main__":
  main()
