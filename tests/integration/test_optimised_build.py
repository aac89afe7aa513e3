"""The operator under the compile users get.

``make test`` compiles its in-process programs without LLVM's optimisation passes (the
Makefile's ``UNOPTIMISED``: the same HLO, results that differ in the last bit or two), so
this test reruns the operator's reference checks in a subprocess with the default flags:
values and both gradients against the float64 NumPy reference for every window geometry and
alpha, the inference forward against the reference and the gradient path's forward at every
alpha and shift form, both bfloat16 forwards against Eq. 1 rounded, and the float32 ``log``
/ ``log2`` / ``exp2`` / ``exp`` polynomials (their error bounds and the monotone ``log`` the
gradient passes rely on; XLA contracts their multiply-adds into FMAs only when it
optimises).
"""

import os
import subprocess
import sys

from support import ROOT, subprocess_env

SELECTION = ("matches_numpy_eq_1_3_4 or inference_forward_matches or logs_are_within"
             " or monotone_where or ratio_range or round_eq1_faithfully"
             " or exp2_and_exp")


def test_operator_reference_checks_pass_with_the_default_compile():
  env = dict(subprocess_env(devices=8), PYTEST_ADDOPTS="")
  assert "optimization_level" not in env["XLA_FLAGS"]
  result = subprocess.run(
      [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
       os.path.join("tests", "unit", "test_p_pool.py"), "-k", SELECTION],
      cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
  assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
  summary = result.stdout.strip().splitlines()[-1]  # "68 passed, 79 deselected in 28.0s"
  assert int(summary.split(" passed")[0].split()[-1]) >= 60, summary  # the selection ran
