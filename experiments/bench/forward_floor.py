"""Benchmark: what bounds p_pool's 2x2/2 forward on a CPU (issue #23's forward target).

The inference forward finds each window's maximum by a knockout tournament and takes one
division, one ``log2`` and one ``exp2`` per other member (three of the four). This times, in
one process and in balanced orders against flax's max_pool (2x2/2 VALID, float32):

* ``members' sum``: the four strided members added, a memory pass like max_pool's;
* ``log2``, ``exp2``, ``exp2(a log2 z)``: the members' sum of each, with the package's float32
  polynomials (``f32_math``) and with XLA's ``jnp.log2`` / ``jnp.exp2``. ``exp2(a log2 z)``
  is the transcendental work alone (no window maximum, no selects, no weighted sum): what any
  XLA formulation that computes a weight per member pays at the least;
* ``exp2(a log2(z / max)), 3 others``: the same for the forward's three non-maximal members,
  with the tournament and the divisions: its transcendental work (no selects, no weighted sum);
* p_pool's inference forward (``jax.jit(p_pool)``; its ``log2`` a degree-7 and its ``exp2`` a
  degree-5 polynomial, fitted by ``fitted_log2`` / ``fitted_exp2``), and the same forward with
  lower-degree fits (``FITS``). Each p_pool row gives its largest relative error against a
  float64 evaluation of Eq. 1 over alpha in ``ALPHAS_CHECKED``. The lower-degree fits are
  measurements, not candidates: nothing checks that their ``log2`` is monotone, which the
  gradient passes rely on at huge alpha (``log z - log max <= 0``, ``p_pool_vjp._weight``).

``--dtype bfloat16`` asks the same of the bfloat16 forward (issue #23's unmet target:
bfloat16 2x2/2 forward <= 2.5x max_pool). The input is bfloat16, every op computes in
float32 and returns bfloat16, as p_pool does. A bfloat16 output needs far less accurate
weights: p_pool's bfloat16 forward takes a degree-5 ``log2`` and a degree-3 ``exp2``
(``f32_math._LOG2_POLY_BF16``), and ``FITS["bfloat16"]`` times it with the float32 fits (as
it ran before) and with other degrees (only the gradient passes need a monotone ``log``;
they keep the float32 fits). The transcendental work of the three non-maximal members is
timed also at ``BF16_OTHERS_FIT``, the degrees p_pool uses: what an XLA formulation with a
weight per member pays at the least for a bfloat16 output as accurate as p_pool's. A p_pool
row's accuracy is then the share of outputs that are not float64 Eq. 1 correctly rounded to
bfloat16 (``_round_to_bf16``), and the largest distance from it in bfloat16 ulps.

  XLA_FLAGS= python experiments/bench/forward_floor.py --repeats 22 --out experiments/results/forward_floor.md
  XLA_FLAGS= python experiments/bench/forward_floor.py --dtype bfloat16 --repeats 22 --out experiments/results/forward_floor_bf16.md
"""

from __future__ import annotations

import argparse
from unittest import mock

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np

from ppool_jax import p_pool
from ppool_jax.ops import f32_math
from ppool_jax.ops.p_pool_vjp import _tournament
from pool_op import interleaved
from timing import device_line, emit, load_average

# (log2 degree, exp2 degree) of the other fits timed per input dtype; the package's: (7, 5).
# For bfloat16 the package's are (5, 3) (``f32_math._LOG2_POLY_BF16``); (7, 5) is the float32
# fits' forward, which bfloat16 ran before.
FITS = {"float32": ((6, 5), (6, 4), (5, 4)), "bfloat16": ((7, 5), (6, 4), (4, 3), (4, 2))}
BF16_OTHERS_FIT = (5, 3)
ALPHAS_CHECKED = (0.5, 1.0, 5.0, 35.0, 300.0, 1e4)
ALPHA = 5.0  # the timed alpha (scalar)


def _chebyshev_nodes(lo, hi, n=4000):
  return np.cos(np.pi * (np.arange(n) + 0.5) / n) * (hi - lo) / 2 + (hi + lo) / 2


def fitted_log2(degree):
  """Coefficients (highest first, float32) of ``log2(1 + t) = t P(t)`` of ``degree`` for
  ``f32_math._LOG2_POLY``: least squares on Chebyshev nodes of ``[sqrt(1/2) - 1,
  sqrt(2) - 1]``, exactly ``-1/2`` and ``1/2`` at its ends; and the largest absolute error
  (float64). ``fitted_log2(7)`` gives the package's coefficients, ``fitted_log2(5)`` those for
  a bfloat16 output."""
  lo, hi = np.sqrt(0.5) - 1, np.sqrt(2) - 1
  t = _chebyshev_nodes(lo, hi)
  powers = lambda t: np.stack([np.asarray(t, np.float64) ** (k + 1) for k in range(degree)], -1)
  a, b, c = powers(t), np.log2(1 + t), powers(np.array([lo, hi]))
  # Least squares with the two ends as equality constraints (the KKT system).
  kkt = np.block([[2 * a.T @ a, c.T], [c, np.zeros((2, 2))]])
  coef = np.linalg.solve(kkt, np.concatenate([2 * a.T @ b, [-0.5, 0.5]]))[:degree]
  tt = np.linspace(lo, hi, 400_001)
  err = float(np.max(np.abs(powers(tt) @ coef - np.log2(1 + tt))))
  return tuple(float(np.float32(v)) for v in coef[::-1]), err


def fitted_exp2(degree):
  """Coefficients (highest first, float32) of ``2^f = 1 + f p(f)``, ``p`` of ``degree - 1``,
  for ``f32_math._EXP2_POLY``: least squares in relative error on Chebyshev nodes of
  ``[-1/2, 1/2]``; and the largest relative error (float64). ``fitted_exp2(5)`` gives the
  package's coefficients, ``fitted_exp2(3)`` those for a bfloat16 output."""
  powers = lambda f: np.stack([f ** (k + 1) for k in range(degree)], -1)
  f = _chebyshev_nodes(-0.5, 0.5)
  coef = np.linalg.lstsq(powers(f) / 2**f[:, None], 1 - 2**-f, rcond=None)[0]
  ff = np.linspace(-0.5, 0.5, 200_001)
  err = float(np.max(np.abs((1 + powers(ff) @ coef) / 2**ff - 1)))
  return tuple(float(np.float32(v)) for v in coef[::-1]), err


def fitted(fit):
  """A context in which ``f32_math``'s ``log2`` and ``exp2`` use the coefficients ``fit =
  (log2's, exp2's)`` (read when a function is traced), for float32 and bfloat16 outputs."""
  return mock.patch.multiple(f32_math, _LOG2_POLY=fit[0], _EXP2_POLY=fit[1],
                             _LOG2_POLY_BF16=fit[0], _EXP2_POLY_BF16=fit[1])


def _members(x):
  """The four members of each 2x2/2 window, in float32 (p_pool computes bfloat16 so)."""
  return [x[..., i::2, j::2, :].astype(jnp.float32) for i in range(2) for j in range(2)]


def _p_pool(x, a):
  return p_pool(x, a, (2, 2), (2, 2))


def _compile(fn, x, a, fit=None):
  """``fn`` compiled for ``(x, a)``, with ``fit``'s coefficients (see ``fitted``) while it is
  traced (JAX's trace caches are cleared before and after: a cached trace would not see the
  coefficients, or would keep them)."""
  if fit is None:
    return jax.jit(fn).lower(x, a).compile()
  jax.clear_caches()
  try:
    with fitted(fit):
      return jax.jit(fn).lower(x, a).compile()
  finally:
    jax.clear_caches()


def _inputs(shape, dtype, seed):
  return jax.random.uniform(jax.random.PRNGKey(seed), shape, jnp.float32).astype(dtype)


def forward_error(fit=None, dtype="float32", shape=(2, 64, 64, 64)):
  """The (fitted) p_pool forward against float64 Eq. 1 over ``ALPHAS_CHECKED``, on uniform
  [0, 1) inputs of ``dtype``. float32: the largest relative error. bfloat16: ``(share,
  ulps)``, the share of outputs that are not Eq. 1 correctly rounded to bfloat16 and the
  largest distance from it in bfloat16 ulps."""
  x = _inputs(shape, dtype, 5)
  members = [np.asarray(z, np.float64) for z in _members(x)]
  top = np.maximum.reduce(members)
  forward = _compile(_p_pool, x, jnp.float32(1), fit)
  worst, off, ulps = 0.0, 0, 0
  for alpha in ALPHAS_CHECKED:
    w = [(z / top) ** alpha for z in members]
    ref = sum(wi * z for wi, z in zip(w, members)) / sum(w)
    y = np.asarray(forward(x, jnp.float32(alpha)))
    if dtype == "float32":
      worst = max(worst, float(np.max(np.abs(y.astype(np.float64) - ref) / ref)))
    else:
      bits = _bf16_bits(y) - _bf16_bits(_round_to_bf16(ref))
      off, ulps = off + int(np.count_nonzero(bits)), max(ulps, int(np.max(np.abs(bits))))
  return worst if dtype == "float32" else (off / (top.size * len(ALPHAS_CHECKED)), ulps)


def _bf16_bits(v):
  return np.asarray(v, ml_dtypes.bfloat16).view(np.uint16).astype(np.int64)


def _round_to_bf16(ref):
  """Positive float64 ``ref`` correctly rounded to bfloat16: of the float32 route's result
  and its two neighbours, the nearest (going through float32 can round twice). An exact
  midpoint, which uniform inputs practically never give, goes to the lower neighbour, not
  to the even one."""
  bits = _bf16_bits(ref.astype(np.float32))
  cands = [np.maximum(bits + d, 0).astype(np.uint16).view(ml_dtypes.bfloat16) for d in (-1, 0, 1)]
  dist = np.stack([np.abs(c.astype(np.float64) - ref) for c in cands])
  return np.choose(np.argmin(dist, axis=0), cands)


def _others_weights(x, a):
  top, others = _tournament(_members(x))
  return sum(f32_math.exp2_nonpositive(a * f32_math.log2_primal(z / top)) for z in others)


def ops(dtype="float32"):
  """``{name: (fn, fit or None)}``: the table's ops, in its order, for inputs of ``dtype``;
  every ``fn(x, a)`` returns ``dtype``, as p_pool does."""
  lg = f32_math.log2_primal
  fns = {
      "max_pool": lambda x, a: nn.max_pool(x, (2, 2), (2, 2)),
      "members' sum": lambda x, a: sum(_members(x)),
      "log2 (f32_math)": lambda x, a: sum(lg(z) for z in _members(x)),
      "exp2 (f32_math)": lambda x, a: sum(f32_math.exp2_nonpositive(a * (z - 1))
                                          for z in _members(x)),
      "exp2(a log2 z) (f32_math)": lambda x, a: sum(f32_math.exp2_nonpositive(a * lg(z))
                                                    for z in _members(x)),
      "exp2(a log2 z) (XLA)": lambda x, a: sum(jnp.exp2(a * jnp.log2(z)) for z in _members(x)),
      _OTHERS: _others_weights,
  }
  in_dtype = lambda fn: lambda x, a: fn(x, a).astype(x.dtype)
  table = {name: (in_dtype(fn), None) for name, fn in fns.items()}
  if dtype == "bfloat16":  # the components' rows make way for the fitted transcendental work
    del table["log2 (f32_math)"], table["exp2 (f32_math)"]
    name = "exp2(a log2(z / max)), 3 others, log2 degree {}, exp2 degree {}"
    table[name.format(*BF16_OTHERS_FIT)] = (table[_OTHERS][0], _fit(*BF16_OTHERS_FIT))
  table["p_pool forward"] = (in_dtype(_p_pool), None)
  for ld, ed in FITS[dtype]:
    lerr, eerr = fitted_log2(ld)[1], fitted_exp2(ed)[1]
    name = f"p_pool forward, log2 degree {ld} ({lerr:.1e}), exp2 degree {ed} ({eerr:.1e})"
    table[name] = (table["p_pool forward"][0], _fit(ld, ed))
  return table


def rows(shape, repeats, dtype="float32"):
  """``(name, ms, median ratio, min, max, error or None)`` for every op of ``ops(dtype)``,
  the error ``forward_error``'s for the p_pool rows."""
  x, a = _inputs(shape, dtype, 0), jnp.float32(ALPHA)
  table = ops(dtype)
  errors = {name: forward_error(fit, dtype) for name, (_, fit) in table.items()
            if name.startswith("p_pool forward")}
  compiled = {name: _compile(fn, x, a, fit) for name, (fn, fit) in table.items()}
  timed = interleaved(compiled, {name: (x, a) for name in table}, repeats, "max_pool")
  return [(name, t * 1e3, float(np.median(r)), float(r.min()), float(r.max()), errors.get(name))
          for name, (t, r) in timed.items()]


_OTHERS = "exp2(a log2(z / max)), 3 others (f32_math)"


def _fit(log2_degree, exp2_degree):
  return fitted_log2(log2_degree)[0], fitted_exp2(exp2_degree)[0]


def _error_cell(err):
  if err is None:
    return ""
  return f"{err:.1e}" if isinstance(err, float) else f"{err[0]:.1e} ({err[1]} ulp at most)"


def main():
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument("--shape", default="8,128,128,64")
  parser.add_argument("--dtype", default="float32", choices=sorted(FITS))
  parser.add_argument("--repeats", type=int, default=22,
                      help="a multiple of 22, the length of the balanced design for 11 ops")
  parser.add_argument("--out", default=None, help="write a markdown table here")
  args = parser.parse_args()
  shape = tuple(int(s) for s in args.shape.split(","))
  if len(shape) != 4 or shape[1] % 2 or shape[2] % 2:
    parser.error(f"--shape {args.shape}: N,H,W,C with even H and W (the 2x2/2 windows tile it)")
  load = load_average()
  header = device_line(shape, args.repeats,
                       f", {args.dtype}, 2x2/2 VALID, alpha {ALPHA} (scalar)")
  error = ("max rel. error vs float64" if args.dtype == "float32" else
           "outputs not float64 Eq. 1 correctly rounded to bfloat16 (share; largest distance)")
  lines = [f"| op | time (ms) | time / max_pool (median) | range | {error} |",
           "|---|---|---|---|---|"]
  for name, ms, ratio, lo, hi, err in rows(shape, args.repeats, args.dtype):
    lines.append(f"| {name} | {ms:.2f} | {ratio:.2f} | {lo:.2f}-{hi:.2f} | {_error_cell(err)} |")
  header += f"; 1-min load average {load:.1f} at the start, {load_average():.1f} at the end"
  computed = "" if args.dtype == "float32" else (
      " Every op reads bfloat16, computes in float32 and writes bfloat16, as p_pool does.")
  emit([f"# The 2x2/2 forward's floor ({args.dtype})\n\n{header}\n",
        "Sums are over the four members of each window (the three non-maximal ones where "
        "the name says so); a ratio is the median over the "
        "repeats of the op's time over max_pool's in the same repeat, the range its minimum "
        f"and maximum.{computed} Errors: p_pool's output against float64 Eq. 1, alpha in "
        f"{list(ALPHAS_CHECKED)}; in a fit's name its largest error on its interval "
        "(absolute for log2, relative for exp2).\n", *lines], args.out)


if __name__ == "__main__":
  main()
