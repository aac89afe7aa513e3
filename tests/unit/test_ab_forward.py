"""experiments/bench/ab_forward.py: it imports the package as it is at a commit (not the
working tree's), times both forwards on the same inputs and reports how far they differ."""

import os
import subprocess
import sys

import pytest

from support import ROOT, bench_module
import ppool_jax


def _ab_forward():
  return bench_module("ab_forward")


def test_base_package_is_the_commits_and_the_rows_compare_both_forwards():
  ab = _ab_forward()
  base = ab.load_base("HEAD")
  folder = os.path.dirname(base.__file__)
  assert base.__name__ == "ppool_base" and base.p_pool is not ppool_jax.p_pool
  assert not folder.startswith(ROOT) and os.path.basename(folder) == "ppool_base"
  # Its sources are HEAD's, renamed: not the working tree's files.
  head = subprocess.run(["git", "-C", ROOT, "show", "HEAD:ppool_jax/ops/p_pool_vjp.py"],
                        check=True, capture_output=True, text=True).stdout
  with open(os.path.join(folder, "ops", "p_pool_vjp.py")) as f:
    assert f.read() == head.replace("ppool_jax", "ppool_base")
  assert sys.modules["ppool_base.ops.p_pool_vjp"].__file__.startswith(folder)
  rows = ab.rows(base.p_pool, (1, 8, 8, 4), ab.parse_windows("2x2/2:VALID, 3x3/2:SAME"),
                 ["scalar", "dense"], "bfloat16", repeats=6)
  assert [(r["window"], r["alpha"]) for r in rows] == [
      ("2x2/2 VALID", "scalar"), ("2x2/2 VALID", "dense"),
      ("3x3/2 SAME", "scalar"), ("3x3/2 SAME", "dense")]
  for r in rows:
    assert r["new_ms"] > 0 and r["base_ms"] > 0 and r["lo"] <= r["ratio"] <= r["hi"]
    assert 0 <= r["faster"] <= 1 and r["new_max"] > 0 and r["base_max"] > 0
  clean = subprocess.run(["git", "-C", ROOT, "diff", "--quiet", "HEAD", "--", "ppool_jax"])
  if clean.returncode == 0:  # the same code on both sides: the same outputs
    assert all(r["differ"] == 0 and r["max_rel"] == 0 for r in rows)


def test_windows_are_parsed_or_refused_by_name():
  ab = _ab_forward()
  assert ab.parse_windows("2x2/2:VALID,5x5/1:SAME") == [((2, 2), (2, 2), "VALID"),
                                                        ((5, 5), (1, 1), "SAME")]
  with pytest.raises(ValueError, match="3x3:SAME"):
    ab.parse_windows("3x3:SAME")


@pytest.mark.parametrize("argv, named", [
    (["--base", "no-such-commit"], "--base no-such-commit: not a commit"),
    (["--base", "HEAD", "--alphas", "scalar,scaler"], "--alphas: scaler not in"),
    (["--base", "HEAD", "--windows", "3x3:SAME"], "--windows: window '3x3:SAME'"),
    (["--base", "HEAD", "--shape", "8,128,128"], "--shape 8,128,128: N,H,W,C"),
])
def test_bad_command_lines_stop_before_compiling_and_name_the_argument(argv, named, capsys):
  with pytest.raises(SystemExit) as stop:
    _ab_forward().parse_args(argv)
  assert stop.value.code == 2 and named in capsys.readouterr().err


def test_a_good_command_line_is_parsed():
  args = _ab_forward().parse_args(["--base", "HEAD", "--alphas", "dense", "--shape", "1,8,8,4"])
  head = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], check=True,
                        capture_output=True, text=True).stdout.strip()
  assert (args.commit, args.shape, args.alphas) == (head, (1, 8, 8, 4), ["dense"])
  assert args.windows[0] == ((2, 2), (2, 2), "VALID")
