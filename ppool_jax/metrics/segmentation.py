"""Segmentation metrics as summable counts, computed in JAX (jit/pmap-safe).

Every ``*_counts`` function returns integer arrays that add up across batches and
devices (``jax.lax.psum`` inside ``pmap``, or plain ``+`` on the host); the ``*_scores``
functions turn accumulated counts into numbers. Conventions:

* labels equal to ``ignore_label`` (255) are excluded everywhere;
* **IoU follows mmsegmentation's ``IoUMetric``**: ``IoU = TP / (TP + FP + FN)``, so a class
  predicted but absent from the ground truth scores 0; only a class absent from both is
  ``NaN`` and left out of the mean. Accuracy is ``TP / GT`` (``NaN`` for a class absent
  from the ground truth). Reported as ``mIoU``/``aAcc``/``mAcc`` (mmseg's names) and as
  ``miou``/``pixel_accuracy``/``mean_class_accuracy``;
* predictions must be class ids in ``[0, K)``: a concrete out-of-range prediction is a
  ``ValueError``; under ``jit``/``pmap`` such pixels are left out of the confusion
  matrices, counted as ``invalid_predictions``, and ``segmentation_scores`` raises;
* **boundary protocols** (``protocol=``), chosen per dataset
  (``ppool_jax.data.folders.DatasetSpec.boundary_protocol``):

  - ``"label"`` (Cityscapes, ADE20K, the synthetic data): a pixel is a boundary pixel
    when a 4-neighbour has another label; pixels in or next to ignore regions are not
    scored. Boundary F-score (class-agnostic, after Csurka et al. 2013 / Perazzi et al.
    2016): precision is the share of predicted boundary pixels within chessboard
    distance ``tolerance`` of a ground-truth boundary pixel, recall the converse,
    F = 2PR / (P + R). Small-structure IoU (trimap mIoU, Kohli et al. 2009): the
    confusion matrix over the pixels within ``band`` of a ground-truth boundary.
  - ``"void_band"`` (PASCAL VOC, which draws a ~5 px void band around every object, so
    no labelled pixel ever touches another class): the trimap is DeepLab's (Chen et al.
    2015, §4.1): labelled pixels within ``w`` px of the void band, reported as
    ``trimap_miou_w{w}`` for every ``w`` in ``trimap_widths`` (``small_structure_miou`` is
    the one at ``w = band``). For the boundary F-score the void band is first filled with
    the nearest labels (``void_fill`` 8-neighbour steps, enough for VOC's band), which puts
    the ground-truth contour on the band's middle line; void left after filling (whole
    void objects) is not scored, as in ``"label"``.

* **padding** (``valid=``): evaluation pads images of mixed sizes into one batch. Pixels
  where the boolean ``valid`` map is False are treated as *outside the image*: never scored,
  never void (so never the void band of ``"void_band"``, never the ignore region next to
  which ``"label"`` stops scoring), and never a boundary, in the label or the prediction.
  The counts of an image padded at its bottom and right (as ``ppool_jax.data.eval_batches``
  does; it yields the map as ``"valid"``) equal those of the image alone, whatever the batch
  or the number of devices.
  ``valid=None`` means every pixel is inside the image.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from ppool_jax.labels import IGNORE

PROTOCOLS = ("label", "void_band")


def confusion_matrix(pred: jax.Array, label: jax.Array, num_classes: int,
                     ignore_label: int = IGNORE, mask: jax.Array | None = None) -> jax.Array:
  """``(K, K)`` int32 counts, rows = ground truth, columns = prediction.

  Args:
    pred: integer class predictions in ``[0, K)``, any shape.
    label: ground truth of the same shape; ``ignore_label`` pixels are skipped.
    num_classes: K.
    mask: optional boolean array of the same shape restricting the counted pixels.

  Raises:
    ValueError: concrete predictions outside ``[0, K)``. Traced ones are left out of
      the matrix (see ``invalid_prediction_count``), never folded into another class.
  """
  _check_predictions(pred, num_classes)
  pred = pred.astype(jnp.int32)
  label = label.astype(jnp.int32)
  valid = _labelled(label, num_classes, ignore_label) & _in_range(pred, num_classes)
  if mask is not None:
    valid &= mask
  index = jnp.where(valid, label * num_classes + pred, 0)
  counts = jnp.bincount(index.ravel(), weights=valid.ravel().astype(jnp.int32),
                        length=num_classes * num_classes)
  return counts.astype(jnp.int32).reshape(num_classes, num_classes)


def _labelled(label, num_classes, ignore_label):
  return (label != ignore_label) & (label >= 0) & (label < num_classes)


def _in_range(pred, num_classes):
  return (pred >= 0) & (pred < num_classes)


def _check_predictions(pred, num_classes: int) -> None:
  if isinstance(pred, jax.core.Tracer):
    return
  p = np.asarray(pred)
  if p.size and (p.min() < 0 or p.max() >= num_classes):
    raise ValueError(f"predictions must be class ids in [0, {num_classes}), got values in "
                     f"[{p.min()}, {p.max()}] (pass argmax over the {num_classes} class logits).")


def invalid_prediction_count(pred, label, num_classes: int, ignore_label: int = IGNORE):
  """Labelled pixels whose prediction is outside ``[0, K)`` (int32 scalar)."""
  pred = jnp.asarray(pred).astype(jnp.int32)
  bad = _labelled(jnp.asarray(label).astype(jnp.int32), num_classes, ignore_label)
  return jnp.sum(bad & ~_in_range(pred, num_classes)).astype(jnp.int32)


def confusion_scores(cm) -> dict[str, np.ndarray | float]:
  """mIoU, per-class IoU, pixel accuracy and mean class accuracy from a confusion matrix,
  with mmsegmentation's conventions (see the module docstring)."""
  cm = np.asarray(cm, np.float64)
  tp = np.diag(cm)
  gt = cm.sum(axis=1)
  pr = cm.sum(axis=0)
  union = gt + pr - tp
  with np.errstate(invalid="ignore", divide="ignore"):
    iou = np.where(union > 0, tp / union, np.nan)
    acc = np.where(gt > 0, tp / gt, np.nan)
  total = cm.sum()
  miou = float(np.nanmean(iou)) if (union > 0).any() else float("nan")
  macc = float(np.nanmean(acc)) if (gt > 0).any() else float("nan")
  aacc = float(tp.sum() / total) if total else float("nan")
  return {"miou": miou, "per_class_iou": iou, "pixel_accuracy": aacc,
          "mean_class_accuracy": macc, "mIoU": miou, "aAcc": aacc, "mAcc": macc}


def _neighbours_differ(label: jax.Array, valid: jax.Array | None = None) -> jax.Array:
  """Boolean map (same shape ``(..., H, W)``): some 4-neighbour has another value (both
  pixels inside ``valid``, when given)."""
  out = jnp.zeros(label.shape, bool)
  for axis in (-2, -1):
    diff = jnp.diff(label, axis=axis) != 0
    if valid is not None:
      n = label.shape[axis]
      diff &= (lax.slice_in_dim(valid, 0, n - 1, axis=axis)
               & lax.slice_in_dim(valid, 1, n, axis=axis))
    pad_lo = [(0, 0)] * label.ndim
    pad_hi = [(0, 0)] * label.ndim
    pad_lo[axis] = (1, 0)
    pad_hi[axis] = (0, 1)
    out |= jnp.pad(diff, pad_lo) | jnp.pad(diff, pad_hi)
  return out


def _dilate(mask: jax.Array, radius: int) -> jax.Array:
  """Binary dilation of ``(..., H, W)`` by a ``(2r+1)^2`` square (chessboard distance <= r),
  as two separable 1-D passes."""
  if radius == 0:
    return mask
  out = mask.astype(jnp.int32)
  for axis in (-2, -1):
    window = [1] * mask.ndim
    window[axis] = 2 * radius + 1
    pads = [(0, 0)] * mask.ndim
    pads[axis] = (radius, radius)
    out = lax.reduce_window(out, 0, lax.max, tuple(window), (1,) * mask.ndim, pads)
  return out > 0


def fill_void(label: jax.Array, steps: int, ignore_label: int = IGNORE,
              valid: jax.Array | None = None) -> jax.Array:
  """``label`` with ``ignore_label`` pixels taking the largest label among their 8
  neighbours, ``steps`` times: closes a void band up to ``2*steps`` px wide with the
  ground-truth contour on its middle line (within 1 px). Pixels outside ``valid`` (padding)
  are neither filled nor used to fill."""
  label = label.astype(jnp.int32)
  window = (1,) * (label.ndim - 2) + (3, 3)
  pads = [(0, 0)] * (label.ndim - 2) + [(1, 1)] * 2
  for _ in range(steps):
    void = label == ignore_label
    source = jnp.where(void if valid is None else void | ~valid, -1, label)
    best = lax.reduce_window(source, -1, lax.max, window, (1,) * label.ndim, pads)
    fill = void & (best >= 0)
    label = jnp.where(fill if valid is None else fill & valid, best, label)
  return label


def _void(label: jax.Array, ignore_label: int, valid: jax.Array | None) -> jax.Array:
  void = label == ignore_label
  return void if valid is None else void & valid


def _scored(label: jax.Array, ignore_label: int, valid: jax.Array | None = None) -> jax.Array:
  """Pixels whose boundary status is scored: inside ``valid``, neither ignored nor next to
  an ignored pixel (padding is not ignore: it is outside the image)."""
  scored = ~_dilate(_void(label, ignore_label, valid), 1)
  return scored if valid is None else scored & valid


def gt_boundary(label: jax.Array, ignore_label: int = IGNORE,
                valid: jax.Array | None = None) -> jax.Array:
  """Ground-truth boundary pixels of ``(..., H, W)`` labels, none in or beside ignore, none
  outside ``valid`` nor made by its edge."""
  return _neighbours_differ(label, valid) & _scored(label, ignore_label, valid)


def boundary_counts(pred: jax.Array, label: jax.Array, tolerance: int = 1,
                    ignore_label: int = IGNORE, valid: jax.Array | None = None) -> jax.Array:
  """``[matched_pred, total_pred, matched_gt, total_gt]`` int32 for ``(..., H, W)`` maps;
  ``valid`` (optional, same shape) marks the pixels inside the image (padding: False)."""
  scored = _scored(label, ignore_label, valid)
  gt_b = _neighbours_differ(label, valid) & scored
  pr_b = _neighbours_differ(pred.astype(jnp.int32), valid) & scored
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


def trimap_mask(label: jax.Array, band: int = 2, ignore_label: int = IGNORE,
                valid: jax.Array | None = None) -> jax.Array:
  """Pixels within chessboard distance ``band`` of a ground-truth boundary."""
  return _dilate(gt_boundary(label, ignore_label, valid), band)


def void_band_trimap(label: jax.Array, width: int, ignore_label: int = IGNORE,
                     valid: jax.Array | None = None) -> jax.Array:
  """DeepLab's trimap: labelled pixels within chessboard distance ``width`` of void
  (padding outside ``valid`` is not void)."""
  near = _dilate(_void(label, ignore_label, valid), width) & (label != ignore_label)
  return near if valid is None else near & valid


def segmentation_counts(pred: jax.Array, label: jax.Array, num_classes: int, *,
                        tolerance: int = 1, band: int = 2, ignore_label: int = IGNORE,
                        protocol: str = "label", trimap_widths: tuple[int, ...] = (2, 5, 10, 20),
                        void_fill: int = 4, valid: jax.Array | None = None
                        ) -> dict[str, jax.Array]:
  """All summable counts for a batch of ``(..., H, W)`` predictions and labels.

  ``protocol`` is ``"label"`` or ``"void_band"`` (module docstring); ``trimap_widths``
  and ``void_fill`` apply to ``"void_band"`` only. ``valid``: optional boolean map of the
  same shape, False on padding (module docstring); ``None``: no padding.
  """
  if protocol not in PROTOCOLS:
    raise ValueError(f"unknown boundary protocol {protocol!r}; choose from {PROTOCOLS}.")
  if valid is not None:
    valid = jnp.asarray(valid, bool)
    label = jnp.where(valid, jnp.asarray(label).astype(jnp.int32), ignore_label)
  counts = {"confusion": confusion_matrix(pred, label, num_classes, ignore_label),
            "invalid_predictions": invalid_prediction_count(pred, label, num_classes,
                                                            ignore_label)}
  if protocol == "label":
    counts["trimap_confusion"] = confusion_matrix(pred, label, num_classes, ignore_label,
                                                  mask=trimap_mask(label, band, ignore_label,
                                                                   valid))
    counts["boundary"] = boundary_counts(pred, label, tolerance, ignore_label, valid)
    return counts
  for w in sorted(set(trimap_widths) | {band}):
    counts[f"trimap_confusion_w{w}"] = confusion_matrix(
        pred, label, num_classes, ignore_label,
        mask=void_band_trimap(label, w, ignore_label, valid))
  counts["boundary"] = boundary_counts(pred, fill_void(label, void_fill, ignore_label, valid),
                                       tolerance, ignore_label, valid)
  return counts


def segmentation_scores(counts: dict, band: int = 2, class_names: tuple[str, ...] | None = None,
                        detail_classes: tuple[int, ...] = ()) -> dict[str, float | np.ndarray]:
  """Scores from accumulated ``segmentation_counts`` (either protocol).

  ``boundary_band_miou`` is the mIoU over the pixels within ``band`` px of a ground-truth
  boundary (``"label"``) or of the void band (``"void_band"``, where it is
  ``trimap_miou_w{band}``); ``small_structure_miou`` is its old name, kept as an alias
  (deprecated: the band holds every class's boundary pixels, not small structures).
  ``class_names`` adds each class's IoU as ``iou/<name>``; ``detail_classes`` adds
  ``detail_miou``, the mean IoU of those classes (a class absent from both ground truth and
  prediction is left out, as in ``miou``).

  Raises:
    ValueError: some prediction was outside ``[0, K)`` (counted under ``jit``), or
      ``class_names`` / ``detail_classes`` do not fit the K classes of the counts.
  """
  bad = int(np.asarray(counts.get("invalid_predictions", 0)))
  if bad:
    raise ValueError(f"{bad} labelled pixels were predicted as class ids outside [0, K): "
                     "predictions must be argmax over the K class logits.")
  scores = confusion_scores(counts["confusion"])
  if "trimap_confusion" in counts:
    scores["boundary_band_miou"] = confusion_scores(counts["trimap_confusion"])["miou"]
  else:
    for key in sorted(k for k in counts if k.startswith("trimap_confusion_w")):
      scores[f"trimap_miou_{key.rsplit('_', 1)[1]}"] = confusion_scores(counts[key])["miou"]
    scores["boundary_band_miou"] = scores[f"trimap_miou_w{band}"]
  scores["small_structure_miou"] = scores["boundary_band_miou"]
  scores.update(boundary_scores(counts["boundary"]))
  iou = scores["per_class_iou"]
  if class_names is not None:
    if len(class_names) != len(iou):
      raise ValueError(f"{len(class_names)} class names for {len(iou)} classes.")
    scores.update({f"iou/{n}": float(v) for n, v in zip(class_names, iou)})
  if detail_classes:
    if not all(0 <= k < len(iou) for k in detail_classes):
      raise ValueError(f"detail_classes {tuple(detail_classes)} outside [0, {len(iou)}).")
    d = iou[list(detail_classes)]
    scores["detail_miou"] = float(np.nanmean(d)) if np.isfinite(d).any() else float("nan")
  return scores
