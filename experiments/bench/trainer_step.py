"""The trainer's own train step, ready to time (run as scripts: this folder is on sys.path).

``ppool_jax.train.steps.make_train_step`` as ``train()`` runs it: wrapped with the non-finite
record (``guard.with_record``) and jit/pmap'd by a runner (``parallel.make_runner``), state and
record placed with ``runner.place``, the batch with ``runner.put``, the state donated on every
step. Imports only jax, numpy and the package's train step (no ml_collections): the GPU suite
uses it on the lent machines, whose image has no ml_collections.
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np

from ppool_jax.train.guard import new_record
from ppool_jax.train.parallel import make_runner
from ppool_jax.train.steps import TrainState


def init_state(model, tx, image_shape, seed: int = 0) -> TrainState:
  """A step-0 state as ``ppool_jax.train.loop.init_state`` builds it (same rng split), without
  pretrained weights (which take no part in a step's cost)."""
  init_rng, dropout_rng, train_rng = jax.random.split(jax.random.PRNGKey(seed), 3)
  x = jnp.zeros((1,) + tuple(image_shape), jnp.float32)
  variables = jax.jit(lambda: model.init({"params": init_rng, "dropout": dropout_rng}, x))()
  variables = {k: v for k, v in variables.items() if k != "intermediates"}
  params = variables.pop("params")
  return TrainState(step=jnp.zeros((), jnp.int32), params=params, model_state=variables,
                    opt_state=tx.init(params), rng=train_rng, nonfinite=jnp.zeros((), jnp.int32))


def random_batch(batch: int, size: int, num_classes: int, seed: int = 0) -> dict[str, np.ndarray]:
  """A host batch as the loader gives it: ``image (batch, size, size, 3)`` float32 normal,
  ``label (batch, size, size)`` int32 uniform over the classes (the runner places it)."""
  rng = np.random.default_rng(seed)
  shape = (batch, size, size)
  return {"image": rng.standard_normal(shape + (3,), np.float32),
          "label": rng.integers(0, num_classes, shape, dtype=np.int32)}


class TrainerStep:
  """One model's trainer step on a fixed batch: ``step()`` runs one (waiting for it) and returns
  its wall time; the state advances as in training (SGD updates, BatchNorm statistics).

  ``mode``: ``"pmap"`` or ``"mesh"``; ``devices``: the runner's devices (None: all);
  ``diagnostics``: the alpha statistics, on by default as in training (``alpha_diagnostics``).
  """

  def __init__(self, mode: str, model, tx, host_batch: dict, *, num_classes: int,
               normalization: str = "valid", devices=None, diagnostics: bool = True,
               seed: int = 0):
    self.runner = make_runner(mode, model, tx, num_classes, normalization, "label",
                              devices=devices, diagnostics=diagnostics)
    image_shape = np.shape(host_batch["image"])[1:]
    # The record's stop limit does not enter the computation; 1 is the smallest valid one.
    self.state, self.record = self.runner.place((init_state(model, tx, image_shape, seed),
                                                 new_record(1)))
    self.batch = self.runner.put(host_batch)

  def step(self) -> float:
    """Runs one step on the batch and returns its wall time (dispatch to completion)."""
    t0 = time.perf_counter()
    self.state, self.record, metrics = self.runner.train_step(self.state, self.record,
                                                              self.batch)
    jax.block_until_ready((self.state, self.record, metrics))
    return time.perf_counter() - t0

  def temp_bytes(self) -> int | None:
    """The compiled step's temporary memory (``memory_analysis().temp_size_in_bytes`` of the
    runner's jitted/pmapped step; None where the backend reports none)."""
    analysis = self.runner.lower_train_step(self.state, self.record,
                                            self.batch).compile().memory_analysis()
    return None if analysis is None else int(analysis.temp_size_in_bytes)
