"""The package as installed (issue #20 item 4): imports register no absl flags and pull in no
PIL/TensorFlow where not needed; the configs ship inside the package, so the CLIs and the demo
work from any directory and from a built wheel."""

import glob
import os
import subprocess
import sys
import textwrap
import zipfile

import pytest
from support import ROOT

PACKAGE_CONFIGS = ("synthetic_demo", "table1", "table45", "table6")


def _python(code, cwd, pythonpath=ROOT, timeout=600):
  env = dict(os.environ, XLA_FLAGS="", PYTHONPATH=pythonpath, JAX_PLATFORMS="cpu")
  r = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=cwd, env=env,
                     capture_output=True, text=True, timeout=timeout)
  assert r.returncode == 0, r.stdout + r.stderr
  return r.stdout


def test_importing_any_module_defines_no_flags_and_light_modules_skip_pil_and_tf(tmp_path):
  out = _python("""
      import importlib, pkgutil, sys
      from absl import flags
      # The light modules first: the training step and the layers need no PIL, TF or grain.
      import ppool_jax.ops, ppool_jax.nn, ppool_jax.models, ppool_jax.metrics
      import ppool_jax.train, ppool_jax.train.steps, ppool_jax.train.config, ppool_jax.configs
      print("heavy", "PIL" in sys.modules, "tensorflow" in sys.modules, "grain" in sys.modules)
      import ppool_jax
      for m in pkgutil.walk_packages(ppool_jax.__path__, "ppool_jax."):
        importlib.import_module(m.name)
      ours = sorted(n for n in flags.FLAGS
                    if flags.FLAGS.find_module_defining_flag(n, "").startswith("ppool_jax"))
      print("flags", ours, "config" in flags.FLAGS, "arch" in flags.FLAGS)
      """, cwd=tmp_path)
  assert "heavy False False False" in out, out
  assert "flags [] False False" in out, out


def test_core_install_trains_without_tensorflow_tfds_and_h5py(tmp_path):
  """The optional dependencies blocked (``sys.modules[name] = None`` makes importing them an
  ImportError): a synthetic run trains; the features that need them name their extra.
  (array_record is not blocked: grain, a core dependency, requires and imports it.)"""
  open(tmp_path / "w.h5", "w").close()
  out = _python(f"""
      import sys
      for name in ("tensorflow", "tensorflow_datasets", "h5py"):
        sys.modules[name] = None
      sys.path.insert(0, {os.path.join(ROOT, "tests")!r})
      import tiny_config
      import ppool_jax.data, ppool_jax.train, ppool_jax.convert
      from ppool_jax.train import train
      cfg = tiny_config.get_config()
      cfg.total_steps, cfg.global_batch_size = 2, 2
      state, scores = train(cfg, "run")
      print("trained", int(state.step), 0 <= scores["miou"] <= 1)
      for load in (lambda: __import__("ppool_jax.data.tfds_builders"),
                   lambda: ppool_jax.convert.read_keras_vgg16("w.h5")):
        try:
          load()
        except ImportError as e:
          print("error", e)
      """, cwd=tmp_path, timeout=300)
  assert "trained 2 True" in out, out
  assert "tensorflow_datasets is not installed: reading prepared TFDS datasets" in out, out
  assert "pip install 'ppool_jax[tfds]'" in out and "pip install 'ppool_jax[keras]'" in out, out


def test_train_cli_takes_package_config_names_from_any_directory(tmp_path):
  env = dict(os.environ, XLA_FLAGS="", PYTHONPATH=ROOT)
  r = subprocess.run([sys.executable, "-m", "ppool_jax.train", "--help"], cwd=tmp_path, env=env,
                     capture_output=True, text=True, timeout=600)
  assert r.returncode in (0, 1), r.stderr  # absl's --help exits with 1
  assert "--config" in r.stdout and "synthetic_demo" in r.stdout and "--workdir" in r.stdout
  r = subprocess.run([sys.executable, "-m", "ppool_jax.train", "--config", "nope", "--workdir",
                      "w"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
  assert r.returncode != 0
  assert "'nope' is neither a config file nor a package config (synthetic_demo, table1" in r.stderr
  out = _python("""
      import sys
      from absl import flags
      from ppool_jax.train import __main__ as cli
      sys.argv = ["train", "--config", "table6:pool3", "--config.total_steps=7", "--workdir", "w"]
      cli.define_flags()
      flags.FLAGS(sys.argv)
      print("table6", flags.FLAGS.config.total_steps, flags.FLAGS.config.dataset.name)
      from ppool_jax import configs
      print("names", configs.names())
      print("path", configs.resolve("ppool_jax/configs/table1.py:voc_aug,vgg16,p")
            == configs.path("table1") + ":voc_aug,vgg16,p")
      """, cwd=tmp_path)
  assert "table6 7 voc_aug" in out
  assert f"names {list(PACKAGE_CONFIGS)}" in out
  assert "path True" in out


def test_demo_loads_its_config_outside_the_checkout(tmp_path):
  out = _python("""
      import sys
      from absl import flags
      from ppool_jax import demo
      sys.argv = ["demo", "--workdir", "somewhere"]
      demo.define_flags()
      flags.FLAGS(sys.argv)
      print("demo", flags.FLAGS.config.dataset.name, flags.FLAGS.config.total_steps,
            flags.FLAGS.workdir)
      """, cwd=tmp_path)
  assert "demo synthetic 1500 somewhere" in out


def test_config_names_resolve_and_unknown_ones_fail():
  from ppool_jax import configs
  assert configs.get_config("table6", "all_p").model.name == "vgg16_seg"
  assert configs.resolve("synthetic_demo.py") == configs.path("synthetic_demo")
  assert configs.resolve("elsewhere/table1.py") == "elsewhere/table1.py"  # not ours: unchanged
  with pytest.raises(ValueError, match="unknown config 'nope'"):
    configs.get_config("nope")


def test_wheel_ships_the_configs_and_runs_from_it(tmp_path):
  """Builds the wheel from a copy of the sources (the checkout stays clean), installs it into a
  folder of its own and loads the demo config from there: no experiments/ folder in sight."""
  import shutil
  src = tmp_path / "src"
  src.mkdir()
  for name in ("pyproject.toml", "README.md"):
    shutil.copy(os.path.join(ROOT, name), src / name)
  shutil.copytree(os.path.join(ROOT, "ppool_jax"), src / "ppool_jax",
                  ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
  # With build isolation: pip fetches the build backend pyproject.toml asks for (setuptools>=77).
  r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w",
                      str(tmp_path / "dist"), str(src)], capture_output=True, text=True,
                     timeout=300)
  if r.returncode != 0 and "setuptools" in r.stderr and "No matching distribution" in r.stderr:
    pytest.skip("no package index to fetch the build backend from")
  assert r.returncode == 0, r.stderr
  (wheel,) = glob.glob(str(tmp_path / "dist" / "ppool_jax-*.whl"))
  names = zipfile.ZipFile(wheel).namelist()
  for cfg in PACKAGE_CONFIGS:
    assert f"ppool_jax/configs/{cfg}.py" in names
  assert "ppool_jax/configs/__init__.py" in names and "ppool_jax/labels.py" in names
  assert not any(n.startswith(("experiments/", "tests/")) for n in names)

  site = tmp_path / "site"
  with zipfile.ZipFile(wheel) as z:  # what a non-editable install puts in site-packages
    z.extractall(site)
  run = tmp_path / "run"
  run.mkdir()
  out = _python("""
      import sys
      from absl import flags
      import ppool_jax
      from ppool_jax import demo
      sys.argv = ["demo"]
      demo.define_flags()
      flags.FLAGS(sys.argv)
      print("from", ppool_jax.__file__)
      print("demo", flags.FLAGS.config.model.pooling, flags.FLAGS.config.total_steps)
      """, cwd=run, pythonpath=str(site))
  assert f"from {site}" in out
  assert "demo p 1500" in out
  # The installed wheel trains, predicts on a folder of PNGs it wrote, exports, from `run/`.
  env = dict(os.environ, XLA_FLAGS="", PYTHONPATH=str(site), JAX_PLATFORMS="cpu")
  cmd = lambda *a: subprocess.run([sys.executable, "-m", *a], cwd=run, env=env,
                                  capture_output=True, text=True, timeout=300)
  r = cmd("ppool_jax.train", "--config", "synthetic_demo", "--workdir", "demo",
          "--config.total_steps=2", "--config.eval_every=2", "--config.checkpoint_every=2",
          "--config.dataset.synthetic_train=16", "--config.dataset.synthetic_eval=2",
          "--config.progress_bar=False", "--config.global_batch_size=2")
  assert r.returncode == 0, r.stderr[-3000:]
  from PIL import Image
  import numpy as np
  (run / "photos").mkdir()
  rng = np.random.default_rng(0)
  for k, size in enumerate([(40, 52), (33, 29)]):
    Image.fromarray(rng.integers(0, 256, size + (3,), np.uint8)).save(run / "photos" / f"{k}.png")
  r = cmd("ppool_jax.predict", "--workdir", "demo", "--images", "photos/*.png", "--out", "pred",
          "--alpha_maps")
  assert r.returncode == 0, r.stderr[-3000:]
  for k, size in enumerate([(40, 52), (33, 29)]):
    assert np.asarray(Image.open(run / "pred" / f"{k}.png")).shape == size
    assert (run / "pred" / f"{k}_overlay.png").exists() and (run / "pred" / f"{k}_alpha.npz").exists()
  r = cmd("ppool_jax.export", "--workdir", "demo", "--out", "exported", "--platforms", "cpu")
  assert r.returncode == 0, r.stderr[-3000:]
  assert (run / "exported" / "export.json").exists()
