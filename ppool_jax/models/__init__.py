"""Segmentation models of the paper with per-stage swappable pooling."""

from ppool_jax.models import common as _common
from ppool_jax.models.common import count_params, output_stride, stage_poolings
from ppool_jax.models.resnet import ASPP, DeepLabV3, ResNet50Backbone, ResNet50Seg
from ppool_jax.models.vgg import DeepLabLargeFOV, FCN8s, VGG16Backbone, VGG16Seg
from ppool_jax.nn import STRIDED_C

MODELS = {
    "vgg16_seg": VGG16Seg,
    "resnet50_seg": ResNet50Seg,
    "deeplab_largefov": DeepLabLargeFOV,
    "fcn8s": FCN8s,
    "deeplabv3": DeepLabV3,
}
# Each model's total downsampling, that of its deepest features (FCN-8s: fc7/score_fr at 32,
# the pool4/pool3 skips fuse on the way back up): an input whose sides are multiples of it
# puts every feature cell on whole input pixels at every depth. Logits are resampled to the
# input size for any size.
OUTPUT_STRIDES = {"vgg16_seg": 16, "resnet50_seg": 32, "deeplab_largefov": 16, "fcn8s": 32,
                  "deeplabv3": 16}
NUM_POOLING_STAGES = {"vgg16_seg": 5, "resnet50_seg": 4, "deeplab_largefov": 5, "fcn8s": 5,
                      "deeplabv3": 4}


def head_modules(name: str | None = None) -> tuple[str, ...]:
  """The modules model ``name`` adds for the task, its classifier (``HEAD_MODULES``:
  ``optim.head_lr_mult`` applies to them); every model's when ``name`` is ``None``."""
  if name is None:
    return tuple(dict.fromkeys(h for m in MODELS.values() for h in m.HEAD_MODULES))
  if name not in MODELS:
    raise ValueError(f"unknown model {name!r}; choose from {', '.join(sorted(MODELS))}.")
  return MODELS[name].HEAD_MODULES


def build_model(name: str, num_classes: int, **kwargs):
  """``MODELS[name](num_classes=..., **kwargs)`` with a clear error for unknown names."""
  if name not in MODELS:
    raise ValueError(f"unknown model {name!r}; choose from {', '.join(sorted(MODELS))}.")
  return MODELS[name](num_classes=num_classes, **kwargs)


def __getattr__(name: str):
  if name == "STRIDE_IN_CONV":  # deprecated alias of STRIDED_C, with a DeprecationWarning
    return getattr(_common, name)
  raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["ASPP", "DeepLabLargeFOV", "DeepLabV3", "FCN8s", "MODELS", "NUM_POOLING_STAGES",
           "OUTPUT_STRIDES", "output_stride", "ResNet50Backbone", "ResNet50Seg", "STRIDED_C", "VGG16Backbone",
           "VGG16Seg", "build_model", "count_params", "head_modules", "stage_poolings"]
