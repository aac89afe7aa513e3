"""The training configuration: defaults every experiment config starts from.

Config files (``ppool_jax/configs/``, ``experiments/configs/``) call ``base_config()`` and override
fields; every field can also be overridden on the command line
(``--config.model.pooling=max``). Each default says where it comes from: **[paper]**
(Wei et al. 2019, §4.1), **[caffe]** (Caffe's behaviour, which the paper's implementation
used), **[ours]** (our choice where the paper gives no value).

The defaults are the paper's VGG16/VOC recipe: Caffe SGD, lr 2e-7 on the *summed*
per-pixel loss, momentum 0.9, weight decay 5e-4, 10,000 iterations, x0.1 at 6,000, side
branches at 3x. We divide the summed loss by the fixed ``P`` = crop area x batch
(``loss.normalization = "batch_pixels"``) and map the solver exactly: lr x P and weight
decay / P (``ppool_jax.train.caffe.map_summed_solver``).
"""

from __future__ import annotations

import ml_collections


def eval_tta(cfg: ml_collections.ConfigDict) -> tuple[tuple[float, ...], bool]:
  """``(scales, flip)`` of ``cfg.eval`` (single scale, no flip for configs without it)."""
  e = cfg.get("eval") or {}
  return tuple(e.get("scales", (1.0,))), bool(e.get("flip", False))


def base_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0                             # [ours]
  c.total_steps = 10_000                 # [paper] 10,000 iterations
  c.global_batch_size = 10               # [ours] not in the paper; DeepLab-LargeFOV's 10/20
  c.log_every = 20
  c.eval_every = 1000
  c.checkpoint_every = 500
  c.keep_checkpoints = 3
  c.max_consecutive_nonfinite = 5        # stop after this many skipped updates in a row
  c.eval_limit = -1                      # evaluate on at most this many images (-1: all)
  c.progress_bar = True
  c.parallel = "pmap"                    # pmap | mesh (jit over a Mesh with NamedSharding)
  c.alpha_diagnostics = True             # log alpha/<layer>/... (ppool_jax.train.diagnostics)
  c.prefetch = 2                         # batches placed on the devices ahead of the step (0: off)
  c.profile_steps = ""                   # "START,STOP": jax.profiler trace in <workdir>/profile

  c.eval = ml_collections.ConfigDict()
  c.eval.scales = (1.0,)                 # [ours] single scale; DeepLab's multi-scale test:
  c.eval.flip = False                    #   scales (0.5, 0.75, 1.0, 1.25, 1.5, 1.75), flip True

  c.dataset = ml_collections.ConfigDict()
  c.dataset.name = "synthetic"           # synthetic | voc_aug | cityscapes | ade20k | folder
  c.dataset.reader = "folder"            # folder (extracted files) | tfds (prepared ArrayRecord)
  c.dataset.root = ""                    # extracted dataset folder (reader=folder)
  c.dataset.data_dir = ""                # TFDS data_dir (reader=tfds)
  c.dataset.train_split = "train"
  c.dataset.eval_split = "val"
  c.dataset.crop_size = 321              # [ours] DeepLab's VOC crop; the paper gives none
  c.dataset.scale_range = (0.5, 2.0)     # [ours] DeepLab-style scale augmentation
  c.dataset.flip = True                  # [ours]
  c.dataset.preprocessing = "imagenet"   # imagenet (torchvision weights) | caffe (BGR, 0-255, mean)
  c.dataset.num_workers = 4
  c.dataset.order_seed = -1              # sample order + augmentation seed; -1: c.seed
  # Validate every label file of a folder split with at most this many images before training
  # (ppool_jax.data.check); -1: any size, 0: never.
  c.dataset.check_labels = 5000
  # name="folder": a dataset of one's own (ppool_jax.data.custom; mmsegmentation's
  # CustomDataset fields). "{split}" is replaced by train_split / eval_split.
  c.dataset.folder = ml_collections.ConfigDict()
  c.dataset.folder.img_dir = "images/{split}"        # relative to dataset.root
  c.dataset.folder.ann_dir = "annotations/{split}"
  c.dataset.folder.img_suffix = ".jpg"
  c.dataset.folder.seg_map_suffix = ".png"
  c.dataset.folder.split_file = ""       # one key (file name without suffix) per line; "": all
  c.dataset.folder.classes = ()          # class names, required: their number is K
  c.dataset.folder.palette = ()          # optional: one (r, g, b) per class
  c.dataset.folder.ignore_index = 255    # raw label value of unlabelled pixels
  c.dataset.folder.reduce_zero_label = False  # raw 0 -> ignore, 1..K -> 0..K-1
  c.dataset.synthetic_train = 2000      # synthetic only: number of images, size, seed
  c.dataset.synthetic_eval = 200
  c.dataset.synthetic_size = 64
  c.dataset.synthetic_seed = 0

  c.model = ml_collections.ConfigDict()
  c.model.name = "vgg16_seg"            # see ppool_jax.models.MODELS
  c.model.pooling = "p"                 # one name, or one per stage: "p,max,max,max,max"
  c.model.pool_options = ml_collections.ConfigDict({"p": {"clip_max": 35.0}})  # [paper] C = 35
  c.model.width = 1.0
  c.model.blocks = ml_collections.config_dict.placeholder(tuple)  # VGG-style nets only
  c.model.classifier_init = ""          # vgg16_seg: "" (= "lecun_normal") or "zeros" (FCN)
  c.model.frozen_bn = False
  c.model.dtype = "float32"             # float32 | bfloat16 (activations/convs; params stay f32)
  c.model.pretrained = ""               # orbax checkpoint written by ppool_jax.convert

  c.loss = ml_collections.ConfigDict()
  # valid: mean over the labelled pixels of the global batch (TF DeepLab, Caffe's default
  # normalisation); batch_pixels: sum / (crop area x global batch), a fixed divisor that
  # maps a summed-loss (normalisation off) solver exactly.
  c.loss.normalization = "batch_pixels"  # [paper]+[caffe]: the 2e-7 is on a summed loss

  c.optim = ml_collections.ConfigDict()
  c.optim.name = "caffe_sgd"            # [paper] Caffe SGD | sgd | adam (optax, ours)
  c.optim.source_loss = "sum"           # the numbers below are for a summed loss: mapped
  c.optim.learning_rate = 2e-7          # [paper] as published (mapped: x P)
  c.optim.momentum = 0.9                # [ours] not in the paper; Caffe VGG/DeepLab's 0.9
  c.optim.weight_decay = 5e-4           # [ours] not in the paper; VGG/DeepLab's 5e-4 (mapped: / P)
  c.optim.schedule = "step"             # [paper] step
  c.optim.step_boundaries = (6_000,)    # [paper] steps at 6,000
  c.optim.step_factor = 0.1             # [ours] Caffe's usual gamma; the paper gives none
  c.optim.poly_power = 0.9
  c.optim.side_branch_lr_mult = 3.0     # [paper] side branches at 3x the learning rate
  c.optim.bias_lr_mult = 2.0            # [caffe] VGG/FCN/DeepLab prototxts: biases lr x2 ...
  c.optim.bias_decay_mult = 0.0         # [caffe] ... and no decay (keeps alpha's bias 20)
  c.optim.head_lr_mult = 1.0            # [ours] the paper names no classifier multiplier
  c.optim.prelu_decay_mult = 0.0        # [He et al. 2015] no decay on PReLU slopes
  c.optim.side_branch_decay_mult = 1.0  # [caffe] default decay_mult for the branch kernels
  c.optim.frozen = ()                   # top-level modules not trained (Caffe lr_mult 0)
  # (regex, multiplier) rules over parameter paths, tried before the defaults the fields above
  # build (first match wins; lr x0 freezes): e.g. (("(?:.*/)?side_branch/.*", 5.0),).
  c.optim.lr_rules = ()
  c.optim.decay_rules = ()

  c.distributed = ml_collections.ConfigDict()
  c.distributed.coordinator_address = ""  # host:port; empty = single process
  c.distributed.num_processes = 1
  c.distributed.process_id = 0
  return c
