"""Metric writers: TensorBoard event files and a CSV in the workdir (process 0 only)."""

from __future__ import annotations

import csv
import os

import numpy as np


class MetricWriter:

  def __init__(self, workdir: str, enabled: bool = True):
    self.enabled = enabled
    if not enabled:
      return
    from tensorboardX import SummaryWriter
    os.makedirs(workdir, exist_ok=True)
    self.tb = SummaryWriter(os.path.join(workdir, "tensorboard"))
    self.csv_path = os.path.join(workdir, "metrics.csv")

  def write(self, step: int, split: str, metrics: dict) -> None:
    if not self.enabled:
      return
    scalars = {k: float(v) for k, v in metrics.items() if np.ndim(v) == 0}
    for k, v in scalars.items():
      if np.isfinite(v):  # NaN scores (e.g. no predicted boundary) go to the CSV only
        self.tb.add_scalar(f"{split}/{k}", v, step)
    self.tb.flush()
    new = not os.path.exists(self.csv_path)
    with open(self.csv_path, "a", newline="") as f:
      w = csv.writer(f)
      if new:
        w.writerow(["step", "split", "metric", "value"])
      for k, v in scalars.items():
        w.writerow([step, split, k, v])

  def close(self):
    if self.enabled:
      self.tb.close()
