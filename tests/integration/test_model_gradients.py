"""A whole Flax model with the P-pooling unit against finite differences, in float64.

``p_pool`` is a ``jax.custom_vjp``: reverse mode only (forward mode is undefined for it).
The model uses smooth activations: a ReLU net fails the same check by up to a few percent,
because central differences straddle ReLU kinks (see notebooks/using_p_pool.ipynb).
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
import pytest
from jax.test_util import check_grads

from ppool_jax.nn import PPool


class SmoothNet(nn.Module):
  """conv -> softplus -> P-pooling unit -> conv -> gelu -> 1x1 conv (3 classes)."""

  @nn.compact
  def __call__(self, x):
    x = jax.nn.softplus(nn.Conv(8, (3, 3))(x))  # non-negative, as Eq. 1 (shift=False) needs
    x = PPool((3, 3), (2, 2), "SAME")(x)
    x = jax.nn.gelu(nn.Conv(8, (3, 3))(x))
    return nn.Conv(3, (1, 1))(x)


def _float64_problem():
  """(loss, params, x) with every parameter and the input in float64 (call under x64)."""
  net = SmoothNet()
  x = jax.random.uniform(jax.random.PRNGKey(0), (2, 10, 10, 3), jnp.float64)
  labels = jax.random.randint(jax.random.PRNGKey(2), (2, 5, 5), 0, 3)
  # Flax creates float32 parameters whatever x64 says: cast them, or the check runs in
  # float32 and finite differences drown in rounding.
  params = jax.tree_util.tree_map(lambda p: p.astype(jnp.float64),
                                  net.init(jax.random.PRNGKey(1), x)["params"])
  loss = jax.jit(lambda p, x: optax.softmax_cross_entropy_with_integer_labels(
      net.apply({"params": p}, x), labels).mean())
  return loss, params, x


def test_whole_model_gradients_match_finite_differences_in_float64():
  with jax.enable_x64(True):
    loss, params, x = _float64_problem()
    dtypes = {leaf.dtype for leaf in jax.tree_util.tree_leaves((params, x))}
    assert dtypes == {jnp.dtype(jnp.float64)}, dtypes
    assert loss(params, x).dtype == jnp.float64
    assert "side_branch" in params["PPool_0"]  # the unit's own parameters are checked too
    check_grads(loss, (params, x), order=1, modes=["rev"])


def test_forward_mode_is_undefined_for_the_custom_vjp():
  """Why check_grads needs modes=["rev"]: its default also checks jvp, which raises."""
  with jax.enable_x64(True):
    loss, params, x = _float64_problem()
    with pytest.raises(TypeError, match="forward-mode.*custom_vjp"):
      jax.jvp(loss, (params, x), (params, x))
