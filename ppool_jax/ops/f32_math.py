"""float32 ``log2`` and ``exp2`` from elementwise arithmetic for p_pool's fused loops on CPU.

Inside XLA:CPU's fused per-member loops its own ``log`` and ``exp`` are the cost of the
operator (issue #23); these vectorise as plain arithmetic (XLA:CPU contracts their
multiply-adds into FMAs). Their polynomials are least-squares fits of the lowest degrees
that keep p_pool's outputs within 4e-7 relative of float64 (2.1e-7 measured by
``experiments/bench/forward_floor.py``, which fits them and times lower degrees); the
inference forward of a bfloat16 input takes lower degrees still (``_LOG2_POLY_BF16``). Other
dtypes and platforms use ``jnp.log`` / ``jnp.log2`` / ``jnp.exp`` / ``jnp.exp2``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax


_LOG2_E = np.float32(np.log2(np.e))
_LN_2 = np.float32(np.log(2))


# log2(1 + t) = t P(t) for t = m - 1 in [sqrt(1/2) - 1, sqrt(2) - 1): least squares on
# Chebyshev nodes, degree 7, exactly -1/2 and 1/2 at the two ends (so the pieces meet where m
# wraps from sqrt(2) to sqrt(1/2) in the next binade); error 4.1e-7 absolute in float64. Fitted
# by ``fitted_log2(7)`` in experiments/bench/forward_floor.py (tested to agree). Seven FMAs
# per value where Cephes' log took fourteen operations: the 2x2/2 forward is 0.5x max_pool's
# time faster, fwd+bwd 0.02-0.08x (issue #23).
_LOG2_POLY = (0.16601644, -0.27256098, 0.2986593, -0.35904533, 0.48036036, -0.7213718,
              1.4427017)


def log2_f32_poly(x, coefficients=None):
  """``log2(x)`` for normal float32 ``x > 0`` within ``4.1e-7 + 2^-24 |log2 x|`` (the fit's
  error and the rounding of the exponent's sum; checked over all normal floats on XLA:CPU),
  exact at powers of two. Monotone and finite over all floats ``x >= 0`` (checked likewise):
  a subnormal or zero ``x`` reads as ``-127 + log2(1 + x / 2^-126)`` (``-127`` at 0, no
  clamp: XLA:CPU flushes subnormal results to zero, so a ratio below ``2^-126`` arrives as
  0); negative values give garbage (callers select them away). Elementwise arithmetic
  only. ``coefficients``: another fit of ``P`` (default ``_LOG2_POLY``; the bounds above are
  its)."""
  bits = lax.bitcast_convert_type(x, jnp.int32)
  # x = 2^e * m with m in [sqrt(1/2), sqrt(2)): subtracting sqrt(1/2)'s bits carries into
  # the exponent field exactly when m would fall below sqrt(1/2) (no compare, no select).
  e = (bits - 0x3F3504F3) >> 23
  t = lax.bitcast_convert_type(bits - (e << 23), jnp.float32) - 1.0  # exact (Sterbenz)
  coefficients = _LOG2_POLY if coefficients is None else coefficients
  p = jnp.float32(coefficients[0])
  for c in coefficients[1:]:
    p = p * t + c
  return t * p + e.astype(jnp.float32)


# 2^y = 2^n * 2^f, n = round(y), f in [-1/2, 1/2], 2^f = 1 + f p(f) with p of degree 4: least
# squares in relative error on Chebyshev nodes, 1.04e-7 relative in float64; fitted by
# ``fitted_exp2(5)`` in experiments/bench/forward_floor.py. Cephes' exp2f takes degree 6:
# 0.2x max_pool's time more in the 2x2/2 forward (issue #23).
_EXP2_POLY = (0.0013218672, 0.009671698, 0.05550893, 0.24022238, 0.6931469)


def exp2_f32_poly(y, coefficients=None):
  """``2^y`` for float32 ``y <= 0`` (``-inf`` included) from elementwise arithmetic, within
  2e-7 relative; 0 for ``y < -126.5`` (XLA:CPU flushes subnormal results to zero anyway).
  Exact at integers (``2^0`` is exactly 1). ``coefficients``: another fit of ``p`` (default
  ``_EXP2_POLY``; the bound above is its)."""
  y = jnp.where(y > -127.0, y, -127.0)  # jnp.maximum adds NaN handling (y is never NaN)
  n = lax.round(y, lax.RoundingMethod.TO_NEAREST_EVEN)
  f = y - n  # exact, in [-1/2, 1/2]
  coefficients = _EXP2_POLY if coefficients is None else coefficients
  p = jnp.float32(coefficients[0])
  for c in coefficients[1:]:
    p = p * f + c
  # 2^n's bits by integer arithmetic: n + 1.5 * 2^23 + 127 holds n + 127 in [0, 127] in its
  # low mantissa bits, so its bits << 23 are 2^n (0 at n = -127). A float-to-int convert
  # costs six more ops per value (XLA saturates it and maps NaN to 0): a fifth of the 2x2/2
  # forward (issue #23).
  n_bits = lax.bitcast_convert_type(n + np.float32(1.5 * 2**23 + 127), jnp.int32)
  return (f * p + 1.0) * lax.bitcast_convert_type(n_bits << 23, jnp.float32)


def _cpu_float32(fn, x, fallback):
  """``fn(x)`` for float32 ``x`` on CPU, ``fallback(x)`` for other dtypes and platforms."""
  if x.dtype != jnp.float32:
    return fallback(x)
  return lax.platform_dependent(x, cpu=fn, default=fallback)


@jax.custom_jvp
def log(x):
  """``log`` of a positive array, the gradient passes': ``log2_f32_poly(x) log(2)`` for
  float32 on CPU, within ``2.9e-7 + 2^-23 |log x|`` (inside the fused per-member loops
  XLA:CPU's ``log`` costs 1.7x a whole ``max_pool`` for 4 members; issue #23). Its
  derivative is ``1 / x`` (the polynomial's bit casts have none): second-order gradients
  differentiate the passes that call it."""
  return _cpu_float32(lambda x: log2_f32_poly(x) * _LN_2, x, jnp.log)


@log.defjvp
def _log_jvp(primals, tangents):
  (x,), (t,) = primals, tangents
  return log(x), t / x


@jax.custom_jvp
def exp_nonpositive(y):
  """``exp(y)`` for ``y <= 0``, the backward pass's weights: ``2^(y log2(e))`` by
  ``exp2_f32_poly`` for float32 on CPU (3x3/2 fwd+bwd faster by 0.07-0.10x max_pool's time
  than with XLA's ``exp``; issue #23). Derivative ``exp(y)``."""
  return _cpu_float32(lambda y: exp2_f32_poly(y * _LOG2_E), y, jnp.exp)


@exp_nonpositive.defjvp
def _exp_nonpositive_jvp(primals, tangents):
  (y,), (t,) = primals, tangents
  e = exp_nonpositive(y)
  return e, e * t


# The inference forward's pair, base 2 (primal only: never differentiated). For a bfloat16
# output of Eq. 1 lower degrees suffice: log2 of degree 5 (2.1e-5 absolute) and exp2 of
# degree 3 (1.1e-4 relative), ``fitted_log2(5)`` / ``fitted_exp2(3)`` in forward_floor.py.
# p_pool's float32 result is then within about 1e-4 relative of float64 Eq. 1 (6e-5 on
# uniform inputs; under 1/16 of bfloat16's half ulp) and its bfloat16 output one of the two
# bfloat16 values around Eq. 1, misrounded for 5e-4 of outputs over alpha 0.5-1e4 (up to
# 1.2e-3 at small alpha; 5e-5 with the float32 fits). Speed: forward_floor_bf16.md and
# ab_bf16_forward.md (issue #23).
_LOG2_POLY_BF16 = (0.2438938, -0.3954099, 0.48879072, -0.72023094, 1.4424944)
_EXP2_POLY_BF16 = (0.054592825, 0.24221784, 0.6933686)


def log2_primal(x, out_dtype=jnp.float32):
  """``log2`` of a positive array by ``log2_f32_poly`` for float32 on CPU, with the lower
  degree that suffices where the result feeds a ``bfloat16`` ``out_dtype``."""
  coef = _LOG2_POLY_BF16 if out_dtype == jnp.bfloat16 else None
  return _cpu_float32(lambda x: log2_f32_poly(x, coef), x, jnp.log2)


def exp2_nonpositive(y, out_dtype=jnp.float32):
  """``2^y`` for ``y <= 0`` by ``exp2_f32_poly`` for float32 on CPU, with the lower degree
  that suffices where the result feeds a ``bfloat16`` ``out_dtype``."""
  coef = _EXP2_POLY_BF16 if out_dtype == jnp.bfloat16 else None
  return _cpu_float32(lambda y: exp2_f32_poly(y, coef), y, jnp.exp2)
