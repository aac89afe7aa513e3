"""Optimizer from the config: SGD/Adam, step/poly schedule, weight decay, 3x side-branch LR."""

from __future__ import annotations

import ml_collections
import optax

from ppool_jax.nn import with_side_branch_lr


def learning_rate_schedule(cfg: ml_collections.ConfigDict, total_steps: int) -> optax.Schedule:
  o = cfg.optim
  if o.schedule == "constant":
    return optax.constant_schedule(o.learning_rate)
  if o.schedule == "step":
    return optax.piecewise_constant_schedule(
        o.learning_rate, {int(b): o.step_factor for b in o.step_boundaries})
  if o.schedule == "poly":
    return optax.polynomial_schedule(o.learning_rate, 0.0, o.poly_power, total_steps)
  raise ValueError(f"unknown schedule {o.schedule!r}; choose step, poly or constant.")


def make_optimizer(cfg: ml_collections.ConfigDict) -> optax.GradientTransformation:
  o = cfg.optim
  schedule = learning_rate_schedule(cfg, cfg.total_steps)

  def make(lr):
    if o.name == "sgd":
      opt = optax.sgd(lr, momentum=o.momentum or None)
    elif o.name == "adam":
      opt = optax.adam(lr)
    else:
      raise ValueError(f"unknown optimizer {o.name!r}; choose sgd or adam.")
    return optax.chain(optax.add_decayed_weights(o.weight_decay), opt) if o.weight_decay else opt

  return with_side_branch_lr(make, schedule, o.side_branch_lr_mult)
