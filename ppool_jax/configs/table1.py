"""Table 1 of the paper: one cell per run.

  python -m ppool_jax.train --config table1:voc_aug,vgg16,p --workdir runs/t1

Argument: ``dataset,backbone,method`` with dataset in voc_aug | cityscapes | ade20k,
backbone in vgg16 | resnet50 and method in max | avg | strided_c | all_c | gated | dpp | p.
Needs the dataset on disk (``--config.dataset.root``) and ImageNet weights converted with
``python -m ppool_jax.convert`` (``--config.model.pretrained``; default
``~/ppool_weights/<backbone>``). Missing data or weights stop the run with a clear error.
"""

from ppool_jax.train.config import base_config

DATASETS = {  # train split, eval split, crop size ([ours]: the paper does not give crops;
              # 321 is DeepLab's VOC crop, 513 DeepLabv3's Cityscapes one)
    "voc_aug": ("train_aug", "val", 321),
    "cityscapes": ("train", "val", 513),
    "ade20k": ("train", "val", 321),
}
# The paper's Strided-C moves a pooling's stride into the preceding conv; All-C replaces
# the pooling by a newly initialised strided conv. For ResNet both are the vanilla network.
METHODS = {
    "vgg16": {"max": "max", "avg": "avg", "strided_c": "strided_c", "all_c": "all_c",
              "gated": "gated", "dpp": "dpp", "p": "p"},
    "resnet50": {"max": "max", "avg": "avg", "strided_c": "strided_c",
                 "all_c": "strided_c", "gated": "gated", "dpp": "dpp", "p": "p"},
}
MODELS = {"vgg16": "vgg16_seg", "resnet50": "resnet50_seg"}


def get_config(arg: str = "voc_aug,vgg16,p"):
  dataset, backbone, method = arg.split(",")
  if dataset not in DATASETS or backbone not in MODELS or method not in METHODS[backbone]:
    raise ValueError(f"table1: expected dataset,backbone,method from {sorted(DATASETS)}, "
                     f"{sorted(MODELS)}, {sorted(METHODS['vgg16'])}; got {arg!r}.")
  train_split, eval_split, crop = DATASETS[dataset]
  c = base_config()
  c.dataset.name = dataset
  c.dataset.root = f"~/data/{dataset}"
  c.dataset.train_split = train_split
  c.dataset.eval_split = eval_split
  c.dataset.crop_size = crop
  c.model.name = MODELS[backbone]
  c.model.pooling = METHODS[backbone][method]
  c.model.pretrained = f"~/ppool_weights/{backbone}"
  c.model.frozen_bn = backbone == "resnet50"  # small per-device batches: keep ImageNet stats
  # The solver is base_config's: the paper's 2e-7 on the summed loss, mapped with its weight
  # decay to our loss / (crop^2 x batch) (ppool_jax.train.caffe.map_summed_solver).
  return c
