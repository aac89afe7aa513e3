"""Polynomial pooling (P-pooling), Wei et al., CVPR 2019, with analytic gradients.

For a pooling window ``R = {x_1..x_N}`` of non-negative values (Eq. 1)::

    y = sum_i x_i^(a+1) / sum_i x_i^a = sum_i w_i x_i,    w_i = x_i^a / sum_j x_j^a.

The weights are a softmax of ``a * log x_i``; computing them relative to the
window maximum ``m`` (``w_i = (x_i/m)^a / sum_j (x_j/m)^a``) keeps every term in
``[0, 1]``, so the operator is finite at any ``a >= 0`` (the paper had to clip
``a`` at 35 because ``x^a`` overflowed). The gradients of Eq. 3 and Eq. 4 become::

    dy/dx_i = w_i * (1 + a * (x_i - y) / x_i)
    dy/da   = sum_i w_i * (x_i - y) * log(x_i / m)

and are evaluated in the same normalised form in a ``jax.custom_vjp``.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from ppool_jax.ops.windows import (Padding, WindowGeometry, fold, masked, scatter_offsets,
                                   window_geometry, window_members)


def p_pool(inputs: jax.Array, alpha, window_shape: Sequence[int],
           strides: Sequence[int] | None = None, padding: Padding = "VALID", *,
           shift: bool | str = False) -> jax.Array:
  """Polynomial pooling (Eq. 1, or Eq. 2 with ``shift="map"``/``True``).

  Follows ``flax.linen.max_pool``: channels-last inputs ``(*batch, *spatial, C)``
  with any number (also zero) of leading batch dims and a 1-D, 2-D or 3-D window.

  Args:
    inputs: floating array ``(*batch, *spatial, C)``; non-negative unless
      ``shift=True``. ``bfloat16``/``float16`` are computed in ``float32`` and the
      result cast back.
    alpha: the polynomial order ``a >= 0``: a scalar, a per-channel ``(C,)``
      vector, or any array broadcastable to the output shape (e.g. the dense
      per-position map of the P-pooling side branch). Its gradient comes back in
      alpha's own shape, summed over broadcast dims.
    window_shape: window size per spatial dim.
    strides: stride per spatial dim (default 1, as in flax).
    padding: ``"VALID"``, ``"SAME"`` or ``(low, high)`` pairs per spatial dim.
      Padded positions are excluded from every window: they never carry weight,
      so ``alpha = 0`` is average pooling that does not count padding.
    shift: Eq. 2 for inputs that may be negative: every window is pooled as
      ``f(R - m) + m`` with ``f`` Eq. 1 and ``m`` a minimum.

      * ``False``/``None``: Eq. 1 (inputs must be non-negative).
      * ``"map"`` (or ``True``): the paper's Eq. 2, ``m`` = the minimum of the whole
        feature map, per image and channel (over all spatial dims). Its gradient is
        routed to the map's argmin, split equally between ties. Only the window(s)
        holding the map minimum contain a zero after the shift, so ``f`` stays a
        genuine mix of all members: continuous at ``alpha = 0`` elsewhere.
      * ``"window"``: ``m`` = each window's own minimum (gradient to the window's
        argmin, split between ties). Translation-equivariant per window and blind to
        outliers elsewhere, but a different function: the window minimum always
        weighs 0 for ``alpha > 0``, so 2-member windows are exact max pooling (zero
        gradient w.r.t. alpha) for every ``alpha > 0``, and ``alpha -> 0+`` gives the
        mean of the other ``N - 1`` members, not the average (a jump at ``alpha = 0``).

  Returns:
    ``(*batch, *out_spatial, C)`` in ``inputs.dtype``, each value within
    ``[min R, max R]`` of its window.

  Limits (exact, forward and backward):
    * ``alpha = 0``: average pooling (gradient ``1/N`` per valid member).
    * ``alpha -> inf``: max pooling. Finite ``alpha`` large enough that
      ``(x_i/m)^alpha`` underflows for every non-maximal member (about 1e3-1e4 for
      typical activations, any value up to float max is accepted) gives exactly
      ``max_pool``'s values and gradients; tied maxima share the gradient equally.

  Zeros (conventions where the true derivative is unbounded or undefined):
    * An all-zero window pools to 0; its gradient w.r.t. each member is ``1/N``
      (a subgradient: equal to both average and max pooling's) and w.r.t. alpha is 0.
    * ``dy/dx_i`` at ``x_i = 0`` in a window with a positive member is exact for
      ``alpha = 0`` (``1/N``), ``alpha = 1`` (``-y / sum_j x_j``) and ``alpha > 1``
      (0). For ``0 < alpha < 1`` it is ``-inf``; we return 0, the value ReLU's own
      gradient at 0 would zero out anyway.
    * ``dy/dalpha`` is evaluated as ``sum_i w_i (x_i - y) log(x_i / m)`` (equal to
      Eq. 4) with zero members' terms taken as 0: their limit as ``x_i -> 0`` at
      any ``alpha > 0``. This only matters at ``alpha = 0``, where the true
      one-sided derivative is ``+inf``; the convention stays scale-equivariant.

  Differentiation: ``grad``, ``vjp`` and reverse-over-reverse (grad of grad) work
  under ``jit``, ``vmap`` and ``pmap``. Forward mode (``jvp``, ``jacfwd``) is not
  available, as for any ``jax.custom_vjp`` function.

  Raises:
    TypeError: integer or boolean ``inputs``.
    ValueError: wrong rank, window larger than the padded input, non-positive
      strides, malformed padding, ``alpha`` not broadcastable to the output; and,
      when the values are concrete, non-finite or negative ``alpha`` or negative
      ``inputs`` with ``shift=False``; an unknown ``shift``.

  Value checks run in NumPy on the host and only on concrete arrays: also on
  constants closed over by a ``jit``/``grad``/``vmap``/``pmap``-traced function, never
  on traced values (those are not checked, so the call never fails inside a trace
  for want of a concrete value).
  """
  if not hasattr(inputs, "dtype"):
    inputs = jnp.asarray(inputs)
  if not jnp.issubdtype(inputs.dtype, jnp.floating):
    raise TypeError(f"p_pool: inputs must be a floating dtype, got {inputs.dtype}; "
                    "cast integer images with .astype(jnp.float32).")
  geom = window_geometry(inputs.shape, window_shape, strides, padding, op_name="p_pool")
  alpha = jnp.asarray(alpha)
  if not jnp.issubdtype(alpha.dtype, jnp.floating):
    alpha = alpha.astype(_compute_dtype(inputs.dtype))
  try:
    broadcast = jnp.broadcast_shapes(alpha.shape, geom.out_shape)
  except ValueError:
    broadcast = None
  if broadcast != geom.out_shape:
    raise ValueError(f"p_pool: alpha of shape {alpha.shape} does not broadcast to the output "
                     f"shape {geom.out_shape} (scalar, (C,)=({geom.channels},) or a map "
                     "broadcastable to (*batch, *out_spatial, C)).")
  mode = _shift_mode(shift)
  _check_concrete_values(inputs, alpha, mode)
  return _p_pool(inputs, alpha, geom, mode)


def _compute_dtype(dtype):
  return jnp.promote_types(dtype, jnp.float32)


def _shift_mode(shift) -> str | None:
  """``None`` (Eq. 1), ``"map"`` (Eq. 2, the paper's) or ``"window"``."""
  if shift is None or shift is False:
    return None
  if shift is True:
    return "map"
  if isinstance(shift, str) and shift in ("map", "window"):
    return shift
  raise ValueError(f"p_pool: shift must be False, True, 'map' or 'window', got {shift!r}.")


def host_values(x) -> np.ndarray | None:
  """``x`` as a NumPy array when its values are known (a concrete array, also one
  closed over by a traced function), else ``None`` (a tracer). Never stages an op
  into a trace, so checks built on it cannot fail with a tracer conversion error."""
  if isinstance(x, jax.core.Tracer):
    return None
  return np.asarray(x)


def _check_concrete_values(inputs, alpha, mode):
  a = host_values(alpha)
  if a is not None:
    a = a.astype(np.float64)
    if not np.all(np.isfinite(a)):
      raise ValueError("p_pool: alpha must be finite, got non-finite values (use a large finite "
                       "alpha, e.g. 1e6, for max pooling).")
    if np.any(a < 0):
      raise ValueError(f"p_pool: alpha must be >= 0, got min {a.min():g}.")
  if mode is None:
    x = host_values(inputs)
    if x is not None and x.size and x.min() < 0:
      raise ValueError(f"p_pool: inputs must be non-negative for Eq. 1 (min is "
                       f"{float(x.min()):g}); pass shift='map' for Eq. 2 on signed inputs.")


class _Windows:
  """The members of every window of ``x``, one strided slice per window offset
  (each of output shape), with the window statistics every pass needs.

  Reducing over offsets with elementwise ops lets XLA fuse a pass into one loop
  instead of materialising a ``(*out, k*k)`` patch tensor.
  """

  def __init__(self, x: jax.Array, geom: WindowGeometry, mode: str | None):
    self.members, self.masks = window_members(x, geom)
    hi = fold(jnp.maximum, masked(self.members, self.masks, -jnp.inf))
    if mode == "window":
      self.low = fold(jnp.minimum, masked(self.members, self.masks, jnp.inf))
    elif mode == "map":  # (*batch, 1, ..., 1, C): broadcasts against every offset
      self.low = jnp.min(x, axis=_spatial_axes(x, geom), keepdims=True)
    else:
      self.low = None
    # Values relative to a minimum (Eq. 2) are non-negative by construction.
    self.top = hi if self.low is None else hi - self.low
    self.log_top = jnp.log(jnp.where(self.top > 0, self.top, 1))

  def weight(self, i, alpha):
    """Shifted member values and unnormalised weights ``(z_i / m)^alpha``, exactly 1
    at the window maximum and 0 at padding."""
    z = self.shifted(i)
    pos = z > 0
    log_z = jnp.log(jnp.where(pos, z, 1))
    e = jnp.where(z == self.top, 1.0,
                  jnp.where(pos, jnp.exp(alpha * (log_z - self.log_top)),
                            jnp.where(alpha == 0, 1.0, 0.0)))
    return z, pos, log_z, self.mask(i, e)

  def shifted(self, i):
    v = self.members[i]
    return v if self.low is None else v - self.low

  def mask(self, i, v):
    mask = self.masks[i]
    return v if mask is None else jnp.where(mask, v, 0.0)


def _spatial_axes(x, geom: WindowGeometry) -> tuple[int, ...]:
  nb = x.ndim - geom.ndim - 1
  return tuple(range(nb, nb + geom.ndim))


def _forward(x, alpha, geom, mode, with_alpha_grad=False):
  cdt = _compute_dtype(x.dtype)
  win = _Windows(x.astype(cdt), geom, mode)
  a = alpha.astype(cdt)
  sums = {"e": [], "ez": [], "el": [], "ezl": []}
  for i in range(len(win.members)):
    z, pos, log_z, e = win.weight(i, a)
    sums["e"].append(e)
    sums["ez"].append(e * z)
    if with_alpha_grad:
      # log(z / m), with zero members' terms taken as 0 (the documented convention).
      log_r = jnp.where(pos, log_z - win.log_top, 0.0)
      sums["el"].append(e * log_r)
      sums["ezl"].append(e * z * log_r)
  s0 = fold(jnp.add, sums["e"])  # >= 1: the window maximum always weighs 1.
  f = fold(jnp.add, sums["ez"]) / s0
  y = f if win.low is None else f + win.low
  if not with_alpha_grad:
    return y, f, s0, None
  # Eq. 4: df/da = sum_i w_i (z_i - f) log(z_i / m), accumulated in the same pass
  # as f, so the backward pass needs no second set of exponentials for alpha.
  df_da = (fold(jnp.add, sums["ezl"]) - f * fold(jnp.add, sums["el"])) / s0
  return y, f, s0, df_da


@partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _p_pool(x, alpha, geom, mode):
  y, _, _, _ = _forward(x, alpha, geom, mode)
  return y.astype(x.dtype)


def _p_pool_fwd(x, alpha, geom, mode):
  y, f, s0, df_da = _forward(x, alpha, geom, mode, with_alpha_grad=True)
  # Residuals are output-sized (no patch tensor) and stay in the compute dtype:
  # the bfloat16 output is too coarse for the (x_i - y) differences of Eq. 3.
  return y.astype(x.dtype), (x, alpha, f, s0, df_da)


def _p_pool_bwd(geom, mode, res, ct):
  x, alpha, f, s0, df_da = res
  cdt = f.dtype
  ct = ct.astype(cdt)
  g_alpha = _sum_to_shape(ct * df_da, alpha.shape)
  xc = x.astype(cdt)
  win = _Windows(xc, geom, mode)
  a = alpha.astype(cdt)
  m = win.top
  dz = []
  for i in range(len(win.members)):
    z, pos, _, e = win.weight(i, a)
    w = e / s0
    safe_z = jnp.where(pos, z, 1)
    # Eq. 3 as w_i (1 + a (z_i - f) / z_i); at z_i = 0 the a = 1 term stays finite
    # (-f / sum z) and 0 < a < 1 takes the documented convention 0.
    at_zero = jnp.where((a == 1) & (m > 0), -f / (jnp.where(m > 0, m, 1) * s0), 0.0)
    dz.append(win.mask(i, w + jnp.where(pos, a * w * (z - f) / safe_z, at_zero)))
  if mode == "window":
    # Eq. 2 adds min R back: d/dx of the window minimum is routed to its argmin,
    # split between ties, carrying 1 - sum_i df/dz_i.
    is_min = [(v == win.low) if mk is None else (v == win.low) & mk
              for v, mk in zip(win.members, win.masks)]
    n_min = fold(jnp.add, [b.astype(cdt) for b in is_min])
    rest = (1.0 - fold(jnp.add, dz)) / n_min
    dz = [g + jnp.where(b, rest, 0.0) for g, b in zip(dz, is_min)]
  gx = scatter_offsets([ct * g for g in dz], geom)
  if mode == "map":
    # The map minimum enters every window of its image and channel: its gradient,
    # sum over windows of ct * (1 - sum_i df/dz_i), goes to the map's argmin (split
    # between ties).
    axes = _spatial_axes(xc, geom)
    rest = jnp.sum(ct * (1.0 - fold(jnp.add, dz)), axis=axes, keepdims=True)
    is_min = (xc == win.low).astype(cdt)
    gx = gx + is_min * (rest / jnp.sum(is_min, axis=axes, keepdims=True))
  return gx.astype(x.dtype), g_alpha.astype(alpha.dtype)


def _sum_to_shape(g: jax.Array, shape: tuple[int, ...]) -> jax.Array:
  """Sums a broadcast gradient back to the shape of the broadcast operand."""
  g = g.sum(axis=tuple(range(g.ndim - len(shape))))
  axes = tuple(i for i, d in enumerate(shape) if d == 1 and g.shape[i] != 1)
  return g.sum(axis=axes, keepdims=True).reshape(shape)


_p_pool.defvjp(_p_pool_fwd, _p_pool_bwd)
