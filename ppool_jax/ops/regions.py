"""``map_windows``: a pooling's windows as region-wise strided slices of the unpadded input.

The inference forward of ``p_pool`` (issue #23 item 2) uses it to run as one fused loop
that reads the input directly: XLA:CPU does not fuse a padded copy that is read through
overlapping slices into its consumer, and masks cost a select per member.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from ppool_jax.ops.windows import WindowGeometry, window_members


def _dim_segments(geom: WindowGeometry, d: int) -> list[tuple[int, int, tuple[int, ...]]]:
  """Spatial dim ``d``'s windows as runs ``(j0, j1, offsets)``: windows ``j0 .. j1 - 1``
  have exactly ``offsets`` (those whose member is not padding) along ``d``."""
  n, k, s = geom.spatial_shape[d], geom.window_shape[d], geom.strides[d]
  lo = geom.pads[d][0]
  runs = []
  for j in range(geom.out_spatial[d]):
    valid = tuple(o for o in range(k) if 0 <= s * j + o - lo < n)
    if runs and runs[-1][2] == valid:
      runs[-1] = (runs[-1][0], j + 1, valid)
    else:
      runs.append((j, j + 1, valid))
  return runs


# Above this many member slices over all regions (3x3/2 SAME: 25, 3x3/1 SAME: 49; 5x5/1
# SAME: 361) ``map_windows`` reads the padded input with masks instead: compile time grows
# with the slices (XLA:CPU, 2 cores: 0.8 s for 25, 9 s for 361, 42 s for 7x7/1's 1369).
MAX_REGION_SLICES = 64


def map_windows(fn, x: jax.Array, geom: WindowGeometry, per_window: Sequence[jax.Array] = (),
                max_slices: int = MAX_REGION_SLICES) -> jax.Array:
  """``fn`` applied to the windows' real members, without padding or masks.

  The output is split into *regions* (products of per-dim runs of windows, see
  ``_dim_segments``) in which the same offsets are padding; in each region the real
  members are plain strided slices of the **unpadded** ``x`` ``(*batch, *spatial, C)``.
  ``fn(members, masks, per_window)`` gets the region's member slices, their masks (all
  ``None`` here) and the region's slice of each ``per_window`` array (broadcastable to
  ``geom.out_shape``); it returns the region's output. The regions are concatenated
  back (VALID: one region, no concatenate).

  Elementwise ``fn`` fuses with the slices and the concatenate into one loop over the
  output that reads the input directly: nothing is padded or stored (a padded copy read
  through overlapping slices is not fused into its consumer by XLA:CPU, and masks cost a
  select per member). Where the regions would hold more than ``max_slices`` member slices
  in all (large padded windows), ``fn`` gets every window at once instead: the members of
  ``window_members`` (zero-padded) with their masks.
  """
  nb = len(geom.batch_shape)
  runs = [_dim_segments(geom, d) for d in range(geom.ndim)]
  per_window = [jnp.reshape(v, (1,) * (len(geom.out_shape) - jnp.ndim(v)) + jnp.shape(v))
                for v in per_window]
  if np.prod([sum(len(valid) for *_, valid in r) for r in runs]) > max_slices:
    members, masks = window_members(x, geom)
    return fn(members, masks, per_window)

  def region(chosen):
    members = []
    for offset in itertools.product(*(valid for *_, valid in chosen)):
      start, limit, stride = [0] * x.ndim, list(x.shape), [1] * x.ndim
      for d, (o, (j0, j1, _), s, (lo, _)) in enumerate(zip(offset, chosen, geom.strides,
                                                           geom.pads)):
        first = s * j0 + o - lo
        start[nb + d], limit[nb + d], stride[nb + d] = first, first + s * (j1 - j0 - 1) + 1, s
      members.append(lax.slice(x, start, limit, stride))
    windows = []
    for v in per_window:
      start, limit = [0] * v.ndim, list(v.shape)
      for d, (j0, j1, _) in enumerate(chosen):
        if v.shape[nb + d] != 1:
          start[nb + d], limit[nb + d] = j0, j1
      windows.append(lax.slice(v, start, limit))
    return fn(members, [None] * len(members), windows)

  def build(d, chosen):
    if d == geom.ndim:
      return region(chosen)
    parts = [build(d + 1, chosen + [r]) for r in runs[d]]
    return parts[0] if len(parts) == 1 else jnp.concatenate(parts, axis=nb + d)

  return build(0, [])
