"""VGG16 segmentation models: VGG16-seg, DeepLab-LargeFOV (VGG16-20M) and FCN-8s.

Conv layers follow torchvision's ``vgg16`` (13 3x3 convs, 14.71M parameters) so ImageNet
weights convert one to one (``ppool_jax.convert``). Every one of the five pooling layers
takes a name from the pooling registry, per stage.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial
from typing import Any, ClassVar

import flax.linen as nn

from ppool_jax.models.common import (PIXELS, STRIDED_C, PoolingSpec, channels, pool_layer,
                                     resample, stage_poolings)

PAD1 = ((1, 1), (1, 1))  # 3x3 convs: Caffe's and torchvision's padding 1 (also when strided)

VGG16_BLOCKS = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))


class VGG16Backbone(nn.Module):
  """VGG16 conv layers (or any VGG-style ``blocks``) with swappable pooling.

  Attributes:
    pooling: one registry name for all poolings, or one per stage; ``"strided_c"``
      drops that pooling and gives its stride to the stage's last conv (paper's Strided-C).
    pool_options: per-method keyword arguments, e.g. ``{"p": {"clip_max": 35.0}}``.
    output_stride: ``2**(n-1)`` (paper's VGG16-seg, 16: the last pooling is 3x3 stride 1)
      or ``2**n`` for ``n`` stages.
    width: channel multiplier (1.0 is VGG16; smaller values for tests and CPU demos).
    blocks: conv channels per stage, one pooling after each (default VGG16's five).

  Returns a dict of features: ``pool3`` (stride 8), ``pool4`` (stride 16) and ``out``, and
  ``grids``, each feature's :class:`~ppool_jax.models.common.Grid` on the input pixels.
  Poolings use SAME padding: odd sizes round up (Caffe's ceil mode, the paper's
  implementation; torchvision rounds down and drops the last row/column), so every pixel
  is in some cell and a 2x2 stride-2 cell ``j`` is centred on ``2j + 0.5``.
  """
  pooling: PoolingSpec = "max"
  pool_options: Mapping[str, Mapping[str, Any]] | None = None
  output_stride: int = 16
  width: float = 1.0
  blocks: tuple[tuple[int, ...], ...] = VGG16_BLOCKS

  dtype: Any = None  # computation dtype (e.g. jnp.bfloat16); parameters stay float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    conv = partial(nn.Conv, dtype=self.dtype)
    n = len(self.blocks)
    if self.output_stride not in (2 ** (n - 1), 2 ** n):
      raise ValueError(f"VGG16Backbone: output_stride must be {2 ** (n - 1)} or {2 ** n} for "
                       f"{n} stages, got {self.output_stride}.")
    pools = stage_poolings(self.pooling, n, "VGG16Backbone")
    feats, grids, grid = {}, {}, PIXELS
    for b, (block, pool_name) in enumerate(zip(self.blocks, pools), start=1):
      last_stage_stride1 = b == n and self.output_stride == 2 ** (n - 1)
      stride = 1 if last_stage_stride1 else 2
      for j, c in enumerate(block, start=1):
        conv_stride = stride if (pool_name == STRIDED_C and j == len(block)) else 1
        grid = grid.after(x.shape[1:3], 3, conv_stride, PAD1)
        x = conv(channels(c, self.width), (3, 3), strides=conv_stride, padding=PAD1,
                    name=f"conv{b}_{j}")(x)
        x = nn.relu(x)
      if pool_name != STRIDED_C:
        window = (3, 3) if last_stage_stride1 else (2, 2)
        grid = grid.after(x.shape[1:3], window[0], stride, "SAME")
        x = pool_layer(pool_name, window, (stride, stride), "SAME", self.pool_options,
                       f"pool{b}", dtype=self.dtype)(x)
      feats[f"pool{b}"], grids[f"pool{b}"] = x, grid
    grids["out"] = grid
    return {"pool3": feats.get("pool3"), "pool4": feats.get("pool4"), "out": x,
            "grids": {k: grids.get(k) for k in ("pool3", "pool4", "out")}}


class VGG16Seg(nn.Module):
  """The paper's VGG16 comparison model (§4.1): VGG16 convs, pool5 without stride (output
  stride 16), a 1x1 classifier, bilinear upsampling to the input size. Other ``blocks``
  give smaller VGG-style nets (the demo's), still with a stride-1 last pooling."""
  num_classes: int
  pooling: PoolingSpec = "max"
  pool_options: Mapping[str, Mapping[str, Any]] | None = None
  width: float = 1.0
  blocks: tuple[tuple[int, ...], ...] = VGG16_BLOCKS

  dtype: Any = None  # computation dtype (e.g. jnp.bfloat16); parameters stay float32
  HEAD_MODULES: ClassVar[tuple[str, ...]] = ("classifier",)  # the new classifier
  # The classifier's kernel initialiser: "lecun_normal" (Flax's default) or "zeros" (FCN's
  # score layers: a fine-tune from Caffe-scale pretrained features starts at loss log(K)).
  classifier_init: str = "lecun_normal"

  @nn.compact
  def __call__(self, x, train: bool = False):
    conv = partial(nn.Conv, dtype=self.dtype)
    feats = VGG16Backbone(self.pooling, self.pool_options, 2 ** (len(self.blocks) - 1),
                          self.width, tuple(map(tuple, self.blocks)), dtype=self.dtype, name="backbone")(x)
    inits = {"lecun_normal": nn.initializers.lecun_normal(), "zeros": nn.initializers.zeros}
    if self.classifier_init not in inits:
      raise ValueError(f"classifier_init must be one of {sorted(inits)}, got "
                       f"{self.classifier_init!r}.")
    logits = conv(self.num_classes, (1, 1), kernel_init=inits[self.classifier_init],
                  name="classifier")(feats["out"])
    return resample(logits, feats["grids"]["out"], x.shape[1:3])


class DeepLabLargeFOV(nn.Module):
  """DeepLab-LargeFOV on VGG16-20M (Chen et al. 2015; paper Table 4, "16s"): VGG16 convs at
  output stride 16, fc6 as a 3x3 conv with dilation 12 and 1024 channels, fc7 1x1 1024,
  dropout 0.5 after each, a 1x1 classifier and bilinear upsampling."""
  num_classes: int
  pooling: PoolingSpec = "max"
  pool_options: Mapping[str, Mapping[str, Any]] | None = None
  width: float = 1.0
  fc_channels: int = 1024
  dilation: int = 12
  dropout: float = 0.5

  dtype: Any = None  # computation dtype (e.g. jnp.bfloat16); parameters stay float32
  HEAD_MODULES: ClassVar[tuple[str, ...]] = ("fc8",)  # the new classifier

  @nn.compact
  def __call__(self, x, train: bool = False):
    conv = partial(nn.Conv, dtype=self.dtype)
    feats = VGG16Backbone(self.pooling, self.pool_options, 16, self.width, dtype=self.dtype, name="backbone")(x)
    h = feats["out"]
    fc = channels(self.fc_channels, self.width)
    h = nn.relu(conv(fc, (3, 3), kernel_dilation=self.dilation, padding="SAME", name="fc6")(h))
    h = nn.Dropout(self.dropout, deterministic=not train)(h)
    h = nn.relu(conv(fc, (1, 1), name="fc7")(h))
    h = nn.Dropout(self.dropout, deterministic=not train)(h)
    logits = conv(self.num_classes, (1, 1), name="fc8")(h)
    return resample(logits, feats["grids"]["out"], x.shape[1:3])


class FCN8s(nn.Module):
  """FCN-8s (Long et al. 2015; paper Table 4, "8s") on VGG16: output stride 32, fc6 7x7 and
  fc7 1x1 (4096), scores fused with 1x1 scores of pool4 and pool3, bilinear upsampling.

  The paper's FCN backbone is InceptionV2-BN, which this project does not provide. FCN's
  learned deconvolutions (initialised bilinear) are fixed bilinear resizes here.
  """
  num_classes: int
  pooling: PoolingSpec = "max"
  pool_options: Mapping[str, Mapping[str, Any]] | None = None
  width: float = 1.0
  fc_channels: int = 4096
  dropout: float = 0.5

  dtype: Any = None  # computation dtype (e.g. jnp.bfloat16); parameters stay float32
  HEAD_MODULES: ClassVar[tuple[str, ...]] = ("score_fr", "score_pool4", "score_pool3")  # new

  @nn.compact
  def __call__(self, x, train: bool = False):
    conv = partial(nn.Conv, dtype=self.dtype)
    feats = VGG16Backbone(self.pooling, self.pool_options, 32, self.width, dtype=self.dtype, name="backbone")(x)
    fc = channels(self.fc_channels, self.width)
    h = nn.relu(conv(fc, (7, 7), padding="SAME", name="fc6")(feats["out"]))
    h = nn.Dropout(self.dropout, deterministic=not train)(h)
    h = nn.relu(conv(fc, (1, 1), name="fc7")(h))
    h = nn.Dropout(self.dropout, deterministic=not train)(h)
    score = conv(self.num_classes, (1, 1), name="score_fr")(h)
    # FCN scales the skip features before scoring (0.01 for pool4, 1e-4 for pool3).
    s4 = conv(self.num_classes, (1, 1), kernel_init=nn.initializers.zeros,
                 name="score_pool4")(feats["pool4"] * 0.01)
    g = feats["grids"]
    # FCN aligns the 2x upsampled scores with the skips by cropping; here the exact grids do.
    score = resample(score, g["out"], s4.shape[1:3], g["pool4"]) + s4
    s3 = conv(self.num_classes, (1, 1), kernel_init=nn.initializers.zeros,
                 name="score_pool3")(feats["pool3"] * 1e-4)
    score = resample(score, g["pool4"], s3.shape[1:3], g["pool3"]) + s3
    return resample(score, g["pool3"], x.shape[1:3])
