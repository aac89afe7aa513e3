"""Training on a ``folder`` dataset end to end, and the label-check command in a subprocess
(issue #24 items 2 and 5; the dataset and the check themselves: tests/unit/test_custom_data.py)."""

import json
import os
import subprocess
import sys

from folder_data import CLASSES, folder_cfg, make_folder, spoil_labels
from support import ROOT, TINY_CONFIG


def test_train_and_evaluate_on_a_folder_dataset(tmp_path):
  """A short end-to-end run: the class names reach the metrics and the run's config.json."""
  from ppool_jax.train import train
  make_folder(tmp_path / "data", splits=(("train", 8), ("val", 2)))
  cfg = folder_cfg(tmp_path / "data")
  cfg.total_steps, cfg.eval_every, cfg.checkpoint_every = 6, 6, 6
  cfg.dataset.crop_size, cfg.alpha_diagnostics = 16, False
  _, scores = train(cfg, str(tmp_path / "run"))
  assert {"iou/background", "iou/road", "iou/pole"} <= set(scores)
  assert 0.0 <= scores["miou"] <= 1.0
  with open(tmp_path / "run" / "config.json") as f:
    record = json.load(f)
  assert record["class_names"] == list(CLASSES) and record["num_classes"] == 3
  assert record["config"]["dataset"]["folder"]["classes"] == list(CLASSES)


def test_check_cli_lists_problems_and_exits_nonzero(tmp_path):
  make_folder(tmp_path)
  cmd = [sys.executable, "-m", "ppool_jax.data.check", "--config", TINY_CONFIG,
         "--config.dataset.name=folder",
         f"--config.dataset.root={tmp_path}", "--config.dataset.folder.img_suffix=.png",
         "--config.dataset.folder.classes=('background','road','pole')"]
  env = dict(os.environ, PYTHONPATH=ROOT)
  ok = subprocess.run(cmd, env=env, capture_output=True, text=True)
  assert ok.returncode == 0, ok.stderr
  assert "folder/train: 4 label files, OK" in ok.stdout and "pixels: background" in ok.stdout
  spoil_labels(str(tmp_path))
  bad = subprocess.run(cmd, env=env, capture_output=True, text=True)
  assert bad.returncode == 1 and "id 7 in 2 files" in bad.stdout and "colour (RGB)" in bad.stdout
  missing = subprocess.run(cmd[:-1] + [cmd[-1], "--config.dataset.root=/nonexistent"], env=env,
                           capture_output=True, text=True)
  assert missing.returncode == 2
  assert "ppool_jax.data.check: error: folder: dataset folder not found" in missing.stderr
