"""Optimizer from the config: Caffe's SGD (the paper's recipe) or optax SGD/Adam.

``optim.name``:

* ``"caffe_sgd"``: Caffe's update with its per-parameter multipliers
  (:mod:`ppool_jax.train.caffe`). With ``optim.source_loss = "sum"`` the config holds the
  published solver for a summed loss (the paper's 2e-7) and it is mapped, learning rate
  *and* weight decay, to our loss divided by ``P`` = crop area x global batch, which
  requires ``loss.normalization = "batch_pixels"`` (a fixed ``P``: the mapping is exact).
* ``"sgd"`` / ``"adam"``: optax's (TensorFlow's momentum form), weight decay added to the
  gradient of conv kernels only (as TF DeepLab's regulariser: no biases, BatchNorm or PReLU
  parameters), side branches at ``side_branch_lr_mult`` (DeepLabv3, our own experiments).

``optim.frozen``: top-level parameter modules (``("backbone",)``) that never update, for any
optimizer -- Caffe's ``lr_mult: 0`` on every blob (a linear probe, a head warm-up). Their
gradients are dropped before the optimizer: no velocity, no weight decay.
"""

from __future__ import annotations

import jax
import ml_collections
import optax

from ppool_jax.nn import with_side_branch_lr
from ppool_jax.train.caffe import caffe_sgd, map_summed_solver, solver_from_config


def pixels_per_batch(cfg: ml_collections.ConfigDict) -> int:
  """``P`` of the summed-loss mapping: crop area x global batch size."""
  return cfg.dataset.crop_size * cfg.dataset.crop_size * cfg.global_batch_size


def learning_rate_schedule(cfg: ml_collections.ConfigDict, total_steps: int,
                           base_lr: float | None = None) -> optax.Schedule:
  """Caffe's ``lr_policy`` names: ``step`` (x factor at each boundary), ``poly``, ``constant``."""
  o = cfg.optim
  lr = o.learning_rate if base_lr is None else base_lr
  if o.schedule == "constant":
    return optax.constant_schedule(lr)
  if o.schedule == "step":
    return optax.piecewise_constant_schedule(lr, {int(b): o.step_factor for b in o.step_boundaries})
  if o.schedule == "poly":
    return optax.polynomial_schedule(lr, 0.0, o.poly_power, total_steps)
  raise ValueError(f"unknown schedule {o.schedule!r}; choose step, poly or constant.")


def effective_solver(cfg: ml_collections.ConfigDict):
  """The Caffe solver actually run: the config's, mapped from a summed loss if it is one."""
  o = cfg.optim
  solver = solver_from_config(o)
  if o.source_loss == "sum":
    if cfg.loss.normalization != "batch_pixels":
      raise ValueError("optim.source_loss='sum' maps a summed-loss solver exactly only when the "
                       "loss is divided by a fixed P: set loss.normalization='batch_pixels' (got "
                       f"{cfg.loss.normalization!r}).")
    return map_summed_solver(solver, pixels_per_batch(cfg))
  if o.source_loss != "mean":
    raise ValueError(f"optim.source_loss must be 'sum' or 'mean', got {o.source_loss!r}.")
  return solver


def _kernels(params):
  return jax.tree_util.tree_map_with_path(
      lambda path, _: getattr(path[-1], "key", None) == "kernel", params)


def make_optimizer(cfg: ml_collections.ConfigDict) -> optax.GradientTransformation:
  frozen = tuple(cfg.optim.get("frozen", ()) or ())
  tx = _optimizer(cfg)
  if not frozen:
    return tx

  def labels(params):
    missing = sorted(set(frozen) - set(params))
    if missing:
      raise ValueError(f"optim.frozen names {missing}, which the model's parameters lack; "
                       f"top-level modules: {sorted(params)}.")
    return {k: jax.tree_util.tree_map(lambda _, f=k in frozen: "frozen" if f else "train", v)
            for k, v in params.items()}

  return optax.multi_transform({"train": tx, "frozen": optax.set_to_zero()}, labels)


def _optimizer(cfg: ml_collections.ConfigDict) -> optax.GradientTransformation:
  o = cfg.optim
  if o.name == "caffe_sgd":
    solver = effective_solver(cfg)
    return caffe_sgd(learning_rate_schedule(cfg, cfg.total_steps, solver.base_lr), solver)
  if o.source_loss != "mean":
    raise ValueError(f"optim.source_loss={o.source_loss!r} is only mapped for caffe_sgd.")
  schedule = learning_rate_schedule(cfg, cfg.total_steps)

  def make(lr):
    if o.name == "sgd":
      opt = optax.sgd(lr, momentum=o.momentum or None)
    elif o.name == "adam":
      opt = optax.adam(lr)
    else:
      raise ValueError(f"unknown optimizer {o.name!r}; choose caffe_sgd, sgd or adam.")
    if not o.weight_decay:
      return opt
    return optax.chain(optax.add_decayed_weights(o.weight_decay, mask=_kernels), opt)

  return with_side_branch_lr(make, schedule, o.side_branch_lr_mult)
