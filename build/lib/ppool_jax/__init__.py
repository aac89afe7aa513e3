"""ppool_jax: polynomial pooling (Wei et al., CVPR 2019) for JAX and Flax."""

from ppool_jax.ops import p_pool

__version__ = "0.1.0"
__all__ = ["p_pool"]
