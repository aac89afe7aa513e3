"""`make demo`: a small VGG-style net with P-pooling on the embedded synthetic dataset.

Sized for a 2-core CPU (a few minutes). Synthetic data: not a reproduction of any paper number.
"""

from ppool_jax.train.config import base_config


def get_config():
  c = base_config()
  c.total_steps = 1500
  c.global_batch_size = 16
  c.log_every = 50
  c.eval_every = 500
  c.checkpoint_every = 250
  c.dataset.name = "synthetic"
  c.dataset.crop_size = 64
  c.dataset.scale_range = (0.75, 1.5)
  c.dataset.synthetic_train = 2000
  c.dataset.synthetic_eval = 100
  c.model.name = "vgg16_seg"
  c.model.blocks = ((16, 16), (32, 32), (64, 64), (64, 64))  # 4 stages, output stride 8
  c.model.pooling = "p"
  c.optim.name = "adam"
  c.optim.source_loss = "mean"          # our own optax recipe, not a mapped Caffe solver
  c.loss.normalization = "valid"
  c.optim.learning_rate = 2e-3
  c.optim.weight_decay = 0.0
  c.optim.schedule = "poly"
  return c
