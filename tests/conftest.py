"""Test-wide setup.

* 8 host CPU devices, so the pmap and mesh paths run without a GPU.
* Deterministic hypothesis examples (the same ones every run, so a property test cannot flake).
* ``tests/unit``: functions and modules against independent references, seconds each;
  ``tests/integration``: whole models, training runs, subprocesses and the command line. Every
  test under ``tests/integration`` is marked ``slow``, so ``make test-fast``
  (``-m "not slow"``) runs the unit tier; a test elsewhere may also be marked slow by hand.
* Shared fixtures: ``tiny_cfg`` (``tests/tiny_config.py``'s config, fresh for each test).
  Shared helpers that are not fixtures (paths, a random batch, the subprocess environment)
  are in ``tests/support.py`` and the other non-test modules of ``tests/`` (``reference.py``,
  ``folder_data.py``, ``markdown_blocks.py``, ``hlo_checks.py``). Test files are imported in
  pytest's default "prepend" mode without ``__init__.py``: a test file never imports another,
  and no two test files share a basename across ``unit/`` and ``integration/``.
* One style: pytest functions, ``@pytest.mark.parametrize``, ``assert``, ``np.testing`` and
  ``chex.assert_*`` (a ``chex.TestCase`` only for ``chex.variants``).
"""

import os
import pathlib

import pytest
from hypothesis import settings

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

settings.register_profile("deterministic", derandomize=True, database=None)
settings.load_profile("deterministic")

INTEGRATION = pathlib.Path(__file__).parent / "integration"


def pytest_collection_modifyitems(config, items):
  for item in items:
    if INTEGRATION in pathlib.Path(item.fspath).parents:
      item.add_marker(pytest.mark.slow)


@pytest.fixture
def tiny_cfg():
  """A fresh copy of the tiny synthetic training config (a few seconds per run)."""
  import support
  return support.make_tiny_cfg()
