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

import jax
import jax.numpy as jnp
import numpy as np

from ppool_jax.ops.p_pool_vjp import compute_dtype, p_pool_core
from ppool_jax.ops.windows import Padding, window_geometry

# The operator as one compiled program per geometry (inside a traced function it is inlined):
# called eagerly, p_pool's few hundred elementwise ops would otherwise each be dispatched and
# compiled on their own, seconds on the first call of every shape.
_p_pool_jit = jax.jit(p_pool_core, static_argnums=(2, 3))


def p_pool(inputs: jax.Array, alpha, window_shape: Sequence[int],
           strides: Sequence[int] | None = None, padding: Padding = "VALID", *,
           shift: bool | str = False) -> jax.Array:
  """Polynomial pooling (Eq. 1, or Eq. 2 with ``shift="map"``/``True``).

  Follows ``flax.linen.max_pool``: channels-last inputs ``(*batch, *spatial, C)``
  with any number (also zero) of leading batch dims and a 1-D, 2-D or 3-D window.

  Args:
    inputs: floating array ``(*batch, *spatial, C)``; non-negative unless
      ``shift=True``. ``bfloat16``/``float16`` are computed in ``float32`` and the
      result cast back. With ``shift=False`` a ``bfloat16`` result is one of the two
      ``bfloat16`` values around Eq. 1 and, for all but about 1e-3 of outputs, the nearer
      (on CPU without gradient its weights come from lower-degree polynomials, about 1e-4
      relative before rounding; under ``grad`` from the ``float32`` ones, 4e-5 of outputs
      misrounded).
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

  float32 range (XLA:CPU flushes subnormal numbers to zero): subnormal inputs count as
  zeros. Without differentiation the forward weighs a member ``x_i`` by
  ``2^(alpha log2(x_i / m))``, so a member below ``2^-126 m`` (a ratio under float32's
  normal range) counts as ``2^-127 m``. Its weight, exactly below ``2^(-126 alpha)``, is
  then ``2^(-127 alpha)``: the output changes only for ``alpha < 0.2`` (0.9% at
  ``alpha = 0.01`` for the window ``(1e30, 1e-10, 1, 0)``). The gradient path's forward
  (``log x_i - log m``) is exact there.

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
    alpha = alpha.astype(compute_dtype(inputs.dtype))
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
  return _p_pool_jit(inputs, alpha, geom, mode)


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
