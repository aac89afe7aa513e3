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

from ppool_jax.nn.side_branch import SIDE_BRANCH


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


HEAD_NAMES = ("classifier", "fc8", "score_fr", "score_pool3", "score_pool4")


def _names(path) -> list[str]:
  return [str(getattr(k, "key", getattr(k, "name", k))) for k in path]


def param_multipliers(params: Any, solver: CaffeSolver) -> tuple[Any, Any]:
  """``(lr_mult, decay_mult)`` trees for a Flax parameter tree, by name:

  * ``bias`` leaves: ``bias_lr_mult`` / ``bias_decay_mult``;
  * PReLU ``slope``: lr 1, ``prelu_decay_mult``;
  * under a ``side_branch`` module: lr times ``side_branch_lr_mult``; weights decay with
    ``side_branch_decay_mult`` (biases and slopes keep the rules above);
  * the new classifier (``classifier``/``fc8``/``score_*`` modules): lr times
    ``head_lr_mult``;
  * everything else (conv kernels, BatchNorm ``scale``): 1 and 1 (a BatchNorm ``bias``
    takes the bias rule). Caffe ResNet fine-tuning usually fixes BatchNorm/Scale layers
    (``lr_mult: 0``); here ``model.frozen_bn`` fixes the statistics only.
  """

  def lr_and_decay(path, _):
    names = _names(path)
    leaf = names[-1]
    if leaf == "bias":
      lr, decay = solver.bias_lr_mult, solver.bias_decay_mult
    elif leaf == "slope":
      lr, decay = 1.0, solver.prelu_decay_mult
    else:
      lr, decay = 1.0, 1.0
    if SIDE_BRANCH in names:
      lr *= solver.side_branch_lr_mult
      if leaf not in ("bias", "slope"):
        decay = solver.side_branch_decay_mult
    if any(n in HEAD_NAMES for n in names):
      lr *= solver.head_lr_mult
    return (lr, decay)

  both = jax.tree_util.tree_map_with_path(lr_and_decay, params)
  is_pair = lambda x: isinstance(x, tuple) and len(x) == 2 and not isinstance(x[0], tuple)
  lr = jax.tree_util.tree_map(lambda p: p[0], both, is_leaf=is_pair)
  decay = jax.tree_util.tree_map(lambda p: p[1], both, is_leaf=is_pair)
  return lr, decay


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
