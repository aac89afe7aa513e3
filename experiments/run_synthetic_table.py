"""A synthetic analogue of Table 1 (and a Table 6-style per-stage ablation), on CPU.

Trains the demo's small VGG-style net (ppool_jax/configs/synthetic_demo.py) on the embedded
synthetic dataset with every pooling method, several seeds, the same budget, and writes
experiments/results/synthetic_table.md (mean ± std of mIoU, boundary F-score and boundary-band
mIoU, next to the paper's Table 1 VGG column for reference only) and a plot. Each run goes
through :func:`experiments.runner.run` into <runs>/<name>_seed<seed> (an interrupted sweep
resumes; a run's result.json, also one written by the earlier version of this script, is
reused), and a hand-written "## Analysis" section at the end of the report survives
regeneration (:mod:`experiments.report`). From the repository root:

  python -m experiments.run_synthetic_table --steps 400 --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import os

import numpy as np

from experiments import report, runner

METHODS = {  # label -> pooling setting of the 4-stage net
    "max": "max", "avg": "avg", "Strided-C": "strided_c", "All-C": "all_c",
    "gated": "gated", "DPP": "dpp", "SoftPool": "soft", "P-pooling": "p",
}
# Paper Table 1, VGG16 column (mIoU on the real validation sets), for reference only.
PAPER_VGG = {"max": (53.9, 57.2, 25.4), "avg": (52.8, 53.5, 24.7), "Strided-C": (50.9, 56.1, 23.9),
             "All-C": (None, 25.2, None), "gated": (53.3, 56.7, 25.1), "DPP": (54.2, 57.8, 25.3),
             "SoftPool": (None, None, None), "P-pooling": (55.1, 58.6, 25.9)}
SCORES = (("miou", "mIoU"), ("boundary_f", "boundary F"),
          ("boundary_band_miou", "boundary-band mIoU"))


def config(pooling: str, seed: int, steps: int):
  from ppool_jax.configs import get_config
  cfg = get_config("synthetic_demo")
  cfg.seed = seed
  cfg.total_steps = cfg.eval_every = cfg.checkpoint_every = steps
  cfg.log_every = max(1, steps // 20)
  cfg.progress_bar = False
  cfg.model.pooling = pooling
  return cfg


def run_one(name: str, pooling: str, seed: int, steps: int, runs: str) -> dict:
  """One run in ``<runs>/<name>_seed<seed>`` (this script's folder names: ``name`` as is)."""
  return runner.run(name, config(pooling, seed, steps), runs, eval_images=16, tag=name)


def final_alpha(row) -> dict[str, tuple[float, float]] | None:
  """``{stage: (mean, std)}`` of the trained model's alpha on the eval images: from the
  runner's ``alpha_change`` (``mean_end``, ``std_end``) or, in a result.json of the earlier
  version of this script, its ``alpha`` (``mean``, ``std``); None without P-pooling."""
  if "alpha_change" in row:
    return {k: (v["mean_end"], v["std_end"]) for k, v in row["alpha_change"].items()}
  if "alpha" in row:
    return {k: (v["mean"], v["std"]) for k, v in row["alpha"].items()}
  return None


def write_report(main_rows, ablation_rows, args, out_md, out_png):
  cmd = report.command("run_synthetic_table", [
      f"--steps {args.steps} --seeds {' '.join(map(str, args.seeds))}",
      "" if args.ablation_seeds is None else
      f"--ablation_seeds {' '.join(map(str, args.ablation_seeds))}",
      "" if args.runs == "runs/synthetic_table" else f"--runs {args.runs}",
      report.out_flag(out_md, "synthetic_table.md")])
  paper = {name: " / ".join("–" if v is None else f"{v}" for v in PAPER_VGG[name])
           for name in main_rows}
  lines = [
      "# Synthetic Table-1 analogue (CPU)",
      "",
      "**Synthetic data, small network, CPU: this is not a reproduction of the paper's numbers.**",
      f"Each row trains the 4-stage VGG-style net of `ppool_jax/configs/synthetic_demo.py` "
      f"(Adam 2e-3, poly schedule, batch 16, 64 px crops) for **{args.steps} steps** on the "
      "embedded synthetic dataset (2,000 training scenes) and evaluates on 100 held-out "
      f"scenes; seeds {args.seeds} change initialisation and data order. Mean ± sample std over "
      f"seeds, in %. Regenerate with `{cmd}`.",
      "",
  ] + report.score_table(main_rows, SCORES, n=False,
                         extra=("paper VGG16 mIoU (VOC / Cityscapes / ADE20K)", paper))
  if ablation_rows:
    lines += ["", "## P-pooling in one stage at a time (Table 6 analogue)", ""]
    lines += report.score_table(ablation_rows, SCORES, first="P-pooling in", n=False)
  p_rows = [(r, final_alpha(r)) for r in main_rows.get("P-pooling", [])]
  p_rows = [(r, a) for r, a in p_rows if a]
  if p_rows:
    lines += ["", "## Learned alpha (P-pooling runs, 16 eval images)", "",
              "| stage | " + " | ".join(f"seed {r['seed']}: mean ± std" for r, _ in p_rows) + " |",
              "|---|" + "---|" * len(p_rows)]
    for stage in sorted(p_rows[0][1]):
      lines.append(f"| {stage} | " + " | ".join(
          f"{a[stage][0]:.2f} ± {a[stage][1]:.2f}" for _, a in p_rows) + " |")
  lines += ["", f"![scores]({os.path.basename(out_png)})", "",
            f"![training loss]({os.path.basename(out_png).replace('.png', '_curves.png')})"]
  report.write(out_md, lines)
  _plots(main_rows, args, out_png)


def _plots(main_rows, args, out_png):
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  fig, axes = plt.subplots(1, 3, figsize=(13, 3.2))
  names = list(main_rows)
  for ax, (k, _) in zip(axes, SCORES):
    stats = [report.summary([100 * r.get(k, np.nan) for r in main_rows[n]]) for n in names]
    ax.bar(range(len(names)), [s[0] for s in stats], yerr=[s[1] for s in stats], capsize=3,
           color=["C3" if n == "P-pooling" else "C0" for n in names])
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right", fontsize=8)
    ax.set_title(k, fontsize=9)
    lo = np.nanmin([s[0] for s in stats])
    ax.set_ylim(max(0, lo - 10) if np.isfinite(lo) else 0, None)
  fig.suptitle(f"synthetic data, {args.steps} steps, seeds {args.seeds}", fontsize=9)
  fig.savefig(out_png, dpi=90, bbox_inches="tight")
  plt.close(fig)
  fig, ax = plt.subplots(figsize=(6, 3.5))
  for i, name in enumerate(names):
    steps, losses = report.mean_curve(main_rows[name], "loss", "train")
    if steps is not None:
      colour = "C3" if name == "P-pooling" else f"C{(0, 1, 2, 4, 5, 6, 7, 8, 9)[i % 9]}"
      ax.plot(steps, losses, label=name, color=colour, lw=2.5 if name == "P-pooling" else 1)
  ax.set_xlabel("step"); ax.set_ylabel("train loss (mean over seeds)"); ax.set_yscale("log")
  if ax.lines:
    ax.legend(fontsize=7, ncol=2)
  fig.savefig(out_png.replace(".png", "_curves.png"), dpi=90, bbox_inches="tight")
  plt.close(fig)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--steps", type=int, default=400)
  parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
  parser.add_argument("--ablation_seeds", type=int, nargs="*", default=None)
  parser.add_argument("--runs", default="runs/synthetic_table")
  parser.add_argument("--out", default=os.path.join(report.RESULTS, "synthetic_table.md"))
  args = parser.parse_args(argv)
  main_rows = {name: [run_one(name, pooling, s, args.steps, args.runs) for s in args.seeds]
               for name, pooling in METHODS.items()}
  ablation_rows = {}
  seeds = args.seeds if args.ablation_seeds is None else args.ablation_seeds
  for stage in range(4):
    pooling = ",".join("p" if i == stage else "max" for i in range(4))
    if seeds:
      ablation_rows[f"pool{stage + 1} only"] = [
          run_one(f"p_stage{stage + 1}", pooling, s, args.steps, args.runs) for s in seeds]
  if ablation_rows:
    ablation_rows["all max"] = main_rows["max"]
    ablation_rows["all P"] = main_rows["P-pooling"]
  write_report(main_rows, ablation_rows, args, args.out, args.out.replace(".md", ".png"))
  print(f"wrote {args.out}")


if __name__ == "__main__":
  main()
