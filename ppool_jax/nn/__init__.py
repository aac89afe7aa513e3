"""Flax modules: pooling units (P-pooling and baselines) and optimizer helpers."""

from ppool_jax.nn.optim import side_branch_labels, with_side_branch_lr
from ppool_jax.nn.pooling import (POOLINGS, SIDE_BRANCH, AvgPool, DPPool, GatedPool, LpPool,
                                  MaxPool, MixedPool, PFixedPool, PPool, PReLU, SideBranch,
                                  SoftPool, StridedConvPool, make_pool)

__all__ = [
    "POOLINGS", "SIDE_BRANCH", "AvgPool", "DPPool", "GatedPool", "LpPool", "MaxPool", "MixedPool",
    "PFixedPool", "PPool", "PReLU", "SideBranch", "SoftPool", "StridedConvPool", "make_pool",
    "side_branch_labels", "with_side_branch_lr",
]
