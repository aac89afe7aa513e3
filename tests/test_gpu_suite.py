"""The accelerator suite runs end to end (``--smoke``: tiny shapes, on the CPU here) and its
correctness section passes; on a GPU the same command writes experiments/results/gpu.md."""

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow  # the whole suite in a subprocess
def test_gpu_suite_smoke_on_cpu(tmp_path):
  out = tmp_path / "gpu.md"
  env = dict(os.environ, XLA_FLAGS="", PYTHONPATH=ROOT)
  r = subprocess.run([sys.executable, os.path.join(ROOT, "experiments", "bench", "gpu_suite.py"),
                      "--smoke", "--out", str(out)], capture_output=True, text=True, env=env,
                     timeout=900)
  assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
  report = out.read_text()
  assert "smoke run" in report and "device: " in report
  section_a = report.split("## (a)")[1].split("## (b)")[0]
  rows = [line for line in section_a.splitlines() if line.startswith("| ") and "window" not in line]
  assert len(rows) == 16 and all(line.rstrip(" |").endswith("True") for line in rows)
  for op in ("p_pool", "max_pool", "avg_pool"):
    assert f"| {op} |" in report
  for dtype in ("float32", "bfloat16"):
    for mode in ("pmap", "mesh"):
      assert f"| vgg16_seg | {dtype} | {mode} |" in report
