"""Flax modules: pooling units (P-pooling and baselines) and optimizer helpers."""

from ppool_jax.nn.optim import side_branch_labels, with_lr_multipliers, with_side_branch_lr
from ppool_jax.nn.pooling import (DEPRECATED_POOLING_NAMES, POOLINGS, STRIDED_C, AvgPool,
                                  DPPool, GatedPool, LpPool, MaxPool, MixedPool, PFixedPool,
                                  PPool, SoftPool, StridedConvPool, canonical_pool_options,
                                  canonical_pooling, canonical_pooling_spec, make_pool,
                                  pooling_names)
from ppool_jax.nn.side_branch import (ALPHA_CONV, PRELU_SLOPE, SIDE_BRANCH, DepthwiseConv, PReLU,
                                      SideBranch)

__all__ = [
    "ALPHA_CONV", "DEPRECATED_POOLING_NAMES", "POOLINGS", "PRELU_SLOPE", "SIDE_BRANCH", "STRIDED_C",
    "AvgPool", "DepthwiseConv", "DPPool", "GatedPool", "LpPool", "MaxPool", "MixedPool",
    "PFixedPool", "PPool", "PReLU", "SideBranch", "SoftPool", "StridedConvPool",
    "canonical_pool_options", "canonical_pooling", "canonical_pooling_spec", "make_pool",
    "pooling_names", "side_branch_labels", "with_lr_multipliers", "with_side_branch_lr",
]
