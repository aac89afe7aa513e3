"""What several test files share: the repository's paths and benchmark modules, the tiny
config, a random batch and the helpers of the tests that train through the command line in a
subprocess, the demo's committed result table, unittest's almost-equal as a pytest.approx."""

import glob
import importlib
import os
import pathlib
import sys

import numpy as np
import orbax.checkpoint as ocp
import pytest

import tiny_config

TESTS = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(TESTS)
TINY_CONFIG = os.path.join(TESTS, "tiny_config.py")
BENCH = os.path.join(ROOT, "experiments", "bench")


def bench_module(name: str):
  """The module ``experiments/bench/<name>.py`` (its folder on ``sys.path`` while it and its
  sibling imports load)."""
  sys.path.insert(0, BENCH)
  try:
    return importlib.import_module(name)
  finally:
    sys.path.remove(BENCH)


def make_tiny_cfg(**model):
  """``tests/tiny_config.py``'s config with ``model`` fields overridden."""
  cfg = tiny_config.get_config()
  for k, v in model.items():
    cfg.model[k] = v
  return cfg


def random_batch(n, size=32, seed=0, classes=6):
  """A host batch of ``n`` normal images and uniform labels, three rows ignored."""
  rng = np.random.default_rng(seed)
  image = rng.normal(size=(n, size, size, 3)).astype(np.float32)
  label = rng.integers(0, classes, (n, size, size)).astype(np.int32)
  label[:, :3] = 255
  return {"image": image, "label": label}


def train_cmd(workdir, *extra):
  """``python -m ppool_jax.train`` on the tiny config."""
  return [sys.executable, "-m", "ppool_jax.train", "--config", TINY_CONFIG, "--workdir", workdir,
          *extra]


def subprocess_env(devices: int = 2):
  """The environment of a subprocess: ``devices`` host devices, the checkout importable."""
  return dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
              PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))


def final_params(workdir, step):
  restored = ocp.StandardCheckpointer().restore(os.path.join(workdir, "checkpoints", str(step),
                                                             "default"))
  return restored["params"]


def saved_steps(workdir):
  names = [os.path.basename(p) for p in glob.glob(os.path.join(workdir, "checkpoints", "*"))]
  return sorted(int(n) for n in names if n.isdigit())  # not orbax's in-progress tmp dirs


DEMO_MD = pathlib.Path(ROOT, "experiments", "results", "demo.md")


def table_rows(text: str) -> list[str]:
  """The Markdown table lines of ``text`` (lines starting with ``|``), stripped."""
  return [line.strip() for line in text.splitlines() if line.startswith("|")]


def approx_places(expected, places=7):
  """``pytest.approx`` with ``unittest``'s ``assertAlmostEqual`` tolerance: equal when rounded
  to ``places`` decimal places (an absolute difference of at most half a unit in the last)."""
  return pytest.approx(expected, rel=0, abs=0.5 * 10.0 ** -places)
