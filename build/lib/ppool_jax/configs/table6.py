"""Table 6: P-pooling in one VGG16 stage at a time (VOC), against all-max and all-P.

  python -m ppool_jax.train --config table6:pool3 ...

Argument: pool1 .. pool5, all_max or all_p.
"""

from ppool_jax.train.config import base_config

CHOICES = ("pool1", "pool2", "pool3", "pool4", "pool5", "all_max", "all_p")


def get_config(arg: str = "pool1"):
  if arg not in CHOICES:
    raise ValueError(f"table6: expected one of {CHOICES}, got {arg!r}.")
  c = base_config()
  c.dataset.name = "voc_aug"
  c.dataset.root = "~/data/voc_aug"
  c.dataset.train_split = "train_aug"
  c.dataset.crop_size = 321
  c.model.name = "vgg16_seg"
  if arg == "all_max":
    c.model.pooling = "max"
  elif arg == "all_p":
    c.model.pooling = "p"
  else:
    stage = int(arg[-1]) - 1
    c.model.pooling = ",".join("p" if i == stage else "max" for i in range(5))
  c.model.pretrained = "~/ppool_weights/vgg16"
  # The solver is base_config's (the paper's VGG16/VOC recipe, mapped from the summed loss).
  return c
