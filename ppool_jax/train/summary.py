"""The start-up summary ``train`` logs once (process 0, info level) before the first step."""

from __future__ import annotations

import ml_collections

from ppool_jax.data.pipeline import per_device_batch
from ppool_jax.models import count_params
from ppool_jax.train.diagnostics import side_branch_params


def parameter_counts(params) -> dict[str, int]:
  """Parameter counts: ``total``; ``backbone`` (the ``backbone`` sub-tree without the side
  branches); ``side_branches`` (the P-pooling side branches, trained at the side-branch
  learning rate); ``heads`` (everything else: classifier, ASPP, fc6/fc7)."""
  total = count_params(params)
  side = count_params(side_branch_params(params))
  backbone = count_params(params.get("backbone", {})) - side
  return {"total": total, "backbone": backbone, "side_branches": side,
          "heads": total - backbone - side}


def startup_facts(cfg: ml_collections.ConfigDict, *, workdir: str, start_step: int,
                  process_count: int, local_device_count: int, device_kind: str,
                  train_size: int, eval_size: int, params) -> dict:
  """What a run is about to do, as ``{name: value}`` (see :func:`format_facts`)."""
  devices = process_count * local_device_count
  eval_size = eval_size if cfg.eval_limit < 0 else min(eval_size, cfg.eval_limit)
  return {
      "workdir": workdir, "start_step": start_step, "total_steps": cfg.total_steps,
      "processes": process_count, "local_devices": local_device_count, "devices": devices,
      "device_kind": device_kind, "parallel": cfg.parallel, "dataset": cfg.dataset.name,
      "train_images": train_size, "eval_images": eval_size,
      "global_batch": cfg.global_batch_size,
      "per_device_batch": per_device_batch(cfg.global_batch_size, process_count,
                                           local_device_count),
      "model": cfg.model.name, "pooling": cfg.model.pooling, "dtype": cfg.model.dtype,
      "parameters": parameter_counts(params),
      "epochs": cfg.total_steps * cfg.global_batch_size / max(train_size, 1),
  }


def format_facts(f: dict) -> str:
  """The facts as a few human-readable lines."""
  p = f["parameters"]
  start = (f"resumes from step {f['start_step']}" if f["start_step"] else "starts at step 0")
  return "\n".join([
      f"run {f['workdir']}: {start} of {f['total_steps']:,} ({f['epochs']:.1f} epochs)",
      f"devices: {f['devices']} x {f['device_kind']} ({f['processes']} process(es) x "
      f"{f['local_devices']} local), parallel {f['parallel']}",
      f"data: {f['dataset']}, {f['train_images']:,} training images, {f['eval_images']:,} "
      "evaluation images",
      f"batch: global {f['global_batch']} = {f['devices']} devices x {f['per_device_batch']} "
      "per device",
      f"model: {f['model']}, pooling {f['pooling']}, {f['dtype']}: {p['total']:,} parameters "
      f"(backbone {p['backbone']:,}, P-pooling side branches {p['side_branches']:,}, heads "
      f"{p['heads']:,})",
  ])
