"""Issue #19: can this experiment see P-pooling's effect? The fine-tuning grid on synthetic_detail.

1. Pretrain the small VGG-style net (max pooling) on scene *classification*
   (:mod:`experiments.pretrain`, config
   :func:`experiments.configs.finetune_detail.pretrain_config`).
2. Fine-tune its convolutions for segmentation with every method of
   ``experiments.configs.finetune_detail.METHODS`` (max, avg, P with bias 20 and 5, fixed alpha
   1/2/5/10, Strided-C, All-C) under the paper's recipe, each from its own head warm-up
   (:func:`experiments.runner.head_warmup`): ``--seeds`` for every method, ``--extra_seeds`` for
   max, P (bias 20) and the best fixed alpha over ``--seeds`` (by mean mIoU), and for
   ``--option`` runs (P with a change meant to let alpha learn, `OPTIONS`).
3. Write experiments/results/finetune_table.md (:mod:`experiments.finetune_report`).

``--calibrate`` runs the learning-rate calibration instead (seed 100, outside the grid).
Runs resume; a finished run's result.json is reused (:func:`experiments.runner.run`).
From the repository root:

  python -m experiments.run_finetune_table --seeds 1 2 3 --extra_seeds 4 5
  # the pilot in experiments/results/finetune_detail_pilot.md: see its "Regenerate" line
"""

from __future__ import annotations

import argparse
import os

from experiments import finetune_report, report, runner
from experiments.configs import finetune_detail
from experiments.pretrain import pretrain

FIXED = [m for m in finetune_detail.METHODS if m.startswith("fixed alpha")]
# P-pooling variants meant to let alpha learn (issue #19: "one principled change"), run under
# the same protocol and seeds as "P (bias 20)".
OPTIONS = {"P (log alpha)": {"p": {"alpha_param": "log"}}}
CALIBRATION = ("max", "P (bias 20)")


def best_fixed(groups) -> str:
  """The fixed alpha with the best mean mIoU over its runs (the seeds every method has)."""
  return max(FIXED, key=lambda m: report.summary([r.get("miou", float("nan"))
                                                  for r in groups[m]])[0])


def option_config(label: str, seed: int, pretrained: str, steps=None):
  c = finetune_detail.method_config("P (bias 20)", seed, pretrained, steps)
  for name, opts in OPTIONS[label].items():
    c.model.pool_options[name] = dict(c.model.pool_options.get(name, {}), **opts)
  return c


def main():
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
  parser.add_argument("--extra_seeds", type=int, nargs="*", default=[4, 5])
  parser.add_argument("--methods", nargs="*", default=list(finetune_detail.METHODS))
  parser.add_argument("--options", nargs="*", default=[], help=f"any of {list(OPTIONS)}")
  parser.add_argument("--steps", type=int, default=None, help="override the config's STEPS")
  parser.add_argument("--calibrate", type=float, nargs="*", default=None,
                      help="learning rates of the calibration runs (seed 100)")
  parser.add_argument("--lr", type=float, default=None,
                      help="fine-tuning lr (summed loss), default the config's LR")
  parser.add_argument("--warmup_steps", type=int, default=finetune_detail.WARMUP_STEPS,
                      help="per-method head warm-up steps (seed 0; 0: none)")
  parser.add_argument("--runs", default="runs/detail")
  parser.add_argument("--report_only", action="store_true")
  parser.add_argument("--out", default=os.path.join(report.RESULTS, "finetune_table.md"))
  args = parser.parse_args()
  pre = pretrain(finetune_detail.pretrain_config(), os.path.join(args.runs, "pretrain"))
  if args.calibrate is not None:
    for lr in args.calibrate:
      for m in CALIBRATION:
        cfg = finetune_detail.method_config(m, 100, pre, args.steps)
        cfg.optim.learning_rate = lr
        row = runner.run(f"{m} lr {lr:g}", cfg, os.path.join(args.runs, "calibration"))
        print(m, lr, {k: row.get(k) for k in ("miou", "detail_miou", "diverged")}, flush=True)
    return
  warm = {}

  def build(m, s, steps=None):
    return (finetune_detail.method_config if m in finetune_detail.METHODS else option_config)(
        m, s, pre, steps)

  def config(m, s):
    """Method ``m``, seed ``s``, from the pretrained convs + ``m``'s warmed-up classifier."""
    if m not in warm:
      warm[m] = runner.head_warmup(build(m, 0), args.runs, runner.slug(m),
                                   args.warmup_steps)[0] if args.warmup_steps else pre
    cfg = build(m, s, args.steps)
    cfg.model.pretrained = warm[m]
    if args.lr:
      cfg.optim.learning_rate = args.lr
    return cfg

  go = (lambda name, cfg: runner.run(name, cfg, args.runs, keep_maps=True)) if not \
      args.report_only else (lambda name, cfg: runner.cached(name, cfg, args.runs))
  groups = {m: [] for m in args.methods}
  for s in args.seeds:  # seed-major: an interrupted grid leaves every method equally seeded
    for m in args.methods:
      groups[m].append(go(m, config(m, s)))
  groups = {m: [r for r in rows if r] for m, rows in groups.items()}
  extra = [m for m in ["max", "P (bias 20)"] if m in groups] + (
      [best_fixed(groups)] if all(m in groups for m in FIXED) else [])
  for m in extra:
    groups[m] += [r for r in (go(m, config(m, s))
                              for s in args.extra_seeds) if r]
  for o in args.options:
    groups[o] = [r for r in (go(o, config(o, s))
                             for s in args.seeds + args.extra_seeds) if r]
  finetune_report.write(groups, args, args.out, pretrained=os.path.dirname(pre))
  print(f"wrote {args.out}")


if __name__ == "__main__":
  main()
