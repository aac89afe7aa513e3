"""Orbax checkpoints of the training state: periodic, keep-last-k, resume from the workdir.

Only finite states are written: a state with a non-finite leaf raises instead, so a
run can never replace a good checkpoint by a broken one. Orbax writes each step to a
temporary directory and renames it when complete, so a process killed mid-save leaves
the previous checkpoints intact.
"""

from __future__ import annotations

import os

import jax
import numpy as np
import orbax.checkpoint as ocp


class NonFiniteStateError(RuntimeError):
  pass


class Checkpoints:

  def __init__(self, workdir: str, keep: int):
    self.manager = ocp.CheckpointManager(
        os.path.join(os.path.abspath(workdir), "checkpoints"),
        options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True))

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def save(self, step: int, state) -> None:
    leaves = jax.tree_util.tree_leaves(state)
    bad = [i for i, x in enumerate(leaves)
           if np.issubdtype(np.asarray(x).dtype, np.inexact) and not np.all(np.isfinite(x))]
    if bad:
      raise NonFiniteStateError(f"refusing to checkpoint step {step}: {len(bad)} state arrays "
                                "hold non-finite values.")
    self.manager.save(step, args=ocp.args.StandardSave(state))

  def restore(self, step: int, target):
    return self.manager.restore(step, args=ocp.args.StandardRestore(target))

  def close(self):
    self.manager.wait_until_finished()
    self.manager.close()
