"""The training configuration: defaults every experiment config starts from.

Experiment files under ``experiments/configs/`` call ``base_config()`` and override
fields; every field can also be overridden on the command line
(``--config.model.pooling=max``).

Learning rate and the paper's 2e-7: Caffe's ``SoftmaxWithLoss`` with normalisation off
*sums* the per-pixel losses, so its gradient is ``P`` times the gradient of our *mean*
cross-entropy over the ``P`` valid pixels of a batch. Plain SGD (with momentum) on the
sum with rate ``r`` therefore takes the same steps as SGD on the mean with rate
``r * P``: ``summed_lr_to_mean_lr``. Weight decay is not part of the loss, so it keeps its
coefficient. ``P`` is the number of labelled pixels per batch (crop area x batch size,
less ignored pixels; we use the crop area x batch size).
"""

from __future__ import annotations

import ml_collections


def summed_lr_to_mean_lr(summed_lr: float, crop_size: int, global_batch_size: int) -> float:
  """The rate for a mean-reduced loss that equals SGD with ``summed_lr`` on the summed loss."""
  return summed_lr * crop_size * crop_size * global_batch_size


def base_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.total_steps = 10_000                # paper §4.1: 10,000 iterations
  c.global_batch_size = 10
  c.log_every = 20
  c.eval_every = 1000
  c.checkpoint_every = 500
  c.keep_checkpoints = 3
  c.max_consecutive_nonfinite = 5        # stop after this many skipped updates in a row
  c.eval_limit = -1                      # evaluate on at most this many images (-1: all)
  c.progress_bar = True

  c.dataset = ml_collections.ConfigDict()
  c.dataset.name = "synthetic"           # synthetic | voc_aug | cityscapes | ade20k
  c.dataset.reader = "folder"            # folder (extracted files) | tfds (prepared ArrayRecord)
  c.dataset.root = ""                    # extracted dataset folder (reader=folder)
  c.dataset.data_dir = ""                # TFDS data_dir (reader=tfds)
  c.dataset.train_split = "train"
  c.dataset.eval_split = "val"
  c.dataset.crop_size = 321
  c.dataset.scale_range = (0.5, 2.0)
  c.dataset.flip = True
  c.dataset.num_workers = 4
  c.dataset.synthetic_train = 2000      # synthetic only: number of images, size, seed
  c.dataset.synthetic_eval = 200
  c.dataset.synthetic_size = 64
  c.dataset.synthetic_seed = 0

  c.model = ml_collections.ConfigDict()
  c.model.name = "vgg16_seg"            # see ppool_jax.models.MODELS
  c.model.pooling = "p"                 # one name, or one per stage: "p,max,max,max,max"
  c.model.pool_options = ml_collections.ConfigDict({"p": {"clip_max": 35.0}})
  c.model.width = 1.0
  c.model.blocks = ml_collections.config_dict.placeholder(tuple)  # VGG-style nets only
  c.model.frozen_bn = False
  c.model.pretrained = ""               # orbax checkpoint written by ppool_jax.convert

  c.optim = ml_collections.ConfigDict()
  c.optim.name = "sgd"                  # sgd | adam
  c.optim.learning_rate = summed_lr_to_mean_lr(2e-7, 321, 10)  # paper's 2e-7 on a summed loss
  c.optim.momentum = 0.9
  c.optim.weight_decay = 5e-4
  c.optim.schedule = "step"             # step | poly | constant
  c.optim.step_boundaries = (6_000,)    # paper: step at 6,000
  c.optim.step_factor = 0.1
  c.optim.poly_power = 0.9
  c.optim.side_branch_lr_mult = 3.0     # paper: side branches at 3x the learning rate

  c.distributed = ml_collections.ConfigDict()
  c.distributed.coordinator_address = ""  # host:port; empty = single process
  c.distributed.num_processes = 1
  c.distributed.process_id = 0
  return c
