"""experiments/bench/forward_floor.py (issue #23's forward floor): it fits the package's
``log2`` / ``exp2`` coefficients, its fits are as accurate as its table says, its fitted
p_pool rows run the fits (a cached trace would silently time the package's forward) and
p_pool is the package's again afterwards; its bfloat16 rows time bfloat16 ops and judge
them by correct rounding, which it computes right."""


import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np

from support import bench_module
from ppool_jax import p_pool
from ppool_jax.ops import f32_math


def _forward_floor():
  return bench_module("forward_floor")


def test_the_package_polynomials_are_the_benchmarks_fits():
  """``f32_math``'s float32 coefficients are ``fitted_log2(7)`` / ``fitted_exp2(5)`` (where
  they come from), and every fit evaluates within its stated error (plus float32 rounding)
  through the package's functions."""
  ff = _forward_floor()
  assert ff.fitted_log2(7)[0] == tuple(float(np.float32(c)) for c in f32_math._LOG2_POLY)
  assert ff.fitted_exp2(5)[0] == tuple(float(np.float32(c)) for c in f32_math._EXP2_POLY)
  assert ff.fitted_log2(5)[0] == tuple(float(np.float32(c)) for c in f32_math._LOG2_POLY_BF16)
  assert ff.fitted_exp2(3)[0] == tuple(float(np.float32(c)) for c in f32_math._EXP2_POLY_BF16)
  x = np.geomspace(1e-30, 1e4, 200_001, dtype=np.float32)
  y = np.linspace(-40.0, 0.0, 100_001, dtype=np.float32)
  for ld, ed in {(7, 5), ff.BF16_OTHERS_FIT, *ff.FITS["float32"], *ff.FITS["bfloat16"]}:
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
  assert len(rows) == 8 + len(ff.FITS["float32"]) and rows[0][2:5] == (1.0, 1.0, 1.0)
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


def test_bfloat16_rows_time_bfloat16_ops_and_count_misrounded_outputs():
  """The bfloat16 table: every op reads and returns bfloat16 (a float32 op would time
  other memory traffic), the fitted rows run their fits, and the error column counts
  outputs that are not Eq. 1 correctly rounded: more for a cruder fit, never more than 1 ulp
  off for the fits it times."""
  ff = _forward_floor()
  shape = (1, 8, 8, 8)
  rows = ff.rows(shape, repeats=22, dtype="bfloat16")
  names = [r[0] for r in rows]
  assert names[:7] == [
      "max_pool", "members' sum", "exp2(a log2 z) (f32_math)", "exp2(a log2 z) (XLA)",
      "exp2(a log2(z / max)), 3 others (f32_math)",
      "exp2(a log2(z / max)), 3 others, log2 degree 5, exp2 degree 3", "p_pool forward"]
  assert len(rows) == 11 == 7 + len(ff.FITS["bfloat16"])
  assert all(ms > 0 and lo <= ratio <= hi for _, ms, ratio, lo, hi, _ in rows)
  x, a = ff._inputs(shape, "bfloat16", 0), jnp.float32(5)
  for name, (fn, _) in ff.ops("bfloat16").items():  # the ops the table times
    assert jax.eval_shape(fn, x, a).dtype == jnp.bfloat16, name
  # The error column: p_pool's bfloat16 fits (5, 3) misround more outputs than the float32
  # fits (7, 5) and fewer than (4, 2), every one by 1 ulp at most.
  (package, ulps), (float32_fits, _), *_, (crude, _) = [r[5] for r in rows[6:]]
  assert ulps == 1 and float32_fits < package < 1e-3 < crude and all(
      r[5][1] == 1 for r in rows[7:])
  # Each fitted row ran its fit (a cached trace of the package's forward would repeat its
  # share): the shares all differ.
  shares = [r[5][0] for r in rows[6:]]
  assert len(set(shares)) == len(shares)


def test_correct_rounding_to_bfloat16_beats_the_float32_route():
  """``_round_to_bf16`` rounds float64 once: a value just above the midpoint of two
  bfloat16 numbers that float32 rounds onto the midpoint (and float32 -> bfloat16 then
  rounds to even, down) goes up; ordinary values equal ml_dtypes' conversion."""
  ff = _forward_floor()
  above_midpoint = np.array([1.0 + 2.0**-8 + 2.0**-40])  # above the midpoint of 1 and 1 + 2^-7
  assert np.float32(above_midpoint[0]) == 1.0 + 2.0**-8  # float32 lands on the midpoint ...
  assert float(ml_dtypes.bfloat16(np.float32(above_midpoint[0]))) == 1.0  # ... which ties to even
  assert float(ff._round_to_bf16(above_midpoint)[0]) == 1.0 + 2.0**-7  # once: up, as it should
  vals = np.random.default_rng(0).uniform(0, 4, 10_000).astype(np.float32)  # rounded once
  np.testing.assert_array_equal(ff._round_to_bf16(vals.astype(np.float64)).astype(np.float64),
                                vals.astype(ml_dtypes.bfloat16).astype(np.float64))
