"""The P-pooling unit's side branch (paper Eq. 5, Fig. 1) and its building blocks."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from ppool_jax.ops import window_geometry, window_members
from ppool_jax.ops.windows import Padding, fold

SIDE_BRANCH = "side_branch"  # module name that marks parameters trained at the side-branch LR
ALPHA_CONV = "conv_alpha"    # the side branch's last conv, whose bias sets alpha's start
PRELU_SLOPE = "slope"        # the parameter of PReLU (no weight decay in the recipe)


class PReLU(nn.Module):
  """Per-channel PReLU (He et al. 2015; Caffe's default, slopes initialised to 0.25)."""
  init_slope: float = 0.25

  @nn.compact
  def __call__(self, x):
    slope = self.param(PRELU_SLOPE, nn.initializers.constant(self.init_slope), (x.shape[-1],))
    return jnp.where(x >= 0, x, slope * x)


class DepthwiseConv(nn.Module):
  """A per-channel (depthwise) conv: ``nn.Conv(C, window, strides, padding,
  feature_group_count=C)`` with the same parameters (names, shapes, initialisers), so
  checkpoints are interchangeable, computed as a weighted sum of the window members.

  Elementwise on purpose: XLA:CPU runs grouped convolutions (and their gradients)
  slowly, slower than the whole ``p_pool`` they feed; the sum fuses into one loop.
  """
  window_shape: Sequence[int]
  strides: Sequence[int] | None = None
  padding: Padding = "VALID"
  use_bias: bool = True
  kernel_init: Callable = nn.initializers.lecun_normal()
  bias_init: Callable = nn.initializers.zeros

  @nn.compact
  def __call__(self, x):
    c = x.shape[-1]
    kernel = self.param("kernel", self.kernel_init, (*self.window_shape, 1, c), jnp.float32)
    geom = window_geometry(x.shape, self.window_shape, self.strides, self.padding,
                           op_name=type(self).__name__)
    members, _ = window_members(x, geom)  # zero padding, as the conv's
    kernel = kernel.astype(x.dtype)
    y = fold(jnp.add, [m * kernel[o].reshape(c) for m, o in zip(members, geom.offsets)])
    if self.use_bias:
      y = y + self.param("bias", self.bias_init, (c,), jnp.float32).astype(x.dtype)
    return y


class SideBranch(nn.Module):
  """Eq. 5: depthwise conv (window, strides, no bias) -> PReLU -> depthwise 1x1 conv + bias.

  Produces one raw alpha per pooling window and channel, shaped like the pooled output.
  """
  window_shape: Sequence[int]
  strides: Sequence[int] | None
  padding: Padding
  bias_init: float = 20.0
  input_scale: float = 100.0
  input_norm: str | None = None
  out_kernel_stddev: float = 1e-3

  @nn.compact
  def __call__(self, x):
    if self.input_norm == "rms":
      # The batch's root mean square (all positions and channels; per device under pmap),
      # a constant for the gradient: the branch sees input_scale * x / rms(x).
      x = x / jax.lax.stop_gradient(jnp.sqrt(jnp.mean(jnp.square(x))) + 1e-12)
    elif self.input_norm is not None:
      raise ValueError(f"SideBranch: input_norm must be None or 'rms', got {self.input_norm!r}.")
    h = DepthwiseConv(tuple(self.window_shape), self.strides, self.padding, use_bias=False,
                      name="conv_window")(x * self.input_scale)
    h = PReLU(name="prelu")(h)
    ones = (1,) * len(self.window_shape)
    return DepthwiseConv(ones, kernel_init=nn.initializers.normal(self.out_kernel_stddev),
                         bias_init=nn.initializers.constant(self.bias_init),
                         name=ALPHA_CONV)(h)
