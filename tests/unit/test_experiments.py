"""The experiments (experiments/: the shared runner and report pieces, and the fine-tuning
experiment of issue #19, experiments/run_finetune_table.py) without training: the recipe against
the paper's numbers, the paired intervals against scipy-free arithmetic, the result cache,
diverged runs, the reports written (their analysis kept) and the modules' imports. The runs of a
few steps: tests/integration/test_experiment_runs.py."""

import glob
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from experiments import pretrain, report, runner
from experiments.configs import finetune_detail
from ppool_jax.train.optim import effective_solver
from support import ROOT


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
  p = report.paired(rows, ref, "miou")
  d = np.array([0.52 - 0.50, 0.49 - 0.48, 0.55 - 0.50, 0.51 - 0.50])  # seeds 1-4 only
  half = 3.182446305284263 * d.std(ddof=1) / 2  # t(0.975, 3)
  assert p["n"] == 4 and p["ahead"] == 4
  np.testing.assert_allclose([p["mean"], p["lo"], p["hi"]],
                             [d.mean(), d.mean() - half, d.mean() + half])
  assert report.summary([1.0, float("nan"), 3.0]) == (2.0, pytest.approx(np.sqrt(2)), 2)


# -- the shared runner and report pieces (no training) ----------------------------------------


def _tiny():
  import tiny_config
  cfg = tiny_config.get_config()
  cfg.seed = 3
  return cfg


def _no_training(monkeypatch, error=None):
  """``ppool_jax.train.train`` raising ``error`` (default: fails the test); returns the calls."""
  import ppool_jax.train
  calls = []

  def train(cfg, workdir):
    calls.append(workdir)
    raise error or AssertionError(f"trained {workdir}: the cached result was not used")
  monkeypatch.setattr(ppool_jax.train, "train", train)
  return calls


def test_a_finished_run_is_loaded_not_trained(tmp_path, monkeypatch):
  calls = _no_training(monkeypatch)
  cfg, runs = _tiny(), str(tmp_path)
  folder = os.path.join(runs, "P_bias_5_seed3")  # runs/<slug>_seed<seed>
  assert runner.workdir("P (bias 5)", cfg, runs) == folder
  os.makedirs(folder)
  with open(os.path.join(folder, "result.json"), "w") as f:
    json.dump({"miou": 0.25, "seed": 3, "diverged": None}, f)
  row = runner.run("P (bias 5)", cfg, runs)
  assert row == {"miou": 0.25, "seed": 3, "diverged": None, "workdir": folder} and not calls
  assert runner.cached("P (bias 5)", cfg, runs) == row
  # A folder without result.json is an unfinished run: it is trained (resumed).
  with pytest.raises(AssertionError, match="trained"):
    runner.run("max", cfg, runs)
  assert calls == [os.path.join(runs, "max_seed3")] and runner.cached("max", cfg, runs) is None
  # tag: the folder stem as given (run_synthetic_table's folder names keep "-").
  assert runner.workdir("Strided-C", cfg, runs, tag="Strided-C").endswith("Strided-C_seed3")


def test_a_diverged_run_is_reported_as_diverged(tmp_path, monkeypatch):
  from ppool_jax.train import NonFiniteTrainingError
  calls = _no_training(monkeypatch, NonFiniteTrainingError("non-finite loss at step 7"))
  cfg, runs = _tiny(), str(tmp_path)
  row = runner.run("P (bias 20)", cfg, runs)
  assert row["diverged"] == "non-finite loss at step 7" and "miou" not in row
  assert (row["seed"], row["pooling"], row["steps"]) == (3, "p", cfg.total_steps)
  assert "alpha_change" not in row and len(calls) == 1
  assert runner.run("P (bias 20)", cfg, runs) == row and len(calls) == 1  # cached as diverged
  ok = {"seed": 4, "miou": 0.5, "diverged": None}
  table = report.score_table({"P (bias 20)": [row, ok]}, (("miou", "mIoU"),))
  assert table[2] == "| P (bias 20) (1 diverged) | 1 | 50.0 ± 0.0 |"
  assert report.score_table({"P": [row]}, (("miou", "mIoU"),))[2] == "| P (1 diverged) | 0 | – |"


def test_fmt_is_mean_and_sample_std_in_percent():
  assert report.fmt([0.1, 0.2, 0.3]) == "20.0 ± 10.0"            # std with ddof=1
  assert report.fmt([0.30, 0.36]) == f"33.0 ± {100 * np.std([0.30, 0.36], ddof=1):.1f}"
  assert report.fmt([0.1, float("nan"), 0.3]) == "20.0 ± 14.1"  # NaN (diverged) left out
  assert report.fmt([0.5]) == "50.0 ± 0.0" and report.fmt([float("nan")]) == "–"
  assert report.fmt([2.0, 4.0], scale=1) == "3.0 ± 1.4"


def test_the_analysis_section_survives_regeneration(tmp_path):
  out = str(tmp_path / "r.md")
  report.write(out, ["# first", "", "| t |", ""])
  assert open(out).read() == "# first\n\n| t |\n\n" + report.ANALYSIS_PLACEHOLDER
  analysis = "## Analysis\n\nWritten by hand: **keep** me.\n\n### Details\n\n- one\n"
  with open(out, "w") as f:
    f.write("# first\n\nold tables\n\n" + analysis)
  report.write(out, ["# second", "", "| new |"])
  assert open(out).read() == "# second\n\n| new |\n\n" + analysis
  report.write(out, ["# third"])
  assert open(out).read() == "# third\n\n" + analysis


def test_command_and_out_flag():
  assert report.command("run_x", ["--a 1", "", "--b "]) == "python -m experiments.run_x --a 1 --b"
  assert report.out_flag(os.path.join(report.RESULTS, "x.md"), "x.md") == ""
  assert report.out_flag(os.path.join(report.RESULTS, "y.md"), "x.md") == (
      "--out experiments/results/y.md")
  assert report.out_flag("/tmp/z.md", "x.md") == "--out /tmp/z.md"


def test_eval_images_are_the_normalised_eval_set():
  from ppool_jax.data import normalize
  from ppool_jax.train.inputs import augment_config, eval_images, sources
  cfg = _tiny()
  _, ev = sources(cfg)
  x = eval_images(cfg, 3)
  want = np.stack([normalize(ev[i]["image"], augment_config(cfg)) for i in range(3)])
  np.testing.assert_array_equal(x, want)
  assert x.dtype == np.float32 and len(eval_images(cfg, 100)) == len(ev) == 4


def _old_synthetic_result(runs, name, pooling, seed, score, alpha=None):
  """A result.json as run_synthetic_table.py wrote it before it used the runner."""
  folder = os.path.join(runs, f"{name}_seed{seed}")
  os.makedirs(folder)
  result = {"miou": score, "boundary_f": score / 2, "boundary_band_miou": score / 4,
            "name": name, "pooling": pooling, "seed": seed, "steps": 4}
  if alpha:
    result["alpha"] = alpha
  with open(os.path.join(folder, "result.json"), "w") as f:
    json.dump(result, f, indent=1)


def test_synthetic_table_reuses_the_old_result_json(tmp_path, monkeypatch):
  """Run folders written by the earlier run_synthetic_table.py (``<name>_seed<seed>``, its own
  result.json layout) are cached runs: the documented command rebuilds the report from them."""
  from experiments import run_synthetic_table as syn
  calls = _no_training(monkeypatch)
  runs = str(tmp_path / "runs")
  for seed in (0, 1):
    alpha = {f"pool{i}": {"mean": 19.0 + i / 10 - seed, "std": 3.5 + i} for i in range(1, 5)}
    for k, (name, pooling) in enumerate(syn.METHODS.items()):
      _old_synthetic_result(runs, name, pooling, seed, 0.3 + 0.01 * k + 0.02 * seed,
                            alpha if pooling == "p" else None)
    for stage in range(1, 5):
      _old_synthetic_result(runs, f"p_stage{stage}", "p,max,max,max", seed,
                            0.4 + 0.01 * stage + 0.02 * seed)
  out = str(tmp_path / "synthetic.md")
  syn.main(["--steps", "4", "--seeds", "0", "1", "--runs", runs, "--out", out])
  assert not calls
  text = open(out).read()
  assert f"`python -m experiments.run_synthetic_table --steps 4 --seeds 0 1 --runs {runs} " \
         f"--out {out}`" in text
  assert "| Strided-C | 33.0 ± 1.4 | 16.5 ± 0.7 | 8.2 ± 0.4 | 50.9 / 56.1 / 23.9 |" in text
  assert "| pool3 only | 44.0 ± 1.4 |" in text and "| all P | 38.0 ± 1.4 |" in text
  assert "| pool2 | 19.20 ± 5.50 | 18.20 ± 5.50 |" in text  # seed 0, seed 1
  assert text.endswith(report.ANALYSIS_PLACEHOLDER)
  assert os.path.exists(out.replace(".md", ".png")) and os.path.exists(
      out.replace(".md", "_curves.png"))
  # The runner's layout gives the same alpha table (the trained state's mean and std).
  new = {"alpha_change": {"pool2": {"mean_end": 19.2, "std_end": 5.5, "mean_start": 20.0}}}
  assert syn.final_alpha(new) == {"pool2": (19.2, 5.5)} and syn.final_alpha({}) is None


def test_experiment_modules_import_alone_without_path_edits():
  """Every experiments module imports first in a fresh set of experiments modules (no import
  cycle), and none edits sys.path: configs are modules of experiments.configs."""
  names = sorted(os.path.relpath(p, ROOT)[:-3].replace(os.sep, ".") for p in
                 glob.glob(os.path.join(ROOT, "experiments", "**", "*.py"), recursive=True)
                 if os.sep + "bench" + os.sep not in p)
  for path in names:
    with open(os.path.join(ROOT, path.replace(".", os.sep) + ".py")) as f:
      assert "sys.path" not in f.read(), path
  code = ("import importlib, sys\n"
          f"for name in {names!r}:\n"
          "  for m in [m for m in sys.modules if m.split('.')[0] == 'experiments']:\n"
          "    del sys.modules[m]\n"
          "  importlib.import_module(name.removesuffix('.__init__'))\n"
          f"print('ok', {len(names)})\n")
  env = dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS="cpu")
  r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                     text=True, timeout=600)
  assert r.returncode == 0 and f"ok {len(names)}" in r.stdout, r.stderr[-3000:]
  assert {"experiments.run_synthetic_table", "experiments.configs.finetune_detail"} <= set(names)


def test_experiment_modules_import_no_cycle():
  """The experiments modules' imports (also those inside functions) form no cycle."""
  import ast
  graph = {}
  for path in glob.glob(os.path.join(ROOT, "experiments", "**", "*.py"), recursive=True):
    name = os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".").removesuffix(".__init__")
    deps = set()
    for node in ast.walk(ast.parse(open(path).read())):
      if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
        deps |= {f"{node.module}.{a.name}" for a in node.names} | {node.module}
      elif isinstance(node, ast.Import):
        deps |= {a.name for a in node.names}
    graph[name] = deps
  graph = {m: {d for d in deps if d in graph and d != m and not m.startswith(d + ".")}
           for m, deps in graph.items()}

  def visit(m, stack):
    assert m not in stack, f"import cycle: {' -> '.join(stack + [m])}"
    for d in graph[m]:
      visit(d, stack + [m])
  for m in graph:
    visit(m, [])
  assert "experiments.report" in graph["experiments.finetune_report"]
