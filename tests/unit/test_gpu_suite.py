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
