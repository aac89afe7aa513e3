"""The accelerator suite (experiments/bench/gpu_suite.py), which cannot read the config on the
GPU image, agrees with it; the suite's smoke run: tests/integration/test_gpu_suite_smoke.py."""

import sys

from support import BENCH


def test_the_suites_loader_workers_are_the_base_configs():
  """(d) uses ``TrainLoader``'s default ``num_workers`` (the suite cannot read the config on
  the GPU image): it must be the configured one."""
  sys.path.insert(0, BENCH)
  try:
    import gpu_suite
  finally:
    sys.path.remove(BENCH)
  from ppool_jax.train.config import base_config
  assert gpu_suite.LOADER_WORKERS == base_config().dataset.num_workers


def test_pool_op_interleaving_rotates_every_op_through_every_place():
  """pool_op.interleaved: each op is timed once per repeat, in an order rotating by one, so
  over len(ops) repeats every op follows every other (the op after max_pool's fwd+bwd read
  slower); ratios are per repeat against the reference."""
  sys.path.insert(0, BENCH)
  try:
    import pool_op
  finally:
    sys.path.remove(BENCH)
  order = []
  fns = {name: (lambda name=name: order.append(name) or 0.0) for name in "abc"}
  out = pool_op.interleaved(fns, {name: () for name in fns}, 3, "a", min_sample_s=0.0)
  timed = order[6:]  # after two set-up calls per op (warm-up, calls per sample)
  assert [timed[i:i + 3] for i in (0, 3, 6)] == [list("abc"), list("bca"), list("cab")]
  assert all(len(r) == 3 for _, r in out.values()) and (out["a"][1] == 1.0).all()
