"""The train command line, end to end in a subprocess: every up-front config problem in one
line, before anything is written (issue #24 items 4 and 6; the checks themselves:
tests/unit/test_cli.py), and --print_rules (issue #21 item 1)."""

import os
import subprocess
import sys

from support import ROOT


def _train_cli(*args):
  env = dict(os.environ, PYTHONPATH=ROOT, XLA_FLAGS="--xla_force_host_platform_device_count=8",
             JAX_PLATFORMS="cpu")
  return subprocess.run([sys.executable, "-m", "ppool_jax.train", *args], env=env,
                        capture_output=True, text=True, timeout=300)


def test_train_cli_reports_all_problems_in_one_line(tmp_path):
  """The README's VOC command without the data and weights: the three problems a user used to
  meet one at a time, each after a traceback, now in one line, before anything is written."""
  args = ["--config", "table1:voc_aug,vgg16,p", "--workdir", str(tmp_path / "run"),
          f"--config.dataset.root={tmp_path}/VOC2012", f"--config.model.pretrained={tmp_path}/w"]
  r = _train_cli(*args)
  assert r.returncode == 2, r.stderr
  lines = r.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("ppool_jax.train: error: 3 problems"), r.stderr
  for text in ("dataset folder not found", "global batch 10 must divide into 1 processes x 8",
               "pretrained weights not found"):
    assert text in lines[0]
  assert not os.path.exists(tmp_path / "run")
  r = _train_cli(*args, "--verbose")
  assert r.returncode != 0 and "Traceback" in r.stderr and "ConfigError: 3 problems" in r.stderr


def test_train_cli_prints_the_rules_without_a_workdir():
  """--print_rules: every parameter's lr and decay multipliers (tests/unit/test_param_rules.py)
  with no workdir; without --print_rules the workdir is required."""
  out = _train_cli("--config", "table45:deeplab_largefov,voc_aug,p", "--print_rules")
  assert out.returncode == 0, out.stderr
  out = out.stdout.splitlines()
  rows = {line.split()[0]: line.split()[1:3] for line in out[1:]}
  assert rows["fc8/kernel"] == ["x10", "x1"] and rows["fc8/bias"] == ["x20", "x0"]
  assert rows["backbone/pool1/side_branch/prelu/slope"] == ["x3", "x0"]
  missing = _train_cli("--config", "synthetic_demo")
  assert missing.returncode != 0 and "--workdir is required" in missing.stderr
