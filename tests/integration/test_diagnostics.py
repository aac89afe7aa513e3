"""Alpha diagnostics (why alpha does or does not move): the logged dL/dalpha against an
identity with the side branch's own gradient, the statistics against NumPy on the sown
alpha maps, data-parallel reductions against the single-device step, and the log."""

import csv
import os

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ppool_jax.train import model_from_config, train
from ppool_jax.train.diagnostics import alpha_perturbations, side_branch_drift
from ppool_jax.train.guard import new_record
from ppool_jax.train.loop import init_state
from ppool_jax.train.optim import make_optimizer
from ppool_jax.train.parallel import make_runner
from ppool_jax.train.steps import pixel_cross_entropy
from support import make_tiny_cfg, random_batch

LAYERS = ("backbone/pool1", "backbone/pool2", "backbone/pool3")


def _setup():
  cfg = make_tiny_cfg()
  net = model_from_config(cfg)
  tx = make_optimizer(cfg)
  return cfg, net, tx, init_state(cfg, net, tx, (32, 32, 3))


def _loss(net, state, batch):
  def loss(params, perts):
    variables = {"params": params, **state.model_state}
    if perts is not None:
      variables["perturbations"] = perts
    logits, inter = net.apply(variables, batch["image"], train=True, mutable=["intermediates"],
                              rngs={"dropout": jax.random.PRNGKey(0)})
    ce, valid = pixel_cross_entropy(logits, batch["label"])
    return jnp.sum(ce) / jnp.sum(valid), inter["intermediates"]
  return loss


def test_alpha_gradient_sums_to_the_side_branch_bias_gradient():
  """The side branch's last bias adds to every alpha of its channel, so (no alpha clipped
  at init: all near 20) dL/dbias[c] = sum over images and positions of dL/dalpha[..., c].
  The perturbation is zero: the loss is unchanged."""
  _, net, _, state = _setup()
  batch = random_batch(4)
  perts = alpha_perturbations(net, {"params": state.params}, batch["image"], [],
                              {"dropout": jax.random.PRNGKey(0)})
  assert sorted("/".join(k) for k in flax.traverse_util.flatten_dict(perts)) == sorted(
      f"{l}/{n}" for l in LAYERS for n in ("alpha", "alpha_raw"))
  loss = _loss(net, state, batch)
  (l0, inter), (g_params, g_alpha) = jax.jit(jax.value_and_grad(loss, argnums=(0, 1),
                                                                 has_aux=True))(state.params, perts)
  # Against the unperturbed loss under grad too: there p_pool runs its residual forward,
  # under a plain jit its inference forward (the two agree within 1e-6, test_p_pool).
  (l_ref, _), _ = jax.jit(jax.value_and_grad(loss, has_aux=True))(state.params, None)
  np.testing.assert_allclose(l0, l_ref, rtol=1e-7)
  for layer in LAYERS:
    path = tuple(layer.split("/"))
    alpha = flax.traverse_util.flatten_dict(inter)[path + ("alpha",)][0]
    assert 19.0 < float(alpha.min()) and float(alpha.max()) < 21.0
    ga = flax.traverse_util.flatten_dict(g_alpha)[path + ("alpha",)]
    gb = flax.traverse_util.flatten_dict(g_params)[path + ("side_branch", "conv_alpha", "bias")]
    assert float(jnp.abs(gb).max()) > 0
    np.testing.assert_allclose(ga.sum(axis=(0, 1, 2)), gb, rtol=2e-4, atol=1e-9)
    # Nothing is clipped: the gradient reaching the side branch is dL/dalpha itself.
    graw = flax.traverse_util.flatten_dict(g_alpha)[path + ("alpha_raw",)]
    np.testing.assert_allclose(graw, ga, rtol=1e-6, atol=1e-12)


def test_clipped_positions_pass_no_gradient_and_are_counted():
  """With C below some raw alphas, those positions are clipped: dL/draw is 0 there and equals
  dL/dalpha elsewhere, and the step's frac_clipped is their share (NumPy on the sown maps)."""
  cfg = make_tiny_cfg()
  cfg.model.pool_options.p.clip_max = 20.0
  net = model_from_config(cfg)
  tx = make_optimizer(cfg)
  state = init_state(cfg, net, tx, (32, 32, 3))
  batch = random_batch(4)
  perts = alpha_perturbations(net, {"params": state.params}, batch["image"], [],
                              {"dropout": jax.random.PRNGKey(0)})
  (_, inter), g = jax.value_and_grad(_loss(net, state, batch), argnums=1, has_aux=True)(
      state.params, perts)
  runner = make_runner("mesh", net, tx, 6, cfg.loss.normalization, "label",
                       jax.local_devices()[:1], diagnostics=True)
  _, _, metrics = runner.train_step(runner.place(state), runner.place(new_record(1)),
                                    runner.put(batch))
  metrics = runner.to_host(metrics)
  fi, fg = flax.traverse_util.flatten_dict(inter), flax.traverse_util.flatten_dict(g)
  for layer in LAYERS:
    path = tuple(layer.split("/"))
    raw, alpha = fi[path + ("alpha_raw",)][0], fi[path + ("alpha",)][0]
    clipped = np.asarray(raw) > 20.0
    assert 0.1 < clipped.mean() < 0.9
    graw, ga = np.asarray(fg[path + ("alpha_raw",)]), np.asarray(fg[path + ("alpha",)])
    assert np.all(graw[clipped] == 0) and np.abs(ga[clipped]).max() > 0
    np.testing.assert_allclose(graw[~clipped], ga[~clipped], rtol=1e-6, atol=1e-12)
    np.testing.assert_allclose(float(metrics[f"alpha/{layer}/frac_clipped"]), clipped.mean(),
                               rtol=1e-6)
    np.testing.assert_allclose(float(metrics[f"alpha/{layer}/mean_abs_grad_raw"]),
                               np.abs(graw).mean(), rtol=1e-4)
    assert np.all(np.asarray(alpha) <= 20.0)


def test_side_branch_drift_against_numpy():
  rng = np.random.default_rng(0)
  init = {"backbone/pool1/conv_alpha/kernel": rng.normal(size=(1, 1, 1, 4)),
          "backbone/pool1/conv_alpha/bias": np.full(4, 20.0),
          "backbone/pool1/prelu/slope": np.full(4, 0.25)}
  now = {k: v + (0.5 if "slope" in k else 0.0) + (k.endswith("kernel") * rng.normal(size=v.shape))
         for k, v in init.items()}
  d = side_branch_drift(now, init)
  k = init["backbone/pool1/conv_alpha/kernel"]
  assert d == {
      "alpha/backbone/pool1/drift/conv_alpha/kernel": pytest.approx(
          np.linalg.norm(now["backbone/pool1/conv_alpha/kernel"] - k) / np.linalg.norm(k)),
      "alpha/backbone/pool1/drift/conv_alpha/bias": 0.0,
      "alpha/backbone/pool1/drift/prelu/slope": pytest.approx(0.5 * 2 / (0.25 * 2))}


@pytest.mark.parametrize("mode, n", [("pmap", 8), ("mesh", 8)])
def test_step_reports_alpha_statistics_exactly(mode, n):
  cfg, net, tx, state = _setup()
  batch = random_batch(8)
  runner = make_runner(mode, net, tx, 6, cfg.loss.normalization, "label",
                       jax.local_devices()[:n], diagnostics=True)
  new, _, metrics = runner.train_step(runner.place(state), runner.place(new_record(1)),
                                      runner.put(batch))
  new, metrics = runner.to_host(new), runner.to_host(metrics)
  loss = _loss(net, state, batch)
  perts = alpha_perturbations(net, {"params": state.params}, batch["image"], [],
                              {"dropout": jax.random.PRNGKey(0)})
  (_, inter), g_alpha = jax.value_and_grad(loss, argnums=1, has_aux=True)(state.params, perts)
  flat_a = flax.traverse_util.flatten_dict(inter)
  flat_g = flax.traverse_util.flatten_dict(g_alpha)
  flat_p = flax.traverse_util.flatten_dict(new.params)
  for layer in LAYERS:
    path = tuple(layer.split("/"))
    a = np.asarray(flat_a[path + ("alpha",)][0], np.float64)
    g = np.asarray(flat_g[path + ("alpha",)], np.float64)
    m = {k: float(metrics[f"alpha/{layer}/{k}"]) for k in
         ("mean", "std", "frac_below_10", "mean_abs_grad", "bias", "frac_clipped")}
    np.testing.assert_allclose(m["mean"], a.mean(), rtol=1e-6)
    np.testing.assert_allclose(m["std"], a.std(), rtol=1e-4)
    assert m["frac_below_10"] == np.mean(a < 10) == 0.0
    assert m["frac_clipped"] == 0.0
    np.testing.assert_allclose(m["mean_abs_grad"], np.abs(g).mean(), rtol=1e-4)
    # The bias the forward pass used (before the update), which the update then moved.
    bias = ("side_branch", "conv_alpha", "bias")
    old = flax.traverse_util.flatten_dict(state.params)[path + bias]
    np.testing.assert_allclose(m["bias"], np.mean(old), rtol=1e-7)
    assert np.abs(flat_p[path + bias] - old).max() > 0


def test_training_log_has_alpha_columns_and_max_pooling_none(tmp_path):
  """Step 1 is logged (the initial state's forward pass); drift is measured from the
  initial side branch, saved once and read back on resume."""
  stats = ("mean", "std", "frac_below_10", "mean_abs_grad", "bias", "frac_clipped",
           "mean_abs_grad_raw")
  drift = ("conv_window/kernel", "prelu/slope", "conv_alpha/kernel", "conv_alpha/bias")
  for pooling in ("p", "max"):
    cfg = make_tiny_cfg(pooling=pooling)
    cfg.total_steps = cfg.log_every = cfg.checkpoint_every = cfg.eval_every = 2
    train(cfg, str(tmp_path / pooling))
    with open(tmp_path / pooling / "metrics.csv") as f:
      rows = [r for r in csv.DictReader(f) if r["split"] == "train"]
    names = {r["metric"] for r in rows}
    assert {int(r["step"]) for r in rows} == {1, 2}
    alpha = {n for n in names if n.startswith("alpha/")}
    if pooling == "max":
      assert not alpha and "loss" in names
      assert not os.path.exists(tmp_path / pooling / "side_branch_init.npz")
    else:
      assert alpha == ({f"alpha/{l}/{k}" for l in LAYERS for k in stats}
                       | {f"alpha/{l}/drift/{k}" for l in LAYERS for k in drift})
      value = {(int(r["step"]), r["metric"]): float(r["value"]) for r in rows}
      # The first update moves the bias (x2 lr, x3 side branch): drift > 0 from step 1.
      assert value[(1, "alpha/backbone/pool1/drift/conv_alpha/bias")] > 0
      init = dict(np.load(tmp_path / pooling / "side_branch_init.npz"))
      assert init["backbone/pool1/conv_alpha/bias"] == pytest.approx(20.0)
      assert value[(1, "alpha/backbone/pool1/bias")] == pytest.approx(20.0)
    assert os.listdir(tmp_path / pooling / "tensorboard")
  # Resume to 4 steps: drift keeps growing from the saved initial values.
  cfg = make_tiny_cfg(pooling="p")
  cfg.total_steps, cfg.log_every, cfg.checkpoint_every, cfg.eval_every = 4, 2, 2, 4
  train(cfg, str(tmp_path / "p"))
  with open(tmp_path / "p" / "metrics.csv") as f:
    d = {int(r["step"]): float(r["value"]) for r in csv.DictReader(f)
         if r["metric"] == "alpha/backbone/pool1/drift/conv_alpha/bias"}
  assert d[4] > d[2] > d[1] > 0
