"""The checks of the lowered train and eval steps (tests/hlo_checks.py, used by
tests/integration/test_step_lowering.py, issue #22 item 6) catch what they look for."""

import jax
import jax.numpy as jnp
import pytest

from hlo_checks import check_text


def test_the_checks_catch_callbacks_and_float64():
  """The detectors on modules that do hold a callback / float64 (``jit(...).lower`` for the
  CPU: ``jax.export`` refuses to serialise a host callback at all)."""
  def with_callback(x):
    jax.debug.callback(lambda v: None, x)
    return x * 2

  lower = lambda f, dtype: jax.jit(f).lower(jax.ShapeDtypeStruct((3,), dtype)).as_text(
      debug_info=True)
  check_text(lower(lambda x: x * 2, jnp.float32))
  with pytest.raises(AssertionError, match="callback"):
    check_text(lower(with_callback, jnp.float32))
  with jax.enable_x64(True):
    with pytest.raises(AssertionError, match="float64"):
      check_text(lower(lambda x: x.astype(jnp.float64) * 2, jnp.float32))
