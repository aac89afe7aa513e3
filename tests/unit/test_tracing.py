"""Every public pooling entry point under jit / grad / vmap / pmap, with its inputs passed
as arguments *and* closed over as concrete constants (the way quick gradient checks and
notebook training steps are written). Each transformed result must equal the eager one."""

import chex
import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ppool_jax import p_pool
from ppool_jax.nn import POOLINGS, PPool, make_pool

N_DEV = 8
X = jax.random.uniform(jax.random.PRNGKey(0), (N_DEV, 6, 6, 3), minval=0.05)  # concrete


def _close(a, b):
  # float32: jit fuses the Eq. 2 sums in another order; wrong results differ by far more.
  chex.assert_trees_all_close(a, b, rtol=2e-5, atol=1e-5)


def _check_all_transforms(apply, params):
  """``apply(params, x) -> pooled``; runs every transform both ways against eager."""
  assert jax.local_device_count() == N_DEV
  eager = apply(params, X)
  loss_args = lambda p, x: jnp.sum(apply(p, x) ** 2)
  loss_closed = lambda p: jnp.sum(apply(p, X) ** 2)     # X is a closed-over constant
  g_eager = jax.grad(loss_args)(params, X)
  # jit
  _close(jax.jit(apply)(params, X), eager)
  _close(jax.jit(lambda p: apply(p, X))(params), eager)
  # grad, and grad under jit (the notebook training step)
  _close(jax.grad(loss_closed)(params), g_eager)
  _close(jax.jit(jax.grad(loss_closed))(params), g_eager)
  _close(jax.jit(jax.grad(loss_args))(params, X), g_eager)
  gx = jax.grad(loss_args, argnums=1)(params, X)
  _close(jax.jit(jax.grad(loss_args, argnums=1))(params, X), gx)
  # vmap over examples (x mapped) and over parameter copies (x closed over)
  per_example = jax.vmap(lambda x: apply(params, x[None])[0])(X)
  _close(per_example, eager)
  stacked = jax.tree_util.tree_map(lambda p: jnp.stack([p, p]), params)
  _close(jax.vmap(lambda p: apply(p, X))(stacked)[1], eager)
  _close(jax.jit(jax.vmap(jax.grad(loss_closed)))(stacked),
         jax.tree_util.tree_map(lambda g: jnp.stack([g, g]), g_eager))
  # pmap: x sharded over 8 devices, or closed over with replicated parameters
  sharded = jax.pmap(lambda x: apply(params, x[None])[0])(X)
  _close(sharded, eager)
  rep = flax.jax_utils.replicate(params)
  _close(jax.pmap(lambda p: apply(p, X))(rep)[3], eager)
  g_p = jax.pmap(lambda p: jax.grad(loss_closed)(p))(rep)
  _close(jax.tree_util.tree_map(lambda g: g[5], g_p), g_eager)


@pytest.mark.parametrize("shift", [False, "map", "window"])
def test_p_pool(shift):
  x_shift = -0.3 if shift else 0.0

  def apply(alpha, x):
    return p_pool(x + x_shift, alpha, (3, 3), (2, 2), "SAME", shift=shift)

  _check_all_transforms(apply, jnp.asarray([0.5, 3.0, 20.0]))


@pytest.mark.parametrize("name", sorted(POOLINGS))
def test_every_registry_pooling(name):
  module = make_pool(name, (2, 2), (2, 2), "SAME")
  params = module.init(jax.random.PRNGKey(1), X)
  if not jax.tree_util.tree_leaves(params):
    # Parameter-free poolings: differentiate w.r.t. a scale on the input instead.
    params = {"scale": jnp.float32(1.3)}
    _check_all_transforms(lambda p, x: module.apply({}, x * p["scale"]), params)
    return
  _check_all_transforms(lambda p, x: module.apply(p, x), params)


def test_ppool_unit_with_alpha_in_the_interesting_range():
  # Bias 2 (not 20): alpha moves the output, so a wrong gradient would show.
  module = PPool((3, 3), (2, 2), "SAME", bias_init=2.0)
  params = module.init(jax.random.PRNGKey(2), X)
  _check_all_transforms(lambda p, x: module.apply(p, x), params)
  alpha = module.apply(params, X, mutable=["intermediates"])[1]["intermediates"]["alpha"][0]
  assert 1.0 < float(np.min(alpha)) and float(np.max(alpha)) < 3.0
