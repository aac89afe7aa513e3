"""Writes experiments/results/finetune_table.md and its figures (see
:mod:`experiments.run_finetune_table`); the tables come from :mod:`experiments.report`.

A hand-written "## Analysis" section at the end of an existing report survives regeneration.
"""

from __future__ import annotations

import json
import os

import numpy as np

from experiments import report
from experiments.configs import finetune_detail

SCORES = (("miou", "mIoU"), ("detail_miou", "detail mIoU"), ("boundary_f", "boundary F"),
          ("boundary_band_miou", "boundary-band mIoU"), ("iou/pole", "pole"),
          ("iou/wire", "wire"), ("iou/small_object", "small object"))
PAIRED = SCORES[:3] + SCORES[4:]
# Every fixed pooling of the grid as an alpha: avg = alpha 0, the fixed alphas of METHODS.
ALPHA_OF = {"avg": 0.0, **{m: opts["p_fixed"]["init_alpha"]
                           for m, (pooling, opts) in finetune_detail.METHODS.items()
                           if pooling == "p_fixed"}}


def _curve_table(groups):
  """Plateau check: mean mIoU at 50 %, 75 % and 100 % of the steps."""
  lines = ["| method | mIoU at 50 % | 75 % | 100 % of the steps | change over the last quarter |",
           "|---|---|---|---|---|"]
  for name, rows in groups.items():
    at = {}
    for r in rows:
      if r.get("diverged"):
        continue
      curve = dict(report.metrics_log(r["workdir"], "eval").get("miou", []))
      steps = sorted(curve)
      if not steps:
        continue
      for frac in (0.5, 0.75, 1.0):
        s = min(steps, key=lambda x: abs(x - frac * steps[-1]))
        at.setdefault(frac, []).append(100 * curve[s])
    if at:
      m = {f: np.mean(v) for f, v in at.items()}
      lines.append(f"| {name} | {m[0.5]:.1f} | {m[0.75]:.1f} | {m[1.0]:.1f} | "
                   f"{m[1.0] - m[0.75]:+.1f} |")
  return lines


def _plots(groups, out):
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  fig, axes = plt.subplots(1, 3, figsize=(15, 4))
  xs = sorted(ALPHA_OF.items(), key=lambda kv: kv[1])
  pos = list(range(len(xs))) + [len(xs)]
  for ax, (key, title) in zip(axes[:2], (("miou", "mIoU"), ("detail_miou", "detail mIoU"))):
    labels = [k for k, _ in xs] + ["max"]
    stats = [report.summary([100 * r.get(key, np.nan) for r in groups.get(k, [])])
             for k in labels]
    ax.errorbar(pos, [s[0] for s in stats], yerr=[s[1] for s in stats], marker="o", capsize=3,
                label="fixed pooling (avg = alpha 0, max = alpha inf)")
    for name, style in (("P (bias 20)", "--"), ("P (bias 5)", ":"), ("P (log alpha)", "-.")):
      if groups.get(name):
        ax.axhline(report.summary([100 * r.get(key, np.nan) for r in groups[name]])[0],
                   ls=style, color="C3" if "20" in name else "C2", label=name)
    ax.set_xticks(pos, [str(a) for _, a in xs] + ["inf"])
    ax.set_xlabel("alpha")
    ax.set_title(f"{title} vs fixed alpha (mean ± std over seeds)")
    ax.legend(fontsize=7)
  ax = axes[2]
  for i, (name, rows) in enumerate(groups.items()):
    steps, miou = report.mean_curve(rows, "miou", "eval")
    if steps is not None:
      ax.plot(steps, [100 * v for v in miou], label=name, color=f"C{i % 10}",
              ls="-" if i < 10 else "--")
  ax.set_xlabel("fine-tuning step")
  ax.set_title("evaluation mIoU during fine-tuning (mean over seeds)")
  ax.legend(fontsize=6)
  fig.tight_layout()
  fig.savefig(out.replace(".md", ".png"), dpi=80)
  plt.close(fig)


def _alpha_figure(groups, out):
  """Alpha at step 0, at the end, and their difference (mean over channels) on one eval image,
  for the first seed of each P-pooling variant."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  runs = [(n, rows[0]) for n, rows in groups.items() if n.startswith("P") and rows
          and os.path.exists(os.path.join(rows[0]["workdir"], "alpha_maps.npz"))]
  if not runs:
    return False
  layers = sorted({k.split("/", 1)[1] for k in np.load(os.path.join(
      runs[0][1]["workdir"], "alpha_maps.npz")).files if k.startswith("start/")})
  fig, axes = plt.subplots(len(runs) * 3, len(layers) + 1, figsize=(3 * (len(layers) + 1),
                                                                  2.6 * 3 * len(runs)),
                           squeeze=False)
  for i, (name, row) in enumerate(runs):
    with np.load(os.path.join(row["workdir"], "alpha_maps.npz")) as f:
      image = f["images"][0]
      maps = {w: [f[f"{w}/{l}"][0].mean(-1) for l in layers] for w in ("start", "end")}
    for j, what in enumerate(("start", "end", "change")):
      ax = axes[3 * i + j, 0]
      ax.imshow(np.clip((image[..., ::-1] + 120) / 255, 0, 1))
      ax.set_title(f"{name}, seed {row['seed']}: {what}", fontsize=7)
      for k, layer in enumerate(layers):
        m = (maps["end"][k] - maps["start"][k]) if what == "change" else maps[what][k]
        im = axes[3 * i + j, k + 1].imshow(m, cmap="coolwarm" if what == "change" else "viridis")
        axes[3 * i + j, k + 1].set_title(f"{layer}: {what} (channel mean)", fontsize=7)
        fig.colorbar(im, ax=axes[3 * i + j, k + 1], fraction=0.046)
  for ax in axes.flat:
    ax.axis("off")
  fig.tight_layout()
  fig.savefig(out.replace(".md", "_alpha.png"), dpi=70)
  plt.close(fig)
  return True


def _command(groups, args, out) -> str:
  """The invocation that rebuilds the report from ``args`` (flags at their defaults left out)."""
  runs = getattr(args, "runs", "runs/detail")
  methods = [m for m in groups if m not in args.options]
  return report.command("run_finetune_table", [
      f"--runs {runs}" if runs != "runs/detail" else "", report.out_flag(out, "finetune_table.md"),
      f"--seeds {' '.join(map(str, args.seeds))}",
      f"--extra_seeds {' '.join(map(str, args.extra_seeds))}",
      f"--options {' '.join(repr(o) for o in args.options)}" if args.options else "",
      f"--steps {args.steps}" if args.steps else "",
      f"--lr {args.lr:g}" if getattr(args, "lr", None) else "",
      f"--methods {' '.join(repr(m) for m in methods)}"
      if set(methods) != set(finetune_detail.METHODS) else "",
      "--report_only" if getattr(args, "report_only", False) else ""])


def write(groups, args, out, pretrained: str):
  from ppool_jax.train.optim import effective_solver
  cfg = finetune_detail.get_config()
  if args.steps:
    cfg.total_steps = args.steps
  if getattr(args, "lr", None):
    cfg.optim.learning_rate = args.lr
  solver = effective_solver(cfg)
  with open(os.path.join(pretrained, "result.json")) as f:
    pre = json.load(f)
  mean_lr = solver.base_lr
  paper_mean_lr = 2e-7 * 321 * 321 * 10
  lines = [
      "# Fine-tuning experiment on synthetic detail data (issue #19)", "",
      "**Synthetic data, small network, CPU: not a reproduction of the paper's numbers.**", "",
      f"Machine: {report.machine()} (the project's 2-core VM, shared with other work while the "
      "runs ran; timings are not benchmarks).", "",
      "**Data** (`dataset.name=synthetic_detail`, `ppool_jax/data/detail.py`; statistics in "
      "`docs/synthetic_detail.md`): 96 px scenes with anti-aliased thin structures narrower "
      "than the stride, weak wires beside strong poles, small objects beside blobs of their "
      "colour, textured regions under blobs, correlated noise; no ignore label. "
      f"{cfg.dataset.synthetic_train} training scenes, {cfg.dataset.synthetic_eval} evaluation "
      "scenes (disjoint seeds).", "",
      f"**Pretraining** (`experiments/pretrain.py`): the same backbone with max pooling, global "
      f"average pooling and a linear head, trained to say which of the 5 foreground classes a "
      f"scene contains (multi-label), on {pre['scenes']} scenes of their own seed, Adam, "
      f"{pre['steps']} steps of {pre['batch']}: held-out mean AUC "
      f"{pre['eval']['mean_auc']:.3f}, accuracy {pre['eval']['mean_accuracy']:.3f} "
      f"(per class AUC: {', '.join(f'{a:.2f}' for a in pre['eval']['auc'])}). Only its "
      "convolutions are kept.", "",
      f"**Fine-tuning** (`experiments/configs/finetune_detail.py`): 4 stages "
      f"{finetune_detail.BLOCKS}, three 2x2 stride-2 poolings (the method under test) and none "
      f"after the last stage, output stride 8; the paper's recipe: Caffe SGD on the summed "
      f"loss, lr {cfg.optim.learning_rate:g}, momentum 0.9, weight decay 5e-4, x0.1 at 60 % of "
      f"{cfg.total_steps} steps, side branches x3, biases x2 without decay, side-branch bias "
      f"20, x100 input, C = 35; the new classifier at x{cfg.optim.head_lr_mult:g}, initialised at zero "
      f"(FCN) and first warmed up per method: {getattr(args, 'warmup_steps', 0)} Adam steps "
      "(3e-3, mean loss) on the frozen backbone with the method's own pooling, seed 0 "
      "(`runner.head_warmup`; without it no method predicted a detail class at the largest "
      "stable learning rate). Batch "
      f"{cfg.global_batch_size}, {cfg.dataset.crop_size} px crops, scale 0.75-1.5, flips. "
      f"Effective learning rate on the mean per-pixel loss: {mean_lr:.4f} "
      f"(= {cfg.optim.learning_rate:g} x {cfg.dataset.crop_size}² x {cfg.global_batch_size}; "
      f"classifier {cfg.optim.head_lr_mult * mean_lr:.4f}); the paper's 2e-7 on 321² crops of 10 images would be "
      f"{paper_mean_lr:.3f}. Evaluation every {cfg.eval_every} steps on the "
      f"{cfg.dataset.synthetic_eval} evaluation scenes at full resolution.", "",
      "Every seed changes the side branches' initialisation and the data order (the "
      "classifier comes from the method's warm-up); the same seed gives "
      "every method the same batches, so differences are paired by "
      "seed. Scores in %, mean ± sample std over n seeds; intervals are 95 % t intervals of the "
      "paired mean difference.", "",
      f"Regenerate: `{_command(groups, args, out)}`"
      + (" rebuilds this report from the runs (without `--report_only` the command trains the "
         "runs that are missing)." if getattr(args, "report_only", False) else
         " (runs resume)."), "",
      "## Every method", ""] + report.score_table(groups, SCORES) + [
      "", "## Paired differences to max pooling", "",
      "Mean difference [95 % interval] (seeds ahead / n), in points.", ""] + \
      report.paired_table(groups, "max", PAIRED)
  fixed = [m for m in ALPHA_OF if m != "avg" and groups.get(m)]
  if fixed and groups.get("P (bias 20)"):
    best = max(fixed, key=lambda m: report.summary([r.get("miou", np.nan) for r in groups[m]])[0])
    sub = {best: groups[best], **{k: v for k, v in groups.items() if k.startswith("P")}}
    lines += ["", f"## Does the learned alpha find the best fixed alpha ({best})?", "",
              f"Paired differences to `{best}` (best mean mIoU of the fixed alphas).", ""]
    lines += report.paired_table(sub, best, PAIRED)
  lines += ["", "## Fixed alpha, and the evaluation curves", "",
            f"![scores vs alpha and curves]({os.path.basename(out).replace('.md', '.png')})", "",
            "Plateau check (mean over seeds):", ""] + _curve_table(groups)
  p_groups = {k: v for k, v in groups.items() if k.startswith("P")}
  for name, rows in p_groups.items():
    lines += ["", f"## Alpha diagnostics: {name} (mean over {len(rows)} seeds)", "",
              "Step 0 = the forward pass of the first step (initial parameters); drift = "
              "||θ_end − θ_0|| / ||θ_0|| of each side-branch parameter; Δalpha = alpha of the "
              "final minus the initial state at every position of the first 16 evaluation "
              "images.", ""] + report.alpha_table(rows)
  _plots(groups, out)
  if _alpha_figure(groups, out):
    lines += ["", f"![alpha maps]({os.path.basename(out).replace('.md', '_alpha.png')})"]
  report.write(out, lines)
