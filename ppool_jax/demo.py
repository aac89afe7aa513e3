"""`make demo`: train a small VGG-style P-pooling net on the embedded synthetic dataset.

Trains with the package config ``synthetic_demo`` (``ppool_jax/configs/synthetic_demo.py``;
``--config`` picks another), resuming if ``--workdir`` holds a run, evaluates it next to the
trivial predictor (every pixel "background", the most frequent class), prints mIoU and the
detail metrics as the Markdown table of ``experiments/results/demo.md`` (:func:`results_table`;
``tests/integration/test_demo_rerun.py`` and ``make demo-check`` rerun the demo and compare) with the
commit that produced it, and saves ``demo.png`` in the workdir: inputs, ground truth,
predictions and per-stage alpha maps. Synthetic data on CPU: the numbers say the pipeline
learns, not what the paper reports.
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


# (score key, column header) of the results table.
COLUMNS = (("miou", "mIoU"), ("pixel_accuracy", "pixel accuracy"),
           ("boundary_f", "boundary F (tol. 1 px)"),
           ("boundary_band_miou", "boundary-band mIoU (band 2 px)"))


def results_table(rows: list[tuple[str, dict]]) -> str:
  """``[(predictor, scores)]`` as a Markdown table, scores to 4 decimals: the lines
  ``experiments/results/demo.md`` holds and the demo check compares."""
  lines = ["| predictor | " + " | ".join(h for _, h in COLUMNS) + " |",
           "|---" * (len(COLUMNS) + 1) + "|"]
  lines += [f"| {name} | " + " | ".join(f"{s[k]:.4f}" for k, _ in COLUMNS) + " |"
            for name, s in rows]
  return "\n".join(lines)


def provenance(workdir: str) -> str:
  """``commit <sha>[ (uncommitted changes)], ppool_jax <v>, jax <v>, <n> device(s)`` of the run
  (the commit from the run record ``config.json``; "not a git checkout" when it has none)."""
  import ppool_jax
  from ppool_jax.train.runs import read_record
  record = read_record(workdir) or {}
  commit = record.get("git_commit")
  where = (f"commit {commit}" + (" (uncommitted changes)" if record.get("git_dirty") else "")
           if commit else "not a git checkout")
  return (f"{where}, ppool_jax {ppool_jax.__version__}, jax {jax.__version__}, "
          f"{jax.device_count()} {jax.devices()[0].platform} device(s)")


def save_picture(cfg, state, eval_source, path: str, n: int = 4) -> None:
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  from ppool_jax.labels import IGNORE
  from ppool_jax.train import model_from_config
  from ppool_jax.train.inputs import eval_images
  from ppool_jax.train.loop import predict_with_alpha
  examples = [eval_source[i] for i in range(n)]
  logits, alphas = predict_with_alpha(model_from_config(cfg), state,
                                      eval_images(cfg, n, eval_source))
  preds = np.asarray(jnp.argmax(logits, -1))
  cols = 3 + len(alphas)
  fig, axes = plt.subplots(n, cols, figsize=(2.0 * cols, 2.0 * n), squeeze=False)
  for r, e in enumerate(examples):
    label = e["label"].astype(float)
    label[e["label"] == IGNORE] = np.nan
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
  print(f"\nsynthetic eval set ({len(eval_source)} images, {cfg.total_steps} training steps; "
        f"{provenance(FLAGS.workdir)}):\n")
  print(results_table([(f"P-pooling VGG-style net, {cfg.total_steps:,} steps", scores),
                       ('trivial: "background" everywhere', trivial)]))
  path = os.path.join(FLAGS.workdir, "demo.png")
  save_picture(cfg, state, eval_source, path)
  print(f"wrote {path}")


if __name__ == "__main__":  # errors: one line, exit status 2, --verbose (ppool_jax.cli)
  from ppool_jax import cli
  cli.run(main, command="demo", define_flags=define_flags)
