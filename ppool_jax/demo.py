"""`make demo`: train a small VGG-style P-pooling net on the embedded synthetic dataset.

Trains with the package config ``synthetic_demo`` (``ppool_jax/configs/synthetic_demo.py``;
``--config`` picks another), resuming if ``--workdir`` holds a run, evaluates it next to the
trivial predictor (every pixel "background", the most frequent class), prints mIoU and the detail metrics, and saves ``demo.png`` in the
workdir: inputs, ground truth, predictions and per-stage alpha maps. Synthetic data on
CPU: the numbers say the pipeline learns, not what the paper reports.
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
from absl import flags

FLAGS = flags.FLAGS


def define_flags() -> None:
  """The demo's flags; defined only when it runs, so importing the module registers none."""
  from ppool_jax.configs import define_config_flag
  define_config_flag("config", "synthetic_demo", "Demo config (default: synthetic_demo).")
  flags.DEFINE_string("workdir", "runs/demo", "Run directory.")


def trivial_scores(eval_source, num_classes: int) -> dict:
  """Scores of predicting the most frequent training class (background) everywhere."""
  from ppool_jax.metrics import segmentation_counts, segmentation_scores
  totals = None
  for i in range(len(eval_source)):
    label = jnp.asarray(eval_source[i]["label"])[None].astype(jnp.int32)
    counts = jax.device_get(segmentation_counts(jnp.zeros_like(label), label, num_classes))
    totals = counts if totals is None else jax.tree_util.tree_map(np.add, totals, counts)
  return segmentation_scores(totals)


def save_picture(cfg, state, eval_source, path: str, n: int = 4) -> None:
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  from ppool_jax.data import normalize
  from ppool_jax.train import model_from_config
  from ppool_jax.train.inputs import augment_config
  from ppool_jax.train.loop import predict_with_alpha
  examples = [eval_source[i] for i in range(n)]
  images = np.stack([normalize(e["image"], augment_config(cfg)) for e in examples])
  logits, alphas = predict_with_alpha(model_from_config(cfg), state, images)
  preds = np.asarray(jnp.argmax(logits, -1))
  cols = 3 + len(alphas)
  fig, axes = plt.subplots(n, cols, figsize=(2.0 * cols, 2.0 * n), squeeze=False)
  for r, e in enumerate(examples):
    label = e["label"].astype(float)
    label[e["label"] == 255] = np.nan
    panels = [("image", e["image"], {}), ("label", label, dict(cmap="tab10", vmin=0, vmax=9)),
              ("prediction", preds[r], dict(cmap="tab10", vmin=0, vmax=9))]
    for name, a in alphas.items():
      panels.append((f"alpha {name}", a[r].mean(-1), dict(cmap="magma")))
    for c, (title, img, kw) in enumerate(panels):
      ax = axes[r, c]
      im = ax.imshow(img, interpolation="nearest", **kw)
      if title.startswith("alpha"):
        fig.colorbar(im, ax=ax, fraction=0.046)
      ax.set_title(title if r == 0 else "", fontsize=8)
      ax.axis("off")
  fig.suptitle("synthetic eval images: prediction and mean alpha per P-pooling stage", fontsize=9)
  fig.savefig(path, dpi=90, bbox_inches="tight")
  plt.close(fig)


def main(_):
  from ppool_jax.train import train
  from ppool_jax.train.inputs import num_classes, sources
  cfg = FLAGS.config
  state, scores = train(cfg, FLAGS.workdir)
  _, eval_source = sources(cfg)
  trivial = trivial_scores(eval_source, num_classes(cfg))
  keys = ("miou", "pixel_accuracy", "boundary_f", "small_structure_miou")
  print(f"\nsynthetic eval set ({len(eval_source)} images, {cfg.total_steps} training steps):")
  print(f"{'':<22}" + "".join(f"{k:>22}" for k in keys))
  for name, s in (("P-pooling VGG-style", scores), ("trivial (background)", trivial)):
    print(f"{name:<22}" + "".join(f"{s[k]:>22.4f}" for k in keys))
  path = os.path.join(FLAGS.workdir, "demo.png")
  save_picture(cfg, state, eval_source, path)
  print(f"wrote {path}")


if __name__ == "__main__":  # errors: one line, exit status 2, --verbose (ppool_jax.cli)
  from ppool_jax import cli
  cli.run(main, command="demo", define_flags=define_flags)
