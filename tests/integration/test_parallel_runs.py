"""Data-parallel runs end to end: a checkpoint resumed in the other parallel mode, and two
processes (distributed JAX) sharing one run and its evaluation. Split from test_parallel.py so
that ``pytest -n 2 --dist loadfile`` can run the two halves on different workers."""

import os
import socket
import subprocess
import sys

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ppool_jax.labels import IGNORE
from ppool_jax.metrics import segmentation_scores
from ppool_jax.train import model_from_config, train
from ppool_jax.train.inputs import (boundary_protocol, class_names, detail_classes, num_classes,
                                    sources)
from ppool_jax.train.loop import evaluation_counts
from ppool_jax.train.optim import make_optimizer
from ppool_jax.train.parallel import make_runner
from ppool_jax.train.runs import load_run
from ppool_jax.train.steps import TrainState
from support import TESTS, saved_steps, subprocess_env


@pytest.mark.parametrize("first,second", [("pmap", "mesh"), ("mesh", "pmap")])
def test_a_checkpoint_resumes_in_the_other_parallel_mode(tmp_path, tiny_cfg, first, second):
  cfg = tiny_cfg
  cfg.total_steps, cfg.checkpoint_every = 20, 10
  cfg.parallel = first
  straight, _ = train(cfg, str(tmp_path / "straight"))
  cfg.total_steps = 10
  train(cfg, str(tmp_path / "switched"))
  cfg.total_steps, cfg.parallel = 20, second
  switched, _ = train(cfg, str(tmp_path / "switched"))
  assert int(switched.step) == 20 and saved_steps(str(tmp_path / "switched")) == [10, 20]
  chex.assert_trees_all_close(switched.params, straight.params, rtol=1e-4, atol=1e-6)


def _single_process_counts(workdir: str, step: int) -> tuple[dict, dict, list]:
  """Counts and scores of checkpoint ``step`` of ``workdir`` evaluated by this process alone,
  on one device, and the number of labelled pixels of each eval image."""
  run = load_run(workdir, step)
  cfg, tx = run.config, make_optimizer(run.config)
  params = run.variables["params"]
  state = TrainState(step=jnp.asarray(step), params=params,
                     model_state={k: v for k, v in run.variables.items() if k != "params"},
                     opt_state=tx.init(params), rng=jax.random.PRNGKey(0),
                     nonfinite=jnp.zeros((), jnp.int32))
  runner = make_runner("pmap", model_from_config(cfg), tx, num_classes(cfg),
                       cfg.loss.normalization, boundary_protocol(cfg), jax.local_devices()[:1])
  images = sources(cfg)[1]
  counts = evaluation_counts(runner, runner.place(state), images, cfg, 1)
  labelled = [int((np.asarray(images[i]["label"]) != IGNORE).sum()) for i in range(len(images))]
  return counts, segmentation_scores(counts, class_names=class_names(cfg),
                                     detail_classes=detail_classes(cfg)), labelled


@pytest.mark.parametrize("mode", ["pmap", "mesh"])
def test_two_processes_hold_identical_parameters_and_share_the_evaluation(tmp_path, mode):
  """Two processes of two devices train in lockstep; the final evaluation (5 images, two
  scales and flips) reads
  each image on one process only (3 and 2: two eval-step calls and one), and the summed
  counts and the scores equal this single process's evaluation of the same checkpoint."""
  with socket.socket() as s:
    s.bind(("localhost", 0))
    port = str(s.getsockname()[1])
  worker = os.path.join(TESTS, "multihost_worker.py")
  procs = [subprocess.Popen([sys.executable, worker, str(p), port, str(tmp_path / "w"),
                             str(tmp_path / f"p{p}.npz"), mode], env=subprocess_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT) for p in (0, 1)]
  for p in procs:
    out, _ = p.communicate(timeout=300)
    assert p.returncode == 0, out.decode()[-3000:]
  a, b = np.load(tmp_path / "p0.npz"), np.load(tmp_path / "p1.npz")
  assert len(a.files) > 0
  for k in a.files:
    np.testing.assert_array_equal(a[k], b[k])
  assert os.path.isdir(tmp_path / "w" / "checkpoints" / "6")

  ev = [dict(np.load(tmp_path / f"p{p}.npz.eval.npz")) for p in (0, 1)]
  assert [e["indices"].tolist() for e in ev] == [[0, 2, 4], [1, 3]]
  assert [int(e["calls"]) for e in ev] == [2, 1]
  counts, scores, labelled = _single_process_counts(str(tmp_path / "w"), 6)
  assert counts["confusion"].sum() == sum(labelled) and len(labelled) == 5
  for k, v in counts.items():
    np.testing.assert_array_equal(ev[0][f"local/{k}"] + ev[1][f"local/{k}"], v, err_msg=k)
    for e in ev:
      np.testing.assert_array_equal(e[f"total/{k}"], v, err_msg=k)
  assert [e["local/confusion"].sum() for e in ev] == [sum(labelled[0::2]), sum(labelled[1::2])]
  for e in ev:
    assert {k[len("score/"):] for k in e if k.startswith("score/")} == set(scores)
    for k, v in scores.items():
      np.testing.assert_array_equal(e[f"score/{k}"], np.asarray(v), err_msg=k)
