"""Training: ``python -m ppool_jax.train --config NAME[:ARG] --workdir DIR`` (configs in
:mod:`ppool_jax.configs`, or a config file path).

The names below are imported on first use, so ``import ppool_jax.train.steps`` (or
``.config``) does not load the input pipeline, PIL or orbax.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "base_config": "config",
    "NonFiniteTrainingError": "loop", "model_from_config": "loop", "train": "loop",
    "IncompatibleRunError": "runs", "LoadedRun": "runs", "load_run": "runs",
    "TrainingPreempted": "runtime",
    "TrainState": "steps", "make_eval_step": "steps", "make_train_step": "steps",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
  if name in _EXPORTS:
    value = getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    globals()[name] = value
    return value
  raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
  return sorted(set(globals()) | set(_EXPORTS))
