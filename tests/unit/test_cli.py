"""The CLIs' error reporting (ppool_jax.cli), the up-front config check (ppool_jax.train.preflight)
and the start-up summary (issue #24 items 4 and 6)."""

import os
import sys

import jax
import jax.numpy as jnp
import pytest
from absl import flags

import tiny_config
from ppool_jax import cli
from ppool_jax.configs import define_config_flag
from ppool_jax.train import train
from ppool_jax.train.preflight import ConfigError, check_config, require_valid
from ppool_jax.train.runs import build_model
from ppool_jax.train.summary import format_facts, parameter_counts, startup_facts


def test_error_message_is_one_clean_line():
  typo = AttributeError(KeyError("'poolng'\nDid you mean \"pooling\" instead of \"poolng\"?"))
  assert cli.message(typo) == "'poolng' Did you mean \"pooling\" instead of \"poolng\"?"
  assert cli.message(KeyError("k")) == "k"                    # str(KeyError) would be "'k'"
  assert cli.message(RuntimeError()) == "RuntimeError"
  assert cli.error_line("predict", ValueError("bad\n  input")) == (
      "ppool_jax.predict: error: bad input")


def test_verbose_is_read_from_argv_last_one_wins():
  assert cli.verbose_requested(["prog", "--verbose"])
  assert cli.verbose_requested(["prog", "--verbose=true", "--x"])
  assert not cli.verbose_requested(["prog", "--verbose", "--noverbose"])
  assert not cli.verbose_requested(["prog", "--verbose=false"])
  assert not cli.verbose_requested(["prog", "--verbosity=1"])


def test_config_override_typo_is_one_line_naming_the_flag(monkeypatch):
  argv = ["train", "--config", "synthetic_demo", "--config.model.poolng=max"]
  monkeypatch.setattr(sys, "argv", argv)  # ml_collections reads the overrides from sys.argv
  fv = flags.FlagValues()
  define_config_flag("config", flag_values=fv)
  with pytest.raises(flags.IllegalFlagValueError) as e:
    fv(argv)
  assert cli.message(e.value) == ("the config has no field 'poolng' (--config.model.poolng). "
                                  "Did you mean \"pooling\" instead of \"poolng\"?")


def _voc_cfg(root):
  cfg = tiny_config.get_config()
  cfg.dataset.name, cfg.dataset.root, cfg.dataset.train_split = "voc_aug", str(root), "train_aug"
  return cfg


def test_check_config_reports_every_problem_together(tmp_path, tiny_cfg):
  assert check_config(tiny_cfg, 1, 8) == []
  os.makedirs(tmp_path / "VOC2012" / "JPEGImages")        # no SBD
  cfg = _voc_cfg(tmp_path / "VOC2012")
  cfg.global_batch_size = 10
  cfg.model.pretrained = str(tmp_path / "weights")
  cfg.model.pooling = "p,max"
  cfg.optim.schedule = "cosine"
  cfg.eval_every = 0
  problems = check_config(cfg, process_count=1, local_device_count=8)
  assert len(problems) == 6, problems
  expected = ["SBD augmentation (SegmentationClassAug): directory not found",
              "pooling needs 3 entries", "unknown schedule 'cosine'",
              "eval_every must be >= 1, got 0",
              "global batch 10 must divide into 1 processes x 8 devices",
              "pretrained weights not found"]
  assert all(text in problem for text, problem in zip(expected, problems)), problems
  # A resumed run restores its weights from the checkpoint: the pretrained folder is not read.
  assert check_config(cfg, 1, 10, resuming=True) == problems[:4]


def test_check_config_names_unknown_and_missing_fields_and_every_dataset(tiny_cfg):
  cfg = tiny_cfg
  cfg.model.poolng = "max"                                 # a typo in a config file
  del cfg.distributed                                      # a config not built on base_config
  assert check_config(cfg) == [
      "unknown config field 'model.poolng'",
      "the config lacks distributed.coordinator_address, distributed.num_processes, "
      "distributed.process_id: build it on ppool_jax.train.config.base_config()"]
  cfg = tiny_config.get_config()
  cfg.model.pool_options = {"p": {"clip_max": 10.0}, "gated": {}}  # free-form: not fields
  cfg.dataset.name = "voc"
  assert check_config(cfg) == ["unknown dataset 'voc'; choose from ade20k, cityscapes, folder, "
                               "synthetic, synthetic_detail, voc_aug."]


def test_train_stops_before_writing_anything(tmp_path, tiny_cfg):
  cfg = tiny_cfg
  cfg.global_batch_size, cfg.model.pretrained = 7, str(tmp_path / "weights")
  with pytest.raises(ConfigError, match=r"^2 problems found before training: global batch 7 "
                     r"must divide into 1 processes x 8 devices\. \| pretrained weights not found"):
    train(cfg, str(tmp_path / "run"))
  assert not os.path.exists(tmp_path / "run")
  with pytest.raises(ConfigError, match="^1 problem found"):
    require_valid(cfg, 1, 7)


def test_startup_summary_counts(tiny_cfg):
  cfg = tiny_cfg                                 # vgg16_seg, blocks (4,), (8,), (8,), P-pooling
  model = build_model(cfg, 6)
  params = jax.eval_shape(lambda: model.init({"params": jax.random.PRNGKey(0),
                                              "dropout": jax.random.PRNGKey(1)},
                                             jnp.zeros((1, 32, 32, 3))))["params"]
  convs = (3 * 3 * 3 * 4 + 4) + (3 * 3 * 4 * 8 + 8) + (3 * 3 * 8 * 8 + 8)
  side = sum(x.size for k, tree in params["backbone"].items() if k.startswith("pool")
             for x in jax.tree_util.tree_leaves(tree))
  counts = parameter_counts(params)
  assert side > 0
  assert counts == {"total": convs + side + 8 * 6 + 6, "backbone": convs, "side_branches": side,
                    "heads": 8 * 6 + 6}
  cfg.eval_limit = 3
  facts = startup_facts(cfg, workdir="w", start_step=40, process_count=2, local_device_count=4,
                        device_kind="cpu", train_size=64, eval_size=4, params=params)
  assert (facts["devices"], facts["global_batch"], facts["per_device_batch"]) == (8, 8, 1)
  assert (facts["train_images"], facts["eval_images"], facts["epochs"]) == (64, 3, 15.0)
  text = format_facts(facts)
  assert "resumes from step 40 of 120" in text and "8 devices x 1 per device" in text
  assert f"side branches {side:,}" in text and "parallel pmap" in text
