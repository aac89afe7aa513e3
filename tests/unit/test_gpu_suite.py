"""The accelerator suite (experiments/bench/gpu_suite.py), which cannot read the config on the
GPU image, agrees with it; the suite's smoke run: tests/integration/test_gpu_suite_smoke.py."""

import collections

from support import bench_module


def test_the_suites_loader_workers_are_the_base_configs():
  """(d) uses ``TrainLoader``'s default ``num_workers`` (the suite cannot read the config on
  the GPU image): it must be the configured one."""
  gpu_suite = bench_module("gpu_suite")
  from ppool_jax.train.config import base_config
  assert gpu_suite.LOADER_WORKERS == base_config().dataset.num_workers


def test_pool_op_interleaving_balances_place_and_predecessor():
  """pool_op.interleaved: each op is timed once per repeat, in Williams-design orders: over a
  full cycle every op takes every place and follows every other op equally often (the op
  after max_pool's fwd+bwd reads slower; a rotation kept that predecessor fixed). Ratios are
  per repeat against the reference."""
  pool_op, timing = bench_module("pool_op"), bench_module("timing")
  for n in range(1, 9):
    orders = timing.balanced_orders(n)
    assert all(sorted(o) == list(range(n)) for o in orders)
    places = collections.Counter((v, j) for o in orders for j, v in enumerate(o))
    pairs = collections.Counter(p for o in orders for p in zip(o, o[1:]))
    assert len(places) == n * n and len(set(places.values())) == 1, (n, places)
    assert len(pairs) == n * (n - 1) and len(set(pairs.values())) <= 1, (n, pairs)
  order = []
  fns = {name: (lambda name=name: order.append(name) or 0.0) for name in "abc"}
  out = pool_op.interleaved(fns, {name: () for name in fns}, 6, "a", min_sample_s=0.0)
  timed = order[6:]  # after two set-up calls per op (warm-up, calls per sample)
  assert [timed[i:i + 3] for i in range(0, 18, 3)] == [
      ["abc"[v] for v in o] for o in timing.balanced_orders(3)]
  assert all(len(r) == 6 for _, r in out.values()) and (out["a"][1] == 1.0).all()
