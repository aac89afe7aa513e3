"""Optimizer helpers: the paper's larger learning rate for newly added side branches."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import optax

from ppool_jax.nn.side_branch import SIDE_BRANCH

DEFAULT = "default"


def side_branch_labels(params: Any) -> Any:
  """Labels every parameter ``"side_branch"`` if any module on its path is a P-pooling
  side branch (named ``side_branch``), else ``"default"``."""

  def label(path, _):
    names = [getattr(k, "key", getattr(k, "name", None)) for k in path]
    return SIDE_BRANCH if SIDE_BRANCH in names else DEFAULT

  return jax.tree_util.tree_map_with_path(label, params)


def with_side_branch_lr(make_tx: Callable[[optax.ScalarOrSchedule], optax.GradientTransformation],
                        learning_rate: optax.ScalarOrSchedule, multiplier: float = 3.0
                        ) -> optax.GradientTransformation:
  """``make_tx(learning_rate)`` for the backbone, ``make_tx(multiplier * learning_rate)`` for
  side-branch parameters (paper §4.1: side branches train at 3x the learning rate).

  Args:
    make_tx: builds the optimizer from a learning rate or schedule, e.g.
      ``lambda lr: optax.sgd(lr, momentum=0.9)``.
    learning_rate: a float or an optax schedule.
    multiplier: the side-branch factor.
  """
  if callable(learning_rate):
    side_lr = lambda step: multiplier * learning_rate(step)
  else:
    side_lr = multiplier * learning_rate
  return optax.multi_transform({DEFAULT: make_tx(learning_rate), SIDE_BRANCH: make_tx(side_lr)},
                               side_branch_labels)
