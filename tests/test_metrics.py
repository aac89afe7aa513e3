"""Metrics against independent NumPy / brute-force computations."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import parameterized

from ppool_jax.data.synthetic import generate
from ppool_jax.metrics import (boundary_counts, boundary_scores, confusion_matrix,
                               confusion_scores, segmentation_counts, segmentation_scores,
                               trimap_mask)

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


class ConfusionTest(parameterized.TestCase):

  def test_confusion_against_numpy(self):
    pred, label = _pair()
    cm = confusion_matrix(jnp.asarray(pred), jnp.asarray(label), K)
    np.testing.assert_array_equal(cm, _np_confusion(pred, label, K))

  def test_scores_and_absent_classes(self):
    label = np.array([[0, 0, 1, 1], [0, 0, 1, 255]])
    pred = np.array([[0, 1, 1, 3], [0, 0, 1, 2]])  # class 3 predicted, absent from GT
    s = confusion_scores(confusion_matrix(jnp.asarray(pred), jnp.asarray(label), 4))
    iou0 = 3 / (4 + 3 - 3)
    iou1 = 2 / (3 + 3 - 2)
    np.testing.assert_allclose(s["per_class_iou"][:2], [iou0, iou1])
    self.assertTrue(np.isnan(s["per_class_iou"][2]) and np.isnan(s["per_class_iou"][3]))
    self.assertAlmostEqual(s["miou"], (iou0 + iou1) / 2)
    self.assertAlmostEqual(s["pixel_accuracy"], 5 / 7)
    self.assertAlmostEqual(s["mean_class_accuracy"], (3 / 4 + 2 / 3) / 2)

  def test_jit_and_pmap_sum_equals_whole_batch(self):
    n = jax.local_device_count()
    pred, label = _pair(seed=1, n=n, size=24)
    whole = segmentation_counts(jnp.asarray(pred), jnp.asarray(label), K)
    per_dev = jax.pmap(lambda p, l: jax.lax.psum(segmentation_counts(p, l, K), "d"),
                       axis_name="d")(jnp.asarray(pred)[:, None], jnp.asarray(label)[:, None])
    for key in whole:
      np.testing.assert_array_equal(per_dev[key][0], whole[key])


class BoundaryTest(parameterized.TestCase):

  @parameterized.parameters(0, 1, 2)
  def test_boundary_counts_against_brute_force(self, tol):
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
    self.assertAlmostEqual(s["boundary_f"], 2 * p * r / (p + r))

  def test_perfect_prediction_scores_one(self):
    _, label = _pair(seed=3, n=2, size=32)
    pred = np.where(label == 255, 0, label)
    s = segmentation_scores(segmentation_counts(jnp.asarray(pred), jnp.asarray(label), K))
    self.assertEqual(s["miou"], 1.0)
    self.assertEqual(s["boundary_f"], 1.0)
    self.assertEqual(s["small_structure_miou"], 1.0)
    flat = segmentation_scores(segmentation_counts(jnp.zeros_like(label), jnp.asarray(label), K))
    self.assertEqual(flat["boundary_f"], 0.0)       # boundaries exist, none predicted
    self.assertTrue(np.isnan(flat["boundary_precision"]))

  @parameterized.parameters(1, 2)
  def test_trimap_mask_and_small_structure_iou(self, band):
    pred, label = _pair(seed=4, n=2, size=20)
    mask = np.asarray(trimap_mask(jnp.asarray(label), band))
    for m, l in zip(mask, label):
      np.testing.assert_array_equal(m, _np_near(np.ones(l.shape, bool), _np_gt_boundary(l), band))
    counts = segmentation_counts(jnp.asarray(pred), jnp.asarray(label), K, band=band)
    np.testing.assert_array_equal(counts["trimap_confusion"],
                                  _np_confusion(pred, label, K, mask))


if __name__ == "__main__":
  pytest.main([__file__])
