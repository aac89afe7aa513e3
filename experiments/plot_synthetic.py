"""Draws a few samples of the embedded synthetic dataset (images, labels with ignore in white).

  python experiments/plot_synthetic.py --out experiments/results/synthetic_samples.png
"""

import argparse

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from ppool_jax.data.synthetic import CLASSES, IGNORE, generate  # noqa: E402


def main():
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument("--out", default="experiments/results/synthetic_samples.png")
  parser.add_argument("--num", type=int, default=6)
  parser.add_argument("--size", type=int, default=64)
  parser.add_argument("--seed", type=int, default=0)
  args = parser.parse_args()
  images, labels = generate(args.num, args.size, args.seed)
  fig, axes = plt.subplots(2, args.num, figsize=(2 * args.num, 4.4))
  for i in range(args.num):
    axes[0, i].imshow(images[i])
    lab = labels[i].astype(float)
    lab[labels[i] == IGNORE] = np.nan
    im = axes[1, i].imshow(lab, cmap="tab10", vmin=0, vmax=9, interpolation="nearest")
    for ax in axes[:, i]:
      ax.axis("off")
  cbar = fig.colorbar(im, ax=axes[1, :], ticks=range(len(CLASSES)), fraction=0.02)
  cbar.ax.set_yticklabels(CLASSES, fontsize=7)
  cbar.ax.set_ylim(-0.5, len(CLASSES) - 0.5)
  fig.suptitle(f"synthetic dataset, seed {args.seed}, {args.size} px (white = ignore 255)",
               fontsize=9)
  fig.savefig(args.out, dpi=90, bbox_inches="tight")
  print(f"wrote {args.out}")


if __name__ == "__main__":
  main()
