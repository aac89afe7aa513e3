"""A run's record (``<workdir>/config.json``), the resume check, and loading a trained run.

Every run writes its resolved config to ``config.json`` with the package version, the git
commit and the dataset's class names. Resuming compares the stored config with the new one:
only the fields of :data:`RESUME_COMPATIBLE` may differ (they change neither the parameter
tree nor what the run trains); any other difference is an :class:`IncompatibleRunError`
raised before anything is restored. :func:`load_run` rebuilds the model from the record and
restores a checkpoint's parameters and model state (no optimizer state, no data).

This module imports neither the data pipeline nor the training loop.
"""

from __future__ import annotations

import json
import os
import subprocess
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

RUN_RECORD = "config.json"
RECORD_FORMAT = 1

# The fields that may change when a run is resumed (a name covers its sub-fields). Every
# other field (model.*, optim.*, loss.*, dataset name/crop/augmentation/splits, seed,
# global_batch_size, ...) defines the parameter tree or the run's meaning.
RESUME_COMPATIBLE = (
    "total_steps",               # train on (or stop earlier)
    "log_every", "eval_every", "eval_limit", "checkpoint_every", "keep_checkpoints",
    "max_consecutive_nonfinite", "progress_bar", "alpha_diagnostics",
    "eval",                      # test-time augmentation: evaluation only
    "prefetch", "profile_steps",  # where batches wait, what is traced: not what is computed
    "parallel",                  # pmap and mesh checkpoints are interchangeable (tested)
    "dataset.num_workers", "dataset.check_labels",
    "dataset.root", "dataset.data_dir", "dataset.reader",  # where the same data lives
    "model.pretrained",          # a path, read only at step 0
    "distributed",               # hosts and addresses
)

# Mixed precision (``model.dtype``): activations and convolutions in bfloat16; parameters,
# optimizer state, BatchNorm statistics, P-pooling (internally) and the loss stay float32.
DTYPES = {"float32": None, "bfloat16": jnp.bfloat16}
_BN_MODELS = ("resnet50_seg", "deeplabv3")


class IncompatibleRunError(ValueError):
  """The workdir's recorded config differs from the new one in a field that may not change."""


class LoadedRun(NamedTuple):
  model: Any            # the Flax module, built from the run's config
  variables: dict       # {"params": ..., **model_state} for ``model.apply(variables, x, train=False)``
  config: ml_collections.ConfigDict
  step: int             # the restored checkpoint's step


# -- config <-> JSON --------------------------------------------------------------------------

def _json_default(x):
  return x.tolist() if isinstance(x, (np.ndarray, np.generic)) else repr(x)


def config_to_json(cfg: ml_collections.ConfigDict) -> dict:
  """The config as plain JSON values (tuples become lists; NumPy values lists or numbers;
  anything else JSON cannot hold, its ``repr``)."""
  return json.loads(json.dumps(cfg.to_dict(), default=_json_default))


def _tuples(x):
  if isinstance(x, dict):
    return {k: _tuples(v) for k, v in x.items()}
  if isinstance(x, list):
    return tuple(_tuples(v) for v in x)
  return x


def config_from_json(d: dict) -> ml_collections.ConfigDict:
  """The inverse of :func:`config_to_json`: lists become tuples (every sequence a config
  holds is a tuple), nested dicts ConfigDicts."""
  return ml_collections.ConfigDict(_tuples(d))


def _flatten(d: dict, prefix: str = "") -> dict:
  out = {}
  for k, v in d.items():
    if isinstance(v, dict) and v:
      out.update(_flatten(v, f"{prefix}{k}."))
    else:
      out[f"{prefix}{k}"] = v
  return out


_MISSING = "<missing>"


def config_differences(old: dict, new: dict) -> dict[str, tuple[Any, Any]]:
  """``{dotted field: (old, new)}`` for every field of two JSON configs that differs."""
  a, b = _flatten(old), _flatten(new)
  return {k: (a.get(k, _MISSING), b.get(k, _MISSING)) for k in sorted(set(a) | set(b))
          if a.get(k, _MISSING) != b.get(k, _MISSING)}


def _compatible(field: str) -> bool:
  return any(field == f or field.startswith(f + ".") for f in RESUME_COMPATIBLE)


def _added_at_default(field: str, old, new) -> bool:
  """A field the record lacks (added to the config since the run started) whose new value
  is its ``base_config`` default, which keeps the behaviour the run had."""
  from ppool_jax.train.config import base_config
  return old == _MISSING and _flatten(config_to_json(base_config())).get(field, _MISSING) == new


def _canonical_pooling_names(config: dict) -> dict:
  """A JSON config with deprecated pooling names (``model.pooling``, ``model.pool_options``
  keys) replaced by their canonical ones, so that a run recorded under an old name resumes
  under the new one (the names are not in the parameter tree)."""
  from ppool_jax.nn import canonical_pool_options, canonical_pooling_spec
  model = config.get("model")
  if not isinstance(model, dict):
    return config
  model = dict(model)
  if isinstance(model.get("pooling"), str):
    model["pooling"] = canonical_pooling_spec(model["pooling"], warn=False)
  if isinstance(model.get("pool_options"), dict):
    model["pool_options"] = canonical_pool_options(model["pool_options"], warn=False)
  return {**config, "model": model}


def check_compatible(workdir: str, stored: dict, cfg: ml_collections.ConfigDict) -> None:
  """Raises :class:`IncompatibleRunError` (one line) when ``cfg`` differs from the stored
  JSON config in a field outside :data:`RESUME_COMPATIBLE` (fields added since the run
  started are compatible at their default; a deprecated pooling name equals its new one)."""
  old, new = _canonical_pooling_names(stored), _canonical_pooling_names(config_to_json(cfg))
  bad = {k: (o, n) for k, (o, n) in config_differences(old, new).items()
         if not _compatible(k) and not _added_at_default(k, o, n)}
  if bad:
    show = lambda v: v if v == _MISSING else repr(_tuples(v))
    diffs = "; ".join(f"{k} {show(o)} -> {show(n)}" for k, (o, n) in bad.items())
    raise IncompatibleRunError(
        f"cannot resume {workdir} with a different config: {diffs}. Use a new workdir; only "
        f"these fields may change on resume: {', '.join(RESUME_COMPATIBLE)}.")


# -- the run record ---------------------------------------------------------------------------

def git_commit() -> tuple[str | None, bool | None]:
  """(commit, dirty) of the git checkout this package is imported from; (None, None) when it
  is not in one (an installed package) or git is unavailable."""
  pkg = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))  # .../ppool_jax
  try:
    git = lambda *a: subprocess.run(["git", "-C", pkg, *a], capture_output=True, text=True,
                                    timeout=10, check=True).stdout.strip()
    top = git("rev-parse", "--show-toplevel")
    if os.path.realpath(os.path.join(top, "ppool_jax")) != pkg:
      return None, None   # a checkout of something else around an installed package
    return git("rev-parse", "HEAD"), bool(git("status", "--porcelain", "--untracked-files=no"))
  except Exception:  # noqa: BLE001  (no git, not a checkout, timeout: never fail a run)
    return None, None


def read_record(workdir: str) -> dict | None:
  """The workdir's ``config.json`` record, or None when it has none (runs from before it)."""
  path = os.path.join(workdir, RUN_RECORD)
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return json.load(f)


def write_record(workdir: str, cfg: ml_collections.ConfigDict,
                 class_names: tuple[str, ...]) -> None:
  """Writes ``config.json`` atomically (a temporary file, then ``os.replace``); process 0 only."""
  if jax.process_index() != 0:
    return
  import ppool_jax
  commit, dirty = git_commit()
  record = {"format": RECORD_FORMAT, "ppool_jax_version": ppool_jax.__version__,
            "git_commit": commit, "git_dirty": dirty, "num_classes": len(class_names),
            "class_names": list(class_names), "config": config_to_json(cfg)}
  os.makedirs(workdir, exist_ok=True)
  path = os.path.join(workdir, RUN_RECORD)
  tmp = f"{path}.tmp{os.getpid()}"
  with open(tmp, "w") as f:
    json.dump(record, f, indent=1)
  os.replace(tmp, path)


def record_run(workdir: str, cfg: ml_collections.ConfigDict,
               class_names: tuple[str, ...]) -> None:
  """Checks ``cfg`` against the workdir's record when the workdir holds a checkpoint (a run
  that stopped before its first one has nothing to resume) and writes the record."""
  stored = read_record(workdir)
  if stored is not None and checkpoint_steps(workdir):
    check_compatible(workdir, stored["config"], cfg)
  write_record(workdir, cfg, class_names)


# -- models and checkpoints -------------------------------------------------------------------

def build_model(cfg: ml_collections.ConfigDict, num_classes: int, bn_axis_name: str | None = None):
  """The Flax model of ``cfg.model`` with ``num_classes`` outputs; ``bn_axis_name``: the axis
  BatchNorm synchronises over in training (None outside pmap)."""
  from ppool_jax.models import build_model as build
  m = cfg.model
  # "p" for every stage, or one name per stage separated by commas ("p,max,max,max,max").
  pooling = tuple(m.pooling.split(",")) if "," in m.pooling else m.pooling
  kwargs: dict[str, Any] = dict(pooling=pooling, width=m.width,
                                pool_options=m.pool_options.to_dict() if m.pool_options else None)
  if m.blocks:
    kwargs["blocks"] = tuple(tuple(b) for b in m.blocks)
  if m.get("classifier_init"):  # vgg16_seg only
    kwargs["classifier_init"] = m.classifier_init
  dtype = m.get("dtype", "float32")
  if dtype not in DTYPES:
    raise ValueError(f"model.dtype must be one of {sorted(DTYPES)}, got {dtype!r}.")
  if DTYPES[dtype] is not None:
    kwargs["dtype"] = DTYPES[dtype]
  if m.name in _BN_MODELS:
    kwargs.update(frozen_bn=m.frozen_bn, bn_axis_name=bn_axis_name)
  return build(m.name, num_classes, **kwargs)


def checkpoint_steps(workdir: str) -> list[int]:
  """The completed checkpoints' steps (orbax renames a step's folder to its number when the
  save is complete)."""
  d = os.path.join(workdir, "checkpoints")
  return sorted(int(n) for n in os.listdir(d) if n.isdigit()) if os.path.isdir(d) else []


def load_run(workdir: str, step: int | None = None,
             cfg: ml_collections.ConfigDict | None = None) -> LoadedRun:
  """The model, variables and config of a trained run, from its workdir alone.

  ``step``: the checkpoint to load (default: the latest). ``cfg``: the run's config, needed
  only for runs without ``config.json`` (from before it was written); given for a run that
  has one, it must be compatible with it (:data:`RESUME_COMPATIBLE`). Only the parameters and
  the model state (BatchNorm statistics) are read: no optimizer state, no data.
  """
  workdir = os.path.abspath(os.path.expanduser(workdir))
  if not os.path.isdir(workdir):
    raise FileNotFoundError(f"run directory not found: {workdir}")
  record = read_record(workdir)
  if record is None:
    if cfg is None:
      raise FileNotFoundError(
          f"{workdir} has no {RUN_RECORD} (a run from before runs recorded their config): pass "
          "the config it was trained with, load_run(workdir, cfg=get_config()).")
    from ppool_jax.train.inputs import num_classes  # dataset specs only, no data is read
    n = num_classes(cfg)
  else:
    if cfg is not None:
      check_compatible(workdir, record["config"], cfg)
    else:
      cfg = config_from_json(record["config"])
    n = record["num_classes"]
  steps = checkpoint_steps(workdir)
  if not steps:
    raise FileNotFoundError(f"{workdir} has no checkpoint (checkpoints/<step>).")
  if step is None:
    step = steps[-1]
  elif step not in steps:
    raise FileNotFoundError(f"{workdir} has no checkpoint of step {step}; available steps: "
                            f"{', '.join(map(str, steps))}.")
  model = build_model(cfg, n)
  crop = cfg.dataset.crop_size
  shapes = jax.eval_shape(lambda: model.init(
      {"params": jax.random.PRNGKey(0), "dropout": jax.random.PRNGKey(1)},
      jnp.zeros((1, crop, crop, 3), jnp.float32)))
  shapes = {k: v for k, v in shapes.items() if k != "intermediates"}
  target = {"params": shapes.pop("params"), "model_state": shapes}
  import orbax.checkpoint as ocp
  restore_args = jax.tree_util.tree_map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), target)
  try:
    restored = ocp.PyTreeCheckpointer().restore(
        os.path.join(workdir, "checkpoints", str(step), "default"),
        args=ocp.args.PyTreeRestore(item=target, restore_args=restore_args, partial_restore=True))
  except (ValueError, KeyError) as e:
    first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    raise IncompatibleRunError(f"checkpoint {step} in {workdir} does not match the model of the "
                               f"config ({cfg.model.name}, pooling {cfg.model.pooling!r}): "
                               f"{first}") from e
  return LoadedRun(model, {"params": restored["params"], **restored["model_state"]}, cfg, step)
