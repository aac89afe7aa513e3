"""Training: non-finite guard, kill-and-resume, schedules, configs (data parallelism and mixed
precision: test_parallel.py)."""

import glob
import os
import signal
import subprocess
import time

import chex
import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
import pytest

from ppool_jax.train import make_train_step, model_from_config, train
from ppool_jax.train.checkpoints import Checkpoints, NonFiniteStateError
from ppool_jax.train.preflight import ConfigError, check_config
from ppool_jax.train.loop import NonFiniteTrainingError, init_state, unreplicate
from ppool_jax.train.optim import learning_rate_schedule, make_optimizer
from ppool_jax.train.steps import AXIS
from support import (final_params, make_tiny_cfg, random_batch, saved_steps,
                     subprocess_env, train_cmd)


def test_nonfinite_update_is_skipped_counted_and_stops_the_run(tmp_path):
  cfg = make_tiny_cfg()
  net = model_from_config(cfg)
  tx = make_optimizer(cfg)
  state = init_state(cfg, net, tx, (32, 32, 3))
  p_step = jax.pmap(make_train_step(net, tx), axis_name=AXIS)
  bad = random_batch(8)
  bad["image"][0, 5, 5, 0] = np.nan
  d = jax.local_device_count()
  shard = lambda b: jax.tree_util.tree_map(lambda x: x.reshape((d, 8 // d) + x.shape[1:]), b)
  r = flax.jax_utils.replicate(state)
  r, m = p_step(r, shard(bad))
  assert not bool(m["finite"][0]) and int(r.nonfinite[0]) == 1 and int(r.step[0]) == 1
  chex.assert_trees_all_equal(unreplicate(r).params, state.params)
  r, m = p_step(r, shard(random_batch(8)))
  assert bool(m["finite"][0]) and int(r.nonfinite[0]) == 0
  # A whole run on poisoned data stops with a clear error and keeps no broken checkpoint.
  cfg.total_steps, cfg.max_consecutive_nonfinite, cfg.optim.learning_rate = 30, 3, 1e30
  with pytest.raises(NonFiniteTrainingError, match="consecutive non-finite updates"):
    train(cfg, str(tmp_path / "run"))
  for step_dir in glob.glob(str(tmp_path / "run" / "checkpoints" / "*")):
    restored = ocp.StandardCheckpointer().restore(os.path.join(step_dir, "default"))
    for leaf in jax.tree_util.tree_leaves(restored):
      assert np.all(np.isfinite(leaf))
  ckpt = Checkpoints(str(tmp_path / "other"), 2)
  with pytest.raises(NonFiniteStateError, match="refusing to checkpoint"):
    ckpt.save(1, {"w": np.array([1.0, np.nan])})
  ckpt.close()


def test_killed_run_resumes_to_the_same_parameters(tmp_path):
  full, killed = str(tmp_path / "full"), str(tmp_path / "killed")
  subprocess.run(train_cmd(full), check=True, env=subprocess_env(), capture_output=True)
  proc = subprocess.Popen(train_cmd(killed), env=subprocess_env(), stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL)
  deadline = time.time() + 120
  while time.time() < deadline and not saved_steps(killed):
    time.sleep(0.05)
  assert proc.poll() is None, "the run finished before it could be killed"
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  steps = saved_steps(killed)
  assert steps and steps[-1] < 120
  subprocess.run(train_cmd(killed), check=True, env=subprocess_env(), capture_output=True)
  chex.assert_trees_all_close(final_params(killed, 120), final_params(full, 120), rtol=1e-5,
                              atol=1e-7)


def test_schedules():
  cfg = make_tiny_cfg()
  cfg.optim.learning_rate, cfg.optim.step_boundaries, cfg.optim.step_factor = 1.0, (6000,), 0.1
  sched = learning_rate_schedule(cfg, 10_000)
  assert float(sched(5999)) == pytest.approx(1.0) and float(sched(6001)) == pytest.approx(0.1)
  cfg.optim.schedule, cfg.optim.poly_power = "poly", 0.9
  sched = learning_rate_schedule(cfg, 10_000)
  assert float(sched(5000)) == pytest.approx(0.5 ** 0.9, rel=1e-5)


CONFIGS = [("synthetic_demo", None), ("table1", "voc_aug,vgg16,p"),
           ("table1", "cityscapes,resnet50,strided_c"), ("table1", "ade20k,vgg16,all_c"),
           ("table45", "deeplab_largefov,voc_aug,p"), ("table45", "fcn8s,ade20k,max"),
           ("table45", "deeplabv3,voc_aug,p"), ("table6", "pool3"), ("table6", "all_max")]


@pytest.mark.parametrize("name,arg", CONFIGS)
def test_configs_build_their_model(name, arg):
  from ppool_jax import configs
  cfg = configs.get_config(name, arg)
  assert isinstance(cfg, ml_collections.ConfigDict)
  net = model_from_config(cfg)
  x = jnp.zeros((1, 64, 64, 3))
  variables = jax.eval_shape(lambda: net.init({"params": jax.random.PRNGKey(0),
                                               "dropout": jax.random.PRNGKey(1)}, x))
  out = jax.eval_shape(lambda v: net.apply(v, x), variables)
  assert out.shape[:3] == (1, 64, 64)
  from ppool_jax.train.inputs import boundary_protocol
  assert boundary_protocol(cfg) == ("void_band" if cfg.dataset.name == "voc_aug" else "label")
  # Every shipped config passes the up-front check but for its data and weights.
  if cfg.dataset.name != "synthetic":
    cfg.dataset.root = "/nonexistent/dataset"
  problems = [p for p in check_config(cfg) if not p.startswith("pretrained weights not found")]
  assert problems == ([] if cfg.dataset.name == "synthetic" else [
      f"{cfg.dataset.name}: dataset folder not found: /nonexistent/dataset (see docs/data.md, "
      "'Real datasets')."])


def test_missing_pretrained_weights_is_a_clear_error(tmp_path):
  cfg = make_tiny_cfg()
  cfg.model.pretrained = str(tmp_path / "weights")
  with pytest.raises(ConfigError, match="pretrained weights not found.*ppool_jax.convert"):
    train(cfg, str(tmp_path / "run"))
