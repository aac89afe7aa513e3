"""Around the step: device prefetch, preemption, step-time accounting and profiling.

* :func:`prefetch` keeps the next batches placed on the devices (with the runner's input
  sharding) while the current step runs: data loading and the host-to-device copy overlap
  the device's work, since the loop never waits for the step it just dispatched.
* :class:`Preemption` turns SIGTERM and SIGINT (what schedulers send before they kill a job)
  into a request the loop honours after the current step: it checkpoints, closes its writers
  and raises :class:`TrainingPreempted` (the CLI exits with status 0). The first signal is
  handled; a second one raises ``KeyboardInterrupt`` at once (the checkpoints already written
  stay intact: orbax renames a step's directory only once it is complete).
* :class:`StepTimes` splits each logging interval's wall time into waiting for data and
  stepping (dispatch plus waiting for the device); :class:`Profiler` writes a
  ``jax.profiler`` trace of chosen steps.
"""

from __future__ import annotations

import collections
import os
import signal
import threading
import time
from collections.abc import Callable, Iterable, Iterator

import jax
import numpy as np
from absl import logging


def prefetch(batches: Iterable, put: Callable, size: int) -> Iterator:
  """``put(batch)`` for each batch, ``size`` batches ahead (``size=0``: placed when asked for).

  ``put`` starts an asynchronous host-to-device copy; with ``size=2`` the batch after next is
  loaded and copied while the current step runs (``flax.jax_utils.prefetch_to_device``)."""
  if size < 0:
    raise ValueError(f"prefetch must be >= 0 batches, got {size}.")
  queue = collections.deque()
  for batch in batches:
    queue.append(put(batch))
    if len(queue) > size:
      yield queue.popleft()
  while queue:
    yield queue.popleft()


class TrainingPreempted(Exception):
  """Training stopped on a signal after checkpointing step ``step`` in ``workdir``."""

  def __init__(self, step: int, workdir: str, signame: str):
    super().__init__(f"{signame}: stopped after step {step} and checkpointed it in {workdir}; "
                     "run the same command again to resume.")
    self.step, self.workdir, self.signame = step, workdir, signame


class Preemption:
  """A context manager that records SIGTERM/SIGINT instead of dying (main thread only;
  elsewhere it records nothing); the previous handlers come back on exit.

  :meth:`stop_now` says whether to stop after the current step. With several processes
  they must stop at the same step: they agree (any process signalled) only at ``sync``
  steps, which every process reaches together (the logging steps)."""

  SIGNALS = (signal.SIGTERM, signal.SIGINT)

  def __init__(self):
    self.signame: str | None = None
    self._previous: dict = {}

  def _handle(self, signum, frame):
    if self.signame is not None:
      raise KeyboardInterrupt(f"second {signal.Signals(signum).name}: stopping at once")
    self.signame = signal.Signals(signum).name
    logging.warning("%s received: finishing the current step, then checkpointing (send it "
                    "again to stop at once)", self.signame)

  def __enter__(self):
    if threading.current_thread() is threading.main_thread():
      self._previous = {s: signal.signal(s, self._handle) for s in self.SIGNALS}
    return self

  def __exit__(self, *exc):
    for s, handler in self._previous.items():
      signal.signal(s, handler)
    self._previous = {}
    return False

  def stop_now(self, sync: bool) -> bool:
    if jax.process_count() == 1:
      return self.signame is not None
    if not sync:
      return False
    from jax.experimental import multihost_utils
    flags = multihost_utils.process_allgather(np.int32(self.signame is not None))
    if np.any(flags) and self.signame is None:
      self.signame = "SIGTERM (another process)"
    return bool(np.any(flags))


class StepTimes:
  """Host time per logging interval: ``data`` (in the batch iterator: loading and placing)
  and ``step`` (dispatching steps and waiting for the device at the interval's end)."""

  def __init__(self):
    self.seconds = {"data": 0.0, "step": 0.0}

  def timed(self, kind: str, fn: Callable, *args):
    t = time.perf_counter()
    out = fn(*args)
    self.seconds[kind] += time.perf_counter() - t
    return out

  def interval(self, steps: int) -> dict[str, float]:
    """``time/data_ms`` and ``time/step_ms`` per step over the ``steps`` steps since the
    last call; starts the next interval."""
    out = {f"time/{k}_ms": 1e3 * v / max(steps, 1) for k, v in self.seconds.items()}
    self.seconds = dict.fromkeys(self.seconds, 0.0)
    return out


def parse_profile_steps(spec: str) -> tuple[int, int] | None:
  """``"START,STOP"`` -> ``(START, STOP)`` (steps counted from 1, both traced); ``""``: None."""
  if not spec:
    return None
  try:
    start, stop = (int(s) for s in str(spec).split(","))
  except ValueError:
    raise ValueError(f"profile_steps must be 'START,STOP' (two step numbers), got {spec!r}.")
  if not 1 <= start <= stop:
    raise ValueError(f"profile_steps {spec!r}: need 1 <= START <= STOP.")
  return start, stop


class Profiler:
  """A ``jax.profiler`` trace of steps ``START..STOP`` in ``<workdir>/profile`` (TensorBoard's
  profile plugin reads it); nothing when ``spec`` is empty."""

  def __init__(self, spec: str, workdir: str):
    self.steps = parse_profile_steps(spec)
    self.logdir = os.path.join(workdir, "profile")
    self.active = False

  def before(self, step: int) -> None:
    """Call before dispatching the step that ends at ``step``."""
    if self.steps and step == self.steps[0] and jax.process_index() == 0:
      jax.profiler.start_trace(self.logdir)
      self.active = True

  def after(self, step: int, wait: Callable[[], object]) -> None:
    """Call after dispatching it; ``wait()`` blocks until the device is done."""
    if self.active and step >= self.steps[1]:
      wait()
      self.stop()

  def stop(self) -> None:
    if self.active:
      jax.profiler.stop_trace()
      self.active = False
      logging.warning("profile of steps %d-%d written to %s", *self.steps, self.logdir)
