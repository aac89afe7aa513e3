"""Pieces shared by the segmentation models: per-stage pooling config, upsampling."""

from __future__ import annotations

import math

from collections.abc import Mapping, Sequence
from typing import Any, Union

import jax

from ppool_jax.nn import POOLINGS, make_pool

# The paper's Strided-C (Springenberg et al.): no pooling layer, the preceding conv
# takes the stride. A model-level setting, not a pooling module.
STRIDE_IN_CONV = "stride_in_conv"

PoolingSpec = Union[str, Sequence[str]]


def stage_poolings(pooling: PoolingSpec, num_stages: int, model: str) -> tuple[str, ...]:
  """Expands ``"p"`` or ``("p", "max", ...)`` to one valid name per pooling stage."""
  names = (pooling,) * num_stages if isinstance(pooling, str) else tuple(pooling)
  if len(names) != num_stages:
    raise ValueError(f"{model}: pooling needs {num_stages} entries (one per stage), got "
                     f"{len(names)}: {names}.")
  for n in names:
    if n not in POOLINGS and n != STRIDE_IN_CONV:
      raise ValueError(f"{model}: unknown pooling {n!r}; choose from "
                       f"{', '.join(sorted(POOLINGS) + [STRIDE_IN_CONV])}.")
  return names


def pool_layer(name: str, window: Sequence[int], strides: Sequence[int], padding: Any,
               options: Mapping[str, Mapping[str, Any]] | None, layer_name: str):
  """A registry pooling module; ``options[name]`` holds per-method keyword arguments."""
  kwargs = dict((options or {}).get(name, {}))
  return make_pool(name, window, strides, padding, name=layer_name, **kwargs)


def upsample_to(logits: jax.Array, size: tuple[int, int]) -> jax.Array:
  """Bilinear upsampling of ``(B, h, w, K)`` to ``(B, *size, K)``."""
  return jax.image.resize(logits, logits.shape[:1] + tuple(size) + logits.shape[-1:], "bilinear")


def channels(c: int, width: float) -> int:
  return max(1, int(round(c * width)))


def count_params(tree) -> int:
  return int(sum(math.prod(x.shape) for x in jax.tree_util.tree_leaves(tree)))
