"""Optimizer helpers: per-parameter learning-rate multipliers from ``(regex, multiplier)``
rules (:mod:`ppool_jax.nn.param_rules`), e.g. the paper's larger learning rate for newly added
side branches."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import optax

from ppool_jax.nn import param_rules
from ppool_jax.nn.side_branch import SIDE_BRANCH

DEFAULT = "default"
FROZEN = "frozen"


def side_branch_labels(params: Any) -> Any:
  """Labels every parameter ``"side_branch"`` if any module on its path is a P-pooling
  side branch (named ``side_branch``), else ``"default"``."""
  rules = [(param_rules.module(SIDE_BRANCH), SIDE_BRANCH), (".*", DEFAULT)]
  return param_rules.resolve(params, rules, "side_branch_labels", numeric=False)


def side_branch_lr_rules(multiplier: float) -> list[tuple[str, float]]:
  """``[(side-branch parameters, multiplier), (everything else, 1)]``."""
  return [(param_rules.module(SIDE_BRANCH), multiplier), (".*", 1.0)]


def group_label(multiplier: float) -> str:
  """The ``optax.multi_transform`` label of the parameters at learning rate x ``multiplier``:
  ``"default"`` (x1), ``"frozen"`` (x0), else ``"lr_x<multiplier>"`` (``"lr_x3.0"``)."""
  if multiplier == 1:
    return DEFAULT
  return FROZEN if multiplier == 0 else f"lr_x{float(multiplier)!r}"


def scaled(learning_rate: optax.ScalarOrSchedule, multiplier: float) -> optax.ScalarOrSchedule:
  """``multiplier * learning_rate`` for a float or a schedule (``learning_rate`` itself at 1)."""
  if multiplier == 1:
    return learning_rate
  if callable(learning_rate):
    return lambda step: multiplier * learning_rate(step)
  return multiplier * learning_rate


def with_lr_multipliers(make_tx: Callable[[optax.ScalarOrSchedule], optax.GradientTransformation],
                        learning_rate: optax.ScalarOrSchedule, rules: param_rules.Rules,
                        what: str = "lr rules", names: dict[float, str] | None = None
                        ) -> optax.GradientTransformation:
  """``make_tx(m * learning_rate)`` for the parameters whose first matching rule gives
  multiplier ``m`` (one ``optax.multi_transform`` group per distinct multiplier, labelled by
  :func:`group_label`); multiplier 0 freezes (updates set to zero).

  Args:
    make_tx: builds the optimizer from a learning rate or schedule, e.g.
      ``lambda lr: optax.sgd(lr, momentum=0.9)``.
    learning_rate: a float or an optax schedule.
    rules: ``(regex, multiplier)`` pairs over parameter paths, first match wins; every
      parameter must match one (end with ``(".*", 1.0)``).
    what: names the rules in errors.
    names: group labels for some multipliers instead of :func:`group_label`'s (the side
      branch's ``{3.0: "side_branch"}`` keeps the optimizer-state layout, and so the
      checkpoints, of runs written before the rules existed).
  """
  param_rules.compile_rules(rules, what)
  names = {float(m): n for m, n in (names or {}).items()}
  label = lambda m: names.get(float(m)) or group_label(m)
  multipliers = dict.fromkeys(float(m) for _, m in rules)
  transforms = {label(m): optax.set_to_zero() if m == 0 else make_tx(scaled(learning_rate, m))
                for m in multipliers}

  def labels(params):
    return jax.tree_util.tree_map(label, param_rules.resolve(params, rules, what))

  return optax.multi_transform(transforms, labels)


def with_side_branch_lr(make_tx: Callable[[optax.ScalarOrSchedule], optax.GradientTransformation],
                        learning_rate: optax.ScalarOrSchedule, multiplier: float = 3.0
                        ) -> optax.GradientTransformation:
  """``make_tx(learning_rate)`` for the backbone, ``make_tx(multiplier * learning_rate)`` for
  side-branch parameters (paper §4.1: side branches train at 3x the learning rate):
  :func:`with_lr_multipliers` with :func:`side_branch_lr_rules`."""
  return with_lr_multipliers(make_tx, learning_rate, side_branch_lr_rules(multiplier),
                             names=side_branch_group(multiplier))


def side_branch_group(multiplier: float) -> dict[float, str]:
  """``{multiplier: "side_branch"}`` (none at x1): the side branch's optimizer-state group
  name, as checkpoints from before the rules were data have it."""
  return {} if multiplier == 1 else {float(multiplier): SIDE_BRANCH}
