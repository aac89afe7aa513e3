"""`make demo` (operator stage): P-pooling of a generated image at several alpha.

Prints how far P-pooling sits between average and max pooling for each alpha and
writes a picture to ``--workdir``. The training issue replaces this entry point
with the real demo (train, evaluate, plot alpha maps).
"""

import argparse
import os

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from ppool_jax import p_pool


def generated_image(size=64, seed=0):
  """A dark field with thin bright lines and a grey blob: detail that max/avg treat differently."""
  rng = np.random.default_rng(seed)
  img = 0.05 * rng.random((size, size))
  img[size // 4, :] = 1.0
  img[:, size // 3] = 0.6
  yy, xx = np.mgrid[:size, :size]
  img[(yy - 0.7 * size) ** 2 + (xx - 0.7 * size) ** 2 < (size / 8) ** 2] = 0.4
  return img.astype(np.float32)[None, :, :, None]


def main():
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument("--workdir", default="runs/demo")
  args = parser.parse_args()
  os.makedirs(args.workdir, exist_ok=True)
  x = jnp.asarray(generated_image())
  mx = nn.max_pool(x, (2, 2), (2, 2))
  av = nn.avg_pool(x, (2, 2), (2, 2))
  results = {}
  for alpha in [0.0, 1.0, 2.0, 5.0, 20.0, 1e4]:
    y = p_pool(x, alpha, (2, 2), (2, 2))
    # 0 = average pooling, 1 = max pooling
    pos = float(jnp.sum(y - av) / jnp.sum(mx - av))
    results[alpha] = y
    print(f"alpha={alpha:>8g}: mean={float(y.mean()):.4f}  position between avg (0) and max (1): {pos:.3f}")
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  fig, axes = plt.subplots(1, len(results) + 3, figsize=(2.2 * (len(results) + 3), 2.4))
  panels = [("input", x), ("avg", av)] + [(f"P a={a:g}", y) for a, y in results.items()] + [("max", mx)]
  for ax, (title, img) in zip(axes, panels):
    ax.imshow(np.asarray(img[0, :, :, 0]), cmap="gray", vmin=0, vmax=1)
    ax.set_title(title, fontsize=8)
    ax.axis("off")
  out = os.path.join(args.workdir, "p_pool_demo.png")
  fig.savefig(out, dpi=100, bbox_inches="tight")
  print(f"wrote {out}")


if __name__ == "__main__":
  main()
