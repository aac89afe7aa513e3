"""Independent NumPy references shared by the tests: explicit windows, no JAX."""

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
