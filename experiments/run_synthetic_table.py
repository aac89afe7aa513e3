"""A synthetic analogue of Table 1 (and a Table 6-style per-stage ablation), on CPU.

Trains the demo's small VGG-style network (ppool_jax/configs/synthetic_demo.py) on the
embedded synthetic dataset with every pooling method, several seeds, the same budget,
and writes experiments/results/synthetic_table.md (mean ± std of mIoU, boundary F-score and
boundary-band mIoU, next to the paper's Table 1 VGG column for reference only) and a plot.
Each run's scores go to <runs>/<name>/result.json, so an interrupted sweep resumes, and a
hand-written "## Analysis" section at the end of the report survives regeneration.

  python experiments/run_synthetic_table.py --steps 400 --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import json
import os

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))

METHODS = {  # label -> pooling setting of the 4-stage net
    "max": "max", "avg": "avg", "Strided-C": "strided_c", "All-C": "all_c",
    "gated": "gated", "DPP": "dpp", "SoftPool": "soft", "P-pooling": "p",
}
# Paper Table 1, VGG16 column (mIoU on the real validation sets), for reference only.
PAPER_VGG = {"max": (53.9, 57.2, 25.4), "avg": (52.8, 53.5, 24.7), "Strided-C": (50.9, 56.1, 23.9),
             "All-C": (None, 25.2, None), "gated": (53.3, 56.7, 25.1), "DPP": (54.2, 57.8, 25.3),
             "SoftPool": (None, None, None), "P-pooling": (55.1, 58.6, 25.9)}
KEYS = ("miou", "boundary_f", "boundary_band_miou")


def run_one(name: str, pooling: str, seed: int, steps: int, runs: str) -> dict:
  import jax.numpy as jnp

  from ppool_jax.configs import synthetic_demo
  from ppool_jax.data import normalize
  from ppool_jax.train import model_from_config, train
  from ppool_jax.train.loop import predict_with_alpha
  from ppool_jax.train.inputs import augment_config, sources
  workdir = os.path.join(runs, f"{name}_seed{seed}")
  result_path = os.path.join(workdir, "result.json")
  if os.path.exists(result_path):
    with open(result_path) as f:
      return {**json.load(f), "workdir": workdir}
  cfg = synthetic_demo.get_config()
  cfg.seed = seed
  cfg.total_steps = steps
  cfg.eval_every = steps
  cfg.checkpoint_every = steps
  cfg.log_every = max(1, steps // 20)
  cfg.progress_bar = False
  cfg.model.pooling = pooling
  state, scores = train(cfg, workdir)
  result = {k: float(scores[k]) for k in KEYS}
  result.update(name=name, pooling=pooling, seed=seed, steps=steps)
  if "p" in pooling.split(","):
    _, eval_source = sources(cfg)
    images = np.stack([normalize(eval_source[i]["image"], augment_config(cfg)) for i in range(16)])
    _, alphas = predict_with_alpha(model_from_config(cfg), state, jnp.asarray(images))
    result["alpha"] = {k: {"mean": float(np.mean(a)), "std": float(np.std(a))}
                       for k, a in alphas.items()}
  with open(result_path, "w") as f:
    json.dump(result, f, indent=1)
  return {**result, "workdir": workdir}


def _fmt(values):
  v = 100 * np.asarray(values)
  return f"{v.mean():.1f} ± {v.std(ddof=1) if len(v) > 1 else 0.0:.1f}"


def write_report(main_rows, ablation_rows, args, out_md, out_png):
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  lines = [
      "# Synthetic Table-1 analogue (CPU)",
      "",
      "**Synthetic data, small network, CPU: this is not a reproduction of the paper's numbers.**",
      f"Each row trains the 4-stage VGG-style net of `ppool_jax/configs/synthetic_demo.py` "
      f"(Adam 2e-3, poly schedule, batch 16, 64 px crops) for **{args.steps} steps** on the "
      "embedded synthetic dataset (2,000 training scenes) and evaluates on 100 held-out "
      f"scenes; seeds {args.seeds} change initialisation and data order. Mean ± sample std over "
      "seeds, in %. Regenerate with "
      f"`python experiments/run_synthetic_table.py --steps {args.steps} --seeds "
      f"{' '.join(map(str, args.seeds))}`.",
      "",
      "| method | mIoU | boundary F | boundary-band mIoU | paper VGG16 mIoU (VOC / Cityscapes / ADE20K) |",
      "|---|---|---|---|---|",
  ]
  for name, rows in main_rows.items():
    paper = " / ".join("–" if v is None else f"{v}" for v in PAPER_VGG[name])
    lines.append(f"| {name} | " + " | ".join(_fmt([r[k] for r in rows]) for k in KEYS)
                 + f" | {paper} |")
  if ablation_rows:
    lines += ["", "## P-pooling in one stage at a time (Table 6 analogue)", "",
              "| P-pooling in | mIoU | boundary F | boundary-band mIoU |", "|---|---|---|---|"]
    for name, rows in ablation_rows.items():
      lines.append(f"| {name} | " + " | ".join(_fmt([r[k] for r in rows]) for k in KEYS) + " |")
  p_rows = main_rows.get("P-pooling", [])
  if p_rows and "alpha" in p_rows[0]:
    lines += ["", "## Learned alpha (P-pooling runs, 16 eval images)", "",
              "| stage | " + " | ".join(f"seed {r['seed']}: mean ± std" for r in p_rows) + " |",
              "|---|" + "---|" * len(p_rows)]
    for stage in sorted(p_rows[0]["alpha"]):
      lines.append(f"| {stage} | " + " | ".join(
          f"{r['alpha'][stage]['mean']:.2f} ± {r['alpha'][stage]['std']:.2f}" for r in p_rows) + " |")
  lines += ["", f"![scores]({os.path.basename(out_png)})", "",
            f"![training loss]({os.path.basename(out_png).replace('.png', '_curves.png')})", ""]
  # The hand-written "## Analysis" section of an existing report is kept across regenerations.
  analysis = ""
  if os.path.exists(out_md):
    with open(out_md) as f:
      old = f.read()
    if "## Analysis" in old:
      analysis = old[old.index("## Analysis"):]
  with open(out_md, "w") as f:
    f.write("\n".join(lines) + ("\n" + analysis if analysis else ""))
  fig, axes = plt.subplots(1, 3, figsize=(13, 3.2))
  names = list(main_rows)
  for ax, k in zip(axes, KEYS):
    vals = [100 * np.asarray([r[k] for r in main_rows[n]]) for n in names]
    ax.bar(range(len(names)), [v.mean() for v in vals],
           yerr=[v.std(ddof=1) if len(v) > 1 else 0 for v in vals], capsize=3,
           color=["C3" if n == "P-pooling" else "C0" for n in names])
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right", fontsize=8)
    ax.set_title(k, fontsize=9)
    lo = min(v.mean() for v in vals)
    ax.set_ylim(max(0, lo - 10), None)
  fig.suptitle(f"synthetic data, {args.steps} steps, seeds {args.seeds}", fontsize=9)
  fig.savefig(out_png, dpi=90, bbox_inches="tight")
  plt.close(fig)
  fig, ax = plt.subplots(figsize=(6, 3.5))
  for i, name in enumerate(names):
    steps, losses = _mean_curve([r["workdir"] for r in main_rows[name] if "workdir" in r])
    if steps is not None:
      colour = "C3" if name == "P-pooling" else f"C{(0, 1, 2, 4, 5, 6, 7, 8, 9)[i % 9]}"
      ax.plot(steps, losses, label=name, color=colour,
              lw=2.5 if name == "P-pooling" else 1)
  ax.set_xlabel("step"); ax.set_ylabel("train loss (mean over seeds)"); ax.set_yscale("log")
  ax.legend(fontsize=7, ncol=2)
  fig.savefig(out_png.replace(".png", "_curves.png"), dpi=90, bbox_inches="tight")
  plt.close(fig)


def _mean_curve(workdirs):
  import csv
  curves = []
  for w in workdirs:
    path = os.path.join(w, "metrics.csv")
    if not os.path.exists(path):
      continue
    with open(path) as f:
      rows = [r for r in csv.DictReader(f) if r["split"] == "train" and r["metric"] == "loss"]
    curves.append({int(r["step"]): float(r["value"]) for r in rows})
  if not curves:
    return None, None
  steps = sorted(set.intersection(*(set(c) for c in curves)))
  return steps, [np.mean([c[s] for c in curves]) for s in steps]


def main():
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument("--steps", type=int, default=400)
  parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
  parser.add_argument("--ablation_seeds", type=int, nargs="*", default=None)
  parser.add_argument("--runs", default="runs/synthetic_table")
  parser.add_argument("--out", default=os.path.join(HERE, "results", "synthetic_table.md"))
  args = parser.parse_args()
  main_rows = {name: [run_one(name, pooling, s, args.steps, args.runs) for s in args.seeds]
               for name, pooling in METHODS.items()}
  ablation_rows = {}
  for stage in range(4):
    pooling = ",".join("p" if i == stage else "max" for i in range(4))
    name = f"pool{stage + 1} only"
    seeds = args.seeds if args.ablation_seeds is None else args.ablation_seeds
    if seeds:
      ablation_rows[name] = [run_one(f"p_stage{stage + 1}", pooling, s, args.steps, args.runs)
                             for s in seeds]
  if ablation_rows:
    ablation_rows["all max"] = main_rows["max"]
    ablation_rows["all P"] = main_rows["P-pooling"]
  write_report(main_rows, ablation_rows, args, args.out, args.out.replace(".md", ".png"))
  print(f"wrote {args.out}")


if __name__ == "__main__":
  main()
