"""experiments/bench/forward_floor.py (issue #23's forward floor): it fits the package's
``log2`` / ``exp2`` coefficients, its fits are as accurate as its table says, its fitted
p_pool rows run the fits (a cached trace would silently time the package's forward) and
p_pool is the package's again afterwards."""

import sys

import jax
import jax.numpy as jnp
import numpy as np

from support import BENCH
from ppool_jax import p_pool
from ppool_jax.ops import f32_math


def _forward_floor():
  sys.path.insert(0, BENCH)
  try:
    import forward_floor
  finally:
    sys.path.remove(BENCH)
  return forward_floor


def test_the_package_polynomials_are_the_benchmarks_fits():
  """``f32_math``'s float32 coefficients are ``fitted_log2(7)`` / ``fitted_exp2(5)`` (where
  they come from), and every fit evaluates within its stated error (plus float32 rounding)
  through the package's functions."""
  ff = _forward_floor()
  assert ff.fitted_log2(7)[0] == tuple(float(np.float32(c)) for c in f32_math._LOG2_POLY)
  assert ff.fitted_exp2(5)[0] == tuple(float(np.float32(c)) for c in f32_math._EXP2_POLY)
  x = np.geomspace(1e-30, 1e4, 200_001, dtype=np.float32)
  y = np.linspace(-40.0, 0.0, 100_001, dtype=np.float32)
  for ld, ed in ((7, 5),) + ff.FITS:
    (lc, lerr), (ec, eerr) = ff.fitted_log2(ld), ff.fitted_exp2(ed)
    jax.clear_caches()
    with ff.fitted((lc, ec)):
      log2 = np.asarray(jax.jit(lambda x: f32_math.log2_f32_poly(x))(x), np.float64)
      exp2 = np.asarray(jax.jit(lambda y: f32_math.exp2_f32_poly(y))(y), np.float64)
    jax.clear_caches()
    ref = np.log2(x.astype(np.float64))
    err = np.abs(log2 - ref)
    assert np.all(err <= lerr + 1e-7 + 2.0**-24 * np.abs(ref)) and np.max(err) >= 0.5 * lerr
    rel = np.abs(exp2 / np.exp2(y.astype(np.float64)) - 1)
    assert np.max(rel) <= eerr + 1e-7 and np.max(rel) >= 0.5 * eerr, (ld, ed)
    assert exp2[-1] == 1.0


def test_rows_time_the_fits_and_leave_p_pool_unpatched():
  ff = _forward_floor()
  x = jax.random.uniform(jax.random.PRNGKey(0), (1, 8, 8, 8), jnp.float32)
  forward = jax.jit(lambda x: p_pool(x, 5.0, (2, 2), (2, 2)))
  before = np.asarray(forward(x))
  rows = ff.rows((1, 8, 8, 8), repeats=22)
  assert [r[0] for r in rows[:8]] == [
      "max_pool", "members' sum", "log2 (f32_math)", "exp2 (f32_math)",
      "exp2(a log2 z) (f32_math)", "exp2(a log2 z) (XLA)",
      "exp2(a log2(z / max)), 3 others (f32_math)", "p_pool forward"]
  assert len(rows) == 8 + len(ff.FITS) and rows[0][2:5] == (1.0, 1.0, 1.0)
  assert all(ms > 0 and lo <= ratio <= hi for _, ms, ratio, lo, hi, _ in rows)
  errors = [r[5] for r in rows[7:]]
  assert all(r[5] is None for r in rows[:7]) and errors[0] < 1e-6
  # The fits change the forward: their errors against float64 differ from the package's,
  # and the compiled fitted forward's output differs from p_pool's.
  assert len(set(errors)) == len(errors) and max(errors[1:]) > 2 * errors[0]
  fit = (ff.fitted_log2(5)[0], ff.fitted_exp2(4)[0])
  fitted = ff._compile(ff._p_pool, x, jnp.float32(5), fit)(x, jnp.float32(5))
  assert not np.array_equal(np.asarray(fitted), before)
  np.testing.assert_allclose(fitted, before, rtol=1e-4)
  # ... and leave no trace behind: a new trace of p_pool is the package's, bit for bit.
  assert np.array_equal(np.asarray(jax.jit(lambda x: p_pool(x, 5.0, (2, 2), (2, 2)))(x)), before)
