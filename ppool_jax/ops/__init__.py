"""Pooling operators: pure functions over channels-last arrays."""

from ppool_jax.ops.p_pool import p_pool
from ppool_jax.ops.p_pool_vjp import compute_dtype
from ppool_jax.ops.windows import WindowGeometry, window_geometry, window_members

__all__ = ["p_pool", "compute_dtype", "WindowGeometry", "window_geometry", "window_members"]
