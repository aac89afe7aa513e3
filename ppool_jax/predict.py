"""Predict on a folder of images with a trained run.

  python -m ppool_jax.predict --workdir RUN --images 'photos/*.jpg' --out OUT [--alpha_maps]

For each input ``photos/NAME.EXT`` it writes ``OUT/NAME.png`` (the label map: a palette PNG
whose pixel values are the train ids, coloured with the dataset's palette),
``OUT/NAME_overlay.png`` (the image with the colours blended in; ``--no_overlay`` skips it)
and with ``--alpha_maps`` ``OUT/NAME_alpha.npz`` (every P-pooling layer's channel-mean
alpha map, float32) plus ``OUT/NAME_alpha_<layer>.png`` (each map as a grey image, black =
the map's minimum, white = its maximum; the range is in the npz).

``--images`` takes glob patterns, files and directories (every file in it). An unreadable
or non-image file is reported by name and skipped; the command then exits with status 1
after the others are written. Existing outputs are never overwritten without
``--overwrite`` (the command stops before predicting and names them). ``--mode slide``
predicts on overlapping windows of the training crop; ``--scales``/``--flip`` add
test-time augmentation (default: the run's ``eval`` config). See :mod:`ppool_jax.inference`.
"""

from __future__ import annotations

import argparse
import glob
import os
import sys

import numpy as np

COMMAND = "ppool_jax.predict"


class PredictError(ValueError):
  """A problem with the command's arguments or files (one line, exit status 2)."""


def parse_args(argv=None) -> argparse.Namespace:
  p = argparse.ArgumentParser(prog=f"python -m {COMMAND}", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--workdir", help="the training run's directory (config.json, checkpoints/)")
  p.add_argument("--checkpoint", help="a checkpoint directory RUN/checkpoints/STEP instead of "
                 "--workdir (--step)")
  p.add_argument("--config", help="the run's config (name or file[:ARG]), only for runs "
                 "without config.json")
  p.add_argument("--step", type=int, help="checkpoint step (default: the latest)")
  p.add_argument("--images", nargs="+", required=True, help="glob patterns, files, directories")
  p.add_argument("--out", required=True, help="output directory")
  p.add_argument("--mode", choices=("whole", "slide"), default="whole")
  p.add_argument("--window", type=int, nargs=2, metavar=("H", "W"),
                 help="slide mode window (default: the training crop)")
  p.add_argument("--overlap", type=float, default=1 / 3, help="slide mode window overlap")
  p.add_argument("--scales", type=float, nargs="+", help="test-time scales (default: the "
                 "run's eval.scales)")
  p.add_argument("--flip", action=argparse.BooleanOptionalAction, default=None,
                 help="test-time horizontal flip (default: the run's eval.flip)")
  p.add_argument("--batch_size", type=int, default=8)
  p.add_argument("--alpha_maps", action="store_true", help="write P-pooling alpha maps")
  p.add_argument("--no_overlay", action="store_true")
  p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
  p.add_argument("--verbose", action="store_true", help="tracebacks for errors")
  return p.parse_args(argv)


def find_inputs(patterns) -> list[str]:
  """Files matched by ``patterns`` (globs, files, directories: their files), sorted, unique."""
  files, missing = [], []
  for pat in patterns:
    if os.path.isdir(pat):
      found = [os.path.join(pat, n) for n in sorted(os.listdir(pat))]
      found = [f for f in found if os.path.isfile(f)]
    else:
      found = sorted(f for f in glob.glob(pat) if os.path.isfile(f))
    if not found:
      missing.append(pat)
    files += found
  if missing:
    raise PredictError(f"no files match {', '.join(map(repr, missing))}.")
  return list(dict.fromkeys(files))


def outputs(path: str, out: str, overlay: bool) -> list[str]:
  """The files ``path`` writes (alpha maps excluded: their layer names are known later)."""
  stem = os.path.splitext(os.path.basename(path))[0]
  return [os.path.join(out, stem + ".png")] + (
      [os.path.join(out, stem + "_overlay.png")] if overlay else [])


def check_outputs(files, out: str, overlay: bool, alpha: bool, overwrite: bool) -> None:
  stems: dict[str, str] = {}
  for f in files:
    stem = os.path.splitext(os.path.basename(f))[0]
    if stem in stems:
      raise PredictError(f"{stems[stem]} and {f} would write the same output {stem}.png; "
                         "predict them into different --out directories.")
    stems[stem] = f
  if overwrite or not os.path.isdir(out):
    return
  existing = [o for f in files for o in outputs(f, out, overlay) if os.path.exists(o)]
  if alpha:
    existing += [os.path.join(out, n) for n in os.listdir(out)
                 if any(n.startswith(s + "_alpha") for s in stems)]
  if existing:
    more = f" and {len(existing) - 3} more" if len(existing) > 3 else ""
    raise PredictError(f"outputs exist: {', '.join(existing[:3])}{more}; pass --overwrite to "
                       "replace them.")


def read_image(path: str) -> np.ndarray:
  """``uint8 (H, W, 3)`` RGB; ``ValueError`` naming the file when it is not a readable image."""
  from PIL import Image, UnidentifiedImageError
  try:
    with Image.open(path) as im:
      return np.asarray(im.convert("RGB"))
  except (UnidentifiedImageError, OSError, ValueError) as e:
    raise ValueError(f"{path}: not a readable image ({type(e).__name__}: {e})") from None


def grey(m: np.ndarray) -> np.ndarray:
  lo, hi = float(m.min()), float(m.max())
  return np.round(255 * (m - lo) / (hi - lo) if hi > lo else np.zeros_like(m)).astype(np.uint8)


def write(pred, image, path: str, out: str, predictor, overlay: bool) -> None:
  from PIL import Image
  stem = os.path.splitext(os.path.basename(path))[0]
  label = Image.fromarray(pred.label.astype(np.uint8), mode="P")
  label.putpalette(predictor.palette.reshape(-1).tolist())
  label.save(os.path.join(out, stem + ".png"))
  if overlay:
    Image.fromarray(predictor.overlay(image, pred.label)).save(
        os.path.join(out, stem + "_overlay.png"))
  if pred.alpha is not None:
    np.savez(os.path.join(out, stem + "_alpha.npz"), **pred.alpha)
    for layer, m in pred.alpha.items():
      Image.fromarray(grey(m)).save(os.path.join(out, f"{stem}_alpha_{layer}.png"))


def load_predictor(args):
  from ppool_jax.inference import Predictor
  workdir, step = args.workdir, args.step
  if args.checkpoint:
    if workdir:
      raise PredictError("give --workdir or --checkpoint, not both.")
    ckpt = os.path.normpath(args.checkpoint)
    if not os.path.basename(ckpt).isdigit() or os.path.basename(os.path.dirname(ckpt)) != \
        "checkpoints":
      raise PredictError(f"--checkpoint must be a run's checkpoints/STEP directory, got {ckpt}.")
    workdir, step = os.path.dirname(os.path.dirname(ckpt)), int(os.path.basename(ckpt))
  if not workdir:
    raise PredictError("give --workdir RUN (or --checkpoint RUN/checkpoints/STEP).")
  cfg = None
  if args.config:
    from ppool_jax.configs import load
    cfg = load(args.config)
  return Predictor.from_workdir(workdir, step, cfg, mode=args.mode, window=args.window,
                                overlap=args.overlap, scales=args.scales, flip=args.flip,
                                batch_size=args.batch_size)


def predict(args) -> int:
  """Runs the command; returns the exit status (0, or 1 when some input failed)."""
  from tqdm import tqdm
  files = find_inputs(args.images)
  overlay = not args.no_overlay
  check_outputs(files, args.out, overlay, args.alpha_maps, args.overwrite)
  predictor = load_predictor(args)
  os.makedirs(args.out, exist_ok=True)
  failed = []
  chunk = 4 * predictor.batch_size  # files read per round: equal sizes are batched together
  with tqdm(total=len(files), desc="predict", unit="image", dynamic_ncols=True) as bar:
    for k in range(0, len(files), chunk):
      paths, images = [], []
      for path in files[k:k + chunk]:
        try:
          images.append(read_image(path))
          paths.append(path)
        except ValueError as e:
          failed.append(str(e))
          tqdm.write(f"{COMMAND}: skipped {e}", file=sys.stderr)
      for path, image, pred in zip(paths, images,
                                   predictor.predict_many(images, args.alpha_maps)):
        write(pred, image, path, args.out, predictor, overlay)
      bar.update(len(files[k:k + chunk]))
  print(f"{COMMAND}: wrote {len(files) - len(failed)} of {len(files)} images to {args.out}")
  if failed:
    print(f"{COMMAND}: {len(failed)} input(s) failed:\n  " + "\n  ".join(failed),
          file=sys.stderr)
    return 1
  return 0


def main(argv=None) -> int:
  from ppool_jax import cli
  args = parse_args(argv)
  return cli.call(lambda: predict(args), "predict", args.verbose)


if __name__ == "__main__":
  sys.exit(main())
