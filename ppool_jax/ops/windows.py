"""Window geometry shared by every pooling operator in ppool_jax.

A pooling window over ``n`` spatial dims is visited as ``prod(window_shape)``
*offsets*: offset ``o`` is the strided slice of the padded input whose element
``j`` is the ``o``-th member of window ``j``. Reducing over offsets with
elementwise ops lets XLA fuse a whole pooling operator into one loop, without
materialising a ``(*out, k*k)`` patch tensor.

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


def pad_spatial(x: jax.Array, geom: WindowGeometry, value=0) -> jax.Array:
  """Pads the spatial dims of ``x`` (shape ``(*batch, *spatial, C)``)."""
  if not geom.padded:
    return x
  nb = x.ndim - geom.ndim - 1
  config = [(0, 0, 0)] * nb + [(lo, hi, 0) for lo, hi in geom.pads] + [(0, 0, 0)]
  return lax.pad(x, jnp.asarray(value, x.dtype), config)


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
  xp = pad_spatial(x, geom)
  return [offset_slice(xp, geom, o) for o in geom.offsets], geom.valid_masks()


def masked(values: Sequence[jax.Array], masks: Sequence[np.ndarray | None], fill) -> list:
  """``values`` with positions outside each mask replaced by ``fill``."""
  return [v if m is None else jnp.where(m, v, fill) for v, m in zip(values, masks)]


def fold(op, values: Sequence[jax.Array]) -> jax.Array:
  """Reduces per-offset arrays with a binary elementwise ``op`` (add, maximum, ...)."""
  out = values[0]
  for v in values[1:]:
    out = op(out, v)
  return out


def scatter_offsets(cts: Sequence[jax.Array], geom: WindowGeometry) -> jax.Array:
  """Transpose of reading every offset with ``offset_slice``, then unpadding.

  ``cts[i]`` is the ``(*batch, *out_spatial, C)`` cotangent of offset
  ``geom.offsets[i]``; the result is the unpadded ``(*batch, *spatial, C)`` sum of
  every cotangent placed back where it was read from.

  Written as a phase decomposition rather than one strided scatter per offset:
  padded position ``p = t * s + r`` only receives from offsets ``o = q * s + r``
  (at output index ``t - q``), so each of the ``prod(strides)`` phases is a sum of
  shifted, dense output-sized arrays, and the phases interleave with one
  reshape. XLA fuses each phase into a single loop, where interior-padded
  scatters would materialise one input-sized array per offset.
  """
  ref = cts[0]
  nb = ref.ndim - geom.ndim - 1
  padded = [n + lo + hi for n, (lo, hi) in zip(geom.spatial_shape, geom.pads)]
  phases_len = [-(-p // s) for p, s in zip(padded, geom.strides)]
  phase_shape = ref.shape[:nb] + tuple(phases_len) + ref.shape[-1:]
  phases = []
  for r in itertools.product(*(range(s) for s in geom.strides)):
    acc = None
    for ct, o in zip(cts, geom.offsets):
      if any(od % s != rd for od, s, rd in zip(o, geom.strides, r)):
        continue
      config = [(0, 0, 0)] * nb
      for od, s, n_out, t in zip(o, geom.strides, geom.out_spatial, phases_len):
        q = od // s
        config.append((q, t - q - n_out, 0))
      config.append((0, 0, 0))
      shifted = lax.pad(ct, jnp.zeros((), ct.dtype), config)
      acc = shifted if acc is None else acc + shifted
    phases.append(jnp.zeros(phase_shape, ref.dtype) if acc is None else acc)
  n = geom.ndim
  stacked = jnp.stack(phases, axis=-2).reshape(phase_shape[:-1] + geom.strides + ref.shape[-1:])
  # (*batch, T_1..T_n, s_1..s_n, C) -> (*batch, T_1, s_1, ..., T_n, s_n, C)
  perm = list(range(nb))
  for d in range(n):
    perm += [nb + d, nb + n + d]
  perm.append(nb + 2 * n)
  full = stacked.transpose(perm).reshape(
      ref.shape[:nb] + tuple(t * s for t, s in zip(phases_len, geom.strides)) + ref.shape[-1:])
  start = [0] * nb + [lo for lo, _ in geom.pads] + [0]
  limit = list(ref.shape[:nb]) + [lo + sz for (lo, _), sz in zip(geom.pads, geom.spatial_shape)]
  return lax.slice(full, start, limit + [ref.shape[-1]])

