"""What a lowered step must not hold (issue #22 item 6): a host callback (a
``jax.debug``/``pure_callback`` would stall an accelerator and does not export) or float64.
The checks of tests/integration/test_step_lowering.py, tested by tests/unit/test_lowering.py."""

import re

PLATFORMS = ("cuda", "tpu")
CALLBACK = re.compile(r"custom_call\s*@\w*callback", re.IGNORECASE)  # jax's host callbacks
FLOAT64 = re.compile(r"\bf64\b|xf64>")


def _code(text: str) -> str:
  """The module without its location metadata (which names files and functions)."""
  text = "\n".join(line for line in text.splitlines() if not line.startswith("#loc"))
  return re.sub(r"\bloc\((?:[^()]|\([^()]*\))*\)", "", text)


def check_text(text: str) -> str:
  """``text`` without location metadata; fails on a host callback or float64 in it."""
  text = _code(text)
  assert not CALLBACK.search(text), "host callback in the lowered step"
  assert not FLOAT64.search(text), "float64 in the lowered step"
  return text


def check_exported(exported):
  """An ``jax.export.Exported`` for ``PLATFORMS``, its module checked by ``check_text``."""
  assert exported.platforms == PLATFORMS
  return check_text(exported.mlir_module())
