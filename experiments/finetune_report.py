"""Writes experiments/results/finetune_table.md and its plots (see run_finetune_table.py).

A hand-written "## Analysis" section at the end of an existing report survives
regeneration.
"""

from __future__ import annotations

import json
import os
import platform

import numpy as np

from run_finetune_table import KEYS, alpha_log


def _fmt(values):
  v = 100 * np.asarray(values)
  return f"{v.mean():.1f} ± {v.std(ddof=1) if len(v) > 1 else 0.0:.1f}"


def _score_table(rows_by_name, extra_header=""):
  lines = [f"| {extra_header or 'method'} | n | mIoU | boundary F | small-structure mIoU |",
           "|---|---|---|---|---|"]
  for name, rows in rows_by_name.items():
    if not rows:
      lines.append(f"| {name} | 0 | not run (compute budget) | | |")
      continue
    lines.append(f"| {name} | {len(rows)} | " + " | ".join(_fmt([r[k] for r in rows]) for k in KEYS)
                 + " |")
  return lines


def _paired_table(groups, reference="max"):
  """Per-seed differences to the reference method (same seed: same classifier initialisation
  and data order), mean ± sample std and how many seeds the method is ahead."""
  ref = {r["seed"]: r for r in groups["main"][reference]}
  lines = [f"| method − {reference} | n | mIoU | boundary F | small-structure mIoU |",
           "|---|---|---|---|---|"]
  for name, rows in {**groups["main"], **groups["control"]}.items():
    pairs = [(r, ref[r["seed"]]) for r in rows if r["seed"] in ref and name != reference]
    if not pairs:
      continue
    cells = []
    for k in KEYS:
      d = 100 * np.asarray([a[k] - b[k] for a, b in pairs])
      spread = f" ± {d.std(ddof=1):.1f}" if len(d) > 1 else ""
      cells.append(f"{d.mean():+.1f}{spread} (ahead {int(np.sum(d > 0))}/{len(d)})")
    lines.append(f"| {name} | {len(pairs)} | " + " | ".join(cells) + " |")
  return lines


def _first_last(series):
  return series[0][1], series[-1][1]


def _alpha_table(row):
  log = alpha_log(row["workdir"])
  lines = ["| layer | bias start → end (drift) | alpha mean start → end | alpha std end | "
           "frac < 10 end | mean abs dL/dalpha start → end |", "|---|---|---|---|---|---|"]
  for layer, s in sorted(log.items()):
    b0, b1 = _first_last(s["bias"])
    m0, m1 = _first_last(s["mean"])
    g0, g1 = _first_last(s["mean_abs_grad"])
    lines.append(f"| {layer.replace('backbone/', '')} | {b0:.3f} → {b1:.3f} ({b1 - b0:+.3f}) | "
                 f"{m0:.2f} → {m1:.2f} | {s['std'][-1][1]:.2f} | {s['frac_below_10'][-1][1]:.3f} | "
                 f"{g0:.1e} → {g1:.1e} |")
  return lines


def _study_table(groups):
  rows = groups["study"]
  seeds = " / ".join(str(r["seed"]) for r in next(iter(rows.values()), []))
  lines = [f"Scores per seed ({seeds}), paired: compare rows within a seed. Alpha columns: the "
           "first seed.", "",
           "| variant (P-pooling everywhere) | mIoU | boundary F | small-structure mIoU | "
           "final alpha mean per stage | frac < 10 per stage | bias drift per stage |",
           "|---|---|---|---|---|---|---|"]
  for name, rs in rows.items():
    if not rs:
      continue
    log = alpha_log(rs[0]["workdir"])
    layers = sorted(log)
    mean = " / ".join(f"{log[l]['mean'][-1][1]:.1f}" for l in layers)
    low = " / ".join(f"{log[l]['frac_below_10'][-1][1]:.2f}" for l in layers)
    drift = " / ".join(f"{log[l]['bias'][-1][1] - log[l]['bias'][0][1]:+.2f}" for l in layers)
    lines.append(f"| {name} | " + " | ".join(" / ".join(f"{100 * r[k]:.1f}" for r in rs)
                                             for k in KEYS)
                 + f" | {mean} | {low} | {drift} |")
  return lines


def _plots(groups, out_png):
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  rows = {**groups["main"], **groups["control"]}
  names = list(rows)
  fig, axes = plt.subplots(1, 3, figsize=(13, 3.2))
  for ax, k in zip(axes, KEYS):
    vals = [100 * np.asarray([r[k] for r in rows[n]]) for n in names]
    ax.bar(range(len(names)), [v.mean() for v in vals],
           yerr=[v.std(ddof=1) if len(v) > 1 else 0 for v in vals], capsize=3,
           color=["C3" if n.startswith("P") else "C0" for n in names])
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right", fontsize=8)
    ax.set_title(k, fontsize=9)
    ax.set_ylim(max(0, min(v.mean() for v in vals) - 10), None)
  fig.savefig(out_png, dpi=90, bbox_inches="tight")
  plt.close(fig)
  names = {"bias 20 (paper)": "bias 20, x100, C = 35 (paper)", "bias 10": "bias 10",
           "bias 5": "bias 5"}
  runs = {label: groups["study"][n][0] for label, n in names.items() if groups["study"].get(n)}
  fig, axes = plt.subplots(1, 3, figsize=(13, 3.2))
  for i, (label, row) in enumerate(runs.items()):
    for j, (layer, s) in enumerate(sorted(alpha_log(row["workdir"]).items())):
      kw = dict(color=f"C{i}", alpha=0.4 + 0.15 * j, label=label if j == 3 else None)
      steps = [t for t, _ in s["mean"]]
      axes[0].plot(steps, [v - s["bias"][0][1] for _, v in s["bias"]], **kw)
      axes[1].plot(steps, [v for _, v in s["mean"]], **kw)
      axes[2].plot(steps, [v for _, v in s["mean_abs_grad"]], **kw)
  for ax, title in zip(axes, ("side-branch bias drift", "alpha mean", "mean |dL/dalpha|")):
    ax.set_title(title + " (pool1 light → pool4 dark)", fontsize=9)
    ax.set_xlabel("step")
  axes[2].set_yscale("log")
  axes[0].legend(fontsize=7)
  fig.savefig(out_png.replace(".png", "_alpha.png"), dpi=90, bbox_inches="tight")
  plt.close(fig)


def write(groups, args, out_md):
  import finetune_synthetic as cfgmod
  out_png = out_md.replace(".md", ".png")
  _plots(groups, out_png)
  pre_path = os.path.join(args.runs, "pretrain_max", "result.json")
  pre = json.load(open(pre_path)) if os.path.exists(pre_path) else {}
  p0 = groups["main"]["P-pooling"][0]
  secs = [r.get("seconds", 0) for g in groups.values() for rs in g.values() for r in rs]
  lines = [
      "# Fine-tuning protocol on synthetic detail data (issue #13)", "",
      "**Synthetic data, small network, CPU: not a reproduction of the paper's numbers.**", "",
      f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores (the project's 2-core AMD EPYC "
      "VM), no GPU. "
      f"Pretraining: the 4-stage VGG-style net (`experiments/configs/finetune_synthetic.py`, "
      f"channels {cfgmod.BLOCKS}, last pooling 3x3 stride 1, output stride 8) with max pooling, "
      f"Adam 2e-3 poly, {pre.get('steps', '?')} steps, batch 16, 96 px crops, Caffe "
      "preprocessing; its eval scores: "
      + (", ".join(f"{k} {100 * pre[k]:.1f}" for k in KEYS if k in pre) or "n/a") + ". "
      f"Fine-tuning: conv weights loaded, classifier and pooling parameters new, "
      f"**{p0['steps']} steps** of the paper's recipe (Caffe SGD on the summed loss mapped "
      f"exactly, lr {cfgmod.get_config().optim.learning_rate:g} — the paper's 2e-7 made average "
      "pooling diverge by step 10 on this net —, momentum 0.9, weight decay 5e-4 mapped, x0.1 "
      "at 60 % of the steps, "
      "side branches x3, biases lr x2 without decay, side-branch bias 20, x100 input, C = 35), "
      "batch 16, 96 px crops (pool4 sees 12x12), 2,000 training / 100 held-out scenes. "
      f"Seeds change the new layers' initialisation and the data order. Mean ± sample std over "
      f"n seeds, in %. Total CPU time {sum(secs) / 3600:.1f} h "
      f"({np.mean(secs) / 60:.1f} min per fine-tuning run).", "",
      "Regenerate: `python experiments/run_finetune_table.py --seeds "
      f"{' '.join(map(str, args.seeds))} --ablation_seeds {' '.join(map(str, args.ablation_seeds))}"
      f" --study_seeds {' '.join(map(str, args.study_seeds))}"
      + (f" --ablation_stages {' '.join(map(str, args.ablation_stages))}"
         if list(getattr(args, "ablation_stages", [1, 2, 3, 4])) != [1, 2, 3, 4] else "")
      + (f" --steps {args.steps}" if args.steps else "") + "`.", "",
      "## Every method, fine-tuned", ""] + _score_table(groups["main"]) + [
      "", "Paired by seed (the same seed gives every method the same classifier "
      "initialisation and data order), in points:", ""] + _paired_table(groups) + [
      "", "## Control: the last pooling (3x3, stride 1) removed", "",
      "Strided-C has no pooling in any stage, so also none after the last one; these rows "
      "remove only that layer.", ""] + _score_table(groups["control"]) + [
      "", "## The seed: initialisation or data order?", "",
      "Max pooling with the new layers' initialisation and the training order/augmentation "
      "seeded separately (`dataset.order_seed`). The pretraining ran with seed 0, so data "
      "order 0 replays its first batches exactly.", ""] + _score_table(
      groups.get("order", {}), "run") + [
      "", "## P-pooling in one stage at a time (others max; seeds "
      f"{' '.join(map(str, args.ablation_seeds))})", ""] + _score_table(
      groups["ablation"], "P-pooling in") + [
      "", "## Alpha during fine-tuning (P-pooling everywhere, seed "
      f"{p0['seed']}; logged every 20 steps)", ""] + _alpha_table(p0) + [
      "", "## What makes alpha move (P-pooling everywhere; seeds "
      f"{' '.join(map(str, args.study_seeds))})", ""] + _study_table(groups) + [
      "", f"![scores]({os.path.basename(out_png)})", "",
      f"![alpha]({os.path.basename(out_png).replace('.png', '_alpha.png')})", ""]
  analysis = ""
  if os.path.exists(out_md):
    old = open(out_md).read()
    if "## Analysis" in old:
      analysis = old[old.index("## Analysis"):]
  with open(out_md, "w") as f:
    f.write("\n".join(lines) + ("\n" + analysis if analysis else ""))
