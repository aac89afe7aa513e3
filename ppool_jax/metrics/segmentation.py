"""Segmentation metrics as summable counts, computed in JAX (jit/pmap-safe).

Every ``*_counts`` function returns integer arrays that add up across batches and
devices (``jax.lax.psum`` inside ``pmap``, or plain ``+`` on the host); the ``*_scores``
functions turn accumulated counts into numbers. Conventions:

* labels equal to ``ignore_label`` (255) are excluded everywhere;
* a class absent from the ground truth has IoU and accuracy ``NaN`` and is left out of
  the means (its false positives still lower the IoU of the classes they were taken from);
* **boundary F-score** (class-agnostic, after Csurka et al. 2013 / Perazzi et al. 2016):
  a pixel is a boundary pixel when a 4-neighbour has another label. Precision is the share
  of predicted boundary pixels within chessboard distance ``tolerance`` of a ground-truth
  boundary pixel, recall the converse; F = 2PR / (P + R). Pixels in or next to ignore
  regions are not scored, for the ground truth and the prediction alike;
* **small-structure IoU** (trimap mIoU, Kohli et al. 2009): the confusion matrix over the
  pixels within distance ``band`` of a ground-truth boundary only — where thin structures
  and small objects live and pooling decides whether they survive.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

IGNORE = 255


def confusion_matrix(pred: jax.Array, label: jax.Array, num_classes: int,
                     ignore_label: int = IGNORE, mask: jax.Array | None = None) -> jax.Array:
  """``(K, K)`` int32 counts, rows = ground truth, columns = prediction.

  Args:
    pred: integer class predictions, any shape.
    label: ground truth of the same shape; ``ignore_label`` pixels are skipped.
    num_classes: K.
    mask: optional boolean array of the same shape restricting the counted pixels.
  """
  pred = pred.astype(jnp.int32)
  label = label.astype(jnp.int32)
  valid = (label != ignore_label) & (label >= 0) & (label < num_classes)
  if mask is not None:
    valid &= mask
  index = jnp.where(valid, label * num_classes + jnp.clip(pred, 0, num_classes - 1), 0)
  counts = jnp.bincount(index.ravel(), weights=valid.ravel().astype(jnp.int32),
                        length=num_classes * num_classes)
  return counts.astype(jnp.int32).reshape(num_classes, num_classes)


def confusion_scores(cm) -> dict[str, np.ndarray | float]:
  """mIoU, per-class IoU, pixel accuracy and mean class accuracy from a confusion matrix."""
  cm = np.asarray(cm, np.float64)
  tp = np.diag(cm)
  gt = cm.sum(axis=1)
  pr = cm.sum(axis=0)
  present = gt > 0
  with np.errstate(invalid="ignore", divide="ignore"):
    iou = np.where(present, tp / (gt + pr - tp), np.nan)
    acc = np.where(present, tp / gt, np.nan)
  total = cm.sum()
  return {
      "miou": float(np.nanmean(iou)) if present.any() else float("nan"),
      "per_class_iou": iou,
      "pixel_accuracy": float(tp.sum() / total) if total else float("nan"),
      "mean_class_accuracy": float(np.nanmean(acc)) if present.any() else float("nan"),
  }


def _neighbours_differ(label: jax.Array) -> jax.Array:
  """Boolean map (same shape ``(..., H, W)``): some 4-neighbour has another value."""
  out = jnp.zeros(label.shape, bool)
  for axis in (-2, -1):
    diff = jnp.diff(label, axis=axis) != 0
    pad_lo = [(0, 0)] * label.ndim
    pad_hi = [(0, 0)] * label.ndim
    pad_lo[axis] = (1, 0)
    pad_hi[axis] = (0, 1)
    out |= jnp.pad(diff, pad_lo) | jnp.pad(diff, pad_hi)
  return out


def _dilate(mask: jax.Array, radius: int) -> jax.Array:
  """Binary dilation of ``(..., H, W)`` by a ``(2r+1)^2`` square (chessboard distance <= r)."""
  if radius == 0:
    return mask
  window = (1,) * (mask.ndim - 2) + (2 * radius + 1, 2 * radius + 1)
  pads = [(0, 0)] * (mask.ndim - 2) + [(radius, radius)] * 2
  return lax.reduce_window(mask.astype(jnp.int32), 0, lax.max, window, (1,) * mask.ndim,
                           pads) > 0


def _scored(label: jax.Array, ignore_label: int) -> jax.Array:
  """Pixels whose boundary status is scored: neither ignored nor next to an ignored pixel."""
  return ~_dilate(label == ignore_label, 1)


def gt_boundary(label: jax.Array, ignore_label: int = IGNORE) -> jax.Array:
  """Ground-truth boundary pixels of ``(..., H, W)`` labels, none in or beside ignore."""
  return _neighbours_differ(label) & _scored(label, ignore_label)


def boundary_counts(pred: jax.Array, label: jax.Array, tolerance: int = 1,
                    ignore_label: int = IGNORE) -> jax.Array:
  """``[matched_pred, total_pred, matched_gt, total_gt]`` int32 for ``(..., H, W)`` maps."""
  scored = _scored(label, ignore_label)
  gt_b = _neighbours_differ(label) & scored
  pr_b = _neighbours_differ(pred.astype(jnp.int32)) & scored
  matched_pred = pr_b & _dilate(gt_b, tolerance)
  matched_gt = gt_b & _dilate(pr_b, tolerance)
  return jnp.stack([matched_pred.sum(), pr_b.sum(), matched_gt.sum(), gt_b.sum()]).astype(jnp.int32)


def boundary_scores(counts) -> dict[str, float]:
  """Precision, recall and F from ``boundary_counts``. No predicted boundary gives
  precision NaN and F 0 (when the ground truth has boundaries); no ground-truth
  boundary gives recall and F NaN."""
  mp, tp_, mg, tg = (float(c) for c in np.asarray(counts))
  precision = mp / tp_ if tp_ else float("nan")
  recall = mg / tg if tg else float("nan")
  if not tg:
    f = float("nan")
  elif not tp_ or precision + recall == 0:
    f = 0.0
  else:
    f = 2 * precision * recall / (precision + recall)
  return {"boundary_precision": precision, "boundary_recall": recall, "boundary_f": f}


def trimap_mask(label: jax.Array, band: int = 2, ignore_label: int = IGNORE) -> jax.Array:
  """Pixels within chessboard distance ``band`` of a ground-truth boundary."""
  return _dilate(gt_boundary(label, ignore_label), band)


def segmentation_counts(pred: jax.Array, label: jax.Array, num_classes: int, *,
                        tolerance: int = 1, band: int = 2, ignore_label: int = IGNORE
                        ) -> dict[str, jax.Array]:
  """All summable counts for a batch of ``(..., H, W)`` predictions and labels."""
  return {
      "confusion": confusion_matrix(pred, label, num_classes, ignore_label),
      "trimap_confusion": confusion_matrix(pred, label, num_classes, ignore_label,
                                           mask=trimap_mask(label, band, ignore_label)),
      "boundary": boundary_counts(pred, label, tolerance, ignore_label),
  }


def segmentation_scores(counts: dict) -> dict[str, float | np.ndarray]:
  """Scores from accumulated ``segmentation_counts``."""
  scores = confusion_scores(counts["confusion"])
  scores["small_structure_miou"] = confusion_scores(counts["trimap_confusion"])["miou"]
  scores.update(boundary_scores(counts["boundary"]))
  return scores
