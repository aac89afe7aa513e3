"""Why alpha does or does not move: per-layer P-pooling statistics for the training log.

Per layer with a learned alpha (``PPool``, ``PFixedPool``), each logged step:

* ``alpha/<layer>/mean``, ``/std``: over every position, channel and image of the batch;
* ``alpha/<layer>/frac_below_10``: the share of alphas below 10, i.e. pooling visibly
  softer than max pooling (at 20 a 2x2 window is within 3% of its maximum);
* ``alpha/<layer>/mean_abs_grad``: the mean of ``|dL/dalpha|`` (the loss's gradient w.r.t.
  the clipped alpha, through Flax's ``perturb``): what reaches the side branch;
* ``alpha/<layer>/bias``: the mean of the side branch's last bias (``PPool`` only; starts
  at ``bias_init``, 20), after the step's update: its drift is how far the branch moved
  every alpha at once.
"""

from __future__ import annotations

import flax
import jax
import jax.numpy as jnp

LOW_ALPHA = 10.0
_BIAS = ("side_branch", "conv_alpha", "bias")


def _psum(x, axis_name):
  return x if axis_name is None else jax.lax.psum(x, axis_name)


def alpha_perturbations(model, variables, images, mutable, rngs) -> dict | None:
  """Zero ``perturbations`` shaped like every sown alpha for this batch (``None`` when the
  model has no learned alpha). Only shapes are traced: no extra computation at run time."""
  _, state = jax.eval_shape(lambda v, x: model.apply(
      v, x, train=True, mutable=list(mutable) + ["intermediates"], rngs=rngs), variables, images)
  flat = flax.traverse_util.flatten_dict(dict(state.get("intermediates", {})))
  perts = {k: jnp.zeros(v[0].shape, v[0].dtype) for k, v in flat.items() if k[-1] == "alpha"}
  return flax.traverse_util.unflatten_dict(perts) if perts else None


def alpha_stats(intermediates, alpha_grads, params, axis_name=None) -> dict:
  """The scalars above, reduced over the batch axis ``axis_name`` (pmap) or the global
  batch (``None``)."""
  if alpha_grads is None:
    return {}
  alphas = flax.traverse_util.flatten_dict(dict(intermediates))
  grads = flax.traverse_util.flatten_dict(dict(alpha_grads))
  out = {}
  for key, g in grads.items():
    a = alphas[key][0].astype(jnp.float32)
    name = "alpha/" + "/".join(key[:-1])
    n = _psum(jnp.asarray(a.size, jnp.float32), axis_name)
    mean = _psum(jnp.sum(a), axis_name) / n
    out[f"{name}/mean"] = mean
    # Two passes: alpha ~ 20 +- 0.04 would cancel catastrophically in E[a^2] - E[a]^2.
    out[f"{name}/std"] = jnp.sqrt(_psum(jnp.sum(jnp.square(a - mean)), axis_name) / n)
    out[f"{name}/frac_below_10"] = _psum(jnp.sum(a < LOW_ALPHA), axis_name) / n
    out[f"{name}/mean_abs_grad"] = _psum(jnp.sum(jnp.abs(g)), axis_name) / n
  for key, b in flax.traverse_util.flatten_dict(dict(params)).items():
    if key[-3:] == _BIAS:
      out["alpha/" + "/".join(key[:-3]) + "/bias"] = jnp.mean(b)
  return out
