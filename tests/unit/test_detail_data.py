"""The synthetic_detail generator (ppool_jax/data/detail.py): the properties issue #19 asks for,
each checked on generated scenes, and the documented statistics against the generator."""

import os

import numpy as np
import pytest
from scipy import ndimage

from ppool_jax.data import SyntheticSource, detail
from ppool_jax.data.detail import DETAIL_CLASSES, POLE, SMALL, WIRE, generate_sample
from support import ROOT


@pytest.fixture(scope="module")
def scenes():
  pairs = [generate_sample(3, i) for i in range(160)]
  return np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])


def test_deterministic_by_seed_and_index():
  a, b = generate_sample(0, 5), generate_sample(0, 5)
  np.testing.assert_array_equal(a[0], b[0])
  np.testing.assert_array_equal(a[1], b[1])
  assert not np.array_equal(a[0], generate_sample(0, 6)[0])
  assert not np.array_equal(a[0], generate_sample(1, 5)[0])
  src = SyntheticSource(3, 96, 0, "synthetic_detail")
  np.testing.assert_array_equal(src[2]["image"], generate_sample(0, 2)[0])
  assert src.num_classes == 6 and a[0].dtype == np.uint8 and a[1].shape == (96, 96)


@pytest.mark.parametrize("width", [0.6, 0.8, 1.0, 1.3, 2.5])
@pytest.mark.parametrize("centre", [10.0, 10.25, 10.5, 10.8])
def test_lines_are_antialiased_with_exact_coverage(width, centre):
  """Across a vertical line the coverage sums to its width wherever its centre falls (a
  hard-edged line would sum to a whole number of pixels), and no pixel exceeds 1."""
  yy, xx = np.mgrid[:8, :24].astype(np.float64)
  cov = detail._line_coverage(yy, xx, 4.0, centre, 0.0, width, 100.0)
  np.testing.assert_allclose(cov.sum(axis=1), width, atol=1e-9)
  assert cov.max() <= 1.0 and (0 < cov[cov > 0]).all()
  if centre == 10.5 and width <= 1.0:  # between two pixel centres: two half-strength pixels
    np.testing.assert_allclose(sorted(cov[0][cov[0] > 0]), [width / 2, width / 2])


def test_thin_structures_are_narrower_than_the_stride_and_partial(scenes):
  images, labels = scenes
  runs = detail._runs(labels == POLE)
  assert 1 <= np.median(runs) <= 3 and np.percentile(runs, 90) <= 4
  # Anti-aliased edges: beside the labelled pole pixels, the image takes values between the
  # pole's and the background's (coverage < 0.5 is drawn but not labelled).
  grey = images.astype(np.float64).mean(-1)
  edge = ndimage.binary_dilation(labels == POLE, np.ones((1, 1, 3))) & (labels == 0)
  local = np.abs(grey - ndimage.median_filter(grey, size=(1, 1, 7)))
  assert np.mean(local[edge]) > 2 * np.mean(local[(labels == 0) & ~ndimage.binary_dilation(
      labels > 0, np.ones((1, 5, 5)))])


def test_weak_and_strong_responses_share_windows(scenes):
  """Wires are weaker than poles (brightness change against the local median), and in a share
  of scenes a wire runs within 4 px of a pole; small objects sit near blobs."""
  images, labels = scenes
  grey = images.astype(np.float64).mean(-1)
  contrast = np.abs(grey - ndimage.median_filter(grey, size=(1, 9, 9)))
  assert np.mean(contrast[labels == POLE]) > 1.8 * np.mean(contrast[labels == WIRE])
  near_pole = ndimage.binary_dilation(labels == POLE, np.ones((1, 9, 9)))
  assert np.mean([(near_pole[i] & (labels[i] == WIRE)).sum() >= 8
                  for i in range(len(labels))]) > 0.2
  near_blob = ndimage.binary_dilation(labels == detail.BLOB, np.ones((1, 9, 9)))
  assert np.mean([(near_blob[i] & (labels[i] == SMALL)).any() for i in range(len(labels))]) > 0.2


def test_foreground_classes_touch(scenes):
  _, labels = scenes
  horiz = np.stack([labels[:, :, :-1], labels[:, :, 1:]], -1).reshape(-1, 2)
  pairs = {tuple(sorted(p)) for p in horiz[(horiz[:, 0] != horiz[:, 1])
                                          & (horiz.min(1) > 0)].tolist()}
  assert {(1, 3), (1, 2), (2, 3), (3, 4)} <= pairs


def test_colour_alone_does_not_give_the_detail_classes(scenes):
  """A per-colour majority classifier (8 levels per channel), fitted on half the scenes,
  scores IoU < 0.2 on every detail class of the other half."""
  images, labels = scenes
  bins = (images // 32).astype(np.int64)
  code = bins[..., 0] * 64 + bins[..., 1] * 8 + bins[..., 2]
  half = len(images) // 2
  table = np.zeros((512, 6))
  np.add.at(table, (code[:half].ravel(), labels[:half].ravel()), 1)
  pred = table.argmax(1)[code[half:]]
  gt = labels[half:]
  for k in DETAIL_CLASSES:
    iou = ((pred == k) & (gt == k)).sum() / max(((pred == k) | (gt == k)).sum(), 1)
    assert iou < 0.2, (k, iou)


def test_noise_is_spatially_correlated(scenes):
  images, labels = scenes
  grey = images.astype(np.float64).mean(-1)
  resid = grey - ndimage.uniform_filter(grey, size=(1, 9, 9))
  bg = (labels == 0) & (np.roll(labels, 1, axis=2) == 0)
  a, b = resid[:, :, 1:][bg[:, :, 1:]], resid[:, :, :-1][bg[:, :, 1:]]
  assert np.corrcoef(a, b)[0, 1] > 0.3  # i.i.d. noise would give about 0


def test_presence_and_no_ignore(scenes):
  _, labels = scenes
  assert labels.max() < 6  # no ignore label anywhere
  p = detail.presence(labels)
  np.testing.assert_array_equal(p[:, 2], [(l == POLE).sum() >= 3 for l in labels])
  assert 0.5 < p[:, 1:].mean() < 0.9 and p[:, 0].all()
  assert np.all((0.3 < p[:, 1:].mean(0)) & (p[:, 1:].mean(0) < 0.95))  # each class varies


def test_documented_statistics_match_the_generator():
  doc = open(os.path.join(ROOT, "docs", "synthetic_detail.md")).read()
  assert detail.statistics_table(detail.statistics()) in doc


def test_bad_size_is_an_error():
  with pytest.raises(ValueError, match="size must be >= 32"):
    generate_sample(0, 0, 16)
  with pytest.raises(ValueError, match="unknown synthetic dataset"):
    SyntheticSource(2, 96, 0, "synthetic_details")
