"""Tables 4-5: the state-of-the-art pipelines with and without P-pooling.

  python -m ppool_jax.train --config experiments/configs/table45.py:deeplab_largefov,voc_aug,p ...

Argument: ``pipeline,dataset,pooling`` with pipeline in deeplab_largefov (VGG16-20M, as in
the paper) | fcn8s (VGG16; the paper used InceptionV2-BN) | deeplabv3 (ResNet-50; the paper
used Xception-38), dataset in voc_aug | ade20k and pooling in max | p. P-pooling replaces
every pooling layer, also the stride-1 ones (paper §4.2).
"""

from ppool_jax.train.config import base_config, summed_lr_to_mean_lr

PIPELINES = {"deeplab_largefov": "vgg16", "fcn8s": "vgg16", "deeplabv3": "resnet50"}
DATASETS = {"voc_aug": ("train_aug", "val"), "ade20k": ("train", "val")}


def get_config(arg: str = "deeplab_largefov,voc_aug,p"):
  pipeline, dataset, pooling = arg.split(",")
  if pipeline not in PIPELINES or dataset not in DATASETS or pooling not in ("max", "p"):
    raise ValueError(f"table45: expected pipeline,dataset,pooling from {sorted(PIPELINES)}, "
                     f"{sorted(DATASETS)}, [max, p]; got {arg!r}.")
  c = base_config()
  c.dataset.name = dataset
  c.dataset.root = f"~/data/{dataset}"
  c.dataset.train_split, c.dataset.eval_split = DATASETS[dataset]
  c.dataset.crop_size = 321
  c.model.name = pipeline
  c.model.pooling = pooling
  c.model.pretrained = f"~/ppool_weights/{PIPELINES[pipeline]}"
  c.model.frozen_bn = PIPELINES[pipeline] == "resnet50"
  c.optim.schedule = "poly"  # DeepLab's schedule
  c.optim.learning_rate = summed_lr_to_mean_lr(2e-7, 321, c.global_batch_size)
  c.total_steps = 20_000
  return c
