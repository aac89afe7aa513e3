"""Logits land where their features come from, for every model and input size.

Every conv is set to an identity kernel (centre tap, channel 0 -> channel 0) and the
head passes channel 0, so a single bright pixel travels through the poolings alone.
The reference is independent of the models' geometry code: per axis, the set of
output cells a pixel reaches is simulated from the published layer list (window,
stride, padding), and each cell's centre is the mean of the pixels that reach it. The
response's centroid must lie within 1 px of the mean centre of the pixel's cells.
"""

import functools
import zlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ppool_jax.models import build_model

# Per axis: ("pool", window, stride, pad_low) copies a value into every window holding it
# (max pooling); ("conv", window, stride, pad_low) is an identity kernel: cell j reads
# position stride*j - pad_low + (window - 1)/2. Stride-1 convs are left out (no effect).
P2 = ("pool", 2, 2, 0)          # 2x2 stride 2, SAME: no low padding
POOL5 = ("pool", 3, 1, 1)       # VGG16-seg / DeepLab pool5, ResNet OS16 last pooling
POOL1 = ("pool", 3, 2, 1)       # ResNet's pool1
CONV_S2 = ("conv", 3, 2, 1)     # 3x3 stride-2 conv, padding 1
LAYERS = {
    "vgg16_seg": [P2, P2, P2, P2, POOL5],
    "deeplab_largefov": [P2, P2, P2, P2, POOL5],
    "fcn8s": [P2, P2, P2, P2, P2],  # the stride-32 scores dominate (skips are scaled down)
    "resnet50_seg": [P2, POOL1, P2, P2, P2],
    "deeplabv3": [P2, POOL1, P2, P2, POOL5],
    "vgg16_seg:strided_c": [CONV_S2] * 4,
    "resnet50_seg:strided_c": [("conv", 7, 2, 3), POOL1, CONV_S2, CONV_S2, CONV_S2],
}


def _cells(p, layers, n):
  """Output cells (one axis, input length n) that pixel p reaches."""
  cells = {p}
  for kind, k, s, lo in layers:
    n_out = -(-n // s)
    if kind == "pool":
      cells = {j for j in range(n_out) if any(s * j - lo <= i <= s * j - lo + k - 1 for i in cells)}
    else:
      cells = {j for j in range(n_out) if s * j - lo + (k - 1) // 2 in cells}
    n = n_out
  return cells


@functools.lru_cache(maxsize=None)
def _reach_and_centres(layers, n):
  reach = [_cells(q, layers, n) for q in range(n)]
  sources = {}
  for q, cells in enumerate(reach):
    for j in cells:
      sources.setdefault(j, []).append(q)
  return reach, {j: float(np.mean(qs)) for j, qs in sources.items()}


def _expected_centroid(p, layers, n):
  reach, centre = _reach_and_centres(tuple(layers), n)
  return float(np.mean([centre[j] for j in reach[p]])) if reach[p] else None


def _identity(variables):
  def fix(path, x):
    name = getattr(path[-1], "key", None)
    if name == "kernel":
      k = np.zeros(x.shape, np.float32)
      k[x.shape[0] // 2, x.shape[1] // 2, 0, 0] = 1.0
      return jnp.asarray(k)
    return {"bias": jnp.zeros, "mean": jnp.zeros, "scale": jnp.ones,
            "var": jnp.ones}.get(name, lambda s: x)(x.shape)
  return jax.tree_util.tree_map_with_path(fix, variables)


CASES = [(m, s) for m in ("vgg16_seg", "resnet50_seg") for s in
         [(320, 320), (321, 321), (513, 513), (375, 500)]]
CASES += [(m, s) for m in ("deeplab_largefov", "fcn8s", "deeplabv3", "vgg16_seg:strided_c",
                           "resnet50_seg:strided_c") for s in [(321, 321), (375, 500)]]


@pytest.mark.parametrize("name,size", CASES)
def test_a_bright_pixel_comes_back_at_its_cells_centre(name, size):
  model_name, _, pooling = name.partition(":")
  model = build_model(model_name, num_classes=2, width=1 / 16, pooling=pooling or "max")
  layers = LAYERS[name]
  rng = np.random.default_rng(zlib.crc32(f"{name}{size}".encode()))
  positions, expected = [], []
  while len(positions) < 6:  # interior pixels whose response survives (strided convs skip some)
    p = (int(rng.integers(64, size[0] - 64)), int(rng.integers(64, size[1] - 64)))
    e = (_expected_centroid(p[0], layers, size[0]), _expected_centroid(p[1], layers, size[1]))
    if None not in e:
      positions.append(p)
      expected.append(e)
  x = np.zeros((len(positions),) + size + (3,), np.float32)
  for i, (py, px) in enumerate(positions):
    x[i, py, px, 0] = 1.0
  variables = model.init({"params": jax.random.PRNGKey(0), "dropout": jax.random.PRNGKey(1)},
                         x[:1])
  out = np.asarray(jax.jit(model.apply)(_identity(variables), jnp.asarray(x)))[..., 0]
  for o, p, e in zip(np.maximum(out, 0), positions, expected):
    assert o.sum() > 0, (name, p)
    cy = (o.sum(1) * np.arange(o.shape[0])).sum() / o.sum()
    cx = (o.sum(0) * np.arange(o.shape[1])).sum() / o.sum()
    assert abs(cy - e[0]) <= 1.0 and abs(cx - e[1]) <= 1.0, (name, size, p, (cy, cx), e)
