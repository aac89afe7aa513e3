"""Inference on a trained run (issue #20 items 1-2): the eval step's test-time augmentation
against a NumPy composition of the model's logits, the Predictor (whole-image and sliding-window
modes, batching and devices) and the predict command. The pieces against NumPy references:
tests/unit/test_inference.py."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

import tiny_config
from ppool_jax import predict as predict_cli
from ppool_jax.inference import Predictor
from ppool_jax.models import output_stride
from ppool_jax.metrics import segmentation_counts
from ppool_jax.train import load_run, train
from ppool_jax.train.steps import TrainState, make_eval_step
from reference import np_tta


# -- a trained run ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def run(tmp_path_factory):
  cfg = tiny_config.get_config()
  cfg.total_steps = cfg.checkpoint_every = 2
  cfg.alpha_diagnostics = False
  workdir = str(tmp_path_factory.mktemp("inference") / "run")
  train(cfg, workdir)
  return workdir


def _images(seed=0):
  rng = np.random.default_rng(seed)
  return [rng.integers(0, 256, s + (3,), dtype=np.uint8)
          for s in [(37, 50), (37, 50), (70, 41), (37, 50), (16, 16)]]


def test_eval_step_tta_equals_numpy_composition_of_model_logits(run):
  loaded = load_run(run)
  state = TrainState(step=0, params=loaded.variables["params"], model_state={}, opt_state=None,
                     rng=None, nonfinite=0)
  rng = np.random.default_rng(4)
  x = rng.normal(size=(2, 29, 35, 3)).astype(np.float32)
  lab = rng.integers(0, 6, (2, 29, 35)).astype(np.int32)
  fwd = jax.jit(lambda v: loaded.model.apply(loaded.variables, v, train=False))
  apply = lambda v: np.asarray(fwd(jnp.asarray(v, jnp.float32)), np.float64)
  for scales, flip in [((1.0,), False), ((0.75, 1.5), True)]:
    step = jax.jit(make_eval_step(loaded.model, 6, "label", None, scales, flip))
    got = step(state, {"image": x, "label": lab})
    pred = np.argmax(np_tta(apply, x, scales, flip), -1)
    want = segmentation_counts(jnp.asarray(pred), jnp.asarray(lab), 6, protocol="label")
    jax.tree_util.tree_map(np.testing.assert_array_equal, got, want)


def test_whole_image_labels_are_the_models_on_the_padded_image(run):
  p = Predictor.from_workdir(run)
  loaded = load_run(run)
  # The tiny VGG16-seg: three stages, the last pooling stride 1 (as VGG16-seg's pool5): 2 * 2.
  assert p.multiple == output_stride(loaded.model) == 4
  fwd = jax.jit(lambda x: loaded.model.apply(loaded.variables, x, train=False))
  for im in _images()[2:]:
    x = p.preprocess(im[None])
    h, w = im.shape[:2]
    xp = np.pad(x, ((0, 0), (0, -h % 4), (0, -w % 4), (0, 0)))
    logits = np.asarray(fwd(xp))[:, :h, :w]
    np.testing.assert_allclose(p.logits(im[None]), logits, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(p.predict(im).label, np.argmax(logits, -1)[0])


def test_predictions_do_not_depend_on_batching_or_devices(run):
  images = _images()
  alone = [Predictor.from_workdir(run, devices=jax.devices()[:1]).predict(im, alpha_maps=True)
           for im in images]
  batched = Predictor.from_workdir(run, batch_size=3).predict_many(images, alpha_maps=True)
  for a, b, im in zip(alone, batched, images):
    assert a.label.shape == im.shape[:2] and a.label.dtype == np.uint8
    np.testing.assert_array_equal(a.label, b.label)
    assert sorted(a.alpha) == ["pool1", "pool2", "pool3"]
    for k in a.alpha:
      np.testing.assert_allclose(a.alpha[k], b.alpha[k], rtol=1e-5)
    h, w = im.shape[:2]
    assert a.alpha["pool1"].shape == (-(-h // 2), -(-w // 2))
    assert a.alpha["pool2"].shape == (-(-h // 4), -(-w // 4))


def test_slide_mode_with_a_covering_window_equals_whole_mode(run):
  """One window covering the (stride-aligned) image: slide and whole see the same input."""
  im = _images()[0][:32, :40]
  whole = Predictor.from_workdir(run).logits(im[None])
  slide = Predictor.from_workdir(run, mode="slide", window=(32, 40)).logits(im[None])
  np.testing.assert_allclose(slide, whole, rtol=1e-4, atol=1e-4)
  tiled = Predictor.from_workdir(run, mode="slide", window=(16, 16), overlap=0.5,
                                 scales=(0.75, 1.0), flip=True)
  assert tiled.predict(_images()[2]).label.shape == (70, 41)


# -- the command --------------------------------------------------------------------------

def test_predict_command(run, tmp_path, capsys):
  src = tmp_path / "photos"
  src.mkdir()
  images = _images(5)[1:4]
  for name, im in zip(["a.png", "b.jpg", "c.png"], images):
    Image.fromarray(im).save(src / name, quality=100)
  (src / "notes.txt").write_text("not an image")
  out = tmp_path / "out"
  argv = ["--workdir", run, "--images", str(src), "--out", str(out), "--alpha_maps"]
  assert predict_cli.main(argv) == 1                    # notes.txt failed, the rest written
  err = capsys.readouterr().err
  assert "notes.txt: not a readable image" in err
  p = Predictor.from_workdir(run)
  for name in ["a", "b", "c"]:
    label = Image.open(out / f"{name}.png")
    assert label.mode == "P"
    im = np.asarray(Image.open(src / (name + (".jpg" if name == "b" else ".png"))).convert("RGB"))
    np.testing.assert_array_equal(np.asarray(label), p.predict(im).label)
    assert np.asarray(Image.open(out / f"{name}_overlay.png")).shape == im.shape
    maps = np.load(out / f"{name}_alpha.npz")
    assert sorted(maps.files) == ["pool1", "pool2", "pool3"]
    assert (out / f"{name}_alpha_pool1.png").exists()
  before = (out / "a.png").read_bytes()
  (out / "a.png").write_bytes(b"keep")
  assert predict_cli.main(argv[:-1]) == 2                # outputs exist: nothing is replaced
  assert "outputs exist" in capsys.readouterr().err and (out / "a.png").read_bytes() == b"keep"
  assert predict_cli.main(argv[:-1] + ["--overwrite"]) == 1
  assert (out / "a.png").read_bytes() == before
  capsys.readouterr()
  assert predict_cli.main(["--workdir", str(tmp_path / "nope"), "--images", str(src),
                           "--out", str(tmp_path / "o2")]) == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert err == [f"ppool_jax.predict: error: run directory not found: {tmp_path / 'nope'}"]
  assert predict_cli.main(["--workdir", run, "--images", str(tmp_path / "*.none"),
                           "--out", str(tmp_path / "o3")]) == 2
  assert not os.path.exists(tmp_path / "o3")
