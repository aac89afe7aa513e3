"""pmap-able train and eval steps (axis name ``"batch"``).

The loss is the summed per-pixel cross-entropy of the *global* batch divided by the
psum of valid-pixel counts (or by the fixed pixel count of the batch), and gradients
are psum'd. One step on D devices therefore equals the same step on one
device with the whole batch (BatchNorm statistics are averaged over the same axis).
"""

from __future__ import annotations

from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax

from ppool_jax.labels import IGNORE
from ppool_jax.metrics import segmentation_counts
from ppool_jax.models.tta import check_tta, tta_logits
from ppool_jax.ops import compute_dtype
from ppool_jax.train.diagnostics import alpha_perturbations, alpha_stats

AXIS = "batch"


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: Any
  model_state: Any          # e.g. {"batch_stats": ...}; {} for models without BatchNorm
  opt_state: Any
  rng: jax.Array
  nonfinite: jax.Array      # consecutive skipped (non-finite) updates


def pixel_cross_entropy(logits, labels):
  """Per-pixel cross-entropy and validity mask (label 255 is ignored)."""
  valid = labels != IGNORE
  safe = jnp.where(valid, labels, 0)
  # At least float32 (bfloat16 logits are upcast; float64 ones are kept).
  ce = optax.softmax_cross_entropy_with_integer_labels(
      logits.astype(compute_dtype(logits.dtype)), safe)
  return jnp.where(valid, ce, 0.0), valid


def _all_finite(tree) -> jax.Array:
  return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree_util.tree_leaves(tree)]))


NORMALIZATIONS = ("valid", "batch_pixels")


def _psum(x, axis_name):
  return x if axis_name is None else jax.lax.psum(x, axis_name)


def make_train_step(model, tx, normalization: str = "valid", axis_name: str | None = AXIS,
                    diagnostics: bool = False):
  """One training step.

  ``normalization`` divides the summed per-pixel loss by the number of labelled pixels of
  the global batch (``"valid"``) or by the fixed number of pixels of the global batch
  (``"batch_pixels"``, crop area x batch: maps a summed-loss solver exactly).
  ``axis_name``: the pmap axis the batch is split over (losses, counts and gradients are
  psum'd over it), or ``None`` for a global-view step under ``jit`` (mesh sharding).
  ``diagnostics``: add the per-layer alpha statistics of ``ppool_jax.train.diagnostics``
  (``alpha/...``) to the metrics; nothing changes for models without a learned alpha.
  """
  if normalization not in NORMALIZATIONS:
    raise ValueError(f"unknown loss normalization {normalization!r}; choose from "
                     f"{NORMALIZATIONS}.")

  def train_step(state: TrainState, batch):
    rng = jax.random.fold_in(state.rng, state.step)
    if axis_name is not None:
      rng = jax.random.fold_in(rng, jax.lax.axis_index(axis_name))
    if normalization == "valid":
      count = _psum(jnp.sum(batch["label"] != IGNORE), axis_name)
      count = jnp.maximum(count, 1).astype(jnp.float32)
    else:
      count = _psum(batch["label"].size, axis_name)
    mutable = list(state.model_state.keys())
    perts = None
    if diagnostics:
      perts = alpha_perturbations(model, {"params": state.params, **state.model_state},
                                  batch["image"], mutable, {"dropout": rng})

    def loss_fn(params, perts):
      variables = {"params": params, **state.model_state}
      if perts is not None:
        variables["perturbations"] = perts
      logits, new_model_state = model.apply(
          variables, batch["image"], train=True,
          mutable=mutable + (["intermediates"] if perts is not None else []),
          rngs={"dropout": rng})
      new_model_state = dict(new_model_state)
      inter = new_model_state.pop("intermediates", {})
      ce, _ = pixel_cross_entropy(logits, batch["label"])
      return jnp.sum(ce) / count, (new_model_state, inter)

    (loss, (new_model_state, inter)), (grads, alpha_grads) = jax.value_and_grad(
        loss_fn, argnums=(0, 1), has_aux=True)(state.params, perts)
    grads = _psum(grads, axis_name)
    loss = _psum(loss, axis_name)
    finite = jnp.isfinite(loss) & _all_finite(grads)
    updates, new_opt = tx.update(grads, state.opt_state, state.params)
    new_params = optax.apply_updates(state.params, updates)
    # A non-finite loss or gradient skips the update entirely (params, optimizer and
    # BatchNorm statistics stay as they were) and is counted.
    keep = lambda new, old: jax.tree_util.tree_map(lambda n, o: jnp.where(finite, n, o), new, old)
    new_state = state.replace(
        step=state.step + 1,
        params=keep(new_params, state.params),
        opt_state=keep(new_opt, state.opt_state),
        model_state=keep(dict(new_model_state), state.model_state),
        nonfinite=jnp.where(finite, 0, state.nonfinite + 1),
    )
    metrics = {"loss": loss, "finite": finite, "grad_norm": optax.tree.norm(grads),
               "nonfinite": new_state.nonfinite,
               **alpha_stats(inter, alpha_grads, state.params, axis_name)}
    return new_state, metrics

  return train_step


def make_eval_step(model, num_classes: int, protocol: str = "label",
                   axis_name: str | None = AXIS, scales: tuple[float, ...] = (1.0,),
                   flip: bool = False):
  """Summed metric counts; ``protocol`` is the dataset's boundary protocol (metrics);
  ``axis_name`` as in :func:`make_train_step`. ``batch`` may hold ``"valid"`` (``(B, H, W)``
  bool, False on padding, as ``eval_batches`` yields it): padding is then outside the image
  for every metric, not ignore/void. ``scales``/``flip``: test-time augmentation
  (``cfg.eval``; :func:`ppool_jax.models.tta.tta_logits`, logits averaged at full resolution)."""
  scales, flip = check_tta(scales, flip)

  def eval_step(state: TrainState, batch):
    images, labels = batch["image"], batch["label"]     # (B, H, W, 3), (B, H, W)
    variables = {"params": state.params, **state.model_state}
    logits = tta_logits(lambda x: model.apply(variables, x, train=False), images, scales, flip)
    counts = segmentation_counts(jnp.argmax(logits, -1), labels, num_classes, protocol=protocol,
                                 valid=batch.get("valid"))
    return _psum(counts, axis_name)

  return eval_step
