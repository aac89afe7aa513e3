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
from ppool_jax.train.diagnostics import alpha_perturbations
from ppool_jax.train.loop import init_state
from ppool_jax.train.optim import make_optimizer
from ppool_jax.train.parallel import make_runner
from ppool_jax.train.steps import pixel_cross_entropy
from test_train import _batch, _cfg

LAYERS = ("backbone/pool1", "backbone/pool2", "backbone/pool3")


def _setup():
  cfg = _cfg()
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
  batch = _batch(4)
  perts = alpha_perturbations(net, {"params": state.params}, batch["image"], [],
                              {"dropout": jax.random.PRNGKey(0)})
  assert sorted("/".join(k[:-1]) for k in flax.traverse_util.flatten_dict(perts)) == list(LAYERS)
  loss = _loss(net, state, batch)
  (l0, inter), (g_params, g_alpha) = jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)(
      state.params, perts)
  np.testing.assert_allclose(l0, loss(state.params, None)[0], rtol=1e-7)
  for layer in LAYERS:
    path = tuple(layer.split("/"))
    alpha = flax.traverse_util.flatten_dict(inter)[path + ("alpha",)][0]
    assert 19.0 < float(alpha.min()) and float(alpha.max()) < 21.0
    ga = flax.traverse_util.flatten_dict(g_alpha)[path + ("alpha",)]
    gb = flax.traverse_util.flatten_dict(g_params)[path + ("side_branch", "conv_alpha", "bias")]
    assert float(jnp.abs(gb).max()) > 0
    np.testing.assert_allclose(ga.sum(axis=(0, 1, 2)), gb, rtol=2e-4, atol=1e-9)


@pytest.mark.parametrize("mode, n", [("pmap", 8), ("mesh", 8)])
def test_step_reports_alpha_statistics_exactly(mode, n):
  cfg, net, tx, state = _setup()
  batch = _batch(8)
  runner = make_runner(mode, net, tx, 6, cfg.loss.normalization, "label",
                       jax.local_devices()[:n], diagnostics=True)
  sharded = jax.tree_util.tree_map(lambda x: x.reshape((n, -1) + x.shape[1:]), batch)
  new, metrics = runner.train_step(runner.place(state), sharded)
  new = runner.to_host(new)
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
         ("mean", "std", "frac_below_10", "mean_abs_grad", "bias")}
    np.testing.assert_allclose(m["mean"], a.mean(), rtol=1e-6)
    np.testing.assert_allclose(m["std"], a.std(), rtol=1e-4)
    assert m["frac_below_10"] == np.mean(a < 10) == 0.0
    np.testing.assert_allclose(m["mean_abs_grad"], np.abs(g).mean(), rtol=1e-4)
    np.testing.assert_allclose(
        m["bias"], np.mean(flat_p[path + ("side_branch", "conv_alpha", "bias")]), rtol=1e-7)


def test_training_log_has_alpha_columns_and_max_pooling_none(tmp_path):
  for pooling in ("p", "max"):
    cfg = _cfg(pooling=pooling)
    cfg.total_steps = cfg.log_every = cfg.checkpoint_every = cfg.eval_every = 2
    train(cfg, str(tmp_path / pooling))
    with open(tmp_path / pooling / "metrics.csv") as f:
      names = {row["metric"] for row in csv.DictReader(f)}
    alpha = {n for n in names if n.startswith("alpha/")}
    if pooling == "max":
      assert not alpha and "loss" in names
    else:
      assert alpha == {f"alpha/{l}/{k}" for l in LAYERS for k in
                       ("mean", "std", "frac_below_10", "mean_abs_grad", "bias")}
    assert os.listdir(tmp_path / pooling / "tensorboard")
