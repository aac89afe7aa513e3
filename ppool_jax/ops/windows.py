"""Window geometry shared by every pooling operator in ppool_jax.

A pooling window over ``n`` spatial dims is visited as ``prod(window_shape)``
*offsets*: offset ``o`` is the strided slice of the padded input whose element
``j`` is the ``o``-th member of window ``j``. Reducing over offsets with
elementwise ops lets XLA fuse a whole pooling operator into one loop, without
materialising a ``(*out, k*k)`` patch tensor. The transpose (an input gradient) is
computed per pixel instead of scattered: see ``pixel_memberships``.

Layout follows ``flax.linen.pooling``: ``(*batch, *spatial, C)``.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Sequence
from typing import Union

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

Padding = Union[str, Sequence[tuple[int, int]]]


@dataclasses.dataclass(frozen=True)
class WindowGeometry:
  """Static description of a pooling: shapes, strides and per-offset masks.

  Attributes:
    batch_shape: the leading batch dims of the input.
    spatial_shape: the unpadded spatial dims of the input.
    window_shape: window size per spatial dim.
    strides: stride per spatial dim.
    pads: ``(low, high)`` padding per spatial dim.
    out_spatial: spatial dims of the pooled output.
    channels: size of the trailing channel dim.
  """

  batch_shape: tuple[int, ...]
  spatial_shape: tuple[int, ...]
  window_shape: tuple[int, ...]
  strides: tuple[int, ...]
  pads: tuple[tuple[int, int], ...]
  out_spatial: tuple[int, ...]
  channels: int

  @property
  def ndim(self) -> int:
    return len(self.window_shape)

  @property
  def out_shape(self) -> tuple[int, ...]:
    return self.batch_shape + self.out_spatial + (self.channels,)

  @property
  def offsets(self) -> list[tuple[int, ...]]:
    return list(itertools.product(*(range(k) for k in self.window_shape)))

  @property
  def padded(self) -> bool:
    return any(lo or hi for lo, hi in self.pads)

  def valid_masks(self) -> list[np.ndarray | None]:
    """Per offset, a boolean ``(*out_spatial, 1)`` mask of real (unpadded) members.

    ``None`` stands for "all valid" so unpadded poolings carry no mask at all.
    """
    if not self.padded:
      return [None] * len(self.offsets)
    masks = []
    for offset in self.offsets:
      mask = np.ones(self.out_spatial, bool)
      for d, (o, s, (lo, _), n) in enumerate(
          zip(offset, self.strides, self.pads, self.spatial_shape)):
        pos = o - lo + s * np.arange(self.out_spatial[d])
        ok = (pos >= 0) & (pos < n)
        shape = [1] * self.ndim
        shape[d] = -1
        mask = mask & ok.reshape(shape)
      masks.append(None if mask.all() else mask[..., None])
    return masks

  def valid_count(self) -> np.ndarray:
    """Number of real members in each window, shaped ``(*out_spatial, 1)``."""
    count = np.zeros(self.out_spatial + (1,), np.int32)
    for mask in self.valid_masks():
      count = count + (1 if mask is None else mask)
    return count


def window_geometry(shape: Sequence[int], window_shape: Sequence[int],
                    strides: Sequence[int] | None, padding: Padding,
                    *, op_name: str = "pooling") -> WindowGeometry:
  """Validates a pooling's arguments and returns its static geometry.

  Args:
    shape: input shape ``(*batch, *spatial, C)``; at least ``len(window)+1`` dims.
    window_shape: window size per spatial dim (1-D, 2-D or 3-D, or more).
    strides: stride per spatial dim; ``None`` means 1 everywhere (as in flax).
    padding: ``"VALID"``, ``"SAME"`` or a sequence of ``(low, high)`` pairs.
    op_name: used in error messages.

  Raises:
    ValueError: naming the problem (rank, window vs input, strides, padding).
  """
  shape = tuple(int(d) for d in shape)
  window_shape = tuple(window_shape)
  n = len(window_shape)
  if n == 0:
    raise ValueError(f"{op_name}: window_shape must name at least one spatial dim.")
  if not all(isinstance(k, (int, np.integer)) and k >= 1 for k in window_shape):
    raise ValueError(f"{op_name}: window_shape must be positive integers, got {window_shape}.")
  window_shape = tuple(int(k) for k in window_shape)
  if len(shape) < n + 1:
    raise ValueError(
        f"{op_name}: inputs of rank {len(shape)} (shape {shape}) cannot be pooled with a "
        f"{n}-D window {window_shape}: expected (*batch, {', '.join('S' * n)}, C), "
        f"rank >= {n + 1}.")
  strides = (1,) * n if strides is None else tuple(strides)
  if len(strides) != n:
    raise ValueError(f"{op_name}: strides {strides} must have one entry per window dim "
                     f"({n}).")
  if not all(isinstance(s, (int, np.integer)) and s >= 1 for s in strides):
    raise ValueError(f"{op_name}: strides must be positive integers, got {strides}.")
  strides = tuple(int(s) for s in strides)
  spatial = shape[-(n + 1):-1]
  if isinstance(padding, str):
    if padding.upper() not in ("VALID", "SAME"):
      raise ValueError(f"{op_name}: padding must be 'VALID', 'SAME' or (low, high) pairs, "
                       f"got {padding!r}.")
    pads = lax.padtype_to_pads(spatial, window_shape, strides, padding.upper())
  else:
    pads = tuple(tuple(p) for p in padding)
    if len(pads) != n or not all(len(p) == 2 for p in pads):
      raise ValueError(f"{op_name}: explicit padding needs one (low, high) pair per spatial "
                       f"dim ({n}), got {padding}.")
    if any(lo < 0 or hi < 0 for lo, hi in pads):
      raise ValueError(f"{op_name}: padding must be non-negative, got {pads}.")
  pads = tuple((int(lo), int(hi)) for lo, hi in pads)
  out = []
  for d, (size, k, s, (lo, hi)) in enumerate(zip(spatial, window_shape, strides, pads)):
    if lo >= k or hi >= k:
      # A window made only of padding has no members: nothing to pool.
      raise ValueError(f"{op_name}: padding {(lo, hi)} on spatial dim {d} must be smaller "
                       f"than the window size {k}.")
    if size + lo + hi < k:
      raise ValueError(
          f"{op_name}: window {window_shape} is larger than the padded input: spatial dim {d} "
          f"has size {size} + padding {lo}+{hi} < window {k} (input shape {shape}).")
    out.append((size + lo + hi - k) // s + 1)
  return WindowGeometry(batch_shape=shape[:-(n + 1)], spatial_shape=spatial,
                        window_shape=window_shape, strides=strides, pads=pads,
                        out_spatial=tuple(out), channels=shape[-1])


def offset_slice(xp: jax.Array, geom: WindowGeometry, offset: Sequence[int]) -> jax.Array:
  """The ``offset``-th member of every window, from the padded input ``xp``."""
  nb = xp.ndim - geom.ndim - 1
  start = [0] * nb + list(offset) + [0]
  limit = (list(xp.shape[:nb])
           + [o + (n - 1) * s + 1 for o, n, s in zip(offset, geom.out_spatial, geom.strides)]
           + [xp.shape[-1]])
  return lax.slice(xp, start, limit, [1] * nb + list(geom.strides) + [1])


def window_members(x: jax.Array, geom: WindowGeometry
                   ) -> tuple[list[jax.Array], list[np.ndarray | None]]:
  """Every window's members, one ``(*batch, *out_spatial, C)`` slice per offset, and
  their validity masks (``None`` where no member of that offset is padding).

  Padded positions hold 0; callers exclude them with the masks.
  """
  xp = to_pixel_grid(x, geom)  # the same padded array as the input-gradient pass reads
  return [offset_slice(xp, geom, o) for o in geom.offsets], geom.valid_masks()


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


def masked(values: Sequence[jax.Array], masks: Sequence[np.ndarray | None], fill) -> list:
  """``values`` with positions outside each mask replaced by ``fill``."""
  return [v if m is None else jnp.where(m, v, fill) for v, m in zip(values, masks)]


def fold(op, values: Sequence[jax.Array]) -> jax.Array:
  """Reduces per-offset arrays with a binary elementwise ``op`` (add, maximum, ...)."""
  out = values[0]
  for v in values[1:]:
    out = op(out, v)
  return out


def pixel_grid(geom: WindowGeometry) -> tuple[int, ...]:
  """Spatial dims of the *pixel grid*: the padded input, extended at the high end to a
  multiple of the strides, so that padded position ``p = s * t + r`` factors exactly."""
  return tuple(s * -(-(n + lo + hi) // s)
               for n, (lo, hi), s in zip(geom.spatial_shape, geom.pads, geom.strides))


def to_pixel_grid(x: jax.Array, geom: WindowGeometry) -> jax.Array:
  """``x`` ``(*batch, *spatial, C)`` zero-padded onto the pixel grid (see ``pixel_grid``)."""
  nb = x.ndim - geom.ndim - 1
  config = [(0, 0, 0)] * nb + [(lo, g - n - lo, 0) for n, (lo, _), g in
                               zip(geom.spatial_shape, geom.pads, pixel_grid(geom))]
  return lax.pad(x, jnp.zeros((), x.dtype), config + [(0, 0, 0)])


def from_pixel_grid(g: jax.Array, geom: WindowGeometry) -> jax.Array:
  """The unpadded input region of a pixel-grid array (inverse of ``to_pixel_grid``)."""
  nb = g.ndim - geom.ndim - 1
  start = [0] * nb + [lo for lo, _ in geom.pads] + [0]
  limit = list(g.shape[:nb]) + [lo + n for (lo, _), n in zip(geom.pads, geom.spatial_shape)]
  return lax.slice(g, start, limit + [g.shape[-1]])


def pixel_memberships(geom: WindowGeometry) -> list[tuple[tuple[int, ...], np.ndarray]]:
  """Which windows each pixel belongs to, for transposing a window read densely.

  Pixel ``p = s * t + r`` of the pixel grid (per dim) is member ``o = r + s * q`` of
  window ``t - q`` for every ``q >= 0`` with ``o < k``: at most ``ceil(k / s)`` windows
  per dim. Returns, per ``q`` vector, a static boolean ``(*pixel_grid, 1)`` mask of the
  pixels for which that window exists. Every (window, member) pair appears exactly once
  over all ``q``, so a cotangent computed per pixel and ``q`` and summed over ``q`` is
  the transpose of ``window_members`` without any scatter.
  """
  grid = pixel_grid(geom)
  per_dim = []
  for g, k, s, n_out in zip(grid, geom.window_shape, geom.strides, geom.out_spatial):
    p = np.arange(g)
    t, r = p // s, p % s
    per_dim.append([(q, (r + s * q < k) & (t - q >= 0) & (t - q < n_out))
                    for q in range(-(-k // s))])
  out = []
  for combo in itertools.product(*per_dim):
    mask = np.ones(grid, bool)
    for d, (_, ok) in enumerate(combo):
      shape = [1] * geom.ndim
      shape[d] = -1
      mask = mask & ok.reshape(shape)
    if mask.any():
      out.append((tuple(q for q, _ in combo), mask[..., None]))
  return out


def pad_windows(v: jax.Array, geom: WindowGeometry) -> jax.Array:
  """A per-window array ``(*batch, *out_spatial, C)`` (or broadcastable to it) padded
  with zeros so that ``window_to_pixels`` only needs static slices: ``ceil(k/s) - 1``
  windows before the first and enough after the last to cover the pixel grid."""
  v = jnp.reshape(v, (1,) * (len(geom.out_shape) - v.ndim) + v.shape)
  nb = v.ndim - geom.ndim - 1
  config = [(0, 0, 0)] * v.ndim
  for d, (k, s, n_out, g) in enumerate(zip(geom.window_shape, geom.strides, geom.out_spatial,
                                           pixel_grid(geom))):
    if v.shape[nb + d] != 1:
      config[nb + d] = (-(-k // s) - 1, max(0, g // s - n_out), 0)
  return lax.pad(v, jnp.zeros((), v.dtype), config)


def window_to_pixels(vp: jax.Array, geom: WindowGeometry, q: Sequence[int]) -> jax.Array:
  """A per-window array on the pixel grid: pixel ``p = s * t + r`` gets window ``t - q``.

  ``vp`` comes from ``pad_windows`` (size-1 dims stay size 1: the masks of
  ``pixel_memberships`` keep only windows that exist; windows outside the output read
  0). Only a static slice and a repeat: branch-free in the fused per-pixel loop that
  consumes it.
  """
  nb = vp.ndim - geom.ndim - 1
  for d, (qd, k, s, g) in enumerate(zip(q, geom.window_shape, geom.strides, pixel_grid(geom))):
    ax = nb + d
    if vp.shape[ax] == 1:
      continue
    start = -(-k // s) - 1 - qd
    vp = lax.slice_in_dim(vp, start, start + g // s, axis=ax)
    if s > 1:  # repeat each window s times: a broadcast and a reshape (no gather)
      shape = vp.shape[:ax + 1] + (s,) + vp.shape[ax + 1:]
      vp = jnp.broadcast_to(jnp.expand_dims(vp, ax + 1), shape).reshape(
          vp.shape[:ax] + (g,) + vp.shape[ax + 1:])
  return vp
