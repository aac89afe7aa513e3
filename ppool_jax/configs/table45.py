"""Tables 4-5: the state-of-the-art pipelines with and without P-pooling.

  python -m ppool_jax.train --config table45:deeplab_largefov,voc_aug,p ...

Argument: ``pipeline,dataset,pooling`` with pipeline in deeplab_largefov (VGG16-20M, as in
the paper) | fcn8s (VGG16; the paper used InceptionV2-BN) | deeplabv3 (ResNet-50; the paper
used Xception-38), dataset in voc_aug | ade20k and pooling in max | p. P-pooling replaces
every pooling layer, also the stride-1 ones (paper §4.2).

The paper (§4.2) trains each pipeline with its original paper's settings; ``RECIPES`` holds
them, each number tagged with its source: [DL] Chen et al., "Semantic image segmentation
with deep convolutional nets and fully connected CRFs", ICLR 2015, §4 and its released
DeepLab-LargeFOV solver/train prototxts; [FCN] Long et al., CVPR 2015 and the released
``voc-fcn8s/solver.prototxt`` (fcn.berkeleyvision.org); [DL3] Chen et al., "Rethinking
atrous convolution", 2017, §4; [paper] Wei et al. 2019 §4.1 (side branches); [ours] where the
source gives no value or we must deviate (fixed-size batches for pmap, full-resolution loss).
The ADE20K runs use the same recipes (the sources give VOC ones) [ours].
"""

from ppool_jax.train.config import base_config

PIPELINES = {"deeplab_largefov": "vgg16", "fcn8s": "vgg16", "deeplabv3": "resnet50"}
DATASETS = {"voc_aug": ("train_aug", "val"), "ade20k": ("train", "val")}

RECIPES = {
    "deeplab_largefov": dict(
        optim_name="caffe_sgd",     # [DL] Caffe SGD
        source_loss="mean",         # [DL] SoftmaxWithLoss, Caffe's default normalisation
        normalization="valid",      # ... (mean over labelled pixels): no mapping needed
        learning_rate=1e-3,         # [DL] 0.001
        head_lr_mult=10.0,          # [DL] 0.01 for the final classifier (fc8)
        momentum=0.9,               # [DL]
        weight_decay=5e-4,          # [DL]
        schedule="step", step_boundaries=(2000, 4000), step_factor=0.1,  # [DL] x0.1 / 2000 it
        total_steps=6000,           # [DL] released solver: max_iter 6000
        batch=20,                   # [DL] mini-batch of 20 images
        crop=321,                   # [DL] released train prototxt crop_size 321
        scale_range=(1.0, 1.0),     # [DL] no scale augmentation (mirroring only)
    ),
    "fcn8s": dict(
        optim_name="caffe_sgd",     # [FCN] Caffe SGD
        source_loss="sum",          # [FCN] "lr for unnormalized softmax": a summed loss ...
        normalization="batch_pixels",  # ... mapped exactly (lr x P, decay / P)
        learning_rate=1e-14,        # [FCN] base_lr 1e-14, lr_policy fixed
        head_lr_mult=1.0,           # [FCN] score layers: lr_mult 1 (weights) / 2 (biases)
        momentum=0.99,              # [FCN] "high momentum"
        weight_decay=5e-4,          # [FCN]
        schedule="constant", step_boundaries=(), step_factor=1.0,
        total_steps=100_000,        # [FCN] max_iter 100000
        batch=1,                    # [FCN] one whole image per iteration
        crop=500,                   # [ours] whole VOC images (<= 500 px) padded to 500 with ignore
        scale_range=(1.0, 1.0),     # [FCN] no augmentation
    ),
    "deeplabv3": dict(
        optim_name="sgd",           # [DL3] momentum SGD (TensorFlow's: velocity of gradients)
        source_loss="mean",
        normalization="valid",      # [DL3] TF DeepLab: mean over labelled pixels
        learning_rate=7e-3,         # [DL3] initial 0.007
        head_lr_mult=1.0,
        momentum=0.9,               # [DL3]
        weight_decay=1e-4,          # [ours] not in [DL3]; torchvision's ResNet-50 DeepLabv3 value
        schedule="poly", step_boundaries=(), step_factor=1.0,  # [DL3] poly, power 0.9
        total_steps=30_000,         # [DL3] 30K iterations
        batch=16,                   # [DL3] batch 16 (BN statistics over the batch)
        crop=513,                   # [DL3] crop 513
        scale_range=(0.5, 2.0),     # [DL3] random scale 0.5-2.0 and left-right flip
    ),
}


def get_config(arg: str = "deeplab_largefov,voc_aug,p"):
  pipeline, dataset, pooling = arg.split(",")
  if pipeline not in PIPELINES or dataset not in DATASETS or pooling not in ("max", "p"):
    raise ValueError(f"table45: expected pipeline,dataset,pooling from {sorted(PIPELINES)}, "
                     f"{sorted(DATASETS)}, [max, p]; got {arg!r}.")
  r = RECIPES[pipeline]
  c = base_config()
  c.dataset.name = dataset
  c.dataset.root = f"~/data/{dataset}"
  c.dataset.train_split, c.dataset.eval_split = DATASETS[dataset]
  c.dataset.crop_size = r["crop"]
  c.dataset.scale_range = r["scale_range"]
  c.global_batch_size = r["batch"]
  c.total_steps = r["total_steps"]
  c.model.name = pipeline
  c.model.pooling = pooling
  c.model.pretrained = f"~/ppool_weights/{PIPELINES[pipeline]}"
  # [DL3] fine-tunes BatchNorm at output stride 16 (statistics synchronised over devices
  # here); the new ASPP BatchNorms always train.
  c.model.frozen_bn = False
  c.loss.normalization = r["normalization"]
  o = c.optim
  o.name, o.source_loss = r["optim_name"], r["source_loss"]
  o.learning_rate, o.momentum, o.weight_decay = r["learning_rate"], r["momentum"], r["weight_decay"]
  o.schedule, o.step_boundaries, o.step_factor = r["schedule"], r["step_boundaries"], r["step_factor"]
  o.head_lr_mult = r["head_lr_mult"]
  o.side_branch_lr_mult = 3.0  # [paper] side branches at 3x, in every pipeline
  return c
