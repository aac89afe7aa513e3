"""One experiment runner: train-or-load a run, score it, measure how its alpha moved.

``run(name, cfg, runs)`` trains ``cfg`` in ``runs/<slug>_seed<seed>`` (resuming an interrupted
run, reusing a finished one's ``result.json``), reports a diverged run as diverged, and for
models with P-pooling compares the alpha maps of the *initial* and the final state on fixed
evaluation images (the per-position change of alpha from step 0). ``head_warmup`` trains a
method's classifier on its frozen backbone first. The tables and statistics of the reports are
in :mod:`experiments.report`.
"""

from __future__ import annotations

import json
import os
import re
import time

import numpy as np


def slug(name: str) -> str:
  return re.sub(r"[^A-Za-z0-9.]+", "_", name).strip("_")


def workdir(name: str, cfg, runs: str, tag: str | None = None) -> str:
  """``runs/<tag>_seed<seed>``; ``tag`` defaults to :func:`slug` of ``name``."""
  return os.path.join(runs, f"{slug(name) if tag is None else tag}_seed{cfg.seed}")


def alpha_maps(cfg, state, images) -> dict[str, np.ndarray]:
  """``{layer: (B, h, w, C)}`` alpha of every P-pooling layer for normalised ``images`` (eval
  mode, every channel: :func:`ppool_jax.train.loop.predict_with_alpha`)."""
  import jax.numpy as jnp

  from ppool_jax.train import model_from_config
  from ppool_jax.train.loop import predict_with_alpha
  _, maps = predict_with_alpha(model_from_config(cfg), state, jnp.asarray(images))
  return maps


def initial_state(cfg):
  """The state a run of ``cfg`` starts from (initialisation + pretrained weights)."""
  from ppool_jax.train import model_from_config
  from ppool_jax.train.loop import init_state
  from ppool_jax.train.optim import make_optimizer
  c = cfg.dataset.crop_size
  return init_state(cfg, model_from_config(cfg), make_optimizer(cfg), (c, c, 3))


def alpha_change(before: dict, after: dict) -> dict:
  """Per layer: alpha at step 0 and at the end, and the per-position change |delta alpha|
  (mean, spread, 99th percentile) over every image, position and channel."""
  out = {}
  for layer, a0 in before.items():
    a0, a1 = np.asarray(a0, np.float64), np.asarray(after[layer], np.float64)
    d = a1 - np.broadcast_to(a0, a1.shape)
    out[layer] = {"mean_start": float(a0.mean()), "mean_end": float(a1.mean()),
                  "std_end": float(a1.std()), "frac_below_10_start": float(np.mean(a0 < 10)),
                  "frac_below_10_end": float(np.mean(a1 < 10)),
                  "mean_abs_change": float(np.abs(d).mean()), "std_change": float(d.std()),
                  "p99_abs_change": float(np.percentile(np.abs(d), 99))}
  return out


def cached(name: str, cfg, runs: str, tag: str | None = None) -> dict | None:
  """A finished run's ``result.json`` plus ``workdir``; None if it has not finished. The
  result is returned as written, whatever script wrote it."""
  folder = workdir(name, cfg, runs, tag)
  path = os.path.join(folder, "result.json")
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return {**json.load(f), "workdir": folder}


def run(name: str, cfg, runs: str, eval_images: int = 16, keep_maps: bool = False,
        tag: str | None = None) -> dict:
  """Trains (or loads, :func:`cached`) one run in :func:`workdir`; returns its ``result.json``
  plus ``workdir``: every scalar score, the run's settings, ``diverged`` (None, or the error
  of a run stopped by a non-finite loss, which has no scores) and, with P-pooling,
  ``alpha_change`` on the first ``eval_images`` evaluation images (``keep_maps``: the maps
  themselves in ``alpha_maps.npz``)."""
  from ppool_jax.train import train
  from ppool_jax.train.inputs import eval_images as normalised_eval_images
  from ppool_jax.train.loop import NonFiniteTrainingError
  done = cached(name, cfg, runs, tag)
  if done is not None:
    return done
  folder = workdir(name, cfg, runs, tag)
  t0 = time.time()
  try:
    state, scores = train(cfg, folder)
    diverged = None
  except NonFiniteTrainingError as e:  # reported as diverged, never silently dropped
    state, scores, diverged = None, {}, str(e)
  result = {k: float(v) for k, v in scores.items() if np.ndim(v) == 0}
  result.update(name=name, pooling=cfg.model.pooling, seed=cfg.seed, steps=cfg.total_steps,
                learning_rate=cfg.optim.learning_rate, seconds=time.time() - t0,
                diverged=diverged, pool_options=cfg.model.pool_options.to_dict())
  if state is not None and any(p.startswith("p") for p in cfg.model.pooling.split(",")):
    images = normalised_eval_images(cfg, eval_images)
    before = alpha_maps(cfg, initial_state(cfg), images)
    after = alpha_maps(cfg, state, images)
    if before:
      result["alpha_change"] = alpha_change(before, after)
      if keep_maps:
        np.savez_compressed(os.path.join(folder, "alpha_maps.npz"), images=images,
                            **{f"start/{k}": v for k, v in before.items()},
                            **{f"end/{k}": v for k, v in after.items()})
  os.makedirs(folder, exist_ok=True)
  with open(os.path.join(folder, "result.json"), "w") as f:
    json.dump(result, f, indent=1)
  return {**result, "workdir": folder}


def head_warmup(cfg, runs: str, tag: str, steps: int, lr: float = 3e-3) -> tuple[str, dict]:
  """Trains ``cfg``'s classifier alone on its frozen backbone (the method's own pooling; a
  P-pooling side branch is part of the backbone, so alpha stays at its initialisation) with
  Adam on the mean loss for ``steps`` [ours], then saves ``cfg.model.pretrained``'s weights
  plus that classifier (``heads/vgg16_seg``, which ``merge_pretrained`` loads) in
  ``runs/warmup_<tag>/weights``. Returns that folder and the warm-up's scores (reused when
  present)."""
  from ppool_jax import convert
  from ppool_jax.train import train
  folder = os.path.join(runs, f"warmup_{tag}")
  out = os.path.abspath(os.path.join(folder, "weights"))
  path = os.path.join(folder, "result.json")
  if os.path.isdir(out) and os.path.exists(path):
    with open(path) as f:
      return out, json.load(f)
  cfg = cfg.copy_and_resolve_references()
  cfg.optim.frozen = ("backbone",)
  cfg.optim.name, cfg.optim.source_loss, cfg.loss.normalization = "adam", "mean", "valid"
  cfg.optim.learning_rate, cfg.optim.weight_decay, cfg.optim.schedule = lr, 0.0, "constant"
  cfg.total_steps = cfg.checkpoint_every = steps
  cfg.eval_every = steps
  t0 = time.time()
  state, scores = train(cfg, folder)
  converted = convert.restore(cfg.model.pretrained)
  converted["heads"] = {"vgg16_seg": {"classifier": state.params["classifier"]}}
  convert.save(converted, out)
  result = {k: float(v) for k, v in scores.items() if np.ndim(v) == 0}
  result.update(tag=tag, steps=steps, seed=cfg.seed, seconds=time.time() - t0)
  with open(path, "w") as f:
    json.dump(result, f, indent=1)
  return out, result
