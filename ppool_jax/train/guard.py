"""The non-finite guard, read without a per-step host sync.

The train step skips a non-finite update on the device and counts the skips in a row
(``TrainState.nonfinite``). A :class:`SkipRecord` carried next to the state, updated on the
device in the same compiled step (:func:`with_record`), keeps what the loop needs to report
and to stop: the updates skipped so far, the latest skipped step, and the step at which
``limit`` updates in a row had been skipped. The loop reads it only where it synchronises
anyway (logging, checkpoint and evaluation steps): a run that goes non-finite stops there, and
the message names the step at which it did.
"""

from __future__ import annotations

import flax
import jax
import jax.numpy as jnp
import numpy as np
from absl import logging


class NonFiniteTrainingError(RuntimeError):
  pass


@flax.struct.dataclass
class SkipRecord:
  skipped: jax.Array   # updates skipped (non-finite loss or gradient) since the run (re)started
  last: jax.Array      # the step of the latest skipped update (0: none)
  first: jax.Array     # the first step of the run of skips that reached ``limit`` (0: none)
  stop: jax.Array      # the step at which ``limit`` updates in a row had been skipped (0: none)
  limit: jax.Array     # ``max_consecutive_nonfinite``


def new_record(limit: int) -> SkipRecord:
  """An empty record (host arrays) that stops at ``limit`` consecutive skipped updates."""
  if limit < 1:
    raise ValueError(f"max_consecutive_nonfinite must be >= 1, got {limit}.")
  z = np.zeros((), np.int32)
  return SkipRecord(skipped=z, last=z, first=z, stop=z, limit=np.int32(limit))


def record_step(record: SkipRecord, state) -> SkipRecord:
  """``record`` after the step that produced ``state`` (its ``step`` is that step's number,
  its ``nonfinite`` the skips in a row up to it, > 0 exactly when the step was skipped)."""
  skipped_now = state.nonfinite > 0
  reached = (record.stop == 0) & (state.nonfinite >= record.limit)
  return record.replace(
      skipped=record.skipped + skipped_now.astype(jnp.int32),
      last=jnp.where(skipped_now, state.step, record.last),
      first=jnp.where(reached, state.step - state.nonfinite + 1, record.first),
      stop=jnp.where(reached, state.step, record.stop))


def with_record(train_step):
  """``train_step(state, batch) -> (state, metrics)`` as ``(state, record, batch) -> (state,
  record, metrics)``, the record updated by :func:`record_step` in the same computation."""
  def step(state, record: SkipRecord, batch):
    state, metrics = train_step(state, batch)
    return state, record_step(record, state), metrics
  return step


def check_record(record: SkipRecord, reported: int, workdir: str, last_checkpoint) -> int:
  """Reads a host copy of the record: raises :class:`NonFiniteTrainingError` once ``limit``
  updates in a row were skipped, else logs the skips since ``reported`` (the count at the
  previous check) and returns the new count."""
  skipped, stop = int(record.skipped), int(record.stop)
  if stop:
    raise NonFiniteTrainingError(
        f"{int(record.limit)} consecutive non-finite updates at step {stop} (non-finite from "
        f"step {int(record.first)}): stopping. The last finite checkpoint (step "
        f"{last_checkpoint}) in {workdir} is intact; lower the learning rate or check the data.")
  if skipped > reported:
    logging.warning("%d update(s) skipped since the last check (non-finite loss or gradient); "
                    "the latest at step %d", skipped - reported, int(record.last))
  return skipped
