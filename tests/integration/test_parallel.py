"""Data parallelism (pmap and jit over a mesh) and mixed precision: each against
the single-device float step it must equal or track."""

import csv

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ppool_jax.train import model_from_config, train
from ppool_jax.train.guard import new_record
from ppool_jax.train.loop import init_state
from ppool_jax.train.optim import make_optimizer
from ppool_jax.train.parallel import make_runner
from support import make_tiny_cfg, random_batch


def _to_float64(tree):
  return jax.tree_util.tree_map(
      lambda x: x.astype(jnp.float64) if jnp.issubdtype(x.dtype, jnp.floating) else x, tree)


def _one_step(mode, devices, cfg, tx, state, batch, model=None):
  """One training step through the loop's own runner (pmap or mesh) on ``devices``."""
  cfg = cfg.copy_and_resolve_references()
  cfg.parallel = mode
  net = model or model_from_config(cfg)
  runner = make_runner(mode, net, tx, 6, cfg.loss.normalization, "label", devices)
  new, _, metrics = runner.train_step(runner.place(state), runner.place(new_record(1)),
                                      runner.put(batch))
  return runner.to_host(new), runner.to_host(metrics)


@pytest.mark.parametrize("model", [dict(name="vgg16_seg", pooling="p"),
                                   dict(name="resnet50_seg", pooling="p", width=0.0625,
                                        blocks=None)])
def test_8_device_steps_pmap_and_mesh_equal_1_device_step_on_the_whole_batch(model):
  """Data parallelism is exact: same loss, update and BatchNorm statistics, for pmap (per
  device, explicit psum) and for jit over an 8-device mesh (global view, sharded batch).

  Run in float64. In float32 the steps sum in different orders, and ResNet-50 at
  random init amplifies those rounding differences through 50 BatchNorm'd layers and
  near-tied max/P-pooling windows: the update differed by up to 17 % under load (a
  flaky test). In float64 the same amplification leaves the updates equal to far below
  ``sqrt(eps64) = 1.5e-8`` of the update size, a tolerance that follows from the dtype,
  while a wrong data-parallel step (e.g. BatchNorm statistics not synchronised, or a
  per-device mean loss) differs by O(1) (checked below).
  """
  cfg = make_tiny_cfg(**model)
  net = model_from_config(cfg)
  tx = make_optimizer(cfg)
  devices = jax.local_devices()
  with jax.enable_x64(True):
    state = _to_float64(init_state(cfg, net, tx, (32, 32, 3)))
    state = state.replace(opt_state=tx.init(state.params))
    batch = random_batch(8)
    batch["image"] = batch["image"].astype(np.float64)
    s1, m1 = _one_step("pmap", devices[:1], cfg, tx, state, batch)
    runs = {mode: _one_step(mode, devices[:8], cfg, tx, state, batch) for mode in ("pmap", "mesh")}
    tol = np.finfo(np.float64).eps ** 0.5

    def rel_diff(new8, new1, old):
      d8, d1 = np.asarray(new8) - np.asarray(old), np.asarray(new1) - np.asarray(old)
      return np.abs(d8 - d1).max() / max(np.abs(d1).max(), 1e-300), np.abs(d1).max()

    for mode, (s8, m8) in runs.items():
      assert jax.tree_util.tree_leaves(s8.params)[0].dtype == np.float64
      np.testing.assert_allclose(m8["loss"], m1["loss"], rtol=tol, err_msg=mode)
      diffs = jax.tree_util.tree_leaves(jax.tree_util.tree_map(rel_diff, s8.params, s1.params,
                                                               state.params))
      diffs += jax.tree_util.tree_leaves(jax.tree_util.tree_map(
          rel_diff, s8.model_state, s1.model_state, state.model_state))
      worst = max(diffs[0::2])
      assert worst <= tol, (mode, worst)
      # The step really moved the parameters (else the comparison above says nothing).
      assert max(diffs[1::2]) > 1e-4
    if cfg.model.name == "resnet50_seg":
      # Control: without synchronised BatchNorm statistics the same check fails clearly.
      unsynced = net.clone(bn_axis_name=None)
      s8u, _ = _one_step("pmap", devices[:8], cfg, tx, state, batch, model=unsynced)
      bad = jax.tree_util.tree_leaves(jax.tree_util.tree_map(rel_diff, s8u.params, s1.params,
                                                             state.params))
      assert max(bad[0::2]) > 1e3 * tol


@pytest.mark.parametrize("mode", ["pmap", "mesh"])
def test_placed_state_is_sharded_as_the_step_returns_it(mode):
  """``place`` puts state and record where the step leaves them, so the step compiles once:
  placed with ``flax.jax_utils.replicate`` (another mesh), pmap compiled it a second time."""
  cfg = make_tiny_cfg(blocks=((4,),))
  cfg.parallel = mode
  net, tx = model_from_config(cfg), make_optimizer(cfg)
  devices = jax.local_devices()[:2]
  runner = make_runner(mode, net, tx, 6, cfg.loss.normalization, "label", devices)
  placed = runner.place((init_state(cfg, net, tx, (32, 32, 3)), new_record(1)))
  batch = random_batch(4)
  shardings = [x.sharding for x in jax.tree_util.tree_leaves(placed)]
  state, record, _ = runner.train_step(*placed, runner.put(batch))
  assert [x.sharding for x in jax.tree_util.tree_leaves((state, record))] == shardings


def test_bfloat16_step_tracks_float32_and_a_short_run_learns(tmp_path):
  """Mixed precision: bf16 activations/convs, f32 parameters, optimizer state and loss.

  Compared on the well-conditioned VGG-style net (at random init, ResNet's per-batch
  BatchNorm amplifies any rounding difference, as the float64 test above explains)."""
  cfg = make_tiny_cfg()
  tx = make_optimizer(cfg)
  state = init_state(cfg, model_from_config(cfg), tx, (32, 32, 3))
  batch = random_batch(8)
  device = jax.local_devices()[:1]
  s32, m32 = _one_step("pmap", device, cfg, tx, state, batch)
  cfg.model.dtype = "bfloat16"
  net16 = model_from_config(cfg)
  s16, m16 = _one_step("pmap", device, cfg, tx, state, batch)
  # Really bf16: the convolutions of the jaxpr run on bf16 operands.
  jaxpr = str(jax.make_jaxpr(lambda v, x: net16.apply(v, x))({"params": state.params},
                                                             batch["image"][:1]))
  assert "conv_general_dilated" in jaxpr and "bf16[1,32,32,4]" in jaxpr
  leaves = lambda s: jax.tree_util.tree_leaves(s.params)
  assert all(x.dtype == np.float32 for x in leaves(s16))
  eps = float(jnp.finfo(jnp.bfloat16).eps)  # 2^-7
  assert abs(m16["loss"] - m32["loss"]) <= eps * abs(m32["loss"])
  u = lambda s: np.concatenate([np.ravel(a - b) for a, b in zip(leaves(s), leaves(state))])
  rel = np.linalg.norm(u(s16) - u(s32)) / np.linalg.norm(u(s32))
  assert 0 < rel <= 4 * eps, rel   # measured 1.2 eps
  # A short bf16 run learns.
  cfg.total_steps, cfg.checkpoint_every, cfg.log_every = 60, 60, 5
  train(cfg, str(tmp_path / "bf16"))
  with open(tmp_path / "bf16" / "metrics.csv") as f:
    losses = [float(r["value"]) for r in csv.DictReader(f) if r["metric"] == "loss"]
  assert np.mean(losses[-3:]) < 0.8 * np.mean(losses[:3]), losses
