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

Every per-parameter choice above is data: ordered ``(regex, multiplier)`` rules over parameter
paths, first match wins (:mod:`ppool_jax.nn.param_rules`; big_vision's ``lr_mults`` /
``wd_mults`` semantics). :func:`recipe_rules` lists them: ``optim.lr_rules`` /
``optim.decay_rules`` from the config first (e.g. ``(("(?:.*/)?side_branch/.*", 5.0),)``),
then ``optim.frozen`` at learning rate x0, then the defaults of ``optim.name`` built from the
multiplier fields (:func:`ppool_jax.train.caffe.caffe_lr_rules`, ``caffe_decay_rules``;
:data:`OPTAX_DECAY_RULES`). A learning-rate multiplier of 0 freezes, as ``optim.frozen``.
:func:`rules_table` prints each parameter's multipliers and the rule that decides them.
"""

from __future__ import annotations

import jax
import ml_collections
import optax

from ppool_jax.models import head_modules
from ppool_jax.nn import param_rules
from ppool_jax.nn.optim import side_branch_group, side_branch_lr_rules, with_lr_multipliers
from ppool_jax.train.caffe import (caffe_decay_rules, caffe_lr_rules, caffe_sgd, map_summed_solver,
                                   solver_from_config)

KERNEL = "kernel"  # Flax's name of conv and dense weights
# sgd/adam: decay on conv kernels only (TF DeepLab's regulariser: no biases, BatchNorm, PReLU).
OPTAX_DECAY_RULES = ((param_rules.leaf(KERNEL), 1.0), (".*", 0.0))


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


def _config_rules(o, field: str) -> list:
  rules = [tuple(r) if isinstance(r, list) else r for r in (o.get(field, ()) or ())]
  param_rules.compile_rules(rules, f"optim.{field}")
  return rules


def recipe_rules(cfg: ml_collections.ConfigDict) -> tuple[list, list]:
  """``(lr_rules, decay_rules)``: ``(regex, multiplier)`` lists, first match wins, that the
  optimizer applies: the config's ``optim.lr_rules`` / ``optim.decay_rules``, then
  ``optim.frozen`` (lr x0), then the defaults of ``optim.name``."""
  o = cfg.optim
  frozen = tuple(o.get("frozen", ()) or ())
  frozen_rules = [(param_rules.top_level(*frozen), 0.0)] if frozen else []
  if o.name == "caffe_sgd":
    solver = solver_from_config(o)
    lr, decay = caffe_lr_rules(solver, head_modules(cfg.model.name)), caffe_decay_rules(solver)
  elif o.name in ("sgd", "adam"):
    lr, decay = side_branch_lr_rules(o.side_branch_lr_mult), list(OPTAX_DECAY_RULES)
  else:
    raise ValueError(f"unknown optimizer {o.name!r}; choose caffe_sgd, sgd or adam.")
  return ([*_config_rules(o, "lr_rules"), *frozen_rules, *lr],
          [*_config_rules(o, "decay_rules"), *decay])


def check_rules(cfg: ml_collections.ConfigDict, params) -> None:
  """Raises ``ValueError`` for an ``optim.frozen`` name that is no top-level module of
  ``params`` and for a rule of ``optim.lr_rules`` / ``optim.decay_rules`` that decides no
  parameter (it matches none, or only ones an earlier rule took)."""
  frozen = tuple(cfg.optim.get("frozen", ()) or ())
  missing = sorted(set(frozen) - set(params))
  if missing:
    raise ValueError(f"optim.frozen names {missing}, which the model's parameters lack; "
                     f"top-level modules: {sorted(params)}.")
  for field in ("lr_rules", "decay_rules"):
    unused = param_rules.unmatched_patterns(params, _config_rules(cfg.optim, field))
    if unused:
      raise ValueError(f"optim.{field}: pattern(s) {unused} match no parameter of the model; "
                       f"parameter paths look like {param_rules.param_names(params)[0]!r}.")


def rules_table(cfg: ml_collections.ConfigDict, params) -> str:
  """One line per parameter: its path, learning-rate and decay multipliers (``frozen`` at
  lr x0) and the patterns of the rules that decided them."""
  lr_rules, decay_rules = recipe_rules(cfg)
  names = param_rules.param_names(params)
  lr_i = jax.tree_util.tree_leaves(param_rules.rule_indices(params, lr_rules, "lr rules"))
  decay_i = jax.tree_util.tree_leaves(param_rules.rule_indices(params, decay_rules, "decay rules"))
  width = max(map(len, names))
  lines = [f"{'parameter':<{width}}  {'lr':>8}  {'decay':>6}  rules (lr; decay)"]
  for name, i, j in zip(names, lr_i, decay_i):
    lr = lr_rules[i][1]
    lr_text = "frozen" if lr == 0 else f"x{lr:g}"
    lines.append(f"{name:<{width}}  {lr_text:>8}  {f'x{decay_rules[j][1]:g}':>6}  "
                 f"{lr_rules[i][0]} ; {decay_rules[j][0]}")
  return "\n".join(lines)


def _checked(tx: optax.GradientTransformation, check) -> optax.GradientTransformation:
  """``tx`` calling ``check(params)`` in ``init`` (same state)."""
  def init(params):
    check(params)
    return tx.init(params)
  return optax.GradientTransformation(init, tx.update)


def make_optimizer(cfg: ml_collections.ConfigDict) -> optax.GradientTransformation:
  """The optimizer of ``cfg.optim`` with :func:`recipe_rules`; parameters at lr x0 are
  dropped before it (no velocity, no weight decay)."""
  lr_rules, decay_rules = recipe_rules(cfg)
  tx = _optimizer(cfg, lr_rules, decay_rules)
  if all(m != 0 for _, m in lr_rules):
    return _checked(tx, lambda params: check_rules(cfg, params))

  def labels(params):
    return jax.tree_util.tree_map(lambda m: "frozen" if m == 0 else "train",
                                  param_rules.resolve(params, lr_rules, "lr rules"))

  return _checked(optax.multi_transform({"train": tx, "frozen": optax.set_to_zero()}, labels),
                  lambda params: check_rules(cfg, params))


def _optimizer(cfg: ml_collections.ConfigDict, lr_rules: list, decay_rules: list
               ) -> optax.GradientTransformation:
  o = cfg.optim
  if o.name == "caffe_sgd":
    solver = effective_solver(cfg)
    multipliers = lambda p: (param_rules.resolve(p, lr_rules, "lr rules"),
                             param_rules.resolve(p, decay_rules, "decay rules"))
    return caffe_sgd(learning_rate_schedule(cfg, cfg.total_steps, solver.base_lr), solver,
                     multipliers)
  if o.source_loss != "mean":
    raise ValueError(f"optim.source_loss={o.source_loss!r} is only mapped for caffe_sgd.")
  schedule = learning_rate_schedule(cfg, cfg.total_steps)
  decays = [d for d in dict.fromkeys(d for _, d in decay_rules) if d != 0]

  def decay_mask(value):
    return lambda p: jax.tree_util.tree_map(
        lambda d: d == value, param_rules.resolve(p, decay_rules, "decay rules"))

  def make(lr):
    opt = optax.sgd(lr, momentum=o.momentum or None) if o.name == "sgd" else optax.adam(lr)
    if not o.weight_decay or not decays:
      return opt
    return optax.chain(*[optax.add_decayed_weights(o.weight_decay * d, mask=decay_mask(d))
                         for d in decays], opt)

  # Frozen parameters (lr x0) never reach this optimizer (make_optimizer masks them).
  return with_lr_multipliers(make, schedule, [(p, m) for p, m in lr_rules if m != 0], "lr rules",
                             names=side_branch_group(o.side_branch_lr_mult))
