"""The accelerator suite runs end to end (``--smoke``: tiny shapes, on the CPU here) without the
packages the GPU image lacks, and its correctness section passes; on a GPU the same command
writes experiments/results/gpu.md."""

import os
import subprocess
import sys

import pytest

from support import BENCH, ROOT

# Not on the lent GPU machines' image (docs/benchmarks.md): importing any of them fails.
ABSENT_ON_GPU_IMAGE = ("ml_collections", "tensorflow", "tensorflow_datasets", "grain",
                       "tensorboardX")


def _rows(section: str) -> list[list[str]]:
  """The body rows of the markdown table in ``section``, as lists of cells."""
  lines = [line for line in section.splitlines() if line.startswith("| ")]
  return [[c.strip() for c in line.strip(" |").split("|")] for line in lines[1:]]


def test_gpu_suite_smoke_on_cpu(tmp_path):
  out = tmp_path / "gpu.md"
  env = dict(os.environ, XLA_FLAGS="", PYTHONPATH=ROOT)
  run = ("import runpy, sys\n"
         f"for m in {ABSENT_ON_GPU_IMAGE!r}: sys.modules[m] = None\n"
         f"sys.path.insert(0, {BENCH!r})\n"
         f"sys.argv = ['gpu_suite.py', '--smoke', '--out', {str(out)!r}]\n"
         f"runpy.run_path({os.path.join(BENCH, 'gpu_suite.py')!r}, run_name='__main__')\n")
  r = subprocess.run([sys.executable, "-c", run], capture_output=True, text=True, env=env,
                     timeout=1800)  # 3.5 min on a loaded 2-core CPU; >15 min at load ~10
  assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
  report = out.read_text()
  assert "smoke run" in report and "device: " in report
  section_a = report.split("## (a)")[1].split("## (b)")[0]
  rows = [line for line in section_a.splitlines() if line.startswith("| ") and "window" not in line]
  assert len(rows) == 16 and all(line.rstrip(" |").endswith("True") for line in rows)
  # (b): pool_op.py's set, every alpha shape, forward and forward+backward, ratios to max.
  ops = _rows(report.split("## (b)")[1].split("## (c)")[0])
  names = ["max", "avg"] + [f"p ({k} alpha)" for k in ("dense", "channel", "scalar")]
  assert [(r[3], r[4]) for r in ops] == [(m, n) for m in ("forward", "forward+backward")
                                         for n in names]
  assert all(float(r[6]) == 1.0 for r in ops if r[4] == "max") and all(float(r[5]) > 0 for r in ops)
  combos = {(dtype, mode) for dtype in ("float32", "bfloat16") for mode in ("pmap", "mesh")}
  # (c): the trainer's step, times and compiled memory of both poolings, positive.
  train = _rows(report.split("## (c)")[1].split("## (d)")[0])
  assert {(r[1], r[2]) for r in train if r[0] == "vgg16_seg"} == combos and len(train) == 4
  assert all(float(v) > 0 for r in train for v in r[3:])
  # (d): loader batches/s against each (c) row's P-pooling steps/s.
  pipeline = _rows(report.split("## (d)")[1])
  assert [r[:3] for r in pipeline] == [r[:3] for r in train]
  for p, t in zip(pipeline, train):
    step_per_s, loader, headroom = map(float, p[3:])
    assert step_per_s == pytest.approx(1e3 / float(t[4]), rel=0.02)
    assert loader > 0 and headroom == pytest.approx(loader / step_per_s, rel=0.03)
