"""Why alpha does or does not move: per-layer P-pooling statistics for the training log.

Per layer with a learned alpha (``PPool``, ``PFixedPool``), each logged step ``s`` (and
step 1, whose forward pass is the *initial* state's: the statistics of step ``s`` are those of
the parameters after ``s - 1`` updates):

* ``alpha/<layer>/mean``, ``/std``: over every position, channel and image of the batch;
* ``alpha/<layer>/frac_below_10``: the share of alphas below 10, i.e. pooling visibly
  softer than max pooling (at 20 a 2x2 window is within 3% of its maximum);
* ``alpha/<layer>/frac_clipped`` (``PPool``): the share of positions where the side branch's
  output lies outside ``[alpha_min, C]`` (in log space for ``alpha_param="log"``), so the
  clip passes it no gradient;
* ``alpha/<layer>/mean_abs_grad``: the mean of ``|dL/dalpha|`` w.r.t. the clipped alpha
  (through Flax's ``perturb``);
* ``alpha/<layer>/mean_abs_grad_raw`` (``PPool``): the mean of ``|dL/d raw|``, the gradient
  that reaches the side branch's output (zero at clipped positions, which count in the mean);
* ``alpha/<layer>/bias``: the mean of the side branch's last bias (``PPool`` only; starts
  at ``bias_init``, 20), before the step's update.

:func:`side_branch_drift` adds, on the host, each side-branch parameter's relative drift
``||theta_s - theta_0|| / ||theta_0||`` from the run's initial values: the depthwise window
kernel, the PReLU slopes, the 1x1 kernel and the bias all move alpha
(``alpha = b + w * PReLU(k * 100 x)``), so watching the bias alone misses most of it.
"""

from __future__ import annotations

import flax
import jax
import jax.numpy as jnp
import numpy as np

from ppool_jax.nn.side_branch import ALPHA_CONV, SIDE_BRANCH

LOW_ALPHA = 10.0
_BIAS = (SIDE_BRANCH, ALPHA_CONV, "bias")
_SOWN = ("alpha", "alpha_raw")


def _psum(x, axis_name):
  return x if axis_name is None else jax.lax.psum(x, axis_name)


def alpha_perturbations(model, variables, images, mutable, rngs) -> dict | None:
  """Zero ``perturbations`` shaped like every sown alpha (and raw side-branch output) for
  this batch (``None`` when the model has no learned alpha). Only shapes are traced: no
  extra computation at run time."""
  _, state = jax.eval_shape(lambda v, x: model.apply(
      v, x, train=True, mutable=list(mutable) + ["intermediates"], rngs=rngs), variables, images)
  flat = flax.traverse_util.flatten_dict(dict(state.get("intermediates", {})))
  perts = {k: jnp.zeros(v[0].shape, v[0].dtype) for k, v in flat.items() if k[-1] in _SOWN}
  return flax.traverse_util.unflatten_dict(perts) if perts else None


def alpha_stats(intermediates, alpha_grads, params, axis_name=None) -> dict:
  """The scalars above, reduced over the batch axis ``axis_name`` (pmap) or the global
  batch (``None``). ``params``: the parameters the forward pass used."""
  if alpha_grads is None:
    return {}
  sown = flax.traverse_util.flatten_dict(dict(intermediates))
  grads = flax.traverse_util.flatten_dict(dict(alpha_grads))
  out = {}
  for key, g in grads.items():
    if key[-1] != "alpha":
      continue
    a = sown[key][0].astype(jnp.float32)
    name = "alpha/" + "/".join(key[:-1])
    n = _psum(jnp.asarray(a.size, jnp.float32), axis_name)
    mean_of = lambda v: _psum(jnp.sum(v), axis_name) / n
    mean = mean_of(a)
    out[f"{name}/mean"] = mean
    # Two passes: alpha ~ 20 +- 0.04 would cancel catastrophically in E[a^2] - E[a]^2.
    out[f"{name}/std"] = jnp.sqrt(mean_of(jnp.square(a - mean)))
    out[f"{name}/frac_below_10"] = mean_of(a < LOW_ALPHA)
    out[f"{name}/mean_abs_grad"] = mean_of(jnp.abs(g))
    raw_key, clip_key = key[:-1] + ("alpha_raw",), key[:-1] + ("clipped",)
    if raw_key in grads and clip_key in sown:
      out[f"{name}/frac_clipped"] = mean_of(sown[clip_key][0])
      out[f"{name}/mean_abs_grad_raw"] = mean_of(jnp.abs(grads[raw_key]))
  for key, b in flax.traverse_util.flatten_dict(dict(params)).items():
    if key[-3:] == _BIAS:
      out["alpha/" + "/".join(key[:-3]) + "/bias"] = jnp.mean(b)
  return out


def side_branch_params(params) -> dict[str, np.ndarray]:
  """``{"<layer>/<module>/<param>": array}`` of every P-pooling side branch in ``params``
  (a nested dict; empty for models without one)."""
  out = {}
  for key, v in flax.traverse_util.flatten_dict(dict(params)).items():
    if SIDE_BRANCH in key:
      i = key.index(SIDE_BRANCH)
      out["/".join(key[:i]) + "/" + "/".join(key[i + 1:])] = v
  return out


def side_branch_drift(params: dict[str, np.ndarray], initial: dict[str, np.ndarray]) -> dict:
  """``alpha/<layer>/drift/<module>/<param>``: ``||p - p0|| / ||p0||`` for each side-branch
  parameter (``side_branch_params`` of the current and the initial parameters; the
  absolute change where ``p0`` is all zeros)."""
  out = {}
  for name, p in params.items():
    p0 = np.asarray(initial[name], np.float64)
    change = float(np.linalg.norm(np.asarray(p, np.float64) - p0))
    norm = float(np.linalg.norm(p0))
    out[f"alpha/{_layer(name)}/drift/{_param(name)}"] = change / norm if norm else change
  return out


def _layer(name):
  return name.rsplit("/", 2)[0]


def _param(name):
  return "/".join(name.rsplit("/", 2)[1:])
