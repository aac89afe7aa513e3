"""The loop's runtime: metrics read asynchronously (equal to a synchronous reading), the
non-finite stop decided on the device, device prefetch (bitwise neutral), preemption
(SIGTERM checkpoints, exits 0 and resumes to the uninterrupted result), profiling."""

import csv
import os
import signal
import subprocess
import time

import chex
import jax
import numpy as np
import pytest

from ppool_jax.train import loop, model_from_config, train
from ppool_jax.train.guard import NonFiniteTrainingError, new_record
from ppool_jax.train.inputs import num_classes, sources, train_loader
from ppool_jax.train.loop import init_state
from ppool_jax.train.optim import make_optimizer
from ppool_jax.train.parallel import make_runner
from ppool_jax.train.runtime import Preemption, parse_profile_steps, prefetch
from support import final_params, saved_steps, subprocess_env, train_cmd


class _Poisoned:
  """A loader whose batches for the given steps (numbered from 1) hold a NaN pixel."""

  def __init__(self, loader, steps):
    self.loader, self.steps = loader, set(steps)

  def _poison(self, step, b):
    if step + 1 in self.steps:
      b = dict(b, image=b["image"].copy())
      b["image"][0, 0, 0, 0] = np.nan
    return b

  def batch(self, step):
    return self._poison(step, self.loader.batch(step))

  def iterate(self, start_step=0, stop_step=None):
    batches = self.loader.iterate(start_step, stop_step)
    try:
      for step, b in enumerate(batches, start_step):
        yield self._poison(step, b)
    finally:
      batches.close()


def _setup(cfg, devices):
  net = model_from_config(cfg)
  tx = make_optimizer(cfg)
  runner = make_runner(cfg.parallel, net, tx, num_classes(cfg), cfg.loss.normalization, "label",
                       devices, diagnostics=True)
  state = init_state(cfg, net, tx, (cfg.dataset.crop_size,) * 2 + (3,))
  loader = train_loader(cfg, sources(cfg)[0])
  return runner, state, loader


def _rows(workdir, split="train"):
  out = {}
  with open(os.path.join(workdir, "metrics.csv")) as f:
    for r in csv.DictReader(f):
      if r["split"] == split:
        out.setdefault(int(r["step"]), {})[r["metric"]] = float(r["value"])
  return out


def test_async_loop_logs_what_a_synchronous_loop_reads_and_stops_on_device_count(
    tmp_path, monkeypatch, tiny_cfg):
  """Steps 3 and 7 are skipped (non-finite); 12-14 are three skips in a row, the limit: the
  loop (reading the device only on logging/checkpoint steps) stops at the next one, 15,
  naming step 14, before checkpointing it. Its logged rows equal a per-step synchronous
  reading of the same steps."""
  cfg = tiny_cfg
  cfg.total_steps, cfg.log_every, cfg.checkpoint_every = 20, 5, 5
  cfg.max_consecutive_nonfinite = 3
  cfg.parallel = "pmap"
  poison = (3, 7, 12, 13, 14)
  real = loop.train_loader
  monkeypatch.setattr(loop, "train_loader", lambda *a, **k: _Poisoned(real(*a, **k), poison))
  workdir = str(tmp_path / "run")
  stop = r"3 consecutive non-finite updates at step 14 \(non-finite from step 12"
  with pytest.raises(NonFiniteTrainingError, match=stop):
    train(cfg, workdir)
  assert saved_steps(workdir) == [5, 10]
  logged = _rows(workdir)
  assert sorted(logged) == [1, 5, 10]

  runner, state, loader = _setup(cfg, jax.local_devices())
  loader = _Poisoned(loader, poison)
  rstate, record, skipped = runner.place(state), runner.place(new_record(3)), 0
  for step in range(15):
    rstate, record, metrics = runner.train_step(rstate, record, runner.put(loader.batch(step)))
    m = runner.to_host(metrics)  # synchronous: every step
    skipped += not m["finite"]
    assert bool(m["finite"]) == (step + 1 not in poison)
    if step + 1 in logged:
      row = logged[step + 1]
      expect = {"loss": m["loss"], "grad_norm": m["grad_norm"], "skipped_updates": skipped,
                **{k: v for k, v in m.items() if k.startswith("alpha/")}}
      assert len(expect) > 3 and {k: row[k] for k in expect} == {
          k: float(v) for k, v in expect.items()}, step + 1
      assert row["time/data_ms"] >= 0 and row["time/step_ms"] > 0
  assert skipped == 5 and runner.to_host(record).stop == 14


@pytest.mark.parametrize("mode", ["pmap", "mesh"])
def test_prefetched_batches_give_bitwise_the_same_steps(mode, tiny_cfg):
  """Batches placed ahead (``prefetch`` 2 and 1) and the loader's host arrays handed to the
  step as they are (pmap: split over the devices, not placed): the same states and metrics,
  bit for bit, on 8 devices."""
  cfg = tiny_cfg
  cfg.parallel = mode
  runner, state, loader = _setup(cfg, jax.local_devices()[:8])
  steps = 3

  def run(batches):
    rstate, record, out = runner.place(state), runner.place(new_record(3)), []
    for batch in batches:
      rstate, record, metrics = runner.train_step(rstate, record, batch)
      out.append(metrics)
    return runner.to_host(rstate), [runner.to_host(m) for m in out]

  host = (loader.batch(s) for s in range(steps))
  direct = run(runner.put(b) if mode == "mesh" else runner.layout(b) for b in host)
  for size in (1, 2):
    placed = run(prefetch((loader.batch(s) for s in range(steps)), runner.put, size))
    chex.assert_trees_all_equal(placed, direct)
  assert direct[1][-1]["loss"] < direct[1][0]["loss"]  # the steps trained


def test_prefetch_places_ahead_in_order():
  placed = []
  batches = prefetch(iter(range(5)), lambda b: placed.append(b) or -b, 2)
  assert next(batches) == 0 and placed == [0, 1, 2]  # two ahead of the step asking
  assert list(batches) == [-1, -2, -3, -4] and placed == [0, 1, 2, 3, 4]
  assert list(prefetch(iter(range(3)), lambda b: b, 0)) == [0, 1, 2]
  with pytest.raises(ValueError, match="prefetch must be >= 0"):
    next(prefetch(iter(range(3)), lambda b: b, -1))


def test_preemption_records_the_first_signal_and_a_second_stops_at_once():
  before = signal.getsignal(signal.SIGTERM)
  with Preemption() as p:
    assert not p.stop_now(sync=False)
    os.kill(os.getpid(), signal.SIGTERM)
    assert p.stop_now(sync=False) and p.signame == "SIGTERM"
    with pytest.raises(KeyboardInterrupt, match="second SIGINT"):
      os.kill(os.getpid(), signal.SIGINT)
  assert signal.getsignal(signal.SIGTERM) is before


def test_profile_steps_are_parsed_or_rejected():
  assert parse_profile_steps("") is None and parse_profile_steps("3,5") == (3, 5)
  for bad in ("3", "5,3", "0,2", "a,b"):
    with pytest.raises(ValueError, match="profile_steps"):
      parse_profile_steps(bad)


def _first_logged_step(workdir):
  try:
    return _rows(workdir)
  except (FileNotFoundError, KeyError):
    return {}


def test_sigterm_checkpoints_exits_0_and_resumes_to_the_uninterrupted_parameters(tmp_path):
  steps = ["--config.total_steps=40"]
  full, cut = str(tmp_path / "full"), str(tmp_path / "cut")
  subprocess.run(train_cmd(full, *steps), check=True, env=subprocess_env(), capture_output=True)
  proc = subprocess.Popen(train_cmd(cut, *steps), env=subprocess_env(), stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)
  deadline = time.time() + 300
  while time.time() < deadline and 1 not in _first_logged_step(cut) and proc.poll() is None:
    time.sleep(0.01)
  proc.send_signal(signal.SIGTERM)
  out, _ = proc.communicate(timeout=300)
  assert proc.returncode == 0, out[-3000:]
  stopped = int(out.split("preempted: SIGTERM: stopped after step ")[1].split()[0])
  assert 1 <= stopped < 40 and saved_steps(cut)[-1] == stopped
  resumed = subprocess.run(train_cmd(cut, *steps), env=subprocess_env(), capture_output=True, text=True)
  assert resumed.returncode == 0 and f"resumed from step {stopped}" in resumed.stderr
  chex.assert_trees_all_equal(final_params(cut, 40), final_params(full, 40))
