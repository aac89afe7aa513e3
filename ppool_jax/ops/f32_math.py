"""float32 ``log`` and ``exp2`` from elementwise arithmetic for p_pool's fused loops on CPU.

Inside XLA:CPU's fused per-member loops its own ``log`` and ``exp`` are the cost of the
operator (issue #23); these vectorise as plain arithmetic. Other dtypes and platforms use
``jnp.log`` / ``jnp.exp2``.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
from jax import lax


# Cephes' logf: x = 2^e * m with m in [sqrt(1/2), sqrt(2)), log(m) by a degree-9 polynomial
# in m - 1 (error <= 1 ulp; XLA:CPU's log measured 1.1 ulp) and e * log 2 in two parts.
_LOG_POLY = (7.0376836292e-2, -1.1514610310e-1, 1.1676998740e-1, -1.2420140846e-1,
             1.4249322787e-1, -1.6668057665e-1, 2.0000714765e-1, -2.4999993993e-1,
             3.3333331174e-1)


def log_f32_poly(x, subnormals: bool = True):
  """``log(x)`` for float32 ``x > 0`` (any finite positive value, subnormals included)
  from elementwise arithmetic only, so it vectorises inside a fused loop; values
  ``<= 0`` give garbage (callers select them away).

  ``subnormals=False`` drops the subnormal path (identical results for normal ``x``;
  a subnormal reads as the smallest normal, 2^-126): the fused loops' guard ``z > 0``
  never passes a subnormal on XLA:CPU, which runs with denormals-are-zero.
  """
  bits = lax.bitcast_convert_type(x, jnp.int32)
  if subnormals:
    # A subnormal 2^-149 * n is read through its integer n (exact in float32): no float op
    # touches a subnormal, so the result holds where the CPU flushes them to zero.
    sub = (bits & 0x7F800000) == 0
    bits = jnp.where(sub, lax.bitcast_convert_type((bits & 0x007FFFFF).astype(jnp.float32),
                                                   jnp.int32), bits)
  else:
    bits = jnp.maximum(bits, 0x00800000)
  # x = 2^e * m with m in [sqrt(1/2), sqrt(2)): subtracting sqrt(1/2)'s bits carries into
  # the exponent field exactly when m would fall below sqrt(1/2) (no compare, no select).
  e = (bits - 0x3F3504F3) >> 23
  m = lax.bitcast_convert_type(bits - (e << 23), jnp.float32)
  if subnormals:
    e = e - jnp.where(sub, 149, 0)
  e = e.astype(jnp.float32)
  t = m - 1.0  # exact (Sterbenz)
  t2 = t * t
  p = jnp.float32(_LOG_POLY[0])
  for c in _LOG_POLY[1:]:
    p = p * t + c
  return t + (t * t2 * p - 2.12194440e-4 * e - 0.5 * t2) + 0.693359375 * e


@jax.custom_jvp
def log(x):
  """``log`` of a positive array. float32 on CPU takes ``log_f32_poly`` (normal range):
  inside the fused per-member loops XLA:CPU's ``log`` costs 1.7x a whole ``max_pool`` for
  4 members (the polynomial 1.2x; issue #23); other dtypes and platforms use ``jnp.log``.
  Its derivative is ``1 / x`` (the polynomial's bit casts have none): second-order
  gradients differentiate the passes that call it."""
  if x.dtype != jnp.float32:
    return jnp.log(x)
  return lax.platform_dependent(x, cpu=partial(log_f32_poly, subnormals=False),
                                default=jnp.log)


@log.defjvp
def _log_jvp(primals, tangents):
  (x,), (t,) = primals, tangents
  return log(x), t / x


# Cephes' exp2f: 2^y = 2^n * 2^f, n = round(y), f in [-1/2, 1/2] by a degree-6 polynomial.
_EXP2_POLY = (1.535336188319500e-4, 1.339887440266574e-3, 9.618437357674640e-3,
              5.550332471162809e-2, 2.402264791363012e-1, 6.931472028550421e-1)


def exp2_f32_poly(y):
  """``2^y`` for float32 ``y <= 0`` (``-inf`` included) from elementwise arithmetic; 0 below
  ``2^-127`` (XLA:CPU flushes subnormal results to zero anyway). ``2^0`` is exactly 1."""
  y = jnp.maximum(y, -127.0)
  n = jnp.floor(y + 0.5)
  f = y - n  # exact
  p = jnp.float32(_EXP2_POLY[0])
  for c in _EXP2_POLY[1:]:
    p = p * f + c
  scale = lax.bitcast_convert_type((n.astype(jnp.int32) + 127) << 23, jnp.float32)  # 0 at -127
  return (f * p + 1.0) * scale


def exp2_nonpositive(y):
  """``2^y`` for ``y <= 0``: ``exp2_f32_poly`` for float32 on CPU (4-9% faster forward
  than ``exp`` there: no range reduction by log 2, no overflow and NaN handling), else
  ``jnp.exp2``."""
  if y.dtype != jnp.float32:
    return jnp.exp2(y)
  return lax.platform_dependent(y, cpu=exp2_f32_poly, default=jnp.exp2)
