"""ResNet-50 segmentation models: the paper's ResNet-50-seg and DeepLabv3.

Layers follow torchvision's ``resnet50`` (v1.5: stride on the 3x3 conv; 23.51M parameters
without ``fc``) so ImageNet weights convert one to one. Following the paper (§4.1), the
strides of conv1, res3a, res4a and res5a are removed and four swappable pooling layers
are inserted after conv1, res2c, res3d and res4f (output stride 32); ``pool1`` (3x3
max, stride 2) stays. Naming a stage ``"strided_c"`` keeps the original strided
conv instead (the vanilla network, the paper's Strided-C/All-C for ResNet).
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial
from typing import Any, ClassVar

import flax.linen as nn
import jax.numpy as jnp

from ppool_jax.models.common import (PIXELS, STRIDED_C, PoolingSpec, channels, pool_layer,
                                     resample, stage_poolings)

RESNET50_LAYERS = ((64, 3), (128, 4), (256, 6), (512, 3))


def _bn(train: bool, frozen: bool, axis_name: str | None, name: str, dtype=None):
  # torchvision's BatchNorm2d: eps 1e-5, momentum 0.1 (flax's 0.9).
  # Two-pass variance: E[x^2] - E[x]^2 loses most digits when |mean| >> std.
  return nn.BatchNorm(use_running_average=not train or frozen, momentum=0.9, epsilon=1e-5,
                      use_fast_variance=False, dtype=dtype,
                      axis_name=axis_name if train and not frozen else None, name=name)


class Bottleneck(nn.Module):
  planes: int
  stride: int = 1
  dilation: int = 1
  downsample: bool = False
  frozen_bn: bool = False
  bn_axis_name: str | None = None

  dtype: Any = None  # computation dtype (e.g. jnp.bfloat16); parameters stay float32

  @nn.compact
  def __call__(self, x, train: bool):
    conv = partial(nn.Conv, dtype=self.dtype)
    bn = partial(_bn, train, self.frozen_bn, self.bn_axis_name, dtype=self.dtype)
    h = nn.relu(bn("bn1")(conv(self.planes, (1, 1), use_bias=False, name="conv1")(x)))
    h = conv(self.planes, (3, 3), strides=self.stride, padding=[(self.dilation,) * 2] * 2,
                kernel_dilation=self.dilation, use_bias=False, name="conv2")(h)
    h = nn.relu(bn("bn2")(h))
    h = bn("bn3")(conv(self.planes * 4, (1, 1), use_bias=False, name="conv3")(h))
    if self.downsample:
      x = bn("downsample_bn")(conv(self.planes * 4, (1, 1), strides=self.stride,
                                      use_bias=False, name="downsample_conv")(x))
    return nn.relu(h + x)


class ResNet50Backbone(nn.Module):
  """ResNet-50 with the paper's four swappable pooling stages.

  Attributes:
    pooling: one registry name or four (after conv1, res2c, res3d, res4f).
    pool_options: per-method keyword arguments for the registry.
    pool_window: window of the inserted poolings (2x2, stride 2).
    output_stride: 32 (paper) or 16 (DeepLabv3: the last inserted pooling has stride 1 and
      layer4 uses dilation 2).
    frozen_bn: always use the running statistics (and never update them). For DeepLabV3 it
      applies to the pretrained backbone only; the new ASPP BatchNorms always train.
    bn_axis_name: pmap axis name over which BatchNorm statistics are averaged in training.
    width: channel multiplier for tests (1.0 is ResNet-50).

  Returns ``{"out": features, "grid": their Grid on the input pixels}``. Strided convs
  keep torchvision's padding (3 for conv1, 1 for 3x3, 0 for 1x1), so they are centred;
  the inserted 2x2 stride-2 poolings use SAME padding (ceil rounding, as the VGG models).
  """
  pooling: PoolingSpec = "max"
  pool_options: Mapping[str, Mapping[str, Any]] | None = None
  pool_window: tuple[int, int] = (2, 2)
  output_stride: int = 32
  frozen_bn: bool = False
  bn_axis_name: str | None = None
  width: float = 1.0

  dtype: Any = None  # computation dtype (e.g. jnp.bfloat16); parameters stay float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    conv = partial(nn.Conv, dtype=self.dtype)
    if self.output_stride not in (16, 32):
      raise ValueError(f"ResNet50Backbone: output_stride must be 16 or 32, got {self.output_stride}.")
    pools = stage_poolings(self.pooling, 4, "ResNet50Backbone")
    bn = partial(_bn, train, self.frozen_bn, self.bn_axis_name, dtype=self.dtype)

    grid = PIXELS

    def pool(i, x, grid):
      stride = 1 if (i == 3 and self.output_stride == 16) else 2
      window = (3, 3) if stride == 1 else self.pool_window
      grid = grid.after(x.shape[1:3], window[0], stride, "SAME")
      return pool_layer(pools[i], window, (stride, stride), "SAME", self.pool_options,
                        f"pool_stage{i + 1}", dtype=self.dtype)(x), grid

    conv1_stride = 2 if pools[0] == STRIDED_C else 1
    grid = grid.after(x.shape[1:3], 7, conv1_stride, [(3, 3)] * 2)
    x = conv(channels(64, self.width), (7, 7), strides=conv1_stride, padding=[(3, 3)] * 2,
                use_bias=False, name="conv1")(x)
    x = nn.relu(bn("bn1")(x))
    if pools[0] != STRIDED_C:
      x, grid = pool(0, x, grid)
    grid = grid.after(x.shape[1:3], 3, 2, ((1, 1), (1, 1)))
    x = nn.max_pool(x, (3, 3), (2, 2), padding=((1, 1), (1, 1)))  # pool1, unchanged
    in_ch = channels(64, self.width)
    for li, (planes, blocks) in enumerate(RESNET50_LAYERS, start=1):
      planes = channels(planes, self.width)
      dilation = 2 if (li == 4 and self.output_stride == 16) else 1
      for bi in range(blocks):
        stride = 1
        if bi == 0 and li > 1 and pools[li - 1] == STRIDED_C:
          stride = 1 if dilation > 1 else 2
        block_dilation = dilation if bi > 0 or li < 4 else 1
        # The 3x3 conv (padding = dilation) and the 1x1 shortcut are both centred.
        grid = grid.after(x.shape[1:3], 3, stride, [(block_dilation,) * 2] * 2, block_dilation)
        x = Bottleneck(planes, stride, block_dilation,
                       downsample=(bi == 0 and (stride != 1 or in_ch != planes * 4)),
                       frozen_bn=self.frozen_bn, bn_axis_name=self.bn_axis_name,
                       dtype=self.dtype, name=f"layer{li}_{bi}")(x, train)
        in_ch = planes * 4
      if li < 4 and pools[li] != STRIDED_C:
        x, grid = pool(li, x, grid)  # after res2c, res3d, res4f
    return {"out": x, "grid": grid}


class ResNet50Seg(nn.Module):
  """The paper's ResNet-50 comparison model: the backbone above (output stride 32), a 1x1
  classifier and bilinear upsampling to the input size."""
  num_classes: int
  pooling: PoolingSpec = "max"
  pool_options: Mapping[str, Mapping[str, Any]] | None = None
  frozen_bn: bool = False
  bn_axis_name: str | None = None
  width: float = 1.0

  dtype: Any = None  # computation dtype (e.g. jnp.bfloat16); parameters stay float32
  HEAD_MODULES: ClassVar[tuple[str, ...]] = ("classifier",)  # the new classifier

  @nn.compact
  def __call__(self, x, train: bool = False):
    conv = partial(nn.Conv, dtype=self.dtype)
    feats = ResNet50Backbone(self.pooling, self.pool_options, frozen_bn=self.frozen_bn,
                             bn_axis_name=self.bn_axis_name, width=self.width,
                             dtype=self.dtype, name="backbone")(x, train)
    logits = conv(self.num_classes, (1, 1), name="classifier")(feats["out"])
    return resample(logits, feats["grid"], x.shape[1:3])


class ASPP(nn.Module):
  """Atrous spatial pyramid pooling with image-level features (DeepLabv3)."""
  features: int = 256
  rates: tuple[int, ...] = (6, 12, 18)
  frozen_bn: bool = False
  bn_axis_name: str | None = None

  dtype: Any = None  # computation dtype (e.g. jnp.bfloat16); parameters stay float32

  @nn.compact
  def __call__(self, x, train: bool):
    conv = partial(nn.Conv, dtype=self.dtype)
    bn = partial(_bn, train, self.frozen_bn, self.bn_axis_name, dtype=self.dtype)
    branches = [nn.relu(bn("bn_1x1")(conv(self.features, (1, 1), use_bias=False,
                                              name="conv_1x1")(x)))]
    for r in self.rates:
      h = conv(self.features, (3, 3), kernel_dilation=r, padding="SAME", use_bias=False,
                  name=f"conv_rate{r}")(x)
      branches.append(nn.relu(bn(f"bn_rate{r}")(h)))
    img = jnp.mean(x, axis=(1, 2), keepdims=True)
    img = nn.relu(bn("bn_image")(conv(self.features, (1, 1), use_bias=False,
                                         name="conv_image")(img)))
    branches.append(jnp.broadcast_to(img, x.shape[:3] + (self.features,)))
    h = jnp.concatenate(branches, axis=-1)
    return nn.relu(bn("bn_project")(conv(self.features, (1, 1), use_bias=False,
                                            name="project")(h)))


class DeepLabV3(nn.Module):
  """DeepLabv3 (Chen et al. 2017; paper Table 4, "16s, ASPP") on ResNet-50 at output stride
  16. The paper's backbone is Xception-38, which this project does not provide."""
  num_classes: int
  pooling: PoolingSpec = "max"
  pool_options: Mapping[str, Mapping[str, Any]] | None = None
  frozen_bn: bool = False
  bn_axis_name: str | None = None
  width: float = 1.0
  aspp_features: int = 256
  dropout: float = 0.1

  dtype: Any = None  # computation dtype (e.g. jnp.bfloat16); parameters stay float32
  HEAD_MODULES: ClassVar[tuple[str, ...]] = ("classifier",)  # the new classifier

  @nn.compact
  def __call__(self, x, train: bool = False):
    conv = partial(nn.Conv, dtype=self.dtype)
    feats = ResNet50Backbone(self.pooling, self.pool_options, output_stride=16,
                             frozen_bn=self.frozen_bn, bn_axis_name=self.bn_axis_name,
                             width=self.width, dtype=self.dtype, name="backbone")(x, train)
    h = feats["out"]
    # ASPP is new: its BatchNorms always train their statistics (frozen_bn is about the
    # pretrained backbone's).
    h = ASPP(channels(self.aspp_features, self.width), frozen_bn=False,
             bn_axis_name=self.bn_axis_name, dtype=self.dtype, name="aspp")(h, train)
    h = nn.Dropout(self.dropout, deterministic=not train)(h)
    logits = conv(self.num_classes, (1, 1), name="classifier")(h)
    return resample(logits, feats["grid"], x.shape[1:3])
