"""Independent NumPy references shared by the tests: explicit windows, bilinear resizing and
test-time augmentation; no JAX."""

import itertools

import numpy as np
from jax import lax


def pads_for(x_shape, window, strides, padding):
  """(low, high) padding per spatial dim, as lax/flax compute it."""
  if isinstance(padding, str):
    return lax.padtype_to_pads(x_shape[1:-1], window, strides, padding)
  return padding


def out_shape(x_shape, window, strides, pads):
  spatial = x_shape[1:-1]
  return (x_shape[0],) + tuple(
      (n + lo + hi - k) // s + 1 for n, k, s, (lo, hi) in zip(spatial, window, strides, pads)
  ) + (x_shape[-1],)


def windows(x, window, strides, pads):
  """Yields (out_index, [(in_index, offset_index, value), ...]) over real members only.

  ``x`` is ``(B, *spatial, C)``; offsets are numbered row-major over the window.
  """
  spatial = x.shape[1:-1]
  out = out_shape(x.shape, window, strides, pads)[1:-1]
  for b in range(x.shape[0]):
    for pos in itertools.product(*(range(o) for o in out)):
      for c in range(x.shape[-1]):
        members = []
        for k, off in enumerate(itertools.product(*(range(w) for w in window))):
          idx = tuple(p * s + o - lo for p, s, o, (lo, _) in zip(pos, strides, off, pads))
          if all(0 <= i < n for i, n in zip(idx, spatial)):
            full = (b,) + idx + (c,)
            members.append((full, k, x[full]))
        yield (b,) + pos + (c,), members


def pool(x, window, strides, padding, fn):
  """Applies ``fn(values, offsets, channel)`` to every window's real members."""
  x = np.asarray(x, np.float64)
  pads = pads_for(x.shape, window, strides, padding)
  y = np.zeros(out_shape(x.shape, window, strides, pads))
  for j, members in windows(x, window, strides, pads):
    vals = np.array([m[2] for m in members])
    offs = np.array([m[1] for m in members])
    y[j] = fn(vals, offs, j[-1])
  return y


# -- resizing and test-time augmentation (ppool_jax.models.tta) ---------------------------

def np_resize_axis(x, n_out, axis):
  """Bilinear, half-pixel centres, edge clamped, no antialiasing, along one axis."""
  n_in = x.shape[axis]
  src = np.clip((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0, n_in - 1)
  i0 = np.floor(src).astype(int)
  i1 = np.minimum(i0 + 1, n_in - 1)
  w = (src - i0).reshape([-1 if a == axis else 1 for a in range(x.ndim)])
  return np.take(x, i0, axis) * (1 - w) + np.take(x, i1, axis) * w


def np_resize(x, size):
  return np_resize_axis(np_resize_axis(np.asarray(x, np.float64), size[0], 1), size[1], 2)


def np_tta(f, x, scales, flip):
  """The mean of ``f``'s outputs on ``x`` resized by each scale (and flipped), resized back."""
  h, w = x.shape[1:3]
  outs = []
  for s in scales:
    size = (max(1, round(h * s)), max(1, round(w * s)))
    xs = np_resize(x, size)
    outs.append(np_resize(f(xs), (h, w)))
    if flip:
      outs.append(np_resize(f(xs[:, :, ::-1])[:, :, ::-1], (h, w)))
  return np.mean(outs, 0)
