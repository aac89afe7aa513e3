"""Issue #22 item 6: the trainer's own train and eval steps lower for GPU and TPU on this CPU.

``jax.export`` lowers for ``cuda`` and ``tpu`` without those devices. The steps are the ones
training runs (``make_train_step`` wrapped by the non-finite guard, ``make_eval_step`` with
test-time augmentation), on the paper's full-size VGG16-seg and ResNet-50-seg with P-pooling in
every stage, in float32 and bfloat16. The lowered modules must hold no host callback (a
``jax.debug``/``pure_callback`` would stall an accelerator and does not export) and no float64.
"""

import re

import jax
import jax.numpy as jnp
import pytest

from ppool_jax.train.config import base_config
from ppool_jax.train.guard import new_record, with_record
from ppool_jax.train.loop import init_state, model_from_config
from ppool_jax.train.optim import make_optimizer
from ppool_jax.train.steps import make_eval_step, make_train_step

PLATFORMS = ("cuda", "tpu")
CALLBACK = re.compile(r"custom_call\s*@\w*callback", re.IGNORECASE)  # jax's host callbacks
FLOAT64 = re.compile(r"\bf64\b|xf64>")


def _config(model: str, dtype: str):
  c = base_config()
  c.parallel = "mesh"                 # jit: what exports (pmap is jit + shard_map over it)
  c.model.name, c.model.pooling, c.model.dtype = model, "p", dtype
  c.dataset.crop_size, c.global_batch_size = 64, 2
  return c


def _code(text: str) -> str:
  """The module without its location metadata (which names files and functions)."""
  text = "\n".join(line for line in text.splitlines() if not line.startswith("#loc"))
  return re.sub(r"\bloc\((?:[^()]|\([^()]*\))*\)", "", text)


def _check_text(text: str) -> str:
  text = _code(text)
  assert not CALLBACK.search(text), "host callback in the lowered step"
  assert not FLOAT64.search(text), "float64 in the lowered step"
  return text


def _check(exported):
  assert exported.platforms == PLATFORMS
  return _check_text(exported.mlir_module())


@pytest.mark.slow
@pytest.mark.parametrize("model", ["vgg16_seg", "resnet50_seg"])
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_train_and_eval_steps_lower_for_gpu_and_tpu(model, dtype):
  cfg = _config(model, dtype)
  net, tx = model_from_config(cfg), make_optimizer(cfg)
  state = jax.eval_shape(lambda: init_state(cfg, net, tx, (64, 64, 3)))
  record = jax.eval_shape(lambda: jax.tree_util.tree_map(jnp.asarray, new_record(5)))
  batch = {"image": jax.ShapeDtypeStruct((2, 64, 64, 3), jnp.float32),
           "label": jax.ShapeDtypeStruct((2, 64, 64), jnp.int32)}
  train = with_record(make_train_step(net, tx, cfg.loss.normalization, None, diagnostics=True))
  text = _check(jax.export.export(jax.jit(train), platforms=PLATFORMS)(state, record, batch))
  if dtype == "bfloat16":
    assert "bf16" in text  # the mixed-precision path is what lowered
  evaluate = make_eval_step(net, 21, "void_band", None, scales=(0.75, 1.0), flip=True)
  _check(jax.export.export(jax.jit(evaluate), platforms=PLATFORMS)(state, batch))


def test_the_checks_catch_callbacks_and_float64():
  """The detectors on modules that do hold a callback / float64 (``jit(...).lower`` for the
  CPU: ``jax.export`` refuses to serialise a host callback at all)."""
  def with_callback(x):
    jax.debug.callback(lambda v: None, x)
    return x * 2

  lower = lambda f, dtype: jax.jit(f).lower(jax.ShapeDtypeStruct((3,), dtype)).as_text(
      debug_info=True)
  _check_text(lower(lambda x: x * 2, jnp.float32))
  with pytest.raises(AssertionError, match="callback"):
    _check_text(lower(with_callback, jnp.float32))
  with jax.enable_x64(True):
    with pytest.raises(AssertionError, match="float64"):
      _check_text(lower(lambda x: x.astype(jnp.float64) * 2, jnp.float32))
