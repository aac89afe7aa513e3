"""Optional dependencies: the core install (``pip install ppool_jax``) needs neither
TensorFlow, TensorFlow Datasets nor h5py; the features that do import them through
:func:`require`, which names the extra to install (``pyproject.toml``; docs/training.md,
"Install")."""

from __future__ import annotations

import importlib
from types import ModuleType

# The extras of pyproject.toml that code asks for, and what needs them.
EXTRAS = {
    "tfds": "reading prepared TFDS datasets (dataset.reader='tfds')",
    "prepare": "preparing TFDS datasets (python -m ppool_jax.data.prepare)",
    "keras": "reading Keras .h5 weights (python -m ppool_jax.convert)",
}


def require(module: str, extra: str) -> ModuleType:
  """``import module``, or an ImportError naming the extra that installs it."""
  try:
    return importlib.import_module(module)
  except ImportError as e:
    raise ImportError(f"{module} is not installed: {EXTRAS[extra]} needs the {extra!r} extra, "
                      f"pip install 'ppool_jax[{extra}]'.") from e
