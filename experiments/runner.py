"""One experiment runner: train-or-load a run, score it, measure how its alpha moved.

``run(name, cfg, runs)`` trains ``cfg`` in ``runs/<slug>_seed<seed>`` (resuming an interrupted
run, reusing a finished one's ``result.json``), reports a diverged run as diverged, and for
models with P-pooling compares the alpha maps of the *initial* and the final state on fixed
evaluation images (the per-position change of alpha from step 0). The statistics helpers
(``paired``, ``summary``) give the intervals the reports print.
"""

from __future__ import annotations

import csv
import json
import os
import re
import time

import numpy as np
from scipy import stats as _stats


def slug(name: str) -> str:
  return re.sub(r"[^A-Za-z0-9.]+", "_", name).strip("_")


def _normalised_eval_images(cfg, n: int) -> np.ndarray:
  from ppool_jax.data import normalize
  from ppool_jax.train.inputs import augment_config, sources
  _, ev = sources(cfg)
  aug = augment_config(cfg)
  return np.stack([normalize(ev[i]["image"], aug) for i in range(min(n, len(ev)))])


def alpha_maps(cfg, state, images) -> dict[str, np.ndarray]:
  """``{layer: (B, h, w, C) alpha}`` of every P-pooling layer for ``images`` (eval mode)."""
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


def cached(name: str, cfg, runs: str) -> dict | None:
  """A finished run's ``result.json`` plus ``workdir``; None if it has not finished."""
  workdir = os.path.join(runs, f"{slug(name)}_seed{cfg.seed}")
  path = os.path.join(workdir, "result.json")
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return {**json.load(f), "workdir": workdir}


def run(name: str, cfg, runs: str, eval_images: int = 16, keep_maps: bool = False) -> dict:
  """Trains (or loads) one run; returns its ``result.json`` plus ``workdir``."""
  from ppool_jax.train import train
  from ppool_jax.train.loop import NonFiniteTrainingError
  done = cached(name, cfg, runs)
  if done is not None:
    return done
  workdir = os.path.join(runs, f"{slug(name)}_seed{cfg.seed}")
  path = os.path.join(workdir, "result.json")
  t0 = time.time()
  try:
    state, scores = train(cfg, workdir)
    diverged = None
  except NonFiniteTrainingError as e:  # reported as diverged, never silently dropped
    state, scores, diverged = None, {}, str(e)
  result = {k: float(v) for k, v in scores.items() if np.ndim(v) == 0}
  result.update(name=name, pooling=cfg.model.pooling, seed=cfg.seed, steps=cfg.total_steps,
                learning_rate=cfg.optim.learning_rate, seconds=time.time() - t0,
                diverged=diverged, pool_options=cfg.model.pool_options.to_dict())
  if state is not None and any(p.startswith("p") for p in cfg.model.pooling.split(",")):
    images = _normalised_eval_images(cfg, eval_images)
    before = alpha_maps(cfg, initial_state(cfg), images)
    after = alpha_maps(cfg, state, images)
    if before:
      result["alpha_change"] = alpha_change(before, after)
      if keep_maps:
        np.savez_compressed(os.path.join(workdir, "alpha_maps.npz"), images=images,
                            **{f"start/{k}": v for k, v in before.items()},
                            **{f"end/{k}": v for k, v in after.items()})
  with open(path, "w") as f:
    json.dump(result, f, indent=1)
  return {**result, "workdir": workdir}


def metrics_log(workdir: str, split: str = "train") -> dict[str, list[tuple[int, float]]]:
  """``{metric: [(step, value), ...]}`` from a run's metrics.csv."""
  out: dict = {}
  with open(os.path.join(workdir, "metrics.csv")) as f:
    for r in csv.DictReader(f):
      if r["split"] == split:
        out.setdefault(r["metric"], []).append((int(r["step"]), float(r["value"])))
  return out


def summary(values) -> tuple[float, float, int]:
  """Mean, sample std (0 for one value) and n, ignoring NaN (diverged runs)."""
  v = np.asarray([x for x in values if np.isfinite(x)], np.float64)
  if not len(v):
    return float("nan"), float("nan"), 0
  return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0, len(v)


def paired(rows, reference, key: str) -> dict:
  """``rows`` - ``reference`` paired by seed: mean difference, its 95 % t interval, n and how
  many seeds ``rows`` is ahead in. Seeds missing on either side are left out."""
  ref = {r["seed"]: r.get(key, float("nan")) for r in reference}
  d = np.asarray([r.get(key, float("nan")) - ref[r["seed"]] for r in rows if r["seed"] in ref])
  d = d[np.isfinite(d)]
  n = len(d)
  if n < 2:
    return {"n": n, "mean": float(d.mean()) if n else float("nan"), "lo": float("nan"),
            "hi": float("nan"), "ahead": int((d > 0).sum())}
  half = _stats.t.ppf(0.975, n - 1) * d.std(ddof=1) / np.sqrt(n)
  return {"n": n, "mean": float(d.mean()), "lo": float(d.mean() - half),
          "hi": float(d.mean() + half), "ahead": int((d > 0).sum())}


def override(cfg, overrides: dict | None):
  """Sets dotted config fields (``{"dataset.synthetic_eval": 4}``) in place; returns ``cfg``."""
  for key, value in (overrides or {}).items():
    node = cfg
    *path, last = key.split(".")
    for part in path:
      node = node[part]
    node[last] = value
  return cfg


def head_warmup(cfg, runs: str, tag: str, steps: int, lr: float = 3e-3) -> tuple[str, dict]:
  """Trains ``cfg``'s classifier alone on its frozen backbone (the method's own pooling; a
  P-pooling side branch is part of the backbone, so alpha stays at its initialisation) with
  Adam on the mean loss for ``steps`` [ours], then saves ``cfg.model.pretrained``'s weights
  plus that classifier (``heads/vgg16_seg``, which ``merge_pretrained`` loads) in
  ``runs/warmup_<tag>/weights``. Returns that folder and the warm-up's scores (reused when
  present)."""
  from ppool_jax import convert
  from ppool_jax.train import train
  workdir = os.path.join(runs, f"warmup_{tag}")
  out = os.path.abspath(os.path.join(workdir, "weights"))
  path = os.path.join(workdir, "result.json")
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
  state, scores = train(cfg, workdir)
  converted = convert.restore(cfg.model.pretrained)
  converted["heads"] = {"vgg16_seg": {"classifier": state.params["classifier"]}}
  convert.save(converted, out)
  result = {k: float(v) for k, v in scores.items() if np.ndim(v) == 0}
  result.update(tag=tag, steps=steps, seed=cfg.seed, seconds=time.time() - t0)
  with open(path, "w") as f:
    json.dump(result, f, indent=1)
  return out, result
