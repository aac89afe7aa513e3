"""Everything about a training config that is knowable before compiling, checked at once.

:func:`check_config` returns every problem it finds (an empty list: none): fields the config
lacks or does not know (a typo in a config file), values the builders reject (dataset, reader,
splits, model, pooling, dtype, optimizer, schedule, loss, parallel mode, preprocessing),
intervals that are not positive, missing dataset folders and files, a global batch that does
not divide into processes x devices, missing pretrained weights. :func:`require_valid` raises
one :class:`ConfigError` listing them all. ``train`` calls it before it records the run,
reads data or builds anything; the values are checked by the same functions that use them
later, so the two cannot disagree.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import ml_collections

from ppool_jax.data.pipeline import per_device_batch
from ppool_jax.train import config as config_lib

# Sub-trees whose keys are free-form (per-pooling options), not fields of base_config.
FREE_FORM = ("model.pool_options",)
_INTERVALS = ("log_every", "eval_every", "checkpoint_every", "keep_checkpoints")


class ConfigError(ValueError):
  """The config has problems; ``problems`` lists them, the message joins them on one line."""

  def __init__(self, problems: list[str]):
    self.problems = tuple(problems)
    head = "1 problem" if len(problems) == 1 else f"{len(problems)} problems"
    super().__init__(f"{head} found before training: " + " | ".join(problems))


def _fields(tree: dict, prefix: str = "") -> set[str]:
  out = set()
  for k, v in tree.items():
    name = f"{prefix}{k}"
    if isinstance(v, dict) and v and name not in FREE_FORM:
      out |= _fields(v, name + ".")
    else:
      out.add(name)
  return out


def field_problems(cfg: ml_collections.ConfigDict) -> list[str]:
  """Fields of ``cfg`` that :func:`~ppool_jax.train.config.base_config` lacks (typos) and
  fields of base_config that ``cfg`` lacks (a config not built on it)."""
  if not isinstance(cfg, ml_collections.ConfigDict):
    return [f"the config is a {type(cfg).__name__}, not an ml_collections.ConfigDict: a config "
            "file's get_config() returns ppool_jax.train.config.base_config() with changes."]
  have, want = _fields(cfg.to_dict()), _fields(config_lib.base_config().to_dict())
  problems = [f"unknown config field {f!r}" for f in sorted(have - want)]
  missing = sorted(want - have)
  if missing:
    shown = ", ".join(missing[:8]) + (f" and {len(missing) - 8} more" if len(missing) > 8 else "")
    problems.append(f"the config lacks {shown}: build it on "
                    "ppool_jax.train.config.base_config()")
  return problems


def missing_pretrained(path: str) -> str | None:
  """The error message when the converted weights folder ``path`` does not exist, else None."""
  if os.path.isdir(os.path.expanduser(path)):
    return None
  return (f"pretrained weights not found: {path}. Convert torchvision ImageNet weights with "
          f"`python -m ppool_jax.convert --arch <vgg16|resnet50> --input <file> --output {path}`, "
          "or pass --config.model.pretrained= to train from scratch.")


def _attempt(problems: list[str], check: Callable[[], object]) -> None:
  """Runs ``check``; a ValueError, OSError or ImportError becomes a problem."""
  try:
    check()
  except (ValueError, OSError, ImportError) as e:
    problems.append(" ".join(str(e).split()))


def _check_data(cfg, problems: list[str]) -> None:
  from ppool_jax.data import registry
  from ppool_jax.train import inputs
  d = cfg.dataset
  if d.name not in registry.names():
    problems.append(f"unknown dataset {d.name!r}; choose from {', '.join(registry.names())}.")
    return
  entry = registry.lookup(d.name)
  # Every dataset the same way: its description, then what is wrong before any data is read
  # (a folder dataset's files are listed, none is read: ``train`` checks the labels).
  _attempt(problems, lambda: problems.extend(entry.problems(d, entry.describe(d))))
  _attempt(problems, lambda: inputs.augment_config(cfg))
  _attempt(problems, lambda: inputs.order_seed(cfg))


def _check_model(cfg, problems: list[str]) -> None:
  from ppool_jax.models import NUM_POOLING_STAGES, stage_poolings
  from ppool_jax.train.runs import build_model
  m = cfg.model
  _attempt(problems, lambda: build_model(cfg, 2))  # model name, dtype
  if m.name in NUM_POOLING_STAGES:
    stages = len(m.blocks) if m.blocks else NUM_POOLING_STAGES[m.name]
    pooling = tuple(m.pooling.split(",")) if "," in m.pooling else m.pooling
    _attempt(problems, lambda: stage_poolings(pooling, stages, m.name))


def _check_training(cfg, problems: list[str]) -> None:
  from ppool_jax.train.optim import make_optimizer
  from ppool_jax.train.parallel import MODES
  from ppool_jax.train.steps import NORMALIZATIONS
  from ppool_jax.models.tta import check_tta
  from ppool_jax.train.config import eval_tta
  _attempt(problems, lambda: make_optimizer(cfg))  # optimizer, schedule, solver mapping
  _attempt(problems, lambda: check_tta(*eval_tta(cfg)))  # eval.scales, eval.flip
  if cfg.parallel not in MODES:
    problems.append(f"unknown parallel mode {cfg.parallel!r}; choose from {', '.join(MODES)}.")
  if cfg.loss.normalization not in NORMALIZATIONS:
    problems.append(f"unknown loss.normalization {cfg.loss.normalization!r}; choose from "
                    f"{', '.join(NORMALIZATIONS)}.")
  if cfg.total_steps < 0:
    problems.append(f"total_steps must be >= 0, got {cfg.total_steps}.")
  problems.extend(f"{k} must be >= 1, got {cfg[k]}." for k in _INTERVALS if cfg[k] < 1)
  if cfg.dataset.crop_size < 1:
    problems.append(f"dataset.crop_size must be >= 1, got {cfg.dataset.crop_size}.")


def check_config(cfg: ml_collections.ConfigDict, process_count: int = 1,
                 local_device_count: int = 1, resuming: bool = False) -> list[str]:
  """Every problem of ``cfg`` for a run on ``process_count`` processes with
  ``local_device_count`` devices each (module docstring); ``resuming``: the workdir has a
  checkpoint, so the pretrained weights are not read. Reads no data file, compiles nothing."""
  problems = field_problems(cfg)
  if problems:  # the checks below read the fields
    return problems
  _check_data(cfg, problems)
  _check_model(cfg, problems)
  _check_training(cfg, problems)
  _attempt(problems, lambda: per_device_batch(cfg.global_batch_size, process_count,
                                              local_device_count))
  if cfg.model.pretrained and not resuming:
    problems.extend(p for p in [missing_pretrained(cfg.model.pretrained)] if p)
  return problems


def require_valid(cfg: ml_collections.ConfigDict, process_count: int = 1,
                  local_device_count: int = 1, resuming: bool = False) -> None:
  """Raises :class:`ConfigError` listing every problem :func:`check_config` finds."""
  problems = check_config(cfg, process_count, local_device_count, resuming)
  if problems:
    raise ConfigError(problems)
