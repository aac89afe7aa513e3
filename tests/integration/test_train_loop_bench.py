"""experiments/bench/train_loop.py at tiny sizes: its table has the five loops (the runner
with per-step and logging-step metric fetches, prefetch 0 and 2; ``train()`` with prefetch 0
and 2), each with a positive steps/s spread and its ratio to the per-step-fetch loop."""

import os
import subprocess
import sys

import pytest
from support import ROOT

EXPECTED = [["runner, every step", "every step", "0"],
            ["runner, logging steps", "logging steps", "0"],
            ["runner, logging steps, prefetch", "logging steps", "2"],
            ["train()", "logging steps", "0"],
            ["train(), prefetch", "logging steps", "2"]]


def test_train_loop_benchmark_writes_every_loop_with_positive_rates(tmp_path):
  out = tmp_path / "train_loop.md"
  env = dict(os.environ, XLA_FLAGS="", PYTHONPATH=ROOT)
  r = subprocess.run([sys.executable, os.path.join(ROOT, "experiments", "bench", "train_loop.py"),
                      "--steps", "4", "--log_every", "2", "--repeats", "1", "--size", "16",
                      "--batch", "1", "--pooling", "max", "--note", "shared with a test",
                      "--out", str(out)], capture_output=True, text=True, env=env, timeout=600)
  assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
  report = out.read_text()
  assert "- machine: " in report and "cores" in report and "shared with a test" in report
  lines = [line for line in report.splitlines() if line.startswith("| ")][1:]
  rows = [[c.strip() for c in line.strip(" |").split("|")] for line in lines]
  assert [row[:3] for row in rows] == EXPECTED
  first = float(rows[0][3])
  for row in rows:
    median, lo, hi, ratio = map(float, row[3:])
    assert 0 < lo <= median <= hi
    assert ratio == pytest.approx(median / first, rel=0.03, abs=0.01)
