"""Pooling units against NumPy computations of their published formulas."""

import chex
import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from ppool_jax.nn import POOLINGS, PPool, make_pool, side_branch_labels, with_side_branch_lr
from reference import pool as ref_pool
from support import approx_places

WINDOWS = [((2, 2), (2, 2), "VALID"), ((3, 3), (2, 2), "SAME"), ((3, 3), (2, 2), "VALID"),
           ((2, 2), (2, 2), "SAME")]


def _x(shape=(2, 7, 7, 3), seed=0, lo=0.05, hi=2.0):
  return np.random.default_rng(seed).uniform(lo, hi, shape).astype(np.float32)


def _init_apply(module, x, perturb=None):
  variables = module.init(jax.random.PRNGKey(0), x)
  if perturb:
    params = flax.core.unfreeze(variables["params"])
    for k, v in perturb.items():
      params[k] = jnp.asarray(v, jnp.float32)
    variables = {**variables, "params": params}
  y, state = module.apply(variables, x, mutable=["intermediates"])
  return y, variables, state


def _softplus(v):
  return np.log1p(np.exp(v))


# -- baselines --------------------------------------------------------------------------------

@pytest.mark.parametrize("window, strides, padding", WINDOWS)
def test_max_avg_mixed_soft(window, strides, padding):
  x = _x()
  cases = {
      "max": (lambda v, o, c: v.max(), {}),
      "avg": (lambda v, o, c: v.mean(), {}),
      "mixed": (lambda v, o, c: 0.3 * v.max() + 0.7 * v.mean(), {"ratio": 0.3}),
      "soft": (lambda v, o, c: np.sum(np.exp(v) * v) / np.sum(np.exp(v)), {}),
  }
  for name, (fn, kw) in cases.items():
    y, _, _ = _init_apply(make_pool(name, window, strides, padding, **kw), x)
    np.testing.assert_allclose(y, ref_pool(x, window, strides, padding, fn), rtol=1e-5,
                               atol=1e-6, err_msg=name)


@pytest.mark.parametrize("window, strides, padding", WINDOWS)
def test_lp_learned_norm(window, strides, padding):
  x = _x(lo=-2.0)  # |x| makes Lp pooling defined for signed inputs
  rho = np.array([-1.0, 0.3, 2.5], np.float32)
  y, _, _ = _init_apply(make_pool("lp", window, strides, padding), x, {"rho": rho})
  p = 1 + _softplus(rho.astype(np.float64))
  ref = ref_pool(x, window, strides, padding,
                 lambda v, o, c: np.mean(np.abs(v) ** p[c]) ** (1 / p[c]))
  np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("window, strides, padding", WINDOWS)
def test_gated_layerwise(window, strides, padding):
  x = _x(lo=-1.0)
  omega = np.random.default_rng(1).normal(size=window).astype(np.float32)
  y, _, _ = _init_apply(make_pool("gated", window, strides, padding), x, {"omega": omega})
  flat = omega.reshape(-1).astype(np.float64)

  def gated(v, o, c):
    g = 1 / (1 + np.exp(-np.sum(flat[o] * v)))
    return g * v.max() + (1 - g) * v.mean()

  np.testing.assert_allclose(y, ref_pool(x, window, strides, padding, gated), rtol=1e-5,
                             atol=1e-6)


@pytest.mark.parametrize("window, strides, padding", WINDOWS)
def test_dpp_symmetric_lite(window, strides, padding):
  x = _x()
  a_raw = np.array([-2.0, 0.0, 1.0], np.float32)
  l_raw = np.array([1.5, -1.0, 0.2], np.float32)
  y, _, _ = _init_apply(make_pool("dpp", window, strides, padding), x,
                        {"alpha": a_raw, "lam": l_raw})
  a, lam = _softplus(a_raw.astype(np.float64)), _softplus(l_raw.astype(np.float64))

  def dpp(v, o, c):
    w = a[c] + np.sqrt((v - v.mean()) ** 2 + 1e-6) ** lam[c]
    return np.sum(w * v) / np.sum(w)

  np.testing.assert_allclose(y, ref_pool(x, window, strides, padding, dpp), rtol=1e-5,
                             atol=1e-6)


@pytest.mark.parametrize("window, strides, padding", WINDOWS)
def test_p_fixed_is_eq1_with_learned_alpha(window, strides, padding):
  x = _x()
  alpha = np.array([0.0, 3.0, 50.0], np.float32)  # 50 is clipped to 35
  y, _, state = _init_apply(make_pool("p_fixed", window, strides, padding), x, {"alpha": alpha})
  a = np.minimum(np.maximum(alpha, 1e-4), 35.0).astype(np.float64)
  ref = ref_pool(x, window, strides, padding,
                 lambda v, o, c: np.sum(v ** (a[c] + 1)) / np.sum(v ** a[c]))
  np.testing.assert_allclose(y, ref, rtol=2e-5, atol=1e-6)
  np.testing.assert_allclose(state["intermediates"]["alpha"][0], a, rtol=1e-6)


@pytest.mark.parametrize("window, strides, padding", WINDOWS)
def test_all_c_is_a_correlation(window, strides, padding):
  x = _x(lo=-1.0)
  module = make_pool("all_c", window, strides, padding)
  y, variables, _ = _init_apply(module, x)
  kernel = np.asarray(variables["params"]["conv"]["kernel"], np.float64)  # (kh, kw, C, C)
  bias = np.asarray(variables["params"]["conv"]["bias"], np.float64)
  xp = np.asarray(x, np.float64)
  from reference import out_shape, pads_for, windows
  pads = pads_for(x.shape, window, strides, padding)
  ref = np.zeros(out_shape(x.shape, window, strides, pads))
  # Every output channel sums kernel * members over all input channels.
  for j, members in windows(xp, window, strides, pads):
    if j[-1] != 0:
      continue
    for ci in range(x.shape[-1]):
      for full, k, _ in members:
        v = xp[full[:-1] + (ci,)]
        ref[j[:-1]] += v * kernel.reshape(-1, x.shape[-1], x.shape[-1])[k, ci]
  ref += bias
  # All-C (Springenberg et al. 2015): the replacing conv is followed by a ReLU.
  assert ref.min() < -1e-3
  np.testing.assert_allclose(y, np.maximum(ref, 0.0), rtol=1e-4, atol=1e-5)
  linear = make_pool("all_c", window, strides, padding, activation=False)
  np.testing.assert_allclose(linear.apply(variables, x), ref, rtol=1e-4, atol=1e-5)


# -- PPool unit --------------------------------------------------------------------------------

def test_alpha_range_init_and_sown_shape():
  x = _x((2, 8, 8, 4), lo=0.0, hi=1.0)
  module = PPool((2, 2), (2, 2))
  y, variables, state = _init_apply(module, x)
  alpha = state["intermediates"]["alpha"][0]
  chex.assert_shape(alpha, y.shape)
  assert np.all(alpha >= 19.0) and np.all(alpha <= 21.0), (alpha.min(), alpha.max())
  mx = np.asarray(flax.linen.max_pool(x, (2, 2), (2, 2)))
  assert np.all(y <= mx + 1e-6)
  assert np.all(y >= 0.969 * mx - 1e-6)  # the documented bound for alpha >= 19


def test_alpha_stays_in_zero_c_for_extreme_inputs():
  x = _x((1, 8, 8, 2), lo=0.0, hi=1.0)
  module = PPool((2, 2), (2, 2), clip_max=35.0)
  variables = module.init(jax.random.PRNGKey(0), x)
  params = jax.tree_util.tree_map(lambda p: p * 1000.0, variables["params"])
  for scale in (1e-3, 1.0, 1e3):
    for sign in (1.0, -1.0):
      p = jax.tree_util.tree_map(lambda v: sign * v, params)
      _, state = module.apply({"params": p}, x * scale, mutable=["intermediates"])
      alpha = state["intermediates"]["alpha"][0]
      assert float(alpha.min()) > 0.0
      assert float(alpha.max()) <= 35.0


def test_gradients_reach_side_branch():
  x = _x((2, 8, 8, 3), lo=0.0, hi=1.0)
  module = PPool((3, 3), (2, 2), "SAME")
  variables = module.init(jax.random.PRNGKey(0), x)
  target = jnp.asarray(_x((2, 4, 4, 3), seed=3, lo=0.0, hi=1.0))
  grads = jax.grad(lambda p: jnp.mean((module.apply({"params": p}, x) - target) ** 2))(
      variables["params"])
  side = grads["side_branch"]
  for leaf in jax.tree_util.tree_leaves(side):
    assert np.all(np.isfinite(leaf))
    assert float(jnp.abs(leaf).max()) > 0.0


def test_side_branch_gets_three_times_the_learning_rate():
  x = _x((2, 8, 8, 3), lo=0.0, hi=1.0)

  class Net(flax.linen.Module):
    @flax.linen.compact
    def __call__(self, x):
      x = flax.linen.Conv(3, (3, 3))(x)
      return PPool((2, 2), (2, 2))(jax.nn.relu(x))

  net = Net()
  params = net.init(jax.random.PRNGKey(0), x)["params"]
  labels = side_branch_labels(params)
  assert labels["PPool_0"]["side_branch"]["conv_alpha"]["bias"] == "side_branch"
  assert labels["Conv_0"]["kernel"] == "default"
  lr = 0.01
  tx = with_side_branch_lr(lambda lr: optax.sgd(lr), lr)
  grads = jax.grad(lambda p: jnp.sum(net.apply({"params": p}, x) ** 2))(params)
  updates, _ = tx.update(grads, tx.init(params), params)
  ratio = jax.tree_util.tree_map(
      lambda u, g: float(np.median(np.asarray(u)[np.asarray(g) != 0] / np.asarray(g)[np.asarray(g) != 0])),
      updates, grads)
  assert ratio["PPool_0"]["side_branch"]["conv_alpha"]["bias"] == approx_places(-3 * lr, 6)
  assert ratio["PPool_0"]["side_branch"]["prelu"]["slope"] == approx_places(-3 * lr, 6)
  assert ratio["Conv_0"]["kernel"] == approx_places(-lr, 6)
  # A schedule is scaled too.
  sched = optax.constant_schedule(lr)
  tx = with_side_branch_lr(lambda lr: optax.sgd(lr), sched)
  updates2, _ = tx.update(grads, tx.init(params), params)
  chex.assert_trees_all_close(updates2, updates)


# -- registry ---------------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(POOLINGS))
@pytest.mark.parametrize("window", WINDOWS)
def test_shapes_and_finite_value_and_grad(name, window):
  window_shape, strides, padding = window
  x = jnp.asarray(_x((2, 9, 8, 4), lo=0.0, hi=1.0))
  module = make_pool(name, window_shape, strides, padding)
  variables = jax.jit(module.init)(jax.random.PRNGKey(0), x)
  expected = flax.linen.max_pool(x, window_shape, strides, padding).shape

  def loss(params, x):
    y = module.apply({"params": params} if params else {}, x, mutable=["intermediates"])[0]
    return jnp.mean(y ** 2), y

  (val, y), (gp, gx) = jax.jit(jax.value_and_grad(loss, argnums=(0, 1), has_aux=True))(
      variables.get("params", {}), x)
  chex.assert_shape(y, expected)
  chex.assert_tree_all_finite((val, gp, gx))
  assert float(jnp.abs(gx).max()) > 0.0


def test_unknown_name_lists_registered():
  with pytest.raises(ValueError, match="registered: all_c, avg, dpp"):
    make_pool("maxx")


def test_bad_windows_raise():
  with pytest.raises(ValueError, match="larger than the padded input"):
    make_pool("gated", (5, 5), (2, 2)).init(jax.random.PRNGKey(0), jnp.ones((1, 3, 3, 1)))
  with pytest.raises(ValueError, match="ratio must be in"):
    make_pool("mixed", (2, 2), (2, 2), ratio=2.0).init(jax.random.PRNGKey(0), jnp.ones((1, 4, 4, 1)))


@pytest.mark.parametrize("window, strides, padding, spatial", [
    ((3, 3), (2, 2), "SAME", (7, 6)), ((2, 2), (2, 2), "SAME", (9, 9)),
    ((3, 3), (1, 1), ((1, 1), (0, 2)), (5, 5)), ((1, 1), None, "VALID", (4, 4)),
    ((3,), (2,), "SAME", (9,))])
def test_depthwise_conv_is_flax_grouped_conv(window, strides, padding, spatial):
  """The side branch's elementwise depthwise conv: same parameter tree (names, shapes,
  float32 initial values) as nn.Conv(feature_group_count=C), and the same function and
  gradients (float64)."""
  from ppool_jax.nn import DepthwiseConv
  c = 5
  x = _x((2,) + spatial + (c,), lo=-1.0, hi=1.0)
  conv = nn.Conv(c, window, strides=strides or 1, feature_group_count=c,
                 padding=padding if isinstance(padding, str) else tuple(map(tuple, padding)))
  ours = DepthwiseConv(window, strides, padding)
  p_conv, p_ours = conv.init(jax.random.PRNGKey(0), x), ours.init(jax.random.PRNGKey(0), x)
  chex.assert_trees_all_equal(p_conv, p_ours)
  with jax.enable_x64(True):
    params = jax.tree_util.tree_map(
        lambda v: jnp.asarray(np.random.default_rng(1).normal(size=v.shape)), p_conv)
    params = {"params": {**params["params"], "bias": params["params"]["bias"] + 0.5}}
    x64 = jnp.asarray(x, jnp.float64)
    conv64 = conv.clone(dtype=jnp.float64, param_dtype=jnp.float64)
    ct = jnp.asarray(np.random.default_rng(2).normal(size=conv64.apply(params, x64).shape))
    loss = lambda m: lambda p, x: jnp.vdot(m.apply(p, x), ct)
    want = jax.grad(loss(conv64), argnums=(0, 1))(params, x64)
    got = jax.grad(loss(ours), argnums=(0, 1))(params, x64)
    np.testing.assert_allclose(ours.apply(params, x64), conv64.apply(params, x64), rtol=1e-12,
                               atol=1e-12)
    chex.assert_trees_all_close(got, want, rtol=1e-10, atol=1e-12)


def test_side_branch_rms_input_norm_is_scale_free():
  """input_norm="rms": alpha does not depend on the activations' scale (Caffe 0-255 vs
  torchvision-normalised inputs); the paper's default (None) does."""
  x = _x((2, 8, 8, 3), lo=0.0, hi=1.0)
  alphas = {}
  for norm in (None, "rms"):
    module = PPool((2, 2), (2, 2), input_norm=norm, clip_max=None)
    params = module.init(jax.random.PRNGKey(0), x)["params"]
    params = jax.tree_util.tree_map(lambda v: v * 300.0 if v.ndim == 4 else v, params)
    for scale in (1.0, 58.0):
      _, state = module.apply({"params": params}, x * scale, mutable=["intermediates"])
      alphas[norm, scale] = np.asarray(state["intermediates"]["alpha"][0])
  np.testing.assert_allclose(alphas["rms", 1.0], alphas["rms", 58.0], rtol=1e-5)
  assert np.abs(alphas[None, 1.0] - alphas[None, 58.0]).max() > 1.0
  with pytest.raises(ValueError, match="input_norm must be"):
    PPool((2, 2), (2, 2), input_norm="l2").init(jax.random.PRNGKey(0), x)


def test_vgg16_seg_side_branch_share_of_parameters():
  from ppool_jax.models import VGG16Seg, count_params
  model = VGG16Seg(num_classes=21, pooling="p")
  params = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, 64, 64, 3))))
  params = params["params"]
  labels = jax.tree_util.tree_leaves(side_branch_labels(params))
  side = sum(x.size for x, l in zip(jax.tree_util.tree_leaves(params), labels) if l == "side_branch")
  # C (k^2 + 3) per branch: 2x2 windows for 64..512 channels, 3x3 for pool5's 512.
  assert side == 7 * (64 + 128 + 256 + 512) + 12 * 512 == 12_864
  assert count_params(params) == 14_738_325
  assert round(100 * side / count_params(params), 3) == 0.087  # docs/operator.md's number


def test_fixed_alpha_is_a_constant_not_a_parameter():
  x = jax.nn.relu(jax.random.normal(jax.random.PRNGKey(0), (2, 8, 8, 3)))
  pool = make_pool("p_fixed", (2, 2), (2, 2), "VALID", init_alpha=2.0, learn=False, per="layer",
                   clip_max=None)
  variables = pool.init(jax.random.PRNGKey(1), x)
  assert not variables.get("params")
  from ppool_jax.ops import p_pool
  np.testing.assert_allclose(pool.apply(variables, x), p_pool(x, 2.0, (2, 2), (2, 2)), rtol=1e-6)
  with pytest.raises(ValueError, match="init_alpha must be finite and >= 0"):
    make_pool("p_fixed", (2, 2), (2, 2), init_alpha=-1.0, learn=False).init(
        jax.random.PRNGKey(1), x)


def test_log_alpha_branch_starts_like_the_linear_one_with_alpha_times_the_gradient():
  """alpha_param="log": initial alpha within 1 % of the linear branch's (same keys); the bias
  gradient is sum(alpha * dL/dalpha) (chain rule through exp), i.e. ~20x the linear one."""
  x = jax.nn.relu(jax.random.normal(jax.random.PRNGKey(0), (2, 8, 8, 3)))
  loss = lambda m, v: jnp.sum(m.apply(v, x) ** 2)
  lin = PPool((2, 2), (2, 2), "VALID")
  log = PPool((2, 2), (2, 2), "VALID", alpha_param="log")
  v_lin, v_log = lin.init(jax.random.PRNGKey(1), x), log.init(jax.random.PRNGKey(1), x)
  a_lin = lin.apply(v_lin, x, mutable=["intermediates"])[1]["intermediates"]["alpha"][0]
  a_log = log.apply(v_log, x, mutable=["intermediates"])[1]["intermediates"]["alpha"][0]
  np.testing.assert_allclose(a_log, a_lin, rtol=1e-2)
  assert float(jnp.std(a_lin)) > 0
  zero = {"perturbations": {"alpha": jnp.zeros_like(a_log),
                            "alpha_raw": jnp.zeros_like(a_log)}}
  g_alpha = jax.grad(lambda p: loss(log, {**v_log, **p}))(zero)["perturbations"]["alpha"]
  g_bias = jax.grad(lambda v: loss(log, v))(v_log)["params"]["side_branch"]["conv_alpha"]["bias"]
  np.testing.assert_allclose(g_bias, jnp.sum(a_log * g_alpha, axis=(0, 1, 2)), rtol=1e-4)
  with pytest.raises(ValueError, match="alpha_param must be 'linear' or 'log'"):
    PPool((2, 2), (2, 2), alpha_param="exp").init(jax.random.PRNGKey(1), x)
