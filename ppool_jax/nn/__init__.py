"""Flax modules: pooling units (P-pooling and baselines) and optimizer helpers."""

from ppool_jax.nn.optim import side_branch_labels, with_lr_multipliers, with_side_branch_lr
from ppool_jax.nn.pooling import (POOLINGS, AvgPool, DPPool, GatedPool, LpPool, MaxPool,
                                  MixedPool, PFixedPool, PPool, SoftPool, StridedConvPool,
                                  make_pool)
from ppool_jax.nn.side_branch import (ALPHA_CONV, PRELU_SLOPE, SIDE_BRANCH, DepthwiseConv, PReLU,
                                      SideBranch)

__all__ = [
    "ALPHA_CONV", "POOLINGS", "PRELU_SLOPE", "SIDE_BRANCH", "AvgPool", "DepthwiseConv", "DPPool",
    "GatedPool", "LpPool", "MaxPool", "MixedPool", "PFixedPool", "PPool", "PReLU", "SideBranch", "SoftPool",
    "StridedConvPool", "make_pool", "side_branch_labels", "with_lr_multipliers",
    "with_side_branch_lr",
]
