"""A tiny synthetic training config for tests (a few seconds per run)."""

from ppool_jax.train.config import base_config


def get_config():
  c = base_config()
  c.total_steps = 120
  c.global_batch_size = 8
  c.log_every = 10
  c.eval_every = 1000
  c.checkpoint_every = 10
  c.keep_checkpoints = 2
  c.progress_bar = False
  c.dataset.synthetic_train = 64
  c.dataset.synthetic_eval = 4
  c.dataset.synthetic_size = 32
  c.dataset.crop_size = 32
  c.dataset.num_workers = 1
  c.model.name = "vgg16_seg"
  c.model.blocks = ((4,), (8,), (8,))
  c.model.pooling = "p"
  c.optim.name = "sgd"
  c.optim.source_loss = "mean"          # our own optax recipe, not a mapped Caffe solver
  c.loss.normalization = "valid"
  c.optim.learning_rate = 0.05
  c.optim.schedule = "step"
  c.optim.step_boundaries = (60,)
  return c
