"""Inference on any image size (issue #20 items 1-2): stride padding, sliding windows,
multi-scale + flip TTA against NumPy compositions (tests/reference.py), the label palettes. The
Predictor and the predict command on a trained run: tests/integration/test_predict.py."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ppool_jax import labels as label_conventions
from ppool_jax.models.tta import (pad_to_multiple, slide_logits, tta_logits, window_starts)
from reference import np_tta


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


def test_palettes():
  voc = label_conventions.voc_palette(21)
  assert voc[0] == (0, 0, 0) and voc[1] == (128, 0, 0) and voc[15] == (192, 128, 128)
  assert voc[20] == (0, 64, 128) and len(set(label_conventions.voc_palette(256))) == 256
  assert label_conventions.palette("cityscapes", 19)[0] == (128, 64, 128)
  assert label_conventions.palette("x", 2, [(1, 2, 3), (4, 5, 6)]) == ((1, 2, 3), (4, 5, 6))
  with pytest.raises(ValueError, match="palette"):
    label_conventions.palette("x", 3, [(1, 2, 3)])
