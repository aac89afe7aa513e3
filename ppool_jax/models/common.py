"""Pieces shared by the segmentation models: per-stage pooling config, feature geometry,
aligned upsampling.

Geometry. Every feature map lies on a :class:`Grid`: cell ``(i, j)`` is centred on input
pixel ``(stride*i + offset_h, stride*j + offset_w)`` (pixel centres at integer
coordinates). Each strided layer moves the grid exactly: a layer with window ``k``
(dilated: ``(k-1)d+1``), stride ``s`` and low padding ``p`` on a grid ``(S, c)`` gives
``(S*s, c + S*((k-1)/2 - p))``. A 2x2 stride-2 pooling with SAME padding (``p = 0`` for
every input size: odd sizes are padded at the end, so no pixel is dropped, Caffe's
ceil rounding) puts cell ``j`` at ``2j + 0.5``; a 3x3 stride-2 conv with padding 1
(Caffe's and torchvision's) at ``2j``. Logits are resampled to the pixels with the exact
grid (:func:`resample`), so a feature lands where its receptive field is centred for
every model and every input size (crops 320, 321, 513; evaluation at 375x500).
"""

from __future__ import annotations

import dataclasses
import math
import warnings

from collections.abc import Mapping, Sequence
from typing import Any, Union

import jax
import jax.numpy as jnp
from jax import lax

from ppool_jax.nn import (POOLINGS, STRIDED_C, canonical_pool_options, canonical_pooling,
                          make_pool, pooling_names)
from ppool_jax.ops import compute_dtype

PoolingSpec = Union[str, Sequence[str]]


def __getattr__(name: str):
  if name == "STRIDE_IN_CONV":  # the old name of STRIDED_C (issue #21 item 5)
    warnings.warn("STRIDE_IN_CONV is deprecated, use STRIDED_C (the old name will be removed in "
                  "a later release).", DeprecationWarning, stacklevel=2)
    return STRIDED_C
  raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def stage_poolings(pooling: PoolingSpec, num_stages: int, model: str) -> tuple[str, ...]:
  """Expands ``"p"`` or ``("p", "max", ...)`` to one valid canonical name per pooling stage
  (deprecated names are renamed with a ``DeprecationWarning``: ``canonical_pooling``)."""
  names = (pooling,) * num_stages if isinstance(pooling, str) else tuple(pooling)
  if len(names) != num_stages:
    raise ValueError(f"{model}: pooling needs {num_stages} entries (one per stage), got "
                     f"{len(names)}: {names}.")
  names = tuple(canonical_pooling(n) for n in names)
  for n in names:
    if n not in POOLINGS and n != STRIDED_C:
      raise ValueError(f"{model}: unknown pooling {n!r}; choose from "
                       f"{', '.join(pooling_names())}.")
  return names


def pool_layer(name: str, window: Sequence[int], strides: Sequence[int], padding: Any,
               options: Mapping[str, Mapping[str, Any]] | None, layer_name: str, dtype=None):
  """A registry pooling module; ``options[name]`` holds per-method keyword arguments (keys
  may be deprecated names); ``dtype`` is the computation dtype of the poolings that hold
  convolutions."""
  kwargs = dict((canonical_pool_options(options) or {}).get(canonical_pooling(name), {}))
  if dtype is not None:
    kwargs.setdefault("dtype", dtype)
  return make_pool(name, window, strides, padding, name=layer_name, **kwargs)


@dataclasses.dataclass(frozen=True)
class Grid:
  """Where a feature map's cells sit on the input pixels (module docstring)."""
  stride: int = 1
  offset: tuple[float, float] = (0.0, 0.0)

  def after(self, size: tuple[int, int], window: int, stride: int, padding,
            dilation: int = 1) -> "Grid":
    """The grid after a layer on a map of spatial ``size``; ``padding`` is ``"SAME"``,
    ``"VALID"`` or ``(low, high)`` pairs, as the layer takes it."""
    k = (window - 1) * dilation + 1
    if isinstance(padding, str):
      lows = [lo for lo, _ in lax.padtype_to_pads(tuple(size), (k, k), (stride, stride),
                                                   padding.upper())]
    else:
      lows = [int(p[0]) for p in padding]
    offset = tuple(c + self.stride * ((k - 1) / 2 - lo) for c, lo in zip(self.offset, lows))
    return Grid(self.stride * stride, offset)


jax.tree_util.register_static(Grid)  # a model may return grids next to its arrays
PIXELS = Grid()


def resample(x: jax.Array, src: Grid, size: tuple[int, int], dst: Grid = PIXELS) -> jax.Array:
  """Bilinear resampling of ``(B, h, w, K)`` cells on grid ``src`` onto the ``size`` cells of
  grid ``dst`` (default: the input pixels), each output cell taking the value at its own
  centre. Beyond the outermost cell centres the edge value is kept. Computed (and returned)
  in at least float32: bfloat16 logits come back as float32."""
  x = x.astype(compute_dtype(x.dtype))
  # One replicated cell on every side: jax.image zeroes samples outside the cells' extent.
  x = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="edge")
  src_offset = [c - src.stride for c in src.offset]
  scale = src.stride / dst.stride
  # Output cell u (centre u + 0.5 in jax.image's half-pixel coordinates) must read input
  # coordinate (dst.stride*u + dst.offset - src.offset) / src.stride + 0.5.
  shift = [0.5 - (d - s) / dst.stride - 0.5 * scale for d, s in zip(dst.offset, src_offset)]
  return jax.image.scale_and_translate(
      x, x.shape[:1] + tuple(size) + x.shape[-1:], (1, 2), jnp.asarray([scale, scale], x.dtype),
      jnp.asarray(shift, x.dtype), method="linear", antialias=False)


def channels(c: int, width: float) -> int:
  return max(1, int(round(c * width)))


def count_params(tree) -> int:
  return int(sum(math.prod(x.shape) for x in jax.tree_util.tree_leaves(tree)))


def output_stride(model, size: int = 256) -> int:
  """The stride of ``model``'s deepest features, measured: the largest ``image side / feature
  side`` over every 4-d module output that scales with the image, traced (``jax.eval_shape``,
  nothing compiled) on ``size`` and ``2 * size`` square images; outputs that do not scale
  (the ASPP's 1x1 image pooling) are left out. Holds for any configuration (``blocks``,
  poolings, dilations), where a per-architecture table cannot. ``size`` must be a multiple of
  the stride (256 is, for every model here). Whole-image inference pads to a multiple of it."""
  def sides(n):
    x = jax.ShapeDtypeStruct((1, n, n, 3), jnp.float32)
    rngs = {"params": jax.random.PRNGKey(0), "dropout": jax.random.PRNGKey(1)}
    variables = jax.eval_shape(lambda x: model.init(rngs, x), x)
    _, state = jax.eval_shape(lambda v, x: model.apply(
        v, x, capture_intermediates=True, mutable=["intermediates"]), variables, x)
    leaves = jax.tree_util.tree_flatten_with_path(state["intermediates"])[0]
    return {jax.tree_util.keystr(p): a.shape[1] for p, a in leaves if len(a.shape) == 4}

  small, large = sides(size), sides(2 * size)
  return max(size // small[k] for k in small if large[k] == 2 * small[k])
