"""Issue #22 item 6: the trainer's own train and eval steps lower for GPU and TPU on this CPU.

``jax.export`` lowers for ``cuda`` and ``tpu`` without those devices. The steps are the ones
training runs (``make_train_step`` wrapped by the non-finite guard, ``make_eval_step`` with
test-time augmentation), on the paper's full-size VGG16-seg and ResNet-50-seg with P-pooling in
every stage, in float32 and bfloat16. The lowered modules must hold no host callback (a
``jax.debug``/``pure_callback`` would stall an accelerator and does not export) and no float64
(the checks: tests/hlo_checks.py).
"""

import jax
import jax.numpy as jnp
import pytest

from hlo_checks import PLATFORMS, check_exported
from ppool_jax.train.config import base_config
from ppool_jax.train.guard import new_record, with_record
from ppool_jax.train.loop import init_state, model_from_config
from ppool_jax.train.optim import make_optimizer
from ppool_jax.train.steps import make_eval_step, make_train_step


def _config(model: str, dtype: str):
  c = base_config()
  c.parallel = "mesh"                 # jit: what exports (pmap is jit + shard_map over it)
  c.model.name, c.model.pooling, c.model.dtype = model, "p", dtype
  c.dataset.crop_size, c.global_batch_size = 64, 2
  return c


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
  exported = jax.export.export(jax.jit(train), platforms=PLATFORMS)(state, record, batch)
  text = check_exported(exported)
  if dtype == "bfloat16":
    assert "bf16" in text  # the mixed-precision path is what lowered
  evaluate = make_eval_step(net, 21, "void_band", None, scales=(0.75, 1.0), flip=True)
  check_exported(jax.export.export(jax.jit(evaluate), platforms=PLATFORMS)(state, batch))
