"""Metrics against independent NumPy / brute-force computations."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ppool_jax.data.synthetic import generate
from ppool_jax.metrics import (boundary_counts, boundary_scores, confusion_matrix,
                               confusion_scores, fill_void, segmentation_counts,
                               segmentation_scores, trimap_mask, void_band_trimap)
from support import approx_places

K = 6


def _pair(seed=0, n=3, size=32):
  _, labels = generate(n, size, seed)
  rng = np.random.default_rng(seed)
  pred = labels.astype(np.int32).copy()
  pred[pred == 255] = rng.integers(0, K, (pred == 255).sum())
  noise = rng.random(pred.shape) < 0.15
  pred[noise] = rng.integers(0, K, noise.sum())
  pred = np.roll(pred, 1, axis=-1)  # shifted boundaries, so boundary scores are not trivial
  return pred, labels.astype(np.int32)


def _np_confusion(pred, label, k, mask=None):
  valid = label != 255
  if mask is not None:
    valid &= mask
  cm = np.zeros((k, k), np.int64)
  np.add.at(cm, (label[valid], pred[valid]), 1)
  return cm


def _np_boundary(lab):
  """Brute force: pixel with a 4-neighbour of another value."""
  out = np.zeros(lab.shape, bool)
  h, w = lab.shape
  for y, x in itertools.product(range(h), range(w)):
    for dy, dx in ((-1, 0), (1, 0), (0, -1), (0, 1)):
      yy, xx = y + dy, x + dx
      if 0 <= yy < h and 0 <= xx < w and lab[yy, xx] != lab[y, x]:
        out[y, x] = True
  return out


def _np_near(mask, other, r):
  """For each True pixel of mask: is some True pixel of other within chessboard distance r?"""
  ys, xs = np.nonzero(other)
  out = np.zeros(mask.shape, bool)
  for y, x in zip(*np.nonzero(mask)):
    out[y, x] = bool(np.any((np.abs(ys - y) <= r) & (np.abs(xs - x) <= r)))
  return out


def _np_scored(lab):
  ign = lab == 255
  return ~_np_near(np.ones(lab.shape, bool), ign, 1) if ign.any() else np.ones(lab.shape, bool)


def _np_gt_boundary(lab):
  return _np_boundary(lab) & _np_scored(lab)


# -- confusion --------------------------------------------------------------------------------

def test_confusion_against_numpy():
  pred, label = _pair()
  cm = confusion_matrix(jnp.asarray(pred), jnp.asarray(label), K)
  np.testing.assert_array_equal(cm, _np_confusion(pred, label, K))


def test_scores_and_absent_classes():
  label = np.array([[0, 0, 1, 1], [0, 0, 1, 255]])
  pred = np.array([[0, 1, 1, 3], [0, 0, 1, 2]])  # class 3 predicted, absent from GT
  s = confusion_scores(confusion_matrix(jnp.asarray(pred), jnp.asarray(label), 4))
  iou0 = 3 / (4 + 3 - 3)
  iou1 = 2 / (3 + 3 - 2)
  # mmsegmentation's IoUMetric: class 3 is predicted but absent from the ground truth:
  # IoU = 0 / (0 + 1 + 0) = 0, and it counts in the mean; class 2 is absent from both
  # the ground truth and the prediction (its only prediction is on an ignored pixel).
  np.testing.assert_allclose(s["per_class_iou"][[0, 1, 3]], [iou0, iou1, 0.0])
  assert np.isnan(s["per_class_iou"][2])
  assert s["miou"] == approx_places((iou0 + iou1 + 0.0) / 3)
  assert s["pixel_accuracy"] == approx_places(5 / 7)
  assert s["mean_class_accuracy"] == approx_places((3 / 4 + 2 / 3) / 2)
  assert (s["mIoU"], s["aAcc"], s["mAcc"]) == (s["miou"], s["pixel_accuracy"],
                                                s["mean_class_accuracy"])


def test_scores_equal_mmsegmentations_formula():
  # mmseg IoUMetric.total_area_to_metrics written out on areas, independently.
  pred, label = _pair(seed=7)
  pred[pred == 4] = 5                       # class 4 never predicted, 5 over-predicted
  cm = _np_confusion(pred, label, K)
  valid = label != 255
  inter = np.array([np.sum((pred == c) & (label == c) & valid) for c in range(K)], float)
  area_pred = np.array([np.sum((pred == c) & valid) for c in range(K)], float)
  area_label = np.array([np.sum((label == c) & valid) for c in range(K)], float)
  with np.errstate(invalid="ignore"):
    iou = inter / (area_pred + area_label - inter)
  s = confusion_scores(cm)
  np.testing.assert_allclose(s["per_class_iou"], iou)
  assert s["mIoU"] == approx_places(np.nanmean(iou))
  assert s["aAcc"] == approx_places(inter.sum() / area_label.sum())
  assert s["mAcc"] == approx_places(np.nanmean(inter / area_label))


def test_out_of_range_predictions_are_an_error_never_another_class():
  label = jnp.zeros((1, 4, 4), jnp.int32)
  pred = jnp.full((1, 4, 4), K, jnp.int32)                # class K does not exist
  with pytest.raises(ValueError, match=r"class ids in \[0, 6\)"):
    confusion_matrix(pred, label, K)
  with pytest.raises(ValueError, match=r"class ids in \[0, 6\)"):
    segmentation_counts(pred.at[0, 0, 0].set(-1), label, K)
  # Under jit nothing can raise: the pixels are counted as invalid, not as class K-1,
  # and the scores refuse them.
  counts = jax.jit(lambda p, l: segmentation_counts(p, l, K))(pred, label)
  assert int(counts["confusion"].sum()) == 0
  assert int(counts["invalid_predictions"]) == 16
  with pytest.raises(ValueError, match="16 labelled pixels were predicted"):
    segmentation_scores(counts)


def test_jit_and_pmap_sum_equals_whole_batch():
  n = jax.local_device_count()
  pred, label = _pair(seed=1, n=n, size=24)
  whole = segmentation_counts(jnp.asarray(pred), jnp.asarray(label), K)
  per_dev = jax.pmap(lambda p, l: jax.lax.psum(segmentation_counts(p, l, K), "d"),
                     axis_name="d")(jnp.asarray(pred)[:, None], jnp.asarray(label)[:, None])
  for key in whole:
    np.testing.assert_array_equal(per_dev[key][0], whole[key])


# -- boundary ---------------------------------------------------------------------------------

@pytest.mark.parametrize("tol", [0, 1, 2])
def test_boundary_counts_against_brute_force(tol):
  pred, label = _pair(seed=2, n=2, size=20)
  counts = np.asarray(boundary_counts(jnp.asarray(pred), jnp.asarray(label), tol))
  ref = np.zeros(4)
  for p, l in zip(pred, label):
    gt_b = _np_gt_boundary(l)
    pr_b = _np_boundary(p) & _np_scored(l)
    ref += [(_np_near(pr_b, gt_b, tol) & pr_b).sum(), pr_b.sum(),
            (_np_near(gt_b, pr_b, tol) & gt_b).sum(), gt_b.sum()]
  np.testing.assert_array_equal(counts, ref)
  s = boundary_scores(counts)
  p, r = ref[0] / ref[1], ref[2] / ref[3]
  assert s["boundary_f"] == approx_places(2 * p * r / (p + r))


def test_perfect_prediction_scores_one():
  _, label = _pair(seed=3, n=2, size=32)
  pred = np.where(label == 255, 0, label)
  s = segmentation_scores(segmentation_counts(jnp.asarray(pred), jnp.asarray(label), K))
  assert s["miou"] == 1.0
  assert s["boundary_f"] == 1.0
  assert s["small_structure_miou"] == 1.0
  flat = segmentation_scores(segmentation_counts(jnp.zeros_like(label), jnp.asarray(label), K))
  assert flat["boundary_f"] == 0.0       # boundaries exist, none predicted
  assert np.isnan(flat["boundary_precision"])


@pytest.mark.parametrize("band", [1, 2])
def test_trimap_mask_and_small_structure_iou(band):
  pred, label = _pair(seed=4, n=2, size=20)
  mask = np.asarray(trimap_mask(jnp.asarray(label), band))
  for m, l in zip(mask, label):
    np.testing.assert_array_equal(m, _np_near(np.ones(l.shape, bool), _np_gt_boundary(l), band))
  counts = segmentation_counts(jnp.asarray(pred), jnp.asarray(label), K, band=band)
  np.testing.assert_array_equal(counts["trimap_confusion"],
                                _np_confusion(pred, label, K, mask))


def _voc_style(seed=5, n=2, size=56):
  """A true segmentation and its VOC-style label: a void band (6 px) on every contour.

  Two touching objects (a shared contour) and a third one 8 px away, at random offsets."""
  rng = np.random.default_rng(seed)
  truth = np.zeros((n, size, size), np.int32)
  for b in range(n):
    dy, dx = rng.integers(-3, 4, 2)
    truth[b, 6 + dy:20 + dy, 6 + dx:22 + dx] = 1
    truth[b, 6 + dy:20 + dy, 22 + dx:36 + dx] = 2
    truth[b, 28 + dy:42 + dy, 10 + dx:30 + dx] = rng.integers(3, K)
  label = truth.copy()
  for b in range(n):
    label[b][_np_near(np.ones((size, size), bool), _np_boundary(truth[b]), 2)] = 255
  return truth, label


# -- void band --------------------------------------------------------------------------------

def test_voc_style_scores_are_finite_one_when_perfect_and_lower_when_shifted():
  truth, label = _voc_style()
  # VOC-like: no labelled pixel touches another class.
  for lab in label:
    assert not (_np_boundary(lab) & (lab != 255) & ~_np_near(np.ones(lab.shape, bool),
                                                              lab == 255, 1)).any()
  # The default protocol never scores a pixel next to void: NaN on VOC (why this exists).
  old = segmentation_scores(segmentation_counts(jnp.asarray(truth), jnp.asarray(label), K))
  assert np.isnan(old["boundary_f"]) and np.isnan(old["small_structure_miou"])
  count = lambda p: segmentation_scores(segmentation_counts(
      jnp.asarray(p), jnp.asarray(label), K, protocol="void_band"))
  perfect = count(truth)
  keys = ["boundary_f", "small_structure_miou", "trimap_miou_w2", "trimap_miou_w5",
          "trimap_miou_w10", "trimap_miou_w20", "miou"]
  for k in keys:
    assert perfect[k] == 1.0, k
  shifted = count(np.roll(truth, 5, axis=-1))  # past the half band (3 px)
  for k in keys:
    assert np.isfinite(shifted[k]) and shifted[k] < 0.95, (k, shifted[k])
  # Farther off is worse on the boundary score.
  assert count(np.roll(truth, 9, axis=-1))["boundary_f"] < shifted["boundary_f"]


@pytest.mark.parametrize("w", [1, 3, 7])
def test_void_band_trimap_against_brute_force(w):
  truth, label = _voc_style(seed=6)
  pred = np.roll(truth, 2, axis=-2)
  counts = segmentation_counts(jnp.asarray(pred), jnp.asarray(label), K, protocol="void_band",
                               trimap_widths=(w,), band=w)
  for lab in label:
    mask = _np_near(np.ones(lab.shape, bool), lab == 255, w) & (lab != 255)
    np.testing.assert_array_equal(void_band_trimap(jnp.asarray(lab), w), mask)
  masks = np.stack([_np_near(np.ones(l.shape, bool), l == 255, w) & (l != 255) for l in label])
  np.testing.assert_array_equal(counts[f"trimap_confusion_w{w}"],
                                _np_confusion(pred, label, K, masks))


def test_fill_void_puts_the_contour_in_the_band():
  truth, label = _voc_style(seed=8)
  filled = np.asarray(fill_void(jnp.asarray(label), 3))
  assert not (filled == 255).any()
  np.testing.assert_array_equal(filled[label != 255], label[label != 255])
  # Every filled contour pixel is within 1 px of a true contour pixel.
  for f, t in zip(filled, truth):
    fb, tb = _np_boundary(f), _np_boundary(t)
    assert _np_near(fb, tb, 1)[fb].all()


def test_unknown_protocol():
  with pytest.raises(ValueError, match="unknown boundary protocol 'voc'"):
    segmentation_counts(jnp.zeros((2, 2), jnp.int32), jnp.zeros((2, 2), jnp.int32), K,
                        protocol="voc")


def test_per_class_iou_detail_miou_and_the_band_alias_against_numpy():
  """iou/<name> and detail_miou against a NumPy count; a class absent from both prediction
  and ground truth is left out of detail_miou; boundary_band_miou == small_structure_miou."""
  from ppool_jax.metrics import segmentation_counts, segmentation_scores
  rng = np.random.default_rng(0)
  label = rng.integers(0, 4, (2, 16, 16))
  pred = np.where(rng.random(label.shape) < 0.7, label, rng.integers(0, 4, label.shape))
  pred[pred == 3], label[label == 3] = 0, 0   # class 3 absent from both: NaN
  names = ("bg", "a", "b", "c")
  s = segmentation_scores(segmentation_counts(pred, label, 4), class_names=names,
                          detail_classes=(1, 3))
  iou = [((pred == k) & (label == k)).sum() / ((pred == k) | (label == k)).sum()
         if ((pred == k) | (label == k)).any() else np.nan for k in range(4)]
  for k, n in enumerate(names):
    np.testing.assert_equal(s[f"iou/{n}"], iou[k])
  assert s["detail_miou"] == pytest.approx(iou[1])  # class 3 (NaN) left out
  assert s["boundary_band_miou"] == s["small_structure_miou"]
  voc = label.copy()
  voc[:, 6:8] = 255  # a void band
  v = segmentation_scores(segmentation_counts(pred, voc, 4, protocol="void_band"))
  assert np.isfinite(v["trimap_miou_w2"])
  assert v["boundary_band_miou"] == v["trimap_miou_w2"] == v["small_structure_miou"]
  with pytest.raises(ValueError, match="3 class names for 4 classes"):
    segmentation_scores(segmentation_counts(pred, label, 4), class_names=names[:3])
  with pytest.raises(ValueError, match=r"detail_classes \(4,\) outside \[0, 4\)"):
    segmentation_scores(segmentation_counts(pred, label, 4), detail_classes=(4,))


def test_evaluation_reports_per_class_and_detail_scores_by_name():
  from ml_collections import ConfigDict

  from ppool_jax.train.inputs import class_names, detail_classes
  cfg = ConfigDict({"dataset": {"name": "synthetic_detail"}})
  assert class_names(cfg)[2] == "pole" and detail_classes(cfg) == (2, 4, 5)
  cfg.dataset.name = "cityscapes"
  assert [class_names(cfg)[k] for k in detail_classes(cfg)] == ["pole", "traffic sign"]
  cfg.dataset.name = "voc_aug"
  assert [class_names(cfg)[k] for k in detail_classes(cfg)] == ["diningtable", "pottedplant"]
  cfg.dataset.name = "ade20k"
  assert class_names(cfg)[149] == "class_149" and detail_classes(cfg) == ()
