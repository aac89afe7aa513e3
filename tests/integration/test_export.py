"""jax.export of a run's inference function, the SavedModel option and the CLI (issue #20 item 3)."""

import functools
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

import tiny_config
from ppool_jax import export
from ppool_jax.data.pipeline import normalize
from ppool_jax.train import load_run, train
from ppool_jax.train.inputs import augment_config, class_names
from ppool_jax.train.runs import build_model

SIZES = ((32, 48), (37, 29))   # one even, one odd size (SAME padding at the borders)
P_POOLING = "max,max,p"        # one P-pooling stage: a cheaper training compile than all three


def _cfg(pooling):
  cfg = tiny_config.get_config()
  cfg.model.pooling = pooling
  cfg.total_steps, cfg.checkpoint_every, cfg.keep_checkpoints = 2, 2, 1
  cfg.alpha_diagnostics = False
  return cfg


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  """Two 2-step tiny runs: max pooling (symbolic size) and P-pooling in the last stage (its
  3x3 stride-1 windows are padded; the model is exported at fixed sizes)."""
  root = tmp_path_factory.mktemp("export_runs")
  out = {}
  for name, pooling in (("max", "max"), ("p", P_POOLING)):
    train(_cfg(pooling), str(root / name))
    out[name] = str(root / name)
  return out


@pytest.fixture(scope="module")
def exported(runs, tmp_path_factory):
  """The ``max`` run exported through the CLI (symbolic size) and the P-pooling run at the
  default size (the crop) and at two ``--shape`` sizes: {name: (out dir, sidecar)}."""
  root = tmp_path_factory.mktemp("exports")
  argv = {"max": ["--workdir", runs["max"]],
          "p_default": ["--workdir", runs["p"]],
          "p_sizes": ["--workdir", runs["p"]] + [a for h, w in SIZES for a in ("--shape", f"{h}x{w}")]}
  out = {}
  for name, args in argv.items():
    assert export.main(args + ["--out", str(root / name)]) == 0
    with open(root / name / export.SIDECAR) as f:
      out[name] = (str(root / name), json.load(f))
  return out


def _images(batch, h, w, seed=0):
  return np.random.default_rng(seed).integers(0, 256, (batch, h, w, 3), dtype=np.uint8)


@functools.cache
def _model(workdir):
  run = load_run(workdir)
  return run, jax.jit(lambda x: run.model.apply(run.variables, x, train=False))


def _live(workdir, images):
  """The reference: the loaded run on the data pipeline's (NumPy) normalisation."""
  run, apply = _model(workdir)
  return np.asarray(apply(normalize(images, augment_config(run.config))))


def _load(out_dir, name):
  with open(os.path.join(out_dir, name), "rb") as f:
    return jax.export.deserialize(bytearray(f.read()))


def _assert_close(got, want):
  assert got.dtype == np.float32 and got.shape == want.shape
  scale = np.abs(want).max()
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * scale)


def test_symbolic_artifact_reproduces_the_live_model(runs, exported):
  out_dir, sidecar = exported["max"]
  assert sidecar["symbolic_image_size"] and sidecar["fixed_size_reason"] is None
  assert sidecar["artifacts"]["model.jax"]["input_shape"] == ["b", "h", "w", 3]
  k = sidecar["num_classes"]
  assert sidecar["artifacts"]["model.jax"]["output_shape"] == ["b", "h", "w", k]
  art = _load(out_dir, "model.jax")
  for batch, (h, w) in zip((1, 3), SIZES):            # two batch sizes, two image sizes
    images = _images(batch, h, w)
    got = np.asarray(art.call(images))
    assert got.shape == (batch, h, w, k)
    _assert_close(got, _live(runs["max"], images))


def test_p_pooling_is_exported_at_fixed_sizes(runs, exported):
  out_dir, sidecar = exported["p_default"]
  crop = _cfg(P_POOLING).dataset.crop_size
  assert not sidecar["symbolic_image_size"]
  assert "symbolic image size" in sidecar["fixed_size_reason"]
  assert list(sidecar["artifacts"]) == [f"model_{crop}x{crop}.jax"]
  images = _images(2, crop, crop, seed=1)
  _assert_close(np.asarray(_load(out_dir, f"model_{crop}x{crop}.jax").call(images)),
                _live(runs["p"], images))
  out_dir, sidecar = exported["p_sizes"]
  assert sidecar["fixed_size_reason"] == "fixed sizes requested with --shape"
  for batch, (h, w) in zip((3, 1), SIZES):
    art = _load(out_dir, f"model_{h}x{w}.jax")
    assert sidecar["artifacts"][f"model_{h}x{w}.jax"]["input_shape"] == ["b", h, w, 3]
    images = _images(batch, h, w, seed=2)
    _assert_close(np.asarray(art.call(images)), _live(runs["p"], images))
  with pytest.raises(ValueError, match="shape"):      # a fixed-size artifact checks its input
    art.call(_images(1, h + 1, w))


@pytest.mark.parametrize("pooling,symbolic", [("avg", True), ("strided_c", True),
                                              ("all_c", False)])
def test_symbolic_size_where_the_model_allows(pooling, symbolic):
  """No run needed: the tiny model of each pooling, exported for cpu only."""
  cfg = _cfg(pooling)
  model = build_model(cfg, 3)
  variables = model.init(jax.random.PRNGKey(0), np.zeros((1, 32, 32, 3), np.float32))
  fn = export.inference_fn(model, variables, augment_config(cfg))
  arts, why = export.export_sizes(fn, (), crop=24, platforms=("cpu",))
  assert list(arts) == ([None] if symbolic else [(24, 24)])
  assert (why is None) == symbolic and (symbolic or "symbolic image size" in why)
  h, w = SIZES[1] if symbolic else (24, 24)
  images = _images(2, h, w, seed=4)
  want = jax.jit(lambda x: model.apply(variables, x, train=False))(
      normalize(images, augment_config(cfg)))
  _assert_close(np.asarray(next(iter(arts.values())).call(images)), np.asarray(want))


def test_every_platform_is_lowered(exported):
  for out_dir, sidecar in exported.values():
    assert sidecar["platforms"] == ["cpu", "cuda", "tpu"]
    for name in sidecar["artifacts"]:
      art = _load(out_dir, name)
      assert art.platforms == ("cpu", "cuda", "tpu")
      assert art.in_avals[0].dtype == np.uint8 and art.out_avals[0].dtype == np.float32


def test_sidecar_describes_the_run(runs, exported):
  _, sidecar = exported["max"]
  cfg = _cfg("max")
  assert sidecar["step"] == 2 and sidecar["model"] == "vgg16_seg" and sidecar["pooling"] == "max"
  assert sidecar["class_names"] == list(class_names(cfg))
  aug = augment_config(cfg)
  assert sidecar["preprocessing"] == {"name": "imagenet", "formula": "(float32(x) - mean) / std",
                                      "mean": list(aug.mean), "std": list(aug.std),
                                      "applied_inside": True}
  assert sidecar["input"]["dtype"] == "uint8" and sidecar["output"]["dtype"] == "float32"


def test_caffe_preprocessing_is_recorded_and_applied():
  aug = augment_config(_cfg("max"))
  caffe = type(aug)(preprocessing="caffe")
  rec = export.preprocessing_record(caffe)
  assert rec["name"] == "caffe" and len(rec["mean_bgr"]) == 3
  identity = type("M", (), {"apply": staticmethod(lambda v, x, train: x)})()
  images = _images(2, 5, 7)
  got = np.asarray(export.inference_fn(identity, {}, caffe)(images))
  np.testing.assert_allclose(got, normalize(images, caffe), rtol=0, atol=1e-4)
  assert not np.allclose(got, normalize(images, aug), atol=1)


def test_cli_errors(runs, tmp_path, capsys):
  cases = [(["--workdir", str(tmp_path / "nowhere")], "run directory not found"),
           (["--workdir", runs["max"], "--shape", "12y3"], "--shape must be HxW"),
           (["--workdir", runs["max"], "--platforms", "cpu,gpu"], "platforms must be some of")]
  for args, message in cases:
    assert export.main(args + ["--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ppool_jax.export: error: ") and message in err
    assert err.count("\n") == 1 and not os.path.exists(tmp_path / "out")
  os.makedirs(tmp_path / "taken")
  assert export.main(["--workdir", runs["max"], "--out", str(tmp_path / "taken")]) == 2
  assert "already exists" in capsys.readouterr().err
  with pytest.raises(FileNotFoundError):            # --verbose: the exception itself
    export.main(["--workdir", str(tmp_path / "nowhere"), "--out", "x", "--verbose"])


def test_saved_model_reloads_in_tensorflow_and_matches(runs, tmp_path):
  tf = pytest.importorskip("tensorflow")
  out = tmp_path / "sm"
  sidecar = export.export_run(runs["max"], str(out), saved_model=True)
  assert sidecar["artifacts"]["model.jax"]["saved_model"] == "saved_model"
  loaded = tf.saved_model.load(str(out / "saved_model"))
  serve = loaded.signatures["serving_default"]
  for batch, (h, w) in zip((2, 1), SIZES):
    images = _images(batch, h, w, seed=3)
    got = serve(images=tf.constant(images))
    (got,) = got.values()
    _assert_close(got.numpy(), _live(runs["max"], images))


def test_cli_help_and_bad_workdir_in_a_subprocess(tmp_path):
  env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
  ok = subprocess.run([sys.executable, "-m", "ppool_jax.export", "--help"], capture_output=True,
                      text=True, env=env, timeout=120)
  assert ok.returncode == 0 and "--workdir" in ok.stdout and "--saved_model" in ok.stdout
  bad = subprocess.run([sys.executable, "-m", "ppool_jax.export", "--workdir",
                        str(tmp_path / "nowhere"), "--out", str(tmp_path / "o")],
                       capture_output=True, text=True, env=env, timeout=120)
  assert bad.returncode == 2
  assert bad.stderr.strip().splitlines() == [
      f"ppool_jax.export: error: run directory not found: {tmp_path / 'nowhere'}"]
  hygiene = subprocess.run([sys.executable, "-c", (
      "import sys; from absl import flags; import ppool_jax.export; "
      "assert 'tensorflow' not in sys.modules, 'tensorflow imported'; "
      "assert not [f for f in flags.FLAGS if f in ('workdir', 'out', 'verbose')], 'flags'")],
      capture_output=True, text=True, env=env, timeout=120)
  assert hygiene.returncode == 0, hygiene.stderr
