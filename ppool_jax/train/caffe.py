"""Caffe's SGD solver, exactly, and its mapping from a summed loss to our normalised loss.

Caffe (``SGDSolver``) updates every parameter blob ``w`` with gradient ``g`` of the loss as::

    g'  = g + weight_decay * decay_mult * w          # L2 regularisation
    v   = momentum * v + lr(iter) * lr_mult * g'    # lr(iter) from lr_policy
    w   = w - v

``lr_mult`` / ``decay_mult`` are the per-blob ``param { }`` multipliers of the prototxt
(Caffe's default, when a layer gives none, is 1 and 1 for every blob). Note that the
velocity accumulates ``lr * g``, not ``g``: at a learning-rate step Caffe keeps the old
velocity, where ``optax.sgd`` rescales it; :func:`caffe_sgd` is Caffe's form.

Summed loss -> normalised loss. The paper's solver (lr 2e-7) and FCN's (1e-14) act on
Caffe's ``SoftmaxWithLoss`` with normalisation off, the *sum* over pixels. We train on
``L_ours = L_sum / P`` with a fixed ``P`` (crop area x global batch:
``loss.normalization = "batch_pixels"``), so ``g_sum = P g_ours`` and Caffe's step is::

    lr (g_sum + wd w) = (lr P) (g_ours + (wd / P) w)

i.e. the same solver with ``lr -> lr P`` and ``weight_decay -> weight_decay / P``; momentum and
every multiplier are unchanged (:func:`map_summed_solver`). Mapping only the learning rate
would decay weights ``P`` (~1e6) times harder than Caffe.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from ppool_jax.models import head_modules
from ppool_jax.nn import param_rules
from ppool_jax.nn.side_branch import PRELU_SLOPE, SIDE_BRANCH


@dataclasses.dataclass(frozen=True)
class CaffeSolver:
  """The numbers of a Caffe ``solver.prototxt`` (SGD) plus the prototxt's multipliers.

  Attributes:
    base_lr, momentum, weight_decay: as in the solver.
    bias_lr_mult, bias_decay_mult: the ``param { }`` of every bias blob (VGG/FCN/DeepLab
      prototxts: 2 and 0).
    head_lr_mult: ``lr_mult`` of the newly added classifier's weights (DeepLab: 10; its
      bias gets ``head_lr_mult * bias_lr_mult``).
    side_branch_lr_mult: the P-pooling side branches' factor (paper §4.1: 3), on top of
      the weight/bias multipliers.
    prelu_decay_mult: ``decay_mult`` of PReLU slopes (He et al. 2015 use no decay on them).
    side_branch_decay_mult: ``decay_mult`` of side-branch weights.
  """
  base_lr: float
  momentum: float
  weight_decay: float
  bias_lr_mult: float = 2.0
  bias_decay_mult: float = 0.0
  head_lr_mult: float = 1.0
  side_branch_lr_mult: float = 3.0
  prelu_decay_mult: float = 0.0
  side_branch_decay_mult: float = 1.0


def map_summed_solver(solver: CaffeSolver, pixels_per_batch: int) -> CaffeSolver:
  """The solver that takes Caffe's steps on a summed loss when the loss is divided by
  ``pixels_per_batch``: ``lr * P``, ``weight_decay / P``, the rest unchanged."""
  if pixels_per_batch <= 0:
    raise ValueError(f"pixels_per_batch must be positive, got {pixels_per_batch}.")
  return dataclasses.replace(solver, base_lr=solver.base_lr * pixels_per_batch,
                             weight_decay=solver.weight_decay / pixels_per_batch)


BIAS = "bias"  # Flax's name of every bias (convs, BatchNorm's shift)


def caffe_lr_rules(solver: CaffeSolver, heads: tuple[str, ...]) -> list[tuple[str, float]]:
  """Caffe's ``lr_mult`` of every parameter as ``(regex, multiplier)`` rules, first match wins
  (:mod:`ppool_jax.nn.param_rules`): a bias ``bias_lr_mult``, times ``side_branch_lr_mult``
  under a ``side_branch`` module, times ``head_lr_mult`` under one of the ``heads`` modules
  (the model's ``HEAD_MODULES``); everything else (conv kernels, BatchNorm ``scale``, PReLU
  slopes outside a side branch) 1. Products are formed in that order."""
  b, sb, hd = solver.bias_lr_mult, solver.side_branch_lr_mult, solver.head_lr_mult
  side, bias = param_rules.module(SIDE_BRANCH), param_rules.leaf(BIAS)
  rules = []
  if heads:  # (no model nests a side branch in its head; kept for exactness)
    head = param_rules.module(*heads)
    rules += [(param_rules.all_of(side, head, bias), b * sb * hd),
              (param_rules.all_of(side, head), 1.0 * sb * hd)]
  rules += [(param_rules.module_leaf([SIDE_BRANCH], [BIAS]), b * sb), (side, 1.0 * sb)]
  if heads:
    rules += [(param_rules.module_leaf(heads, [BIAS]), b * hd), (head, 1.0 * hd)]
  return rules + [(bias, b), (".*", 1.0)]


def caffe_decay_rules(solver: CaffeSolver) -> list[tuple[str, float]]:
  """Caffe's ``decay_mult`` of every parameter as rules: biases ``bias_decay_mult``, PReLU
  slopes ``prelu_decay_mult``, other side-branch parameters ``side_branch_decay_mult``,
  everything else 1 (Caffe's default)."""
  return [(param_rules.leaf(BIAS), solver.bias_decay_mult),
          (param_rules.leaf(PRELU_SLOPE), solver.prelu_decay_mult),
          (param_rules.module(SIDE_BRANCH), solver.side_branch_decay_mult), (".*", 1.0)]


def param_multipliers(params: Any, solver: CaffeSolver, heads: tuple[str, ...] | None = None
                      ) -> tuple[Any, Any]:
  """``(lr_mult, decay_mult)`` trees for a Flax parameter tree under :func:`caffe_lr_rules`
  and :func:`caffe_decay_rules`:

  * ``bias`` leaves: ``bias_lr_mult`` / ``bias_decay_mult``;
  * PReLU ``slope``: lr 1, ``prelu_decay_mult``;
  * under a ``side_branch`` module: lr times ``side_branch_lr_mult``; weights decay with
    ``side_branch_decay_mult`` (biases and slopes keep the rules above);
  * the new classifier (``heads``; default: every model's ``HEAD_MODULES``, see
    :func:`ppool_jax.models.head_modules`): lr times ``head_lr_mult``;
  * everything else (conv kernels, BatchNorm ``scale``): 1 and 1 (a BatchNorm ``bias``
    takes the bias rule). Caffe ResNet fine-tuning usually fixes BatchNorm/Scale layers
    (``lr_mult: 0``); here ``model.frozen_bn`` fixes the statistics only.
  """
  heads = head_modules() if heads is None else heads
  return (param_rules.resolve(params, caffe_lr_rules(solver, heads), "caffe lr_mult"),
          param_rules.resolve(params, caffe_decay_rules(solver), "caffe decay_mult"))


class CaffeSGDState(NamedTuple):
  count: jax.Array
  velocity: Any


def caffe_sgd(learning_rate: optax.ScalarOrSchedule, solver: CaffeSolver,
              multipliers: Callable[[Any], tuple[Any, Any]] | None = None
              ) -> optax.GradientTransformation:
  """Caffe's SGD update (module docstring) as an optax transformation.

  Args:
    learning_rate: ``base_lr`` or a schedule of the iteration (Caffe's ``lr_policy``).
    solver: momentum, weight decay and the multiplier rules.
    multipliers: ``params -> (lr_mult tree, decay_mult tree)``; default
      :func:`param_multipliers` with ``solver``.
  """
  multipliers = multipliers or (lambda p: param_multipliers(p, solver))
  schedule = learning_rate if callable(learning_rate) else (lambda _: learning_rate)

  def init(params):
    return CaffeSGDState(jnp.zeros([], jnp.int32), jax.tree_util.tree_map(jnp.zeros_like, params))

  def update(grads, state, params=None):
    if params is None:
      raise ValueError("caffe_sgd needs params (weight decay and multipliers).")
    lr = schedule(state.count)
    lr_mult, decay_mult = multipliers(params)

    def velocity(v, g, w, a, d):
      step = lr * a * (g + solver.weight_decay * d * w)
      return (solver.momentum * v + step).astype(v.dtype)

    new_v = jax.tree_util.tree_map(velocity, state.velocity, grads, params, lr_mult, decay_mult)
    updates = jax.tree_util.tree_map(jnp.negative, new_v)
    return updates, CaffeSGDState(optax.safe_increment(state.count), new_v)

  return optax.GradientTransformation(init, update)


def solver_from_config(o: Mapping[str, Any]) -> CaffeSolver:
  """A :class:`CaffeSolver` from ``config.optim`` fields of the same names."""
  fields = {f.name for f in dataclasses.fields(CaffeSolver)}
  kwargs = {k: o[k] for k in fields - {"base_lr"} if k in o}
  return CaffeSolver(base_lr=o["learning_rate"], **kwargs)
