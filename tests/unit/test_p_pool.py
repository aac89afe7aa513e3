"""p_pool against independent references: NumPy Eq. 1/3/4, mpmath, flax limits."""

import chex
import flax.linen as nn
import hypothesis.extra.numpy as hnp
import jax
import jax.numpy as jnp
import mpmath
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jax.test_util import check_grads

from ppool_jax import p_pool
from reference import out_shape as ref_out_shape
from reference import pads_for, windows


# Independent float64 reference: explicit windows, Eq. 1, 2, 3, 4 as printed.
def reference(x, alpha, window, strides, pads, ct, shift=False):
  """Forward (Eq. 1 or 2) and the vjp (Eq. 3, 4) with a per-output alpha map.

  ``shift``: False (Eq. 1), "map" (Eq. 2 with the minimum of each image's channel map,
  the paper's form) or "window" (each window's own minimum).
  """
  x = np.asarray(x, np.float64)
  spatial = tuple(range(1, x.ndim - 1))
  map_min = x.min(axis=spatial, keepdims=True)
  shape = ref_out_shape(x.shape, window, strides, pads)
  alpha = np.broadcast_to(np.asarray(alpha, np.float64), shape)
  y = np.zeros(shape)
  gx = np.zeros_like(x)
  ga = np.zeros(shape)
  for j, members in windows(x, window, strides, pads):
    a = alpha[j]
    idx = [m[0] for m in members]
    v = np.array([m[2] for m in members])
    if shift == "window":
      low = v.min()
    elif shift == "map":
      low = map_min[(j[0],) + (0,) * len(spatial) + (j[-1],)]
    else:
      low = 0.0
    z = v - low
    s0 = np.sum(z ** a)
    s1 = np.sum(z ** (a + 1))
    y[j] = s1 / s0 + low
    # Eq. 3; a * z**(a-1) is 0 at a = 0 even where z = 0.
    dz = ((a + 1) * z ** a * s0 - (a * z ** (a - 1) if a else 0.0) * s1) / s0 ** 2
    if shift == "window":
      amin = np.argmin(v)
      dz[amin] += 1.0 - dz.sum()
    for i, d in zip(idx, dz):
      gx[i] += ct[j] * d
    if shift == "map":  # the map minimum enters every window of its image and channel
      plane = x[j[0], ..., j[-1]]
      at = np.unravel_index(np.argmin(plane), plane.shape)
      gx[(j[0],) + at + (j[-1],)] += ct[j] * (1.0 - dz.sum())
    # Eq. 4 with log z -> log(z / max z), an identity since sum(z^(a+1) s0 - z^a s1) = 0;
    # members at z = 0 contribute 0 (the documented convention; it only matters at a = 0).
    p = z > 0
    lz = np.log(z[p] / z.max())
    ga[j] = ct[j] * np.sum((lz * z[p] ** (a + 1) * s0 - lz * z[p] ** a * s1) / s0 ** 2)
  return y, gx, ga


def _vjp(x, alpha, ct, *args, **kw):
  y, pull = jax.vjp(lambda x, a: p_pool(x, a, *args, **kw), x, alpha)
  gx, ga = pull(ct)
  return y, gx, ga


CASES = [
    # window, strides, padding, spatial
    ((2, 2), (2, 2), "VALID", (6, 6)),
    ((3, 3), (2, 2), "SAME", (7, 6)),
    ((3, 3), (1, 1), ((1, 1), (0, 2)), (5, 5)),
    ((3,), (2,), "SAME", (9,)),
    ((2, 2, 2), (1, 2, 2), "SAME", (3, 4, 5)),
    # The input gradient is a per-pixel transpose of the window read: windows smaller
    # than the stride (pixels in no window), uneven strides, a window with 3 members
    # per stride step, and a single output row.
    ((2, 1), (3, 2), ((0, 1), (0, 0)), (8, 5)),
    ((5, 2), (2, 1), ((2, 2), (1, 0)), (7, 4)),
    ((4, 3), (4, 3), "VALID", (4, 9)),
]


# -- reference --------------------------------------------------------------------------------

def _pads_and_cotangent(x, case, rng):
  """``case``'s padding of ``x`` and a standard-normal cotangent of the output's shape."""
  window, strides, padding, _ = case
  pads = pads_for(x.shape, window, strides, padding)
  return pads, rng.normal(size=ref_out_shape(x.shape, window, strides, pads))


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("alpha", [0.0, 0.5, 1.0, 2.5, 9.0])
def test_matches_numpy_eq_1_3_4(case, alpha):
  window, strides, padding, spatial = case
  rng = np.random.default_rng(0)
  x = rng.uniform(0.2, 2.0, (2,) + spatial + (3,)).astype(np.float32)
  pads, ct = _pads_and_cotangent(x, case, rng)
  # A dense alpha map, varying per position, exercises per-output gradients.
  amap = (alpha * rng.uniform(0.5, 1.5, ct.shape)).astype(np.float32)
  y, gx, ga = _vjp(jnp.asarray(x), jnp.asarray(amap), jnp.asarray(ct, jnp.float32),
                   window, strides, padding)
  ry, rgx, rga = reference(x, amap, window, strides, pads, ct)
  np.testing.assert_allclose(y, ry, rtol=2e-5, atol=1e-6)
  np.testing.assert_allclose(gx, rgx, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(ga, rga, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("alpha", [0.0, 0.7, 3.0])
@pytest.mark.parametrize("case", CASES[:4] + CASES[5:])
def test_paper_eq_2_with_the_feature_map_minimum(alpha, case):
  window, strides, padding, spatial = case
  rng = np.random.default_rng(11)
  x = rng.normal(size=(2,) + spatial + (3,)).astype(np.float32)
  pads, ct = _pads_and_cotangent(x, case, rng)
  amap = (alpha * rng.uniform(0.5, 1.5, ct.shape)).astype(np.float32)
  for shift in ("map", True):  # True means the paper's form
    y, gx, ga = _vjp(jnp.asarray(x), jnp.asarray(amap), jnp.asarray(ct, jnp.float32), window,
                     strides, padding, shift=shift)
    with np.errstate(all="ignore"):
      ry, rgx, rga = reference(x, amap, window, strides, pads, ct, shift="map")
    np.testing.assert_allclose(y, ry, rtol=2e-5, atol=2e-6)
    np.testing.assert_allclose(ga, rga, rtol=1e-4, atol=1e-5)
    if alpha == 0.0 or alpha >= 1.0:  # 0 < a < 1: z^(a-1) at the map minimum is inf
      np.testing.assert_allclose(gx, rgx, rtol=1e-4, atol=1e-5)


def test_paper_eq_2_gradient_matches_float64_finite_differences():
  # Independent of the reference's formulas: central differences of the forward.
  with jax.enable_x64(True):
    rng = np.random.default_rng(12)
    x = jnp.asarray(rng.normal(size=(2, 5, 6, 2)))
    a = jnp.asarray(rng.uniform(1.5, 4.0, (2, 3, 3, 2)))
    check_grads(lambda x, a: p_pool(x, a, (3, 3), (2, 2), "SAME", shift="map"), (x, a),
                order=1, modes=["rev"], eps=1e-6)


def test_paper_eq_2_is_continuous_at_alpha_0_and_average_there():
  rng = np.random.default_rng(13)
  x = rng.normal(size=(2, 8, 8, 3)).astype(np.float32)
  avg = x.reshape(2, 4, 2, 4, 2, 3).mean(axis=(2, 4))
  y0 = p_pool(x, 0.0, (2, 2), (2, 2), shift="map")
  np.testing.assert_allclose(y0, avg, atol=1e-6)
  # Only the window holding the map minimum has a zero after the shift (Eq. 1's own
  # 0^alpha discontinuity); everywhere else alpha -> 0+ converges to the average.
  holds_min = (x == x.min(axis=(1, 2), keepdims=True)).reshape(2, 4, 2, 4, 2, 3).any(axis=(2, 4))
  for eps in (1e-3, 1e-5):
    y = np.asarray(p_pool(x, eps, (2, 2), (2, 2), shift="map"))
    assert np.abs(y - avg)[~holds_min].max() < 20 * eps * np.abs(x).max()
  # The window form jumps: alpha -> 0+ is the mean of the three largest members.
  top3 = np.sort(x.reshape(2, 4, 2, 4, 2, 3).transpose(0, 1, 3, 5, 2, 4).reshape(2, 4, 4, 3, 4),
                 axis=-1)[..., 1:].mean(-1)
  yw = p_pool(x, 1e-6, (2, 2), (2, 2), shift="window")
  np.testing.assert_allclose(yw, top3, rtol=1e-4, atol=1e-4)
  assert np.abs(np.asarray(yw) - avg).max() > 0.1


def test_two_member_windows_learn_alpha_only_with_the_map_minimum():
  x = jnp.asarray(np.random.default_rng(14).normal(size=(1, 8, 2)), jnp.float32)
  for alpha in (0.5, 2.0, 20.0):
    g = {m: jax.grad(lambda a: p_pool(x, a, (2,), (2,), shift=m).sum())(jnp.float32(alpha))
         for m in ("map", "window")}
    y = p_pool(x, alpha, (2,), (2,), shift="window")
    # The window form is max pooling (up to the rounding of (max - min) + min).
    np.testing.assert_allclose(y, nn.max_pool(x, (2,), (2,)), rtol=1e-6, atol=1e-6)
    assert float(g["window"]) == 0.0 and abs(float(g["map"])) > 1e-6


@pytest.mark.parametrize("alpha", [0.0, 0.7, 3.0])
@pytest.mark.parametrize("case", [CASES[1], CASES[6]])
def test_window_minimum_form_matches_numpy(alpha, case):
  window, strides, padding, spatial = case
  rng = np.random.default_rng(1)
  x = rng.normal(size=(2,) + spatial + (3,)).astype(np.float32)
  pads, ct = _pads_and_cotangent(x, case, rng)
  # Keep the window minimum out of the reference's z**(a-1) at z = 0 (inf * 0):
  # compare only away from that convention by using alpha >= 1 or alpha = 0.
  a = jnp.full((3,), alpha, jnp.float32)
  y, gx, ga = _vjp(jnp.asarray(x), a, jnp.asarray(ct, jnp.float32), window, strides, padding,
                   shift="window")
  with np.errstate(all="ignore"):
    ry, rgx, rga = reference(x, alpha, window, strides, pads, ct, shift="window")
  np.testing.assert_allclose(y, ry, rtol=2e-5, atol=2e-6)
  if alpha == 0.0 or alpha >= 1.0:
    np.testing.assert_allclose(gx, rgx, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(ga, rga.sum(axis=(0, 1, 2)), rtol=1e-4, atol=1e-4)


def test_alpha_gradient_comes_back_in_alphas_shape():
  rng = np.random.default_rng(2)
  x = jnp.asarray(rng.uniform(0.1, 1.0, (2, 3, 6, 6, 4)), jnp.float32)
  ct = jnp.asarray(rng.normal(size=(2, 3, 3, 3, 4)), jnp.float32)
  full = jnp.full((2, 3, 3, 3, 4), 2.0)
  _, _, g_full = _vjp(x, full, ct, (2, 2), (2, 2))
  for shape, axes in [((), (0, 1, 2, 3, 4)), ((4,), (0, 1, 2, 3)), ((3, 1, 1, 4), (0, 2, 3)),
                      ((1, 3, 3, 1), (0, 1, 4))]:
    _, _, g = _vjp(x, jnp.full(shape, 2.0), ct, (2, 2), (2, 2))
    chex.assert_shape(g, shape)
    np.testing.assert_allclose(g, g_full.sum(axis=axes).reshape(shape), rtol=1e-5, atol=1e-5)


def _mp_reference(window_vals, alpha, ct):
  """y, dy/dx, dy/dalpha of Eq. 1/3/4 in 60-digit arithmetic."""
  mpmath.mp.dps = 60
  v = [mpmath.mpf(float(t)) for t in window_vals]
  a = mpmath.mpf(float(alpha))
  s0 = sum(t ** a for t in v)
  s1 = sum(t ** (a + 1) for t in v)
  y = s1 / s0
  dx = [((a + 1) * t ** a * s0 - a * t ** (a - 1) * s1) / s0 ** 2 for t in v]
  da = sum(mpmath.log(t) * (t ** (a + 1) * s0 - t ** a * s1) / s0 ** 2 for t in v)
  return float(y), np.array([float(d) * ct for d in dx]), float(da) * ct


# -- large alpha ------------------------------------------------------------------------------
# The paper clips alpha at 35; Eq. 1 must hold (to dtype precision) far beyond.

@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("alpha", [35.0, 300.0, 1e4])
def test_against_60_digit_reference(dtype, alpha):
  # Close values so that large alpha still mixes members instead of picking one.
  vals = np.array([[1.0, 0.9995], [0.9999, 0.3]], np.float32)
  if dtype == "bfloat16":
    vals = np.array([[1.0, 0.99609375], [0.9921875, 0.3]], np.float32)  # bf16-exact
  x = jnp.asarray(vals[None, :, :, None], dtype)
  a = jnp.asarray(alpha, dtype)
  y, gx, ga = _vjp(x, a, jnp.ones((1, 1, 1, 1), dtype), (2, 2), (2, 2))
  ry, rgx, rga = _mp_reference(vals.ravel(), float(a), 1.0)
  for t in (y, gx, ga):
    assert np.all(np.isfinite(np.asarray(t, np.float32)))
  tol = 1e-4 if dtype == "float32" else 2e-2
  np.testing.assert_allclose(np.float32(y).ravel(), ry, rtol=tol)
  np.testing.assert_allclose(np.float32(gx).ravel(), rgx, rtol=tol * 10, atol=tol)
  np.testing.assert_allclose(np.float32(ga), rga, rtol=tol * 10, atol=tol * 1e-2)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_huge_alpha_on_wide_range_is_finite(dtype):
  rng = np.random.default_rng(3)
  x = jnp.asarray(rng.uniform(0, 50, (2, 8, 8, 4)) * (rng.uniform(size=(2, 8, 8, 4)) > 0.3),
                  dtype)
  for alpha in [35.0, 1e3, 1e4, 1e6, 3e38]:
    y, gx, ga = _vjp(x, jnp.asarray(alpha, jnp.float32), jnp.ones((2, 4, 4, 4), dtype),
                     (2, 2), (2, 2))
    for t in (y, gx, ga):
      assert np.all(np.isfinite(np.asarray(t, np.float32))), (alpha, t)


# -- the inference path -----------------------------------------------------------------------
# ``p_pool`` called without differentiation runs its own forward (one loop reading the
# unpadded input, issue #23 item 2): it must equal the float64 reference and the forward the
# gradient path runs, at every alpha, with zeros, all-zero windows and large windows (which
# read the padded input with masks instead).


@pytest.mark.parametrize("case", CASES + [((5, 5), (1, 1), "SAME", (6, 7))])
@pytest.mark.parametrize("shift", [False, "map", "window"])
def test_inference_forward_matches_reference_and_the_gradient_paths_forward(case, shift):
  window, strides, padding, spatial = case
  rng = np.random.default_rng(7)
  x = rng.uniform(0.0, 2.0, (2,) + spatial + (3,)).astype(np.float32)
  x[x < 0.6] = 0.0  # post-ReLU zeros; image 0 channel 0 all zero
  x[0, ..., 0] = 0.0
  if shift:
    x = x - 1.0
  pads = pads_for(x.shape, window, strides, padding)
  ones = np.ones(ref_out_shape(x.shape, window, strides, pads))
  for alpha in [0.0, 1e-35, 0.7, 3.0, 35.0, 1e4, 3e38]:
    y = p_pool(jnp.asarray(x), alpha, window, strides, padding, shift=shift)
    y_vjp, _ = jax.vjp(lambda x: p_pool(x, alpha, window, strides, padding, shift=shift),
                       jnp.asarray(x))
    np.testing.assert_allclose(y, y_vjp, rtol=1e-6, atol=1e-6, err_msg=str(alpha))
    if alpha <= 35.0:  # the reference's z^a: 0/0 in all-zero windows (checked above)
      with np.errstate(all="ignore"):
        ry = reference(x, alpha, window, strides, pads, ones, shift=shift)[0]
      ok = np.isfinite(ry)
      assert ok.mean() > 0.5
      np.testing.assert_allclose(np.asarray(y)[ok], ry[ok], rtol=2e-5, atol=2e-6,
                                 err_msg=str(alpha))


def _eq1_float64(x, alpha, window, strides, padding):
  """Eq. 1 in float64, vectorised (2-D windows): padding excluded, an all-zero window 0."""
  x = np.asarray(x, np.float64)
  pads = pads_for(x.shape, window, strides, padding)
  xp = np.pad(x, [(0, 0), *pads, (0, 0)], constant_values=np.nan)
  win = np.lib.stride_tricks.sliding_window_view(xp, window, axis=(1, 2))
  win = win[:, ::strides[0], ::strides[1]]
  win = win.reshape(*win.shape[:4], -1)  # (B, out H, out W, C, members)
  top = np.nanmax(win, -1, keepdims=True)
  a = np.broadcast_to(np.asarray(alpha, np.float64), win.shape[:-1])[..., None]
  with np.errstate(all="ignore"):
    w = np.where(np.isnan(win), 0.0, (win / top) ** a)
    y = np.nansum(w * win, -1) / np.sum(w, -1)
  return np.where(top[..., 0] > 0, y, 0.0)


@pytest.mark.parametrize("case", [((2, 2), (2, 2), "VALID", (64, 64)),
                                  ((3, 3), (2, 2), "SAME", (63, 50)),
                                  ((5, 5), (1, 1), "SAME", (20, 17))])
def test_bfloat16_forwards_round_eq1_faithfully_and_mostly_correctly(case):
  """A bfloat16 output is one of the two bfloat16 values around float64 Eq. 1 (faithful),
  and the nearer one for all but 3e-3 of outputs (measured: up to 1.2e-3 at small alpha), in
  both forwards: without gradient its weights come from ``f32_math``'s lower-degree bfloat16
  fits, under ``grad`` from the float32 ones. Post-ReLU zeros, all-zero windows, padded
  windows (3x3/2 SAME by regions, 5x5/1 SAME through masks), every alpha shape. An exp2 of
  degree 2 or a log2 of degree 3 fails it."""
  window, strides, padding, spatial = case
  rng = np.random.default_rng(11)
  x = rng.uniform(0.0, 2.0, (2, *spatial, 16)) * (rng.uniform(size=(2, *spatial, 16)) > 0.3)
  x[1, :8, :8] = 0.0
  x = jnp.asarray(x, jnp.bfloat16)
  out = ref_out_shape(x.shape, window, strides, pads_for(x.shape, window, strides, padding))
  alphas = [0.0, 0.05, 0.7, 3.0, 35.0, 300.0, 1e4, rng.uniform(0, 40, 16),
            rng.uniform(0, 35, out)]
  for alpha in alphas:
    ref = _eq1_float64(x, alpha, window, strides, padding)
    a = jnp.asarray(alpha, jnp.float32)
    for path, y in [("inference", p_pool(x, a, window, strides, padding)),
                    ("grad", jax.vjp(lambda x: p_pool(x, a, window, strides, padding), x)[0])]:
      assert y.dtype == jnp.bfloat16
      bits = np.asarray(y).view(np.uint16).astype(np.int64)
      y = np.asarray(y, np.float64)
      # The bfloat16 neighbour of y towards Eq. 1 (y >= 0; y = 0 only for all-zero windows).
      toward = np.where(ref > y, bits + 1, np.maximum(bits - 1, 0)).astype(np.uint16)
      other = np.asarray(toward.view(jnp.bfloat16), np.float64)
      # Eq. 1 strictly between y and its neighbour (a representable Eq. 1 must come out exact).
      faithful = (y == ref) | ((ref - y) * (ref - other) < 0)
      assert faithful.all(), (path, np.shape(alpha), np.max(np.abs(y - ref)[~faithful]))
      misrounded = np.mean(np.abs(other - ref) < np.abs(y - ref))
      assert misrounded <= 3e-3, (path, np.shape(alpha), misrounded)


@pytest.mark.parametrize("shift", ["map", "window"])
def test_bfloat16_shifted_forward_is_the_float32_forward_rounded(shift):
  """With a shift (Eq. 2) the bfloat16 inference forward keeps the float32 fits: ``f + min``
  can cancel, and the bfloat16 fits' 1e-4 error in ``f`` then came out as up to hundreds of
  bfloat16 ulps of a result near 0 (1.2 % of outputs misrounded at alpha 0.5). Its output
  is the float32 forward's on the same values, rounded."""
  rng = np.random.default_rng(12)
  x = jnp.asarray(rng.uniform(-1.0, 1.0, (2, 32, 32, 16)), jnp.bfloat16)
  for alpha in (0.5, 3.0, 35.0):
    y = np.asarray(p_pool(x, alpha, (2, 2), (2, 2), shift=shift), np.float64)
    y32 = p_pool(x.astype(jnp.float32), alpha, (2, 2), (2, 2), shift=shift)
    y32 = np.asarray(y32.astype(jnp.bfloat16), np.float64)
    assert np.mean(y != y32) <= 1e-3, (alpha, np.mean(y != y32))
    np.testing.assert_allclose(y, y32, rtol=2.0**-7, atol=2.0**-20)


@pytest.mark.parametrize("alpha", [35.0, 300.0, 1e4])
def test_inference_forward_large_alpha_against_60_digit_reference(alpha):
  vals = np.array([[1.0, 0.9995], [0.9999, 0.3]], np.float32)
  y = p_pool(jnp.asarray(vals[None, :, :, None]), jnp.float32(alpha), (2, 2), (2, 2))
  np.testing.assert_allclose(np.float32(y).ravel(), _mp_reference(vals.ravel(), alpha, 1.0)[0],
                             rtol=1e-4)


def test_inference_forward_beyond_float32s_ratio_range_is_as_documented():
  """Without gradient, a member below ``2^-126`` times its window maximum (the ratio flushes
  to 0 on XLA:CPU) weighs ``2^(-127 alpha)``, where the exact weight is below
  ``2^(-126 alpha)``; the gradient path's forward is exact. ``p_pool``'s docstring."""
  z = np.array([1e30, 1e-10, 1.0, 0.0])
  x = jnp.asarray(z.reshape(1, 2, 2, 1), jnp.float32)

  def eq1(w):  # Eq. 1 with the members' weights relative to the maximum
    return (w * z).sum() / w.sum()

  for alpha in (0.01, 0.05, 0.3, 2.0):
    exact = eq1(np.where(z > 0, (z / 1e30) ** alpha, 0.0))
    y = float(p_pool(x, alpha, (2, 2), (2, 2)).ravel()[0])
    y_grad_path = float(jax.vjp(lambda x: p_pool(x, alpha, (2, 2), (2, 2)), x)[0].ravel()[0])
    np.testing.assert_allclose(y_grad_path, exact, rtol=2e-6)
    counted = eq1(np.array([1.0, 2.0 ** (-127 * alpha), 1e-30 ** alpha, 0.0]))
    np.testing.assert_allclose(y, counted, rtol=2e-6)
    if alpha >= 0.2:
      np.testing.assert_allclose(y, exact, rtol=2e-6)
    else:
      assert abs(y / exact - 1) > 1e-4


def test_a_window_with_infinite_members_pools_to_inf_in_both_forwards():
  """Eq. 1's value is ``inf`` (tied infinities included: the inference forward's ratio
  ``inf / inf`` must not turn into NaN); the finite window beside it is unaffected."""
  x = np.array([[np.inf, np.inf, 1.0, 0.0], [np.inf, 2.0, 1.0, 0.0], [3.0, 2.0, 1.0, 0.0]],
               np.float32)
  x = jnp.asarray(x.reshape(3, 2, 2, 1))
  for alpha in (0.0, 1.0, 1e4):
    for y in (p_pool(x, alpha, (2, 2), (2, 2)),
              jax.vjp(lambda x: p_pool(x, alpha, (2, 2), (2, 2)), x)[0]):
      y = np.asarray(y).ravel()
      assert np.all(y[:2] == np.inf), (alpha, y)
      np.testing.assert_allclose(y[2], {0.0: 6 / 4, 1.0: 14 / 6, 1e4: 3.0}[alpha], rtol=1e-6)


# -- limits -----------------------------------------------------------------------------------
# alpha = 0 is average pooling, alpha -> inf is max pooling: values and grads.

@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_limits_against_flax(case, dtype):
  window, strides, padding, spatial = case
  rng = np.random.default_rng(4)
  # Distinct values (no ties) so max pooling's gradient is unique.
  # Geometric spacing of 1% stays distinct after rounding to bfloat16 (0.4%).
  x = jnp.asarray(1.01 ** rng.permutation(np.prod((2,) + spatial + (3,))).reshape(
      (2,) + spatial + (3,)), dtype)
  ct = jnp.asarray(rng.normal(size=p_pool(x, 0.0, window, strides, padding).shape), dtype)

  def loss(pool):
    return lambda x: jnp.sum(pool(x).astype(jnp.float32) * ct.astype(jnp.float32))

  avg = lambda x: nn.avg_pool(x, window, strides, padding, count_include_pad=False)
  mx = lambda x: nn.max_pool(x, window, strides, padding)
  tol = dict(rtol=1e-5, atol=1e-5) if dtype == "float32" else dict(rtol=1e-2, atol=1e-2)
  for alpha, ref in [(0.0, avg), (1e6, mx)]:
    pool = lambda x: p_pool(x, alpha, window, strides, padding)
    np.testing.assert_allclose(np.float32(pool(x)), np.float32(ref(x)), **tol)
    np.testing.assert_allclose(np.float32(jax.grad(loss(pool))(x)),
                               np.float32(jax.grad(loss(ref))(x)), **tol)


def test_alpha_gradient_vanishes_at_max_limit():
  x = jax.random.uniform(jax.random.PRNGKey(0), (1, 6, 6, 2), minval=0.1)
  g = jax.grad(lambda a: p_pool(x, a, (2, 2), (2, 2)).sum())(1e6)
  assert float(g) == 0.0


# -- zeros ------------------------------------------------------------------------------------
# Post-ReLU inputs: exact zeros and the documented conventions.

def test_all_zero_window():
  x = jnp.zeros((1, 4, 4, 2)).at[0, 2:, 2:, :].set(1.5)
  for alpha in [0.0, 0.5, 1.0, 3.0, 1e4]:
    y, gx, ga = _vjp(x, jnp.float32(alpha), jnp.ones((1, 2, 2, 2)), (2, 2), (2, 2))
    assert float(y[0, 0, 0, 0]) == 0.0
    np.testing.assert_array_equal(gx[0, :2, :2], 0.25)  # 1/N in the all-zero window
    assert np.isfinite(float(ga))


@pytest.mark.parametrize("alpha", [1.0, 1.7, 3.0])
def test_gradient_at_zero_member_matches_one_sided_difference(alpha):
  x = np.array([0.0, 0.6, 1.1, 0.8], np.float32).reshape(1, 2, 2, 1)
  g = jax.grad(lambda x: p_pool(x, alpha, (2, 2), (2, 2)).sum())(jnp.asarray(x))
  with jax.enable_x64(True):
    xd = jnp.asarray(x, jnp.float64)
    eps = 1e-7
    f = lambda x: float(p_pool(x, alpha, (2, 2), (2, 2)).sum())
    fd = (f(xd.at[0, 0, 0, 0].add(eps)) - f(xd)) / eps
  assert abs(float(g[0, 0, 0, 0]) - fd) <= 1e-4 + 1e-3 * abs(fd)


def test_fractional_alpha_at_zero_uses_convention():
  x = jnp.array([0.0, 0.6, 1.1, 0.8]).reshape(1, 2, 2, 1)
  g = jax.grad(lambda x: p_pool(x, 0.5, (2, 2), (2, 2)).sum())(x)
  assert float(g[0, 0, 0, 0]) == 0.0
  assert np.all(np.isfinite(g))
  # alpha = 0 counts the zero as a member: average pooling's 1/4.
  g0 = jax.grad(lambda x: p_pool(x, 0.0, (2, 2), (2, 2)).sum())(x)
  np.testing.assert_allclose(g0, 0.25)
  ga = jax.grad(lambda a: p_pool(x, a, (2, 2), (2, 2)).sum())(0.0)
  assert np.isfinite(float(ga))


# -- transforms (jit / eager as chex variants: a chex.TestCase) --------------------------------

class TransformsTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_jit_and_eager_agree_with_numpy(self):
    rng = np.random.default_rng(5)
    x = rng.uniform(0.1, 1.0, (2, 6, 6, 3)).astype(np.float32)
    fn = self.variant(lambda x, a: p_pool(x, a, (3, 3), (2, 2), "SAME"))
    y = fn(jnp.asarray(x), jnp.float32(2.0))
    pads = pads_for(x.shape, (3, 3), (2, 2), "SAME")
    ry, _, _ = reference(x, 2.0, (3, 3), (2, 2), pads, np.ones(y.shape))
    chex.assert_shape(y, (2, 3, 3, 3))
    chex.assert_trees_all_close(y, ry.astype(np.float32), rtol=1e-5)

  @chex.variants(with_jit=True, without_jit=True)
  def test_grad_variants(self):
    x = jax.random.uniform(jax.random.PRNGKey(1), (1, 5, 5, 2), minval=0.2)
    gfn = self.variant(jax.grad(lambda x, a: p_pool(x, a, (2, 2), (1, 1)).sum(), argnums=(0, 1)))
    gx, ga = gfn(x, jnp.array([0.5, 4.0]))
    chex.assert_shape(gx, x.shape)
    chex.assert_shape(ga, (2,))
    chex.assert_tree_all_finite((gx, ga))

  def test_check_grads_first_and_second_order(self):
    # Op by op (disable_jit): p_pool's own jit would compile a new program for each of the
    # many vjps check_grads builds (27 s against 12 s). The jitted passes are differentiated
    # to second order by test_float32_second_order_matches_float64.
    with jax.enable_x64(True), jax.disable_jit():
      rng = np.random.default_rng(6)
      x = jnp.asarray(rng.uniform(0.3, 2.0, (1, 5, 5, 2)))
      a = jnp.asarray([0.7, 3.0])
      for shift in (False, "map", "window"):
        xs = x - 1.0 if shift else x
        f = lambda x, a: p_pool(x, a, (3, 3), (2, 2), "SAME", shift=shift)
        check_grads(f, (xs, a), order=2, modes=["rev"])

  def test_vmap_equals_batched_call(self):
    x = jax.random.uniform(jax.random.PRNGKey(2), (4, 2, 6, 6, 3))
    a = jax.random.uniform(jax.random.PRNGKey(3), (4, 2, 3, 3, 3), maxval=5.0)
    batched = p_pool(x, a, (2, 2), (2, 2))
    mapped = jax.vmap(lambda x, a: p_pool(x, a, (2, 2), (2, 2)))(x, a)
    chex.assert_trees_all_close(mapped, batched, rtol=1e-6)
    g_b = jax.grad(lambda a: p_pool(x, a, (2, 2), (2, 2)).sum())(a)
    g_m = jax.vmap(jax.grad(lambda x, a: p_pool(x, a, (2, 2), (2, 2)).sum(), argnums=1))(x, a)
    chex.assert_trees_all_close(g_m, g_b, rtol=1e-5)

  def test_pmap_over_8_devices(self):
    n = jax.local_device_count()
    assert n == 8, "tests expect XLA_FLAGS=--xla_force_host_platform_device_count=8"
    x = jax.random.uniform(jax.random.PRNGKey(4), (n, 2, 6, 6, 3))
    a = jnp.asarray([0.5, 2.0, 8.0])

    def step(x, a):
      g = jax.grad(lambda a: p_pool(x, a, (3, 3), (2, 2), "SAME").sum())(a)
      return jax.lax.psum(g, "d")

    g = jax.pmap(step, axis_name="d", in_axes=(0, None))(x, a)
    ref = jax.grad(lambda a: p_pool(x.reshape(-1, 6, 6, 3), a, (3, 3), (2, 2), "SAME").sum())(a)
    chex.assert_trees_all_close(g[0], ref, rtol=1e-4)
    chex.assert_trees_all_equal(g[0], g[-1])

  def test_no_batch_dims_and_many_batch_dims(self):
    x = jax.random.uniform(jax.random.PRNGKey(5), (2, 3, 8, 8, 2))
    many = p_pool(x, 2.0, (2, 2), (2, 2))
    none = p_pool(x[1, 2], 2.0, (2, 2), (2, 2))
    chex.assert_shape(many, (2, 3, 4, 4, 2))
    chex.assert_trees_all_close(none, many[1, 2])


finite_floats = st.floats(0.0, 100.0, allow_nan=False, width=32)


# -- properties -------------------------------------------------------------------------------

@settings(max_examples=40, deadline=None)
@given(x=hnp.arrays(np.float32, (1, 4, 4, 2), elements=finite_floats),
       alpha=st.floats(0.0, 200.0, width=32))
def test_within_window_range_and_monotone_in_alpha(x, alpha):
  y = p_pool(x, alpha, (2, 2), (2, 2))
  lo = -nn.max_pool(-jnp.asarray(x), (2, 2), (2, 2))
  hi = nn.max_pool(jnp.asarray(x), (2, 2), (2, 2))
  tol = 1e-5 * (1 + np.abs(hi))
  assert np.all(y >= lo - tol) and np.all(y <= hi + tol)
  y2 = p_pool(x, alpha * 1.5 + 0.1, (2, 2), (2, 2))
  assert np.all(y2 >= y - tol)


@settings(max_examples=25, deadline=None)
@given(x=hnp.arrays(np.float32, (1, 2, 2, 3), elements=finite_floats),
       alpha=st.floats(0.0, 50.0, width=32), perm=st.permutations(range(4)),
       c=st.floats(0.01, 100.0))
def test_permutation_invariant_and_scale_equivariant(x, alpha, perm, c):
  y = p_pool(x, alpha, (2, 2))
  xp = x.reshape(1, 4, 3)[:, list(perm)].reshape(1, 2, 2, 3)
  np.testing.assert_allclose(p_pool(xp, alpha, (2, 2)), y, rtol=1e-5, atol=1e-30)
  np.testing.assert_allclose(p_pool(np.float32(c) * x, alpha, (2, 2)), np.float32(c) * y,
                             rtol=1e-4, atol=1e-30)


@settings(max_examples=25, deadline=None)
@given(x=hnp.arrays(np.float32, (1, 5, 5, 1), elements=st.floats(-50, 50, width=32)),
       alpha=st.floats(0.0, 100.0, width=32), t=st.floats(-10, 10, width=32))
def test_shift_forms_are_translation_equivariant(x, alpha, t):
  # On a 1/64 grid, x + t is exact in float32. Otherwise rounding can turn a tiny member
  # (e.g. 1e-38 above the minimum) into an exact zero, and Eq. 1 jumps at zero for small
  # alpha (a zero weighs 0, 1e-38 weighs 1e-38^alpha): not a translation property.
  x = (np.round(x * 64) / 64).astype(np.float32)
  t = np.float32(np.round(t * 64) / 64)
  for shift in ("map", "window"):
    y = p_pool(x, alpha, (3, 3), (2, 2), "SAME", shift=shift)
    yt = p_pool(x + t, alpha, (3, 3), (2, 2), "SAME", shift=shift)
    np.testing.assert_allclose(yt, y + t, rtol=1e-4, atol=1e-3)


# -- errors -----------------------------------------------------------------------------------

def test_bad_input_names_the_problem():
  x = jnp.ones((1, 4, 4, 2))
  neg_alpha, neg_x = jnp.full((2,), -2.0), -x
  cases = [
      (lambda: p_pool(jnp.ones((4, 4)), 1.0, (2, 2)), ValueError, "rank 2"),
      (lambda: p_pool(x, 1.0, (5, 5)), ValueError, "larger than the padded input"),
      (lambda: p_pool(x, 1.0, (2, 2), (0, 2)), ValueError, "strides must be positive"),
      (lambda: p_pool(x, 1.0, (2, 2), (2,)), ValueError, "one entry per window dim"),
      (lambda: p_pool(jnp.ones((1, 4, 4, 2), jnp.int32), 1.0, (2, 2)), TypeError,
       "floating dtype"),
      (lambda: p_pool(x, jnp.ones((3,)), (2, 2), (2, 2)), ValueError, "does not broadcast"),
      (lambda: p_pool(x, -1.0, (2, 2)), ValueError, "alpha must be >= 0"),
      (lambda: p_pool(x, jnp.nan, (2, 2)), ValueError, "alpha must be finite"),
      (lambda: p_pool(x, jnp.inf, (2, 2)), ValueError, "alpha must be finite"),
      (lambda: p_pool(-x, 1.0, (2, 2)), ValueError, "non-negative"),
      (lambda: p_pool(x, 1.0, (2, 2), padding="FULL"), ValueError, "padding must be"),
      (lambda: p_pool(x, 1.0, (2, 2), shift="global"), ValueError, "shift must be"),
      # Concrete values closed over by a traced function are still checked, on the host.
      (lambda: jax.jit(lambda a: p_pool(neg_x, a, (2, 2)))(1.0), ValueError, "non-negative"),
      (lambda: jax.jit(lambda v: p_pool(v, neg_alpha, (2, 2)))(x), ValueError,
       "alpha must be >= 0"),
      (lambda: p_pool(x, 1.0, (2, 2), padding=((2, 2), (0, 0))), ValueError,
       "smaller than the window"),
  ]
  for fn, exc, msg in cases:
    with pytest.raises(exc, match=msg):
      fn()


def test_negative_inputs_are_fine_with_shift():
  for shift in (True, "map", "window"):
    y = p_pool(-jnp.arange(16.0).reshape(1, 4, 4, 1), 1.0, (2, 2), (2, 2), shift=shift)
    assert np.all(np.isfinite(y))


# -- fast path --------------------------------------------------------------------------------
# Issue #23: the float32 log the fused loops use, and that every alpha shape gets the
# dense map's memory (compiled temp sizes are deterministic for a given XLA).

def _positive_float32_sample():
  rng = np.random.default_rng(0)
  tiny, big = np.finfo(np.float32).tiny, np.finfo(np.float32).max
  x = np.concatenate([
      np.exp(rng.uniform(np.log(tiny), np.log(big), 200_000)),       # normal range
      1.0 + rng.uniform(-1e-3, 1e-3, 20_000),                         # near 1 (cancellation)
      np.sqrt(0.5) * (1.0 + rng.uniform(-1e-3, 1e-3, 20_000)),        # the pieces' seam
      [1.0, 2.0, 0.5, np.sqrt(0.5), tiny, big]]).astype(np.float32)
  return x[(x > 0) & np.isfinite(x)]


@pytest.mark.parametrize("base2", [True, False])
def test_float32_logs_are_within_their_absolute_bounds(base2):
  """``log2_f32_poly`` (the inference forward's) within ``4.1e-7 + 2^-24 |log2 x|`` and
  exact at every power of two; ``log`` (the gradient passes', ``log2_f32_poly * log(2)`` on
  CPU) within ``2.9e-7 + 2^-23 |log x|`` and ``log(1) = 0``. Measured over all normal
  floats: 4.07e-7 and 2.72e-7."""
  from ppool_jax.ops.f32_math import log, log2_f32_poly
  x = _positive_float32_sample()
  fn, ref_fn, bound, rel = ((log2_f32_poly, np.log2, 4.1e-7, 2.0**-24) if base2 else
                            (log, np.log, 2.9e-7, 2.0**-23))
  got = np.asarray(jax.jit(fn)(jnp.asarray(x)), np.float64)
  ref = ref_fn(x.astype(np.float64))
  np.testing.assert_array_less(np.abs(got - ref), bound + rel * np.abs(ref))
  assert got[x == 1.0][0] == 0.0
  if base2:
    k = np.arange(-126, 128)
    np.testing.assert_array_equal(jax.jit(fn)(jnp.asarray(2.0**k, jnp.float32)), k)


def test_float32_log2_is_monotone_where_its_pieces_meet():
  """The gradient passes' weights are ``exp(a (log z - log m))`` for ``z <= m``: a log that
  decreased somewhere would give a weight above 1 (at a huge alpha, an overflow). Checked on
  every float within 4096 steps of each binade's two seams (``m = sqrt(1/2)`` and ``m = 1``,
  where the exponent and the polynomial's argument jump), down to 0 (subnormals and 0 read
  as ``-127`` to ``-126``, finite)."""
  from ppool_jax.ops.f32_math import log2_f32_poly
  seams = np.concatenate([np.arange(0, 255) << 23, ((np.arange(0, 254) << 23) + 0x3504F3)])
  bits = (seams[:, None] + np.arange(-4096, 4096)[None, :]).astype(np.int32)
  bits = np.unique(bits[(bits >= 0) & (bits < 0x7F800000)])  # finite floats >= 0
  x = bits.view(np.float32)
  y = np.asarray(jax.jit(log2_f32_poly)(jnp.asarray(x)))
  assert np.all(np.diff(y) >= 0), x[1:][np.diff(y) < 0][:5]
  assert y[0] == -127.0 and np.all(np.isfinite(y))


def test_float32_exp2_and_exp_relative_error():
  """``exp2_f32_poly`` (the inference forward's weights) and ``exp_nonpositive`` (the
  gradient passes'): relative error, the exact points and the underflow to 0, and the
  custom derivative ``d exp(y) = exp(y) dy``."""
  from ppool_jax.ops.f32_math import exp2_f32_poly, exp_nonpositive
  y = np.concatenate([np.linspace(-125.9, 0, 1_000_001), -np.arange(126) - 0.5,  # ties
                      -np.geomspace(1e-30, 125, 10_000)]).astype(np.float32)
  got = np.asarray(jax.jit(exp2_f32_poly)(jnp.asarray(y)), np.float64)
  assert np.max(np.abs(got / 2.0 ** y.astype(np.float64) - 1)) < 2e-7  # 1.6-1.8e-7 measured
  k = -np.arange(126, dtype=np.float32)
  np.testing.assert_array_equal(jax.jit(exp2_f32_poly)(jnp.asarray(k)), 2.0 ** k)  # 2^0 = 1
  np.testing.assert_array_equal(
      jax.jit(exp2_f32_poly)(jnp.float32([-126.6, -127, -1e4, -np.inf])), 0.0)
  y = y[y >= -87]
  got = np.asarray(jax.jit(exp_nonpositive)(jnp.asarray(y)), np.float64)
  ref = np.exp(y.astype(np.float64))  # error: the polynomial's plus rounding y log2(e)
  np.testing.assert_array_less(np.abs(got / ref - 1), 1.5e-7 * (1 + np.abs(y)))
  g = jax.jit(jax.vmap(jax.grad(exp_nonpositive)))(jnp.asarray(y[::100]))
  np.testing.assert_array_equal(g, got[::100].astype(np.float32))


def test_no_alpha_shape_stores_more_than_the_dense_map():
  x = jnp.zeros((4, 64, 64, 32), jnp.float32)
  out_bytes = 4 * 32 * 32 * 32 * 4
  for window, padding in (((2, 2), "VALID"), ((3, 3), "SAME")):
    ct = jnp.zeros((4, 32, 32, 32))

    def temp(fn, a, outputs=False):  # outputs too: a dense alpha's gradient map is an
      m = jax.jit(fn).lower(x, a).compile().memory_analysis()  # output, a broadcast one's a temp
      return m.temp_size_in_bytes + (m.output_size_in_bytes if outputs else 0)

    pool = lambda x, a: p_pool(x, a, window, (2, 2), padding)
    grad = lambda x, a: jax.grad(lambda x, a: jnp.vdot(pool(x, a), ct), argnums=(0, 1))(x, a)
    dense = temp(grad, jnp.ones((4, 32, 32, 32)), outputs=True)
    for a in (jnp.ones(()), jnp.ones((32,)), jnp.ones((1, 32, 32, 1))):
      # The inference path stores nothing: its loop reads the unpadded input (before
      # issue #23 item 2, SAME stored the zero-padded input, 4 * 66 * 66 * 32 * 4 bytes);
      # the backward with a broadcast alpha stores at most one output-sized array more than
      # the dense case (not one array per member: +4-9 arrays before issue #23).
      assert temp(pool, a) == 0, (window, a.shape)
      stored = temp(grad, a, outputs=True)
      assert stored <= dense + 1.1 * out_bytes, (window, a.shape, stored, dense)


def test_float32_second_order_matches_float64():
  # Grad-of-grad differentiates the passes, so the float32 CPU log needs a derivative
  # (its bit casts have none: before issue #23 item 2 this was off by 30%).
  rng = np.random.default_rng(6)
  x, a = rng.uniform(0.3, 2.0, (1, 5, 5, 2)), np.array([0.7, 3.0])

  def second(x, a):
    f = lambda x, a: jnp.sum(jnp.sin(p_pool(x, a, (3, 3), (2, 2), "SAME")))
    g = lambda x, a: jnp.sum(jnp.cos(jax.grad(f, argnums=(0, 1))(x, a)[0]))
    return jax.grad(g, argnums=(0, 1))(x, a)

  got = second(jnp.asarray(x, jnp.float32), jnp.asarray(a, jnp.float32))
  with jax.enable_x64(True):
    ref = second(jnp.asarray(x), jnp.asarray(a))
  for g, r in zip(got, ref):
    np.testing.assert_allclose(np.float64(g), np.asarray(r), rtol=1e-4, atol=1e-5)
