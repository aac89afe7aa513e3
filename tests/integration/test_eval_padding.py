"""Evaluation padding is outside the image (issue #24): the same images give the same counts
for every metric and boundary protocol whether scored alone, padded into mixed-size batches,
or evaluated on 1, 3 or 8 devices (pmap and mesh), including labels whose real void band
(255) touches the image border."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import linen as nn

from ppool_jax.data import AugmentConfig, eval_batches
from ppool_jax.data.pipeline import IMAGENET_MEAN, IMAGENET_STD
from ppool_jax.metrics import PROTOCOLS, segmentation_counts
from ppool_jax.train.config import base_config
from ppool_jax.train.loop import evaluate, evaluation_counts, local_evaluation_counts
from ppool_jax.train.parallel import int32_halves, make_runner, sum_halves
from ppool_jax.train.steps import TrainState

K = 21
SIZES = ((37, 45), (50, 33), (41, 41), (29, 52), (45, 38))


def _near(mask, r):
  """Chessboard dilation by ``r`` (NumPy, no wrap-around)."""
  out = mask.copy()
  h, w = mask.shape
  for dy in range(-r, r + 1):
    for dx in range(-r, r + 1):
      out[max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] |= \
          mask[max(-dy, 0):h + min(-dy, 0), max(-dx, 0):w + min(-dx, 0)]
  return out


def _scene(h, w, seed, band):
  """(prediction, label): objects (two touching the border), with a VOC-like void band of
  255 ``band`` px around every object (none for ``band=0``: labels touch, as in Cityscapes),
  a whole void object at the border, and a noisy shifted prediction."""
  rng = np.random.default_rng(seed)
  truth = np.zeros((h, w), np.int32)
  truth[0:h // 3, w // 4:w // 2] = rng.integers(1, K)           # touches the top edge
  truth[h // 2:h, w - w // 4:w] = rng.integers(1, K)            # touches the bottom-right
  truth[h // 3:h // 3 + 9, 3:14] = rng.integers(1, K)
  edge = np.zeros((h, w), bool)
  edge[:, 1:] |= truth[:, 1:] != truth[:, :-1]
  edge[:, :-1] |= truth[:, 1:] != truth[:, :-1]
  edge[1:] |= truth[1:] != truth[:-1]
  edge[:-1] |= truth[1:] != truth[:-1]
  label = np.where(_near(edge, band), 255, truth) if band else truth.copy()
  label[h - 6:h, 0:6] = 255                                     # a void object
  pred = np.roll(truth, (1, 2), axis=(0, 1))
  noise = rng.random((h, w)) < 0.1
  pred[noise] = rng.integers(0, K, noise.sum())
  return pred, label


def _images():
  return [_scene(h, w, i, band=2 * (i % 2)) for i, (h, w) in enumerate(SIZES)]


def _alone(protocol):
  """The reference: each image scored alone, no padding."""
  total = None
  for pred, label in _images():
    c = jax.device_get(segmentation_counts(pred[None], label[None], K, protocol=protocol))
    total = c if total is None else jax.tree_util.tree_map(np.add, total, c)
  return total


def _assert_same(a, b):
  assert a.keys() == b.keys()
  for k in a:
    np.testing.assert_array_equal(np.asarray(a[k]), np.asarray(b[k]), err_msg=k)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_padded_batch_counts_equal_the_images_alone(protocol):
  """One padded batch with garbage in the padding (labels and predictions) counts as the
  images alone; without the mask (old behaviour) the border is mistaken for void."""
  images = _images()
  h, w = max(s[0] for s in SIZES) + 3, max(s[1] for s in SIZES) + 5
  rng = np.random.default_rng(7)
  pred = rng.integers(0, K, (len(images), h, w))
  label = rng.integers(0, K, (len(images), h, w))
  valid = np.zeros((len(images), h, w), bool)
  for i, (p, l) in enumerate(images):
    pred[i, :p.shape[0], :p.shape[1]] = p
    label[i, :p.shape[0], :p.shape[1]] = l
    valid[i, :p.shape[0], :p.shape[1]] = True
  batch = jax.device_get(segmentation_counts(pred, label, K, protocol=protocol, valid=valid))
  _assert_same(batch, _alone(protocol))
  assert batch["boundary"][3] > 0 and batch["confusion"].sum() > 0
  # Padding with ignore (255) and no mask: what evaluation did before issue #24.
  old = jax.device_get(segmentation_counts(pred, np.where(valid, label, 255), K,
                                           protocol=protocol))
  assert not np.array_equal(old["boundary"], batch["boundary"])


class _Decode(nn.Module):
  """Parameter-free, per-pixel "model": the class encoded in the red channel (10 * k)."""

  @nn.compact
  def __call__(self, x, train=False):
    centres = (10.0 * jnp.arange(K) - IMAGENET_MEAN[0]) / IMAGENET_STD[0]
    return -(x[..., :1] - centres) ** 2


def _source():
  return [{"image": np.repeat((10 * p).astype(np.uint8)[..., None], 3, -1),
           "label": l.astype(np.uint8)} for p, l in _images()]


class _Reads(list):
  """A source that records which examples were read."""

  def __init__(self, items):
    super().__init__(items)
    self.indices = []

  def __getitem__(self, i):
    self.indices.append(i)
    return super().__getitem__(i)


def _cfg():
  cfg = base_config()
  cfg.dataset.name = "voc_aug"
  cfg.eval_limit = -1
  return cfg


def _runner(mode, protocol, n):
  tx = optax.sgd(0.1)
  state = TrainState(step=jnp.zeros((), jnp.int32), params={}, model_state={},
                     opt_state=tx.init({}), rng=jax.random.PRNGKey(0),
                     nonfinite=jnp.zeros((), jnp.int32))
  runner = make_runner(mode, _Decode(), tx, K, "valid", protocol, devices=jax.devices()[:n])
  return runner, runner.place(state)


@pytest.mark.skipif(jax.device_count() < 8, reason="needs 8 (host) devices; see conftest.py")
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_evaluate_counts_do_not_depend_on_devices_or_batching(protocol):
  reference = _alone(protocol)
  cfg = _cfg()
  for mode, n in (("pmap", 1), ("pmap", 3), ("pmap", 8), ("mesh", 8)):
    runner, rstate = _runner(mode, protocol, n)
    _assert_same(evaluation_counts(runner, rstate, _source(), cfg, n), reference)
  if protocol == "void_band":
    one = evaluate(*_runner("pmap", protocol, 1), _source(), cfg, 1)
    eight = evaluate(*_runner("pmap", protocol, 8), _source(), cfg, 8)
    for k in ("small_structure_miou", "trimap_miou_w10", "boundary_f", "miou"):
      assert one[k] == eight[k], (k, one[k], eight[k])


@pytest.mark.skipif(jax.device_count() < 8, reason="needs 8 (host) devices; see conftest.py")
@pytest.mark.parametrize("mode", ["pmap", "mesh"])
def test_process_shares_split_the_images_and_their_counts_add_up(mode):
  """Multi-host evaluation, share by share (one process here): the shares of 2, 3 and 8
  processes are disjoint, cover every image once, and their counts add up to the whole
  set's exactly; a share with no image (8 processes, 5 images) counts zeros."""
  reference, cfg, src = _alone("label"), _cfg(), _source()
  for count in (2, 3, 8):
    seen = []
    for p in range(count):
      read = _Reads(src)
      list(eval_batches(read, 2, AugmentConfig(), process_index=p, process_count=count))
      seen.append(read.indices)
    assert sorted(sum(seen, [])) == list(range(len(src)))   # every image once
    assert seen == [list(range(p, len(src), count)) for p in range(count)]
    runner, rstate = _runner(mode, "label", 2)
    shares = [local_evaluation_counts(runner, rstate, src, cfg, 2, p, count)
              for p in range(count)]
    assert all(set(c) == set(reference) for c in shares)
    _assert_same(jax.tree_util.tree_map(lambda *c: sum(c), *shares), reference)
    pixels = [c["confusion"].sum() for c in shares]
    assert pixels == [sum((_images()[i][1] != 255).sum() for i in range(p, len(src), count))
                      for p in range(count)]
  assert pixels[5:] == [0, 0, 0]
  with pytest.raises(ValueError, match="process_index 2"):
    next(eval_batches(src, 2, AugmentConfig(), process_index=2, process_count=2))


def test_counts_cross_processes_exactly_in_int32_halves():
  """The all-gather of multi-host evaluation holds int32: counts past 2**31 (a large eval
  set's pixels) survive the split into halves and the int64 sum."""
  counts = np.array([[0, 1, 2 ** 31 - 1, 2 ** 31, 3 * 2 ** 40 + 5], [7, 2 ** 33, 2 ** 31 + 1, 0,
                                                                      2 ** 60]])
  halves = np.stack([int32_halves(c) for c in counts])
  assert halves.dtype == np.int32 and halves.shape == (2, 2, 5)
  np.testing.assert_array_equal(sum_halves(halves), counts.sum(0))
  np.testing.assert_array_equal(sum_halves(halves[:1]), counts[0])
  with pytest.raises(OverflowError, match="2\\*\\*61"):
    int32_halves(np.array([2 ** 61]))


def test_eval_batches_mark_padding_invalid():
  src = _source()[:3]
  batches = list(eval_batches(src, num_devices=2, cfg=AugmentConfig(), multiple=8))
  v = batches[0]["valid"]
  assert v.dtype == bool and v.shape == batches[0]["label"].shape == (2, 56, 48)
  assert v[0, :37, :45].all() and not v[0, 37:].any() and not v[0, :, 45:].any()
  assert v[1, :50, :33].all() and v[1].sum() == 50 * 33
  assert not batches[1]["valid"][1].any()  # the filler image
