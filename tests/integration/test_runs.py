"""A run's record (config.json), the resume check and load_run (issue #24 item 3)."""

import json
import os
import shutil

import chex
import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

import tiny_config
from ppool_jax.train import IncompatibleRunError, load_run, model_from_config, train
from ppool_jax.train import inputs, loop
from ppool_jax.train.loop import predict_with_alpha
from ppool_jax.train.runs import (RUN_RECORD, check_compatible, config_from_json, config_to_json,
                                  read_record, record_run)


def _cfg():
  cfg = tiny_config.get_config()
  cfg.total_steps, cfg.checkpoint_every, cfg.keep_checkpoints = 4, 2, 5
  cfg.alpha_diagnostics = False
  return cfg


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  """A 4-step tiny run with checkpoints at steps 2 and 4: (workdir, cfg, final state)."""
  workdir = str(tmp_path_factory.mktemp("runs") / "run")
  state, _ = train(_cfg(), workdir)
  return workdir, _cfg(), state


def _copy(run, tmp_path):
  return shutil.copytree(run[0], str(tmp_path / "copy"))


def _no_data(monkeypatch):
  def fail(*_):
    raise AssertionError("data sources were built")
  monkeypatch.setattr(loop, "sources", fail)
  monkeypatch.setattr(inputs, "sources", fail)


def test_config_json_records_the_run(run):
  workdir, cfg, _ = run
  record = read_record(workdir)
  assert record["ppool_jax_version"] == "0.1.0"
  assert record["git_commit"] is None or len(record["git_commit"]) == 40
  assert record["num_classes"] == inputs.num_classes(cfg)
  restored = config_from_json(record["config"])
  assert restored == cfg
  assert restored.model.blocks == ((4,), (8,), (8,)) and restored.optim.step_boundaries == (60,)


def test_load_run_gives_the_trained_logits_without_data(run, monkeypatch):
  workdir, cfg, state = run
  _no_data(monkeypatch)
  loaded = load_run(workdir)
  assert loaded.step == 4 and loaded.config == cfg
  x = np.random.default_rng(0).normal(size=(2, 32, 32, 3)).astype(np.float32)
  want, _ = predict_with_alpha(model_from_config(cfg), state, x)
  got = loaded.model.apply(loaded.variables, x, train=False)
  np.testing.assert_array_equal(np.asarray(got), np.asarray(want))


def test_load_run_picks_the_requested_step(run):
  workdir = run[0]
  loaded = load_run(workdir, step=2)
  assert loaded.step == 2
  saved = ocp.StandardCheckpointer().restore(os.path.join(workdir, "checkpoints", "2", "default"))
  chex.assert_trees_all_equal(loaded.variables["params"], saved["params"])
  last = load_run(workdir).variables["params"]
  assert not all(np.array_equal(a, b) for a, b in zip(jax.tree_util.tree_leaves(last),
                                                      jax.tree_util.tree_leaves(saved["params"])))


def test_load_run_errors(run, tmp_path):
  workdir = run[0]
  with pytest.raises(FileNotFoundError, match="run directory not found"):
    load_run(str(tmp_path / "nowhere"))
  with pytest.raises(FileNotFoundError, match="no checkpoint of step 3; available steps: 2, 4"):
    load_run(workdir, step=3)
  old = _copy(run, tmp_path)
  os.remove(os.path.join(old, RUN_RECORD))            # a run from before config.json
  with pytest.raises(FileNotFoundError, match=r"no config.json .*cfg="):
    load_run(old)
  assert load_run(old, cfg=_cfg()).step == 4
  bad = _cfg()
  bad.model.pooling = "max"
  with pytest.raises(IncompatibleRunError, match="model.pooling"):
    load_run(workdir, cfg=bad)
  shutil.rmtree(os.path.join(old, "checkpoints"))
  with pytest.raises(FileNotFoundError, match="has no checkpoint"):
    load_run(old, cfg=_cfg())


def test_resume_with_another_model_is_a_one_line_error(run, tmp_path, monkeypatch):
  workdir = _copy(run, tmp_path)
  _no_data(monkeypatch)            # raised before any data, model or checkpoint is touched
  cfg = _cfg()
  cfg.model.pooling, cfg.optim.learning_rate, cfg.total_steps = "max", 0.1, 6
  with pytest.raises(IncompatibleRunError) as e:
    train(cfg, workdir)
  msg = str(e.value)
  assert "\n" not in msg
  assert "model.pooling 'p' -> 'max'" in msg and "optim.learning_rate 0.05 -> 0.1" in msg
  assert "total_steps" not in msg.split("Use a new workdir")[0]   # allowed to change
  assert read_record(workdir)["config"]["model"]["pooling"] == "p"  # the record is kept


def test_resume_with_more_steps(run, tmp_path, monkeypatch):
  workdir = _copy(run, tmp_path)
  cfg = _cfg()
  cfg.total_steps, cfg.log_every, cfg.dataset.num_workers = 6, 3, 2
  logged = {"info": [], "warning": []}

  class Log:  # the loop's absl logging, recorded
    info = staticmethod(lambda msg, *a: logged["info"].append(msg % a))
    warning = staticmethod(lambda msg, *a: logged["warning"].append(msg % a))

  monkeypatch.setattr(loop, "logging", Log)
  state, _ = train(cfg, workdir)
  assert int(state.step) == 6 and load_run(workdir).step == 6
  # Resuming is news, not a problem; the start-up summary is logged once.
  assert f"resumed from step 4 in {workdir}" in logged["info"] and not logged["warning"]
  summaries = [m for m in logged["info"] if m.startswith(f"run {workdir}: resumes from step 4 of 6")]
  assert len(summaries) == 1 and "batch: global 8 = 8 devices x 1 per device" in summaries[0]
  with open(os.path.join(workdir, RUN_RECORD)) as f:    # the record follows the new settings
    assert json.load(f)["config"]["total_steps"] == 6


def test_old_runs_resume_as_before_and_are_recorded(run, tmp_path):
  workdir = _copy(run, tmp_path)
  os.remove(os.path.join(workdir, RUN_RECORD))         # a run from before config.json
  cfg = _cfg()
  cfg.model.pooling = "max"                            # unchecked, as before: nothing to compare
  record_run(workdir, cfg, inputs.class_names(cfg))
  assert read_record(workdir)["config"]["model"]["pooling"] == "max"
  with pytest.raises(IncompatibleRunError, match="model.pooling 'max' -> 'p'"):
    record_run(workdir, _cfg(), inputs.class_names(cfg))
  shutil.rmtree(os.path.join(workdir, "checkpoints"))  # nothing trained yet: a fresh start
  record_run(workdir, _cfg(), inputs.class_names(cfg))
  assert read_record(workdir)["config"]["model"]["pooling"] == "p"


def test_a_run_recorded_under_old_pooling_names_resumes_under_the_new_ones(tmp_path):
  """Issue #21 item 5: the renamed poolings are the same models (the names are not in the
  parameter tree), so a record with ``stride_in_conv``/``strided_conv`` (also as
  ``pool_options`` keys) is compatible with ``strided_c``/``all_c``; other changes are not."""
  old, new = _cfg(), _cfg()
  old.model.pooling, new.model.pooling = "p,stride_in_conv,strided_conv", "p,strided_c,all_c"
  old.model.pool_options.strided_conv = {"activation": False}
  new.model.pool_options.all_c = {"activation": False}
  stored = config_to_json(old)
  check_compatible(str(tmp_path), stored, new)
  check_compatible(str(tmp_path), stored, old)
  new.model.pooling = "p,strided_c,max"
  with pytest.raises(IncompatibleRunError, match="model.pooling 'p,strided_c,all_c' -> "
                                                 "'p,strided_c,max'"):
    check_compatible(str(tmp_path), stored, new)
