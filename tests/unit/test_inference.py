"""Inference on any image size (issue #20 items 1-2): stride padding, sliding windows,
multi-scale + flip TTA against NumPy compositions, the Predictor and the predict command."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

import tiny_config
from ppool_jax import labels as label_conventions
from ppool_jax import predict as predict_cli
from ppool_jax.inference import Predictor, total_stride
from ppool_jax.metrics import segmentation_counts
from ppool_jax.models.tta import (pad_to_multiple, slide_logits, tta_logits, window_starts)
from ppool_jax.train import load_run, train
from ppool_jax.train.steps import TrainState, make_eval_step


# -- NumPy references ---------------------------------------------------------------------

def np_resize_axis(x, n_out, axis):
  """Bilinear, half-pixel centres, edge clamped, no antialiasing, along one axis."""
  n_in = x.shape[axis]
  src = np.clip((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0, n_in - 1)
  i0 = np.floor(src).astype(int)
  i1 = np.minimum(i0 + 1, n_in - 1)
  w = (src - i0).reshape([-1 if a == axis else 1 for a in range(x.ndim)])
  return np.take(x, i0, axis) * (1 - w) + np.take(x, i1, axis) * w


def np_resize(x, size):
  return np_resize_axis(np_resize_axis(np.asarray(x, np.float64), size[0], 1), size[1], 2)


def np_tta(f, x, scales, flip):
  h, w = x.shape[1:3]
  outs = []
  for s in scales:
    size = (max(1, round(h * s)), max(1, round(w * s)))
    xs = np_resize(x, size)
    outs.append(np_resize(f(xs), (h, w)))
    if flip:
      outs.append(np_resize(f(xs[:, :, ::-1])[:, :, ::-1], (h, w)))
  return np.mean(outs, 0)


# A logits function that is neither flip- nor translation-invariant: a per-pixel linear map
# plus a running sum along the width (a flipped pass differs from the unflipped one).
W_MIX = np.random.default_rng(0).normal(size=(3, 5))


def f_np(x):
  y = np.asarray(x) @ W_MIX
  return y + 0.1 * np.cumsum(y, axis=2)


def f_jnp(x):
  y = x @ jnp.asarray(W_MIX, jnp.float32)
  return y + 0.1 * jnp.cumsum(y, axis=2)


@pytest.mark.parametrize("scales,flip", [((1.0,), False), ((1.0,), True),
                                         ((0.5, 1.0, 1.75), False), ((0.75, 1.25), True)])
def test_tta_logits_matches_numpy_composition(scales, flip):
  x = np.random.default_rng(1).normal(size=(2, 21, 34, 3)).astype(np.float32)
  got = jax.jit(lambda x: tta_logits(f_jnp, x, scales, flip))(x)
  np.testing.assert_allclose(got, np_tta(f_np, x, scales, flip), rtol=2e-5, atol=2e-5)


def test_tta_rejects_bad_scales():
  for bad in [(), (0.0,), (-1.0,), (float("nan"),)]:
    with pytest.raises(ValueError, match="scales"):
      tta_logits(f_jnp, jnp.zeros((1, 4, 4, 3)), bad)


def test_pad_to_multiple_pads_with_zeros_and_crops():
  seen = []

  def f(x):
    seen.append(x.shape)
    return jnp.cumsum(x, axis=1)  # depends on the padded rows' values if they were not zero

  x = jnp.asarray(np.random.default_rng(2).normal(size=(1, 13, 30, 3)), jnp.float32)
  y = pad_to_multiple(f, 8)(x)
  assert seen == [(1, 16, 32, 3)] and y.shape == x.shape
  np.testing.assert_allclose(y, jnp.cumsum(x, axis=1), rtol=1e-6)


@pytest.mark.parametrize("n,window,stride,want", [
    (10, 10, 5, [0]), (7, 10, 5, [0]), (11, 10, 5, [0, 1]), (20, 8, 5, [0, 5, 10, 12]),
    (500, 321, 214, [0, 179])])
def test_window_starts_follow_mmseg_grid(n, window, stride, want):
  assert window_starts(n, window, stride) == want


def test_slide_logits_matches_a_numpy_loop():
  """A window-dependent f (each window adds its own mean): overlaps average correctly,
  images smaller than the window are padded, the batch of windows is padded."""
  def f(w):
    w = np.asarray(w)
    return w @ W_MIX + w.mean(axis=(1, 2, 3), keepdims=True)

  rng = np.random.default_rng(3)
  for shape in [(2, 23, 30, 3), (1, 6, 9, 3)]:
    x = rng.normal(size=shape).astype(np.float32)
    got = np.asarray(slide_logits(f, (8, 10), (5, 6), batch_size=3)(x))
    hp, wp = max(shape[1], 8), max(shape[2], 10)
    xp = np.pad(x, ((0, 0), (0, hp - shape[1]), (0, wp - shape[2]), (0, 0)))
    total, count = np.zeros(xp.shape[:3] + (5,)), np.zeros(xp.shape[:3] + (1,))
    for y in window_starts(hp, 8, 5):
      for z in window_starts(wp, 10, 6):
        total[:, y:y + 8, z:z + 10] += f(xp[:, y:y + 8, z:z + 10])
        count[:, y:y + 8, z:z + 10] += 1
    want = (total / count)[:, :shape[1], :shape[2]]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


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
  assert total_stride(loaded.config) == 8
  fwd = jax.jit(lambda x: loaded.model.apply(loaded.variables, x, train=False))
  for im in _images()[2:]:
    x = p.preprocess(im[None])
    h, w = im.shape[:2]
    xp = np.pad(x, ((0, 0), (0, -h % 8), (0, -w % 8), (0, 0)))
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


def test_palettes():
  voc = label_conventions.voc_palette(21)
  assert voc[0] == (0, 0, 0) and voc[1] == (128, 0, 0) and voc[15] == (192, 128, 128)
  assert voc[20] == (0, 64, 128) and len(set(label_conventions.voc_palette(256))) == 256
  assert label_conventions.palette("cityscapes", 19)[0] == (128, 64, 128)
  assert label_conventions.palette("x", 2, [(1, 2, 3), (4, 5, 6)]) == ((1, 2, 3), (4, 5, 6))
  with pytest.raises(ValueError, match="palette"):
    label_conventions.palette("x", 3, [(1, 2, 3)])


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
