"""The forward and backward passes of :func:`ppool_jax.ops.p_pool` (a ``jax.custom_vjp``).

Eq. 1 with weights relative to the window maximum ``top`` (every term in ``[0, 1]``),
Eq. 3 and Eq. 4 in the same form; see ``p_pool``'s docstring for the conventions.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
from jax import lax
import numpy as np

from ppool_jax.ops.f32_math import exp2_nonpositive, exp_nonpositive, log, log2_primal
from ppool_jax.ops.regions import map_windows
from ppool_jax.ops.windows import (WindowGeometry, fold, from_pixel_grid, masked, pad_windows,
                                   pixel_memberships, to_pixel_grid, window_members,
                                   window_to_pixels)


def compute_dtype(dtype):
  """The dtype p_pool computes in: at least float32."""
  return jnp.promote_types(dtype, jnp.float32)


# How the passes are laid out (for speed and memory, not for the math):
# * Every pass over a window's members is one elementwise loop with a single output
#   (XLA:CPU materialises any exp/log that feeds two loops: one array per member).
#   Passes that share inputs would be merged by XLA's common-subexpression pass, so
#   each pass gets its own ``tag``: the (never selected) fill value of its log guard.
#   Measured (3x3/2 on (8, 128, 128, 64), fwd+bwd temp memory): 65 MiB with distinct tags,
#   205 MiB with one tag for all passes (max_pool: 167 MiB).
# * The input gradient is computed per pixel (``pixel_memberships``): each pixel's
#   term for each window it belongs to, with the per-window statistics shifted and
#   repeated onto the pixel grid. No scatter, no per-member arrays.
# * Two forwards. Without differentiation (``_forward``, the inference path) one loop reads
#   the unpadded input region by region (``map_windows``): no padded copy, no masks, no
#   residuals, one log and one exp per member. Under ``grad`` (``_forward_with_residuals``)
#   the loops read the padded input that the backward pass stores anyway and use
#   ``_weight``, the weights the backward recomputes (and grad-of-grad differentiates).


def _top_log(top):
  """``log(top)``, ``-inf`` for an all-zero window, by the members' ``log``: one function for
  both keeps ``log z - log top`` accurate near the maximum, where a huge alpha puts the weight
  (XLA's ``log`` here gave 5x larger alpha-gradient errors at alpha 1e4; issue #23). XLA
  recomputes it in the loops that read it (no slower, less 2x2/2 temp memory). The
  maximum's weight is set to 1 (``_weight``): the logs need not agree bit for bit."""
  return jnp.where(top > 0, log(jnp.where(top > 0, top, 1)), -jnp.inf)


def _weight(z, a, top, log_top, tag):
  """``(z / top)^a`` with the conventions of the docstring: exactly 1 at the maximum,
  0 at a zero member unless ``a = 0`` or the window is all zero.

  The maximum's weight is set to 1, not computed: the loops that recompute a weight must
  agree exactly (two loops' ``log`` may differ in the last bit, and ``a = 1e6`` turns
  that bit into a percent). Returns ``(pos, log(z / top) or 0, e)``.
  """
  pos = z > 0
  log_r = jnp.where(pos, log(jnp.where(pos, z, tag)) - log_top, 0.0)
  e = jnp.where(z == top, 1.0, jnp.where(
      pos, exp_nonpositive(a * log_r), jnp.where((a == 0) | (log_top == -jnp.inf), 1.0, 0.0)))
  return pos, log_r, e


class _Windows:
  """A window's members (strided slices of output shape of the padded input, see
  ``window_members``), their validity masks, their shift (Eq. 2), the shifted window
  maximum ``top`` and its ``log``: the view of the windows of the backward pass and of
  the forward pass that feeds it."""

  def __init__(self, x: jax.Array, geom: WindowGeometry, mode: str | None, low=None,
               top=None, log_top=None):
    self.members, self.masks = window_members(x, geom)
    if low is not None:
      self.low = low
    elif mode == "window":
      self.low = fold(jnp.minimum, masked(self.members, self.masks, jnp.inf))
    elif mode == "map":  # (*batch, 1, ..., 1, C): broadcasts against every offset
      self.low = jnp.min(x, axis=_spatial_axes(x, geom), keepdims=True)
    else:
      self.low = None
    if top is None:
      hi = fold(jnp.maximum, masked(self.members, self.masks, -jnp.inf))
      top = hi if self.low is None else hi - self.low
      log_top = _top_log(top)
    self.top, self.log_top = top, log_top

  def terms(self, a, tag):
    """Per member: ``(z, pos, log(z / top), weight)``, weight 0 at padding."""
    out = []
    for v, mask in zip(self.members, self.masks):
      z = v if self.low is None else v - self.low
      pos, log_r, e = _weight(z, a, self.top, self.log_top, tag)
      out.append((z, pos, log_r, e if mask is None else jnp.where(mask, e, 0.0)))
    return out


def _spatial_axes(x, geom: WindowGeometry) -> tuple[int, ...]:
  nb = x.ndim - geom.ndim - 1
  return tuple(range(nb, nb + geom.ndim))


# The inference forward (``_pooled``): ``y = (top + sum_i e_i z_i) / (1 + sum_i e_i)`` over the
# members other than the maximum, ``e_i = 2^(a log2(z_i / top))``. A knockout tournament
# (``_tournament``) finds ``top`` and leaves the ``N - 1`` others: 2(N - 1) max/min instead of
# the maximum's log and exp (for 2x2/2 a fourth of the transcendental work; issue #23). The
# ratio is a correctly rounded division, so a member tied with the maximum has ``z / top = 1``
# and weight exactly ``2^0 = 1`` at any alpha, and ``log2(z / top)`` carries one rounding of
# ``z / top`` where ``log2 z - log2 top`` carried the errors of two logs. A member below
# ``2^-126 top`` (the ratio flushes to 0 on XLA:CPU) reads as ``log2 = -127``: its weight
# is ``2^(-127 a)`` where the exact one is smaller, which shows only for ``a < 0.2``. A zero
# member's log is the finite ``_LOG_ZERO``, so the conventions of ``_weight`` need no more
# selects: ``a = 0`` gives ``2^0 = 1``, an all-zero window (``0 / 0``, selected away) gives
# every member ``2^0 = 1``, and any ``a >= _ALPHA_MIN`` sends a zero member's exponent
# ``<= -3e8`` to weight 0. Smaller positive alpha is raised to ``_ALPHA_MIN``: the positive
# members' weights are exactly 1 either way (``|a log2(z / top)| <= 1e-30 * 300``), the zero
# members' drop to 0 as documented. ``a`` is capped at the dtype's maximum, so that a traced
# ``inf`` gives ``a * 0 = 0`` at a tie: every other weight is 0 well before that.
_LOG_ZERO = -3.0e38
_ALPHA_MIN = 1e-30


def _tournament(zs):
  """``(max, others)``: the maximum of ``zs`` and the ``len(zs) - 1`` values that lost to
  it or to another member (each comparison keeps its larger value and sets aside the smaller).
  Selects, not ``jnp.maximum``/``minimum``: those add NaN handling."""
  rest, others = list(zs), []
  while len(rest) > 1:
    pairs = list(zip(rest[0::2], rest[1::2]))
    others += [jnp.where(p > q, q, p) for p, q in pairs]
    rest = [jnp.where(p > q, p, q) for p, q in pairs] + rest[2 * len(pairs):]
  return rest[0], others


def _pooled(zs, masks, a, out_dtype):
  """Eq. 1 over one region's members ``zs`` (non-negative), ``a`` the clamped alpha (see
  above); members outside their ``masks`` (padding; ``None``: no padding) weigh 0; weights as
  accurate as ``out_dtype`` needs (``f32_math.log2_primal``). Not for differentiation
  (``log2`` sees ``0 / 0``, ``d e / d a`` at ``a = 0`` sees ``_LOG_ZERO``): the primal only."""
  padded = any(m is not None for m in masks)
  top, others = _tournament(masked(zs, masks, -1.0))  # padding never wins
  if not others:
    return top
  es = [exp2_nonpositive(a * jnp.where(z > 0, log2_primal(z / top, out_dtype), _LOG_ZERO),
                         out_dtype) for z in others]
  if padded:
    es = [jnp.where(z < 0, 0.0, e) for z, e in zip(others, es)]
  y = (top + fold(jnp.add, [e * z for e, z in zip(es, others)])) / (1.0 + fold(jnp.add, es))
  return jnp.where(top < jnp.inf, y, top)  # tied infinities: inf / inf; Eq. 1 gives inf


def _forward(x, alpha, geom, mode):
  """Eq. 1 (Eq. 2 with a shift) in ``x.dtype``: the primal of ``p_pool_core``, the
  inference path (no gradient; never differentiated, also not by grad-of-grad).

  One fused loop over the output that reads ``x`` directly through ``map_windows`` (no
  padded copy, no masks; large padded windows: the padded input with masks) with
  ``_pooled``'s weights: per member other than the window maximum one division, one ``log``
  and one ``exp``. It stores nothing in float32: compiled temp memory 0
  (``shift="map"`` adds the ``(*batch, 1.., C)`` map minimum), no residuals; a bfloat16
  input with padding is cast to float32 once and stored (XLA sinks the members' casts
  into one; before, the padded float32 copy was stored for every dtype). A shared
  per-pixel log array (one log per pixel instead of one per member: 4.25 instead of 9 per
  output for 3x3/2) was measured slower than the logs in the loop: writing it and
  reading it back through nine slices costs more than the polynomial.
  """
  cdt = compute_dtype(x.dtype)
  xc = x.astype(cdt)
  a = alpha.astype(cdt)
  a = jnp.where(a > 0, jnp.maximum(a, _ALPHA_MIN), a)
  windows = [jnp.minimum(a, jnp.finfo(cdt).max)]
  if mode == "map":
    windows.append(jnp.min(xc, axis=_spatial_axes(xc, geom), keepdims=True))

  def pool(zs, masks, windows):
    aw, *low = windows
    if mode == "window":
      low = [fold(jnp.minimum, masked(zs, masks, jnp.inf))]
    if low:  # per member: x - low as one input-sized array would be stored
      zs = [z - low[0] for z in zs]
    # bfloat16's coarser weights only for Eq. 1: f + low can cancel (Eq. 2), and their 1e-4
    # error in f then became hundreds of bfloat16 ulps of a result near 0.
    f = _pooled(zs, masks, aw, cdt if low else x.dtype)
    return f + low[0] if low else f

  return map_windows(pool, xc, geom, windows).astype(x.dtype)


def _forward_with_residuals(x, alpha, geom, mode):
  """``_p_pool_fwd``'s forward: ``(y, f, windows)``, ``f`` the pooled shifted values.

  The backward pass reads the windows through the padded input and masks (``_Windows``);
  this pass shares that padded input (the same HLO, merged by XLA) and computes ``top``,
  ``log(top)`` and ``f`` with ``_weight``'s weights, those the backward recomputes and
  grad-of-grad differentiates. (``_forward``'s region loops measured no faster here, and
  the backward's pads of ``f`` and ``top`` split them into stored per-region arrays: one
  output-sized array more fwd+bwd temp memory for 3x3/2 SAME.)
  """
  cdt = compute_dtype(x.dtype)
  win = _Windows(x.astype(cdt), geom, mode)
  terms = win.terms(alpha.astype(cdt), tag=1.0)
  f = fold(jnp.add, [e * z for z, _, _, e in terms]) / fold(jnp.add, [e for *_, e in terms])
  # One barrier for the three residuals: XLA then schedules their loops together and the
  # fwd+bwd peak memory drops by one output-sized array (measured, issue #23 item 2).
  f, win.top, win.log_top = lax.optimization_barrier((f, win.top, win.log_top))
  y = f if win.low is None else f + win.low
  return y.astype(x.dtype), f, win


@partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def p_pool_core(x, alpha, geom, mode):
  return _forward(x, alpha, geom, mode)


def _p_pool_fwd(x, alpha, geom, mode):
  y, f, win = _forward_with_residuals(x, alpha, geom, mode)
  # Residuals are output-sized (no per-member arrays) and stay in the compute dtype:
  # the bfloat16 output is too coarse for the (x_i - y) differences of Eq. 3. sum_i e_i is
  # recomputed in the backward pass: stored, XLA:CPU would store every e_i with it.
  low = win.low if mode == "map" else None
  return y, (x, alpha, f, win.top, win.log_top, low)


def _p_pool_bwd(geom, mode, res, ct):
  x, alpha, f, top, log_top, map_low = res
  cdt = f.dtype
  xc = x.astype(cdt)
  a = alpha.astype(cdt)
  win = _Windows(xc, geom, mode, low=map_low, top=top, log_top=log_top)
  inv_s0 = 1.0 / fold(jnp.add, [e for *_, e in win.terms(a, tag=2.0)])  # s0 >= 1 (max: 1)
  k = ct.astype(cdt) * inv_s0
  # Eq. 4: dy/da = sum_i w_i (z_i - f) log(z_i / top), zero members' terms 0.
  g_alpha = k * fold(jnp.add, [e * ((z - f) * log_r) for z, _, log_r, e in win.terms(a, tag=4.0)])
  g_alpha = _sum_to_shape(g_alpha, alpha.shape)
  stats = [a, top, log_top, f, k]
  if mode == "window":
    at_zero = _zero_member_term(a, top, f, inv_s0)
    # Eq. 2 adds min R back: the window minimum gets 1 - sum_i df/dz_i, split
    # between tied minima.
    dz = []
    for (z, pos, _, e), mask in zip(win.terms(a, tag=5.0), win.masks):
      d = jnp.where(pos, (e + (a * e) * (z - f) / jnp.where(pos, z, 1)) * inv_s0,
                    e * inv_s0 + at_zero)
      dz.append(d if mask is None else jnp.where(mask, d, 0.0))
    sum_dz = fold(jnp.add, dz)
    is_min = [(v == win.low) if mk is None else (v == win.low) & mk
              for v, mk in zip(win.members, win.masks)]
    n_min = fold(jnp.add, [b.astype(cdt) for b in is_min])
    stats += [win.low, ct.astype(cdt) * (1.0 - sum_dz) / n_min]
  gx = _pixel_gradient(xc, geom, stats, map_low)
  if mode == "map":
    # The map minimum enters every window of its image and channel: it gets
    # sum over windows of ct (1 - sum_i df/dz_i) = sum(ct) - sum(gx), to the map's
    # argmin (split between ties).
    axes = _spatial_axes(xc, geom)
    rest = (jnp.sum(ct.astype(cdt), axis=axes, keepdims=True)
            - jnp.sum(gx, axis=axes, keepdims=True))
    is_min = (xc == map_low).astype(cdt)
    gx = gx + is_min * (rest / jnp.sum(is_min, axis=axes, keepdims=True))
  return gx.astype(x.dtype), g_alpha.astype(alpha.dtype)


def _zero_member_term(a, top, f, scale):
  """Eq. 3 at a zero member, ``-f / top`` (``a = 1``; 0 for other ``a``: the documented
  convention for ``0 < a < 1``) times ``scale``: ``1 / s0`` gives ``df/dz``, ``ct / s0`` its term."""
  return jnp.where((a == 1) & (top > 0), -(scale * f) / jnp.where(top > 0, top, 1), 0.0)


def _pixel_gradient(xc, geom, stats, map_low):
  """``sum over (window, member) of ct * df/dz`` on the input, as one fused per-pixel
  loop: each pixel adds its term for every window it belongs to.

  ``stats`` are per-window ``[a, top, log top, f, ct / s0]`` and, for ``shift="window"``,
  ``[window minimum, its cotangent share]``. The ``a = 1`` term at ``z = 0`` is computed here
  from them: passed in as a sixth statistic, XLA stored it (one output-sized array more).
  """
  xp = to_pixel_grid(xc, geom)
  if map_low is not None:
    xp = xp - map_low
  gx = 0.0
  stats = [pad_windows(v, geom) for v in stats]
  for q, mask in pixel_memberships(geom):
    a, top, log_top, f, k, *win_min = [window_to_pixels(v, geom, q) for v in stats]
    at_zero = _zero_member_term(a, top, f, k)
    z = xp - win_min[0] if win_min else xp
    pos, _, e = _weight(z, a, top, log_top, tag=6.0)
    # (a * e) first: at a huge alpha a non-maximal e is 0 and a * (z - f) / z overflows.
    g = jnp.where(pos, k * (e + (a * e) * (z - f) / jnp.where(pos, z, 1)), e * k + at_zero)
    if win_min:
      g = g + jnp.where(z == 0, win_min[1], 0.0)
    gx = gx + jnp.where(mask, g, 0.0)
  return from_pixel_grid(gx, geom)


def _sum_to_shape(g: jax.Array, shape: tuple[int, ...]) -> jax.Array:
  """Sums a broadcast gradient back to the shape of the broadcast operand.

  The sum over the broadcast dims is a matrix-vector product with ones, not a reduction:
  XLA:CPU fuses a reduction into the loop that computes ``g`` and then stores every
  window member's terms (4-9 output-sized arrays, issue #23); a dot reads ``g`` once.
  The channel dim is always kept through the dot, so a scalar alpha's sum is a dot to
  ``(C,)`` and a small reduction after it.
  """
  if g.shape == tuple(shape):
    return g
  full = (1,) * (g.ndim - len(shape)) + tuple(shape)
  keep = sorted({i for i, d in enumerate(full) if d != 1} | {g.ndim - 1})
  drop = [i for i in range(g.ndim) if i not in keep]
  kept = [g.shape[i] for i in keep]
  rows = jnp.transpose(g, drop + keep).reshape(-1, int(np.prod(kept)))
  summed = jnp.dot(jnp.ones((rows.shape[0],), g.dtype), rows,
                   precision=jax.lax.Precision.HIGHEST).reshape(kept)
  if full[-1] == 1:  # a scalar or a map without channels: the channel dim goes too
    summed = summed.sum(axis=-1, keepdims=True)
  return summed.reshape(shape)


p_pool_core.defvjp(_p_pool_fwd, _p_pool_bwd)
