"""Export a trained run's inference function with ``jax.export`` (and optionally as a TF SavedModel).

  python -m ppool_jax.export --workdir RUN --out DIR [--shape 512x512 ...] [--saved_model]

The exported function takes ``uint8 (B, H, W, 3)`` RGB images and returns ``float32 (B, H, W,
K)`` logits at full resolution: the run's preprocessing (``dataset.preprocessing``, the data
pipeline's :func:`~ppool_jax.data.pipeline.normalize`) happens inside, so a caller needs
nothing from this package. It is serialised once for ``cpu``, ``cuda`` and ``tpu`` (StableHLO
with the weights as constants; lowering for accelerators works on a CPU-only machine).

Shapes. The batch ``b`` is always symbolic: the model runs on each image alone (``vmap``), so
an image's logits never depend on the other images of the batch (they would for a side branch
with ``input_norm="rms"``, which normalises by the batch's RMS). The image size ``h, w`` is
symbolic when the model can be traced so: poolings ``max``, ``avg``, ``mixed`` and
``strided_c`` (any size works, odd included). P-pooling and the other poolings built on
:mod:`ppool_jax.ops.windows` compute their window geometry (padding, validity masks) from
concrete sizes, and ``all_c``'s SAME padding needs them too, so those models are exported
at fixed sizes: those of ``--shape`` (one artifact per size), else the training crop; the
sidecar says which, and why.

``DIR`` gets ``model.jax`` (symbolic size) or ``model_<H>x<W>.jax`` per size, the sidecar
``export.json`` (class names, preprocessing, platforms, input and output specs, the run's step)
and, with ``--saved_model``, ``saved_model[_<H>x<W>]/`` through ``jax2tf`` (TensorFlow is
imported only then). Use an artifact with::

  exported = jax.export.deserialize(open("DIR/model.jax", "rb").read())
  logits = exported.call(images_uint8)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp

from ppool_jax import cli

PLATFORMS = ("cpu", "cuda", "tpu")
SIDECAR = "export.json"
SIDECAR_FORMAT = 1
SYMBOLIC_SHAPE = "b, h, w, 3"


def inference_fn(model, variables: dict, aug) -> Callable[[jax.Array], jax.Array]:
  """``uint8 (B, H, W, 3)`` RGB -> ``float32 (B, H, W, K)`` logits of ``model`` in
  evaluation mode, normalised as ``aug`` (an :class:`~ppool_jax.data.AugmentConfig`) says;
  each image is predicted alone (``vmap`` over the batch)."""
  from ppool_jax.data.pipeline import normalize

  def one(image):
    if image.dtype != jnp.uint8:
      raise TypeError(f"images must be uint8 RGB, got {image.dtype}.")
    x = normalize(image, aug)[None]          # jnp operations: normalize is NumPy-agnostic
    return model.apply(variables, x, train=False)[0].astype(jnp.float32)

  return jax.vmap(one)


def input_spec(size: tuple[int, int] | None) -> jax.ShapeDtypeStruct:
  """The exported input: symbolic ``(b, h, w, 3)`` for ``size=None``, else ``(b, H, W, 3)``."""
  spec = SYMBOLIC_SHAPE if size is None else f"b, {size[0]}, {size[1]}, 3"
  return jax.ShapeDtypeStruct(jax.export.symbolic_shape(spec), jnp.uint8)


def export_fn(fn: Callable, size: tuple[int, int] | None,
              platforms: Sequence[str] = PLATFORMS) -> jax.export.Exported:
  """``fn`` exported for ``platforms`` at ``size`` (None: symbolic). Raises
  ``jax.errors.InconclusiveDimensionOperation`` when ``fn`` needs a concrete size."""
  return jax.export.export(jax.jit(fn), platforms=tuple(platforms))(input_spec(size))


def artifact_name(size: tuple[int, int] | None, stem: str = "model", suffix: str = ".jax") -> str:
  return f"{stem}{suffix}" if size is None else f"{stem}_{size[0]}x{size[1]}{suffix}"


def parse_size(text: str) -> tuple[int, int]:
  """``"512x384"`` (height x width) or ``"512"`` (square) -> ``(H, W)``, both >= 1."""
  try:
    parts = tuple(int(p) for p in text.lower().split("x"))
  except ValueError:
    parts = ()
  if len(parts) == 1:
    parts = parts * 2
  if len(parts) != 2 or min(parts) < 1:
    raise ValueError(f"--shape must be HxW or S with positive integers, got {text!r}.")
  return parts


def preprocessing_record(aug) -> dict:
  """How the function normalises its uint8 input (the sidecar's ``preprocessing``)."""
  from ppool_jax.data.pipeline import CAFFE_MEAN_BGR
  if aug.preprocessing == "caffe":
    return {"name": "caffe", "formula": "float32(x)[..., ::-1] - mean_bgr",
            "mean_bgr": list(CAFFE_MEAN_BGR), "applied_inside": True}
  return {"name": aug.preprocessing, "formula": "(float32(x) - mean) / std",
          "mean": list(aug.mean), "std": list(aug.std), "applied_inside": True}


def _dims(shape) -> list:
  return [d if isinstance(d, int) else str(d) for d in shape]


def export_sizes(fn: Callable, sizes: Sequence[tuple[int, int]], crop: int,
                 platforms: Sequence[str] = PLATFORMS) -> tuple[dict, str | None]:
  """``({size or None: Exported}, why fixed)``: one symbolic-size export when no ``sizes``
  are given and ``fn`` can be traced so, else one per size of ``sizes`` (default: the training
  ``crop``). A symbolic trace that fails for any shape reason falls back to the fixed size, where
  a genuine error raises again."""
  if not sizes:
    try:
      return {None: export_fn(fn, None, platforms)}, None
    except (jax.errors.InconclusiveDimensionOperation, ValueError, TypeError) as e:
      first = (str(e).strip().splitlines() or [""])[0]
      first = first if len(first) <= 160 else first[:157] + "..."
      why = f"the model cannot be traced with a symbolic image size ({type(e).__name__}: {first})"
      sizes = [(crop, crop)]
  else:
    why = "fixed sizes requested with --shape"
  return {tuple(s): export_fn(fn, tuple(s), platforms) for s in dict.fromkeys(map(tuple, sizes))}, why


def save_saved_model(fn: Callable, size: tuple[int, int] | None, path: str,
                     platforms: Sequence[str] = PLATFORMS) -> None:
  """``fn`` as a TF SavedModel (``jax2tf``, native serialisation for ``platforms``) with a
  ``serving_default`` signature ``images: uint8 (None, H|None, W|None, 3)``; imports
  TensorFlow."""
  import tensorflow as tf
  from jax.experimental import jax2tf
  poly = "(b, h, w, 3)" if size is None else f"(b, {size[0]}, {size[1]}, 3)"
  tf_fn = jax2tf.convert(fn, polymorphic_shapes=[poly], with_gradient=False,
                         native_serialization_platforms=tuple(platforms))
  h, w = (None, None) if size is None else size
  module = tf.Module()
  module.serve = tf.function(tf_fn, autograph=False, input_signature=[
      tf.TensorSpec((None, h, w, 3), tf.uint8, name="images")])
  tf.saved_model.save(module, path, signatures={"serving_default": module.serve})


def export_run(workdir: str, out: str, sizes: Sequence[tuple[int, int]] = (),
               platforms: Sequence[str] = PLATFORMS, saved_model: bool = False,
               step: int | None = None) -> dict:
  """Exports a run's checkpoint (default: the latest) into the new folder ``out``; returns
  the sidecar written to ``out/export.json``. ``sizes``: fixed ``(H, W)`` sizes, one
  artifact each; empty: symbolic if the model allows, else the training crop."""
  from ppool_jax.train.inputs import augment_config
  from ppool_jax.train.runs import load_run, read_record
  out = os.path.abspath(os.path.expanduser(out))
  if os.path.exists(out):
    raise FileExistsError(f"output {out} already exists; choose a new folder or remove it.")
  unknown = sorted(set(platforms) - set(PLATFORMS))
  if unknown or not platforms:
    raise ValueError(f"platforms must be some of {', '.join(PLATFORMS)}, got {list(platforms)}.")
  run = load_run(workdir, step=step)
  aug = augment_config(run.config)
  fn = inference_fn(run.model, run.variables, aug)
  exported, why = export_sizes(fn, sizes, run.config.dataset.crop_size, platforms)
  class_names = read_record(os.path.abspath(os.path.expanduser(workdir)))["class_names"]
  os.makedirs(out)
  artifacts = {}
  for size, exp in exported.items():
    name = artifact_name(size)
    with open(os.path.join(out, name), "wb") as f:
      f.write(exp.serialize())
    artifacts[name] = {"input_shape": _dims(exp.in_avals[0].shape),
                       "output_shape": _dims(exp.out_avals[0].shape)}
    if saved_model:
      sm = artifact_name(size, "saved_model", "")
      save_saved_model(fn, size, os.path.join(out, sm), platforms)
      artifacts[name]["saved_model"] = sm
  import ppool_jax
  sidecar = {
      "format": SIDECAR_FORMAT, "ppool_jax_version": ppool_jax.__version__,
      "jax_version": jax.__version__, "workdir": os.path.abspath(workdir), "step": run.step,
      "model": run.config.model.name, "pooling": run.config.model.pooling,
      "num_classes": len(class_names), "class_names": list(class_names),
      "preprocessing": preprocessing_record(aug), "platforms": list(platforms),
      "input": {"dtype": "uint8", "layout": "NHWC", "channels": "RGB"},
      "output": {"dtype": "float32", "layout": "NHWC", "meaning": "logits per class"},
      "symbolic_image_size": why is None, "fixed_size_reason": why, "artifacts": artifacts,
  }
  with open(os.path.join(out, SIDECAR), "w") as f:
    json.dump(sidecar, f, indent=1)
  return sidecar


def parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(prog="ppool_jax.export", description=(
      "Serialise a trained run's inference function (uint8 RGB images -> float32 logits) with "
      "jax.export for cpu, cuda and tpu; optionally a TF SavedModel."))
  p.add_argument("--workdir", required=True, help="The run directory (config.json, checkpoints/).")
  p.add_argument("--out", required=True, help="Output folder (must not exist).")
  p.add_argument("--step", type=int, default=None, help="Checkpoint step (default: the latest).")
  p.add_argument("--shape", action="append", default=[], metavar="HxW",
                 help="Export at this fixed image size (repeatable; one artifact each). Default: "
                 "a symbolic size where the model allows, else the training crop.")
  p.add_argument("--platforms", default=",".join(PLATFORMS),
                 help="Comma-separated lowering platforms (default: %(default)s).")
  p.add_argument("--saved_model", action="store_true",
                 help="Also write a TF SavedModel (jax2tf; needs tensorflow).")
  p.add_argument("--verbose", action="store_true",
                 help="On failure, print the full traceback, not only the message.")
  return p


def main(argv: Sequence[str] | None = None) -> int:
  args = parser().parse_args(argv)

  def run() -> dict:
    sizes = [parse_size(s) for s in args.shape]
    platforms = tuple(p.strip() for p in args.platforms.split(",") if p.strip())
    return export_run(args.workdir, args.out, sizes, platforms, args.saved_model, args.step)

  sidecar = cli.call(run, "export", args.verbose)
  if sidecar == cli.EXIT_STATUS:
    return sidecar
  if sidecar["fixed_size_reason"]:
    print(f"fixed image sizes: {sidecar['fixed_size_reason']}")
  for name, a in sidecar["artifacts"].items():
    print(f"{name}: uint8 {a['input_shape']} -> float32 {a['output_shape']} "
          f"({', '.join(sidecar['platforms'])})")
  print(f"exported step {sidecar['step']} of {sidecar['workdir']} -> {os.path.abspath(args.out)}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
