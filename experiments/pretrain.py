"""Classification pretraining for the fine-tuning experiment (issue #19): the ImageNet stand-in.

The segmentation net's backbone (max pooling) with global average pooling and a linear head
learns which foreground classes a ``synthetic_detail`` scene contains (multi-label, sigmoid
cross-entropy), on scenes of their own seed. Like ImageNet pretraining, the task rewards
*whether* a class is there, not *where*: the invariance the paper says segmentation must undo.
Its convolutions are saved in ``ppool_jax.convert``'s format for ``model.pretrained``.
"""

from __future__ import annotations

import json
import os
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from ppool_jax import convert
from ppool_jax.data import SyntheticSource, TrainLoader, normalize
from ppool_jax.data.detail import presence
from ppool_jax.models.vgg import VGG16Backbone
from ppool_jax.train.inputs import augment_config, num_classes


class SceneClassifier(nn.Module):
  """VGG-style backbone -> global average pooling -> one logit per foreground class."""
  blocks: tuple
  pooling: str
  num_outputs: int

  @nn.compact
  def __call__(self, x):
    pools = tuple(self.pooling.split(","))
    feats = VGG16Backbone(pools, None, 2 ** (len(self.blocks) - 1), 1.0, self.blocks,
                          name="backbone")(x)
    return nn.Dense(self.num_outputs, name="head")(jnp.mean(feats["out"], axis=(1, 2)))


def auc(scores: np.ndarray, targets: np.ndarray) -> float:
  """Area under the ROC curve (Mann-Whitney, ties counted half); NaN for one class only."""
  pos, neg = scores[targets > 0.5], scores[targets <= 0.5]
  if not len(pos) or not len(neg):
    return float("nan")
  greater = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
  return float(greater / (len(pos) * len(neg)))


def _sources(cfg):
  d, p = cfg.dataset, cfg.pretrain
  seed = d.synthetic_seed + p.seed_offset
  return (SyntheticSource(p.scenes, d.synthetic_size, seed, d.name),
          SyntheticSource(p.eval_scenes, d.synthetic_size, seed + 1, d.name))


def evaluate(model, params, source, aug) -> dict:
  """Per-class AUC and accuracy (threshold 0) of the scene classifier on ``source``."""
  apply = jax.jit(model.apply)
  logits, targets = [], []
  for start in range(0, len(source), 50):
    items = [source[i] for i in range(start, min(start + 50, len(source)))]
    x = np.stack([normalize(it["image"], aug) for it in items])
    logits.append(np.asarray(apply({"params": params}, x)))
    targets.append(presence(np.stack([it["label"] for it in items]))[:, 1:])
  logits, targets = np.concatenate(logits), np.concatenate(targets)
  aucs = [auc(logits[:, k], targets[:, k]) for k in range(targets.shape[1])]
  acc = ((logits > 0) == (targets > 0.5)).mean(0)
  return {"mean_auc": float(np.nanmean(aucs)), "auc": aucs, "accuracy": acc.tolist(),
          "mean_accuracy": float(acc.mean()), "positive_rate": targets.mean(0).tolist()}


def pretrain(cfg: ml_collections.ConfigDict, workdir: str, log=print) -> str:
  """Trains the scene classifier (or reuses ``workdir``'s result) and returns the folder of
  its backbone convolutions (``workdir/convs``)."""
  out = os.path.abspath(os.path.join(workdir, "convs"))
  if os.path.isdir(out):
    return out
  p = cfg.pretrain
  train_source, eval_source = _sources(cfg)
  aug = augment_config(cfg)
  loader = TrainLoader(train_source, global_batch_size=p.batch, seed=cfg.seed, cfg=aug,
                       num_workers=cfg.dataset.num_workers)
  model = SceneClassifier(tuple(map(tuple, cfg.model.blocks)), cfg.model.pooling,
                          num_classes(cfg) - 1)
  params = model.init(jax.random.PRNGKey(cfg.seed),
                      jnp.zeros((1,) + aug.crop_size + (3,)))["params"]
  tx = optax.adam(optax.cosine_decay_schedule(p.learning_rate, p.steps))
  opt = tx.init(params)

  @jax.jit
  def step(params, opt, x, y):
    def loss_fn(params):
      return optax.sigmoid_binary_cross_entropy(model.apply({"params": params}, x), y).mean()
    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt = tx.update(grads, opt, params)
    return optax.apply_updates(params, updates), opt, loss

  t0, history = time.time(), []
  batches = loader.iterate(0, p.steps)
  for s, b in zip(range(p.steps), batches):
    x, lab = b["image"], b["label"]
    params, opt, loss = step(params, opt, x, presence(lab)[:, 1:])
    if (s + 1) % 250 == 0 or s + 1 == p.steps:
      scores = evaluate(model, params, eval_source, aug)
      history.append({"step": s + 1, "loss": float(loss), **{
          k: scores[k] for k in ("mean_auc", "mean_accuracy")}})
      log(f"pretrain step {s + 1}: loss {float(loss):.4f}, eval AUC {scores['mean_auc']:.4f}, "
          f"accuracy {scores['mean_accuracy']:.4f} ({time.time() - t0:.0f} s)")
  batches.close()
  scores = evaluate(model, params, eval_source, aug)
  convs = {k: v for k, v in params["backbone"].items() if k.startswith("conv")}
  convert.save({"params": jax.device_get(convs)}, out)
  with open(os.path.join(workdir, "result.json"), "w") as f:
    json.dump({"eval": scores, "history": history, "steps": p.steps, "batch": p.batch,
               "scenes": p.scenes, "seconds": time.time() - t0}, f, indent=1)
  return out
