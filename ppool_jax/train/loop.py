"""The training loop: data parallel (pmap or jit over a mesh), resume, periodic eval,
logging, checkpoints.

The host never waits for a step it dispatched except where it must read something: on
logging steps (metrics), checkpoint and evaluation steps, and a preemption stop. Batches are
prefetched to the devices (``cfg.prefetch``) and the non-finite guard runs on the device
(:mod:`ppool_jax.train.guard`); SIGTERM/SIGINT checkpoint and stop after the current step
(:mod:`ppool_jax.train.runtime`).
"""

from __future__ import annotations

import os
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging
from tqdm import tqdm

from ppool_jax import convert
from ppool_jax.data import eval_batches
from ppool_jax.metrics import segmentation_scores
from ppool_jax.train.checkpoints import Checkpoints
from ppool_jax.train.config import eval_tta
from ppool_jax.train.diagnostics import side_branch_drift, side_branch_params
from ppool_jax.train.guard import NonFiniteTrainingError, check_record, new_record  # noqa: F401
from ppool_jax.train.inputs import augment_config, dataset_info, num_classes, sources, train_loader
from ppool_jax.train.optim import make_optimizer
from ppool_jax.train.parallel import (  # noqa: F401  (unreplicate re-exported)
    make_runner, sum_over_processes, unreplicate)
from ppool_jax.train.preflight import ConfigError, field_problems, missing_pretrained, require_valid
from ppool_jax.train.runtime import (Preemption, Profiler, StepTimes, TrainingPreempted,
                                     prefetch)
from ppool_jax.train.runs import (  # noqa: F401  (DTYPES re-exported)
    DTYPES, build_model, checkpoint_steps, record_run)
from ppool_jax.train.steps import AXIS, TrainState
from ppool_jax.train.summary import format_facts, startup_facts
from ppool_jax.train.writers import MetricWriter


def maybe_initialize_distributed(cfg: ml_collections.ConfigDict) -> None:
  """``jax.distributed.initialize`` for multi-host runs (a coordinator address is set)."""
  d = cfg.distributed
  if d.coordinator_address and not jax.distributed.is_initialized():
    jax.distributed.initialize(coordinator_address=d.coordinator_address,
                               num_processes=d.num_processes, process_id=d.process_id)


def model_from_config(cfg: ml_collections.ConfigDict, classes: int | None = None):
  """The training model of ``cfg`` (BatchNorm synchronised over the pmap axis under pmap;
  under jit over a mesh the statistics are the global batch's already); ``classes``: the
  dataset's number of classes where the caller has it (default: from the config)."""
  return build_model(cfg, num_classes(cfg) if classes is None else classes,
                     bn_axis_name=AXIS if cfg.get("parallel", "pmap") == "pmap" else None)


def init_state(cfg, model, tx, image_shape, load_pretrained: bool = True) -> TrainState:
  """The step-0 state: initialised variables, with ``cfg.model.pretrained``'s weights merged
  in when set and ``load_pretrained`` (a resumed run restores them from its checkpoint)."""
  rng = jax.random.PRNGKey(cfg.seed)
  init_rng, dropout_rng, train_rng = jax.random.split(rng, 3)
  x = jnp.zeros((1,) + tuple(image_shape), jnp.float32)
  variables = jax.jit(lambda: model.init({"params": init_rng, "dropout": dropout_rng}, x))()
  variables = {k: v for k, v in variables.items() if k != "intermediates"}
  if cfg.model.pretrained and load_pretrained:
    missing = missing_pretrained(cfg.model.pretrained)
    if missing:
      raise FileNotFoundError(missing)
    variables = convert.merge_pretrained(
        variables, convert.restore(os.path.expanduser(cfg.model.pretrained)), cfg.model.name)
  params = variables.pop("params")
  return TrainState(step=jnp.zeros((), jnp.int32), params=params, model_state=variables,
                    opt_state=tx.init(params), rng=train_rng,
                    nonfinite=jnp.zeros((), jnp.int32))


def _initial_side_branch(workdir: str, state: TrainState, start: int) -> dict:
  """The side branches' parameters at step 0 (``side_branch_init.npz`` in the workdir, written
  by a fresh run and read back on resume), against which their drift is logged."""
  path = os.path.join(workdir, "side_branch_init.npz")
  if start and os.path.exists(path):  # a fresh start writes it anew
    with np.load(path) as f:
      return dict(f)
  if start:
    return {}  # a run from before this file existed: no drift (the initial values are gone)
  init = {k: np.asarray(v) for k, v in jax.device_get(side_branch_params(state.params)).items()}
  if jax.process_index() == 0:
    if init:
      os.makedirs(workdir, exist_ok=True)
      np.savez(path, **init)
    elif os.path.exists(path):
      os.remove(path)  # left by an earlier start of this workdir with another model
  return init


def predict_with_alpha(model, state: TrainState, images) -> tuple[jax.Array, dict]:
  """Eval-mode logits and the alpha map every P-pooling layer of the backbone sowed
  (``{layer name: (B, h, w, C)}``; empty for models without P-pooling)."""
  logits, inter = model.apply({"params": state.params, **state.model_state}, images,
                              train=False, mutable=["intermediates"])
  sown = inter.get("intermediates", {}).get("backbone", {})
  return logits, {k: np.asarray(v["alpha"][0]) for k, v in sorted(sown.items()) if "alpha" in v}


def local_evaluation_counts(runner, rstate, eval_source, cfg, num_devices: int,
                            process_index: int = 0, process_count: int = 1, *,
                            aug=None) -> dict:
  """The summed metric counts of process ``process_index``'s share of ``eval_source``
  (:func:`~ppool_jax.data.eval_batches`; ``cfg.eval_limit`` images in all, one image per
  device and batch), computed on this process's devices. Padding carries a validity mask, so
  the counts do not depend on how images of different sizes were batched, nor on the number
  of devices, for given predictions (a model's predictions near the border may still see the
  padding through its receptive field). An empty share gives zero counts. ``aug``: the run's
  :func:`~ppool_jax.train.inputs.augment_config` (default: from ``cfg``)."""
  limit = None if cfg.eval_limit < 0 else cfg.eval_limit
  aug = aug or augment_config(cfg)
  totals = None
  for batch in eval_batches(eval_source, num_devices, aug, multiple=1, limit=limit,
                            process_index=process_index, process_count=process_count):
    counts = runner.eval_counts(rstate, batch)
    totals = counts if totals is None else jax.tree_util.tree_map(np.add, totals, counts)
  if totals is None:  # fewer images than processes: zeros, from a batch with nothing valid
    shape = (num_devices,) + aug.crop_size
    totals = runner.eval_counts(rstate, {"image": np.zeros(shape + (3,), np.float32),
                                         "label": np.full(shape, aug.ignore_label, np.int32),
                                         "valid": np.zeros(shape, bool)})
  return totals


def evaluation_counts(runner, rstate, eval_source, cfg, num_devices: int, *,
                      aug=None) -> dict:
  """The summed metric counts of ``eval_source``: each process evaluates its own share
  (:func:`local_evaluation_counts`, ``num_devices`` local devices) and the shares' counts
  are added once (:func:`~ppool_jax.train.parallel.sum_over_processes`), so every image is
  evaluated once, on one process. Every process must call it (at the same step)."""
  return sum_over_processes(local_evaluation_counts(
      runner, rstate, eval_source, cfg, num_devices, jax.process_index(), jax.process_count(),
      aug=aug))


def evaluate(runner, rstate, eval_source, cfg, num_devices: int, *, aug=None,
             info=None) -> dict:
  """Scores of :func:`evaluation_counts`; ``info``: the dataset's
  :func:`~ppool_jax.train.inputs.dataset_info` (default: from ``cfg``)."""
  info = info or dataset_info(cfg)
  return segmentation_scores(evaluation_counts(runner, rstate, eval_source, cfg, num_devices,
                                               aug=aug),
                             class_names=info.class_names, detail_classes=info.detail_classes)


def train(cfg: ml_collections.ConfigDict, workdir: str) -> tuple[TrainState, dict]:
  """Trains (or resumes) a run in ``workdir``; returns the final state and eval scores.

  Before anything is recorded, read or built, every problem of the config knowable up front
  is raised together (:class:`~ppool_jax.train.preflight.ConfigError`), then a workdir
  trained with an incompatible config stops (:class:`IncompatibleRunError`)."""
  problems = field_problems(cfg)  # the distributed set-up reads cfg.distributed
  if problems:
    raise ConfigError(problems)
  maybe_initialize_distributed(cfg)
  process, nproc = jax.process_index(), jax.process_count()
  num_devices = jax.local_device_count()
  resuming = bool(checkpoint_steps(workdir))
  require_valid(cfg, nproc, num_devices, resuming)
  # The dataset's description and the augmentation, once: everything below takes them.
  info, aug = dataset_info(cfg), augment_config(cfg)
  record_run(workdir, cfg, info.class_names)
  train_source, eval_source = sources(cfg, info=info)
  loader = train_loader(cfg, train_source, aug=aug, process_index=process, process_count=nproc)
  model = model_from_config(cfg, info.num_classes)
  tx = make_optimizer(cfg)
  ckpts = Checkpoints(workdir, cfg.keep_checkpoints)
  start = ckpts.latest_step() or 0
  state = init_state(cfg, model, tx, aug.crop_size + (3,), load_pretrained=not start)
  if start:
    state = ckpts.restore(start, jax.device_get(state))
    logging.info("resumed from step %d in %s", start, workdir)
  if process == 0:
    logging.info("%s", format_facts(startup_facts(
        cfg, workdir=workdir, start_step=start, process_count=nproc,
        local_device_count=num_devices, device_kind=jax.local_devices()[0].device_kind,
        train_size=len(train_source), eval_size=len(eval_source), params=state.params)))
  runner = make_runner(cfg.get("parallel", "pmap"), model, tx, info.num_classes,
                       cfg.loss.normalization, info.boundary_protocol,
                       diagnostics=cfg.get("alpha_diagnostics", True), eval_tta=eval_tta(cfg))
  rstate = runner.place(state)
  record = runner.place(new_record(cfg.max_consecutive_nonfinite))
  writer = MetricWriter(workdir, enabled=process == 0)
  drift_from = _initial_side_branch(workdir, state, start) if cfg.get(
      "alpha_diagnostics", True) else {}
  bar = tqdm(total=cfg.total_steps, initial=start, disable=process != 0 or not cfg.progress_bar,
             desc="train", unit="step", dynamic_ncols=True)
  # Host batches from grain's threads (the loader), placed on the devices ahead of the step.
  host_batches = loader.iterate(start, cfg.total_steps)
  batches = prefetch(host_batches, runner.put, cfg.get("prefetch", 2))
  times, profiler = StepTimes(), Profiler(cfg.get("profile_steps", ""), workdir)
  scores: dict = {}
  reported, logged = 0, start
  t0, s0 = time.perf_counter(), start
  try:
    with Preemption() as preemption:
      for step in range(start, cfg.total_steps):
        done = step + 1
        profiler.before(done)
        batch = times.timed("data", next, batches)
        # Dispatched, not waited for: the host moves on to the next batch.
        rstate, record, metrics = times.timed("step", runner.train_step, rstate, record, batch)
        profiler.after(done, lambda: jax.block_until_ready(rstate))
        bar.update(1)
        # Step 1 too: its forward pass (loss, alpha statistics) is the initial state's.
        log = done % cfg.log_every == 0 or done == cfg.total_steps or done == 1
        save = done % cfg.checkpoint_every == 0 or done == cfg.total_steps
        evaluate_now = done % cfg.eval_every == 0 or done == cfg.total_steps
        stop = preemption.stop_now(sync=log)
        if log or save or evaluate_now or stop:  # the host waits here only
          reported = check_record(times.timed("step", runner.to_host, record), reported, workdir,
                                  ckpts.latest_step())
        if log:
          host = times.timed("step", runner.to_host, metrics)
          rate = (done - s0) / (time.perf_counter() - t0)
          bar.set_postfix(loss=f"{host['loss']:.4f}")
          drift = side_branch_drift(runner.to_host(side_branch_params(rstate.params)),
                                    drift_from) if drift_from else {}
          writer.write(done, "train", {
              "loss": host["loss"], "grad_norm": host["grad_norm"], "steps_per_second": rate,
              "skipped_updates": reported,
              **{k: v for k, v in host.items() if k.startswith("alpha/")}, **drift,
              **times.interval(done - logged)})
          logged = done
        if (save or stop) and ckpts.latest_step() != done:
          ckpts.save(done, runner.to_host(rstate))
        if stop:
          raise TrainingPreempted(done, workdir, preemption.signame)
        if evaluate_now:
          scores = evaluate(runner, rstate, eval_source, cfg, num_devices, aug=aug, info=info)
          writer.write(done, "eval", scores)
          if process == 0:
            bar.write(f"step {done}: " + ", ".join(
                f"{k}={v:.4f}" for k, v in scores.items()
                if np.ndim(v) == 0 and not k.startswith("iou/")))
  finally:
    host_batches.close()
    profiler.stop()
    bar.close()
    ckpts.close()
    writer.close()
  return runner.to_host(rstate), scores
