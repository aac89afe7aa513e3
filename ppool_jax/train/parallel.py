"""Data parallelism, two ways: ``pmap`` (the project's original design) and ``jit`` over a
``Mesh`` with ``NamedSharding`` (what JAX's parallelism guide recommends since ``pmap``
went into maintenance in JAX 0.8).

Both run the same step function (:func:`ppool_jax.train.steps.make_train_step`) on the same
input, this process's host batch ``(b, ...)`` (:class:`ppool_jax.data.loader.TrainLoader`,
:func:`ppool_jax.data.eval_batches`: no device axis), and differ only in how they place it
and the state:

* ``pmap``: per-device view, batch ``(devices, per_device, ...)`` (``put`` splits the host
  batch over the local devices), explicit ``psum`` of losses, gradients and valid-pixel
  counts over the axis ``"batch"``, BatchNorm statistics synchronised through the model's
  ``bn_axis_name``.
* ``mesh``: global view, one ``jit`` over a 1-D mesh with axis ``"batch"``; the batch is
  sharded on its leading dim (``P("batch")``), parameters and optimizer state replicated
  (``P()``); XLA inserts the reductions, and BatchNorm statistics are those of the global
  batch by construction (no axis name). Multi-host: every process contributes its local
  share (``jax.make_array_from_process_local_data``).

Both take and give back the same host-side state, so one checkpoint format serves both and
a run can resume in the other mode.

Nothing waits for the device: ``put`` places a batch with the step's input sharding (the
loop calls it ahead, :func:`ppool_jax.train.runtime.prefetch`), ``train_step`` returns device
arrays (the state, the non-finite :class:`~ppool_jax.train.guard.SkipRecord`, the metrics),
and ``to_host`` is the one place the host waits for them.

Evaluation is process-local: ``eval_counts`` runs on this process's devices only (no
collective across processes), on the images of this process's share
(:func:`ppool_jax.data.eval_batches`), and :func:`sum_over_processes` adds the processes'
counts once at the end. Processes may thus run different numbers of eval batches, of
different image sizes: a step that reduced over every process's devices would need the same
number of calls with the same global shapes everywhere.
"""

from __future__ import annotations

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from ppool_jax.train.guard import with_record
from ppool_jax.train.steps import AXIS, make_eval_step, make_train_step

MODES = ("pmap", "mesh")


def _own(devices):
  """The devices of ``devices`` that belong to this process."""
  return [d for d in devices if d.process_index == jax.process_index()]


def int32_halves(x: np.ndarray) -> np.ndarray:
  """Integers ``|x| < 2**61`` as ``(2, ...)`` int32: ``x = high * 2**31 + low``,
  ``0 <= low < 2**31`` (what a device collective holds without x64)."""
  x = np.asarray(x, np.int64)
  if x.size and np.abs(x).max() >= 2 ** 61:
    raise OverflowError("int32_halves: a count is at or over 2**61.")
  return np.stack(np.divmod(x, 2 ** 31)).astype(np.int32)


def sum_halves(gathered: np.ndarray) -> np.ndarray:
  """The int64 sum over the leading (process) axis of stacked :func:`int32_halves`."""
  g = np.asarray(gathered, np.int64)
  return g[:, 0].sum(0) * 2 ** 31 + g[:, 1].sum(0)


def sum_over_processes(counts: dict) -> dict:
  """Integer ``counts`` (a pytree of arrays) summed over all processes, exactly: one
  all-gather of every leaf at once, as :func:`int32_halves` added up in int64 on the host.
  Every process must call it once, with the same tree structure and shapes; single-process
  it returns ``counts`` as they are."""
  if jax.process_count() == 1:
    return counts
  leaves, treedef = jax.tree_util.tree_flatten(counts)
  arrays = [np.asarray(x) for x in leaves]
  for x in arrays:
    if not np.issubdtype(x.dtype, np.integer):
      raise TypeError(f"sum_over_processes: counts must be integers, not {x.dtype}.")
  flat = np.concatenate([x.astype(np.int64).ravel() for x in arrays])
  total = sum_halves(multihost_utils.process_allgather(int32_halves(flat)))
  out, at = [], 0
  for x in arrays:
    out.append(total[at:at + x.size].reshape(x.shape))
    at += x.size
  return jax.tree_util.tree_unflatten(treedef, out)


def unreplicate(tree):
  """The first device's copy (``flax.jax_utils.unreplicate`` keeps the device axis of
  single-device pmap outputs)."""
  return jax.tree_util.tree_map(lambda x: np.asarray(x)[0], tree)


class _Runner:
  """What both runners share: the host batches they take and the step calls. They differ in
  placement only (``place``, ``put``, ``_put_eval``, ``to_host``, ``_eval_state``)."""

  def train_step(self, state, record, batch):
    """One step on a :meth:`put` batch; returns device arrays ``(state, record, metrics)``."""
    return self._train(state, record, batch)

  def lower_train_step(self, state, record, batch):
    """:meth:`train_step` lowered for these arguments (nothing runs or is donated):
    ``.compile().memory_analysis()`` is the compiled step's memory (the benchmarks)."""
    return self._train.lower(state, record, batch)

  def eval_counts(self, state, batch):
    """Summed counts (int64) of an ``eval_batches`` host batch of ``len(eval_devices)``
    images, one per device, computed on this process's devices (nothing is summed over
    processes)."""
    counts = self.to_host(self._eval(self._eval_state(state), self._put_eval(batch)))
    return jax.tree_util.tree_map(lambda c: np.asarray(c, np.int64), counts)


def _split(x, n: int, what: str) -> np.ndarray:
  """Host array ``(b, ...)`` -> ``(n, b / n, ...)``: one slice per device."""
  x = np.asarray(x)
  if x.ndim == 0 or x.shape[0] % n:
    raise ValueError(f"{what}: a host batch of {x.shape[:1]} examples does not split over "
                     f"{n} local devices.")
  return x.reshape((n, x.shape[0] // n) + x.shape[1:])


class PmapRunner(_Runner):
  """pmap over every device of every process (each feeds its local devices), or over
  ``devices`` (single process); state replicated with a leading device axis."""

  def __init__(self, model, tx, num_classes: int, normalization: str, protocol: str,
               devices=None, diagnostics: bool = False, eval_tta=((1.0,), False)):
    # devices=None keeps pmap's default, all devices of all processes: passing the local
    # devices would make each process of a multi-host run reduce over its own only.
    self.devices = devices
    self._train = jax.pmap(with_record(make_train_step(model, tx, normalization, AXIS,
                                                       diagnostics)),
                           axis_name=AXIS, devices=devices, donate_argnums=(0,))
    # pmap runs as jit(shard_map) over a mesh of the local devices in this order: a batch
    # placed with this sharding goes to the step as it is.
    local = jax.sharding.Mesh(np.asarray(devices or jax.local_devices()), (AXIS,))
    self.batch_sharding = NamedSharding(local, P(AXIS))
    # Evaluation: this process's devices only (module docstring).
    self.eval_devices = _own(devices or jax.local_devices())
    self._eval = jax.pmap(make_eval_step(model, num_classes, protocol, AXIS, *eval_tta),
                          axis_name=AXIS, devices=self.eval_devices)

  def place(self, state):
    """A host pytree (state, record), one copy per device, sharded as the step's outputs are
    (``batch_sharding``): ``flax.jax_utils.replicate``'s sharding differs, and pmap compiled
    the step a second time at its second call."""
    n = self.batch_sharding.mesh.size

    def put(x):
      x = np.asarray(x)
      return jax.make_array_from_callback((n,) + x.shape, self.batch_sharding, lambda _: x[None])
    return jax.tree_util.tree_map(put, jax.device_get(state))

  def to_host(self, tree):
    """The host copy of a replicated output (state, record, metrics): waits for it."""
    return jax.device_get(unreplicate(tree))

  def layout(self, batch):
    """A host batch ``(b, ...)`` in pmap's layout ``(local devices, b / local devices, ...)``
    (NumPy views: nothing is copied or placed)."""
    n = self.batch_sharding.mesh.size
    return jax.tree_util.tree_map(lambda x: _split(x, n, "pmap"), batch)

  def put(self, batch):
    """This process's host batch ``(b, ...)``, split over its local devices (:meth:`layout`)
    and placed, one slice per device."""
    return jax.device_put(self.layout(batch), self.batch_sharding)

  def _eval_state(self, state):
    return state

  def _put_eval(self, batch):
    n = len(self.eval_devices)
    return jax.tree_util.tree_map(lambda x: _split(x, n, "pmap eval"), batch)


class MeshRunner(_Runner):
  """jit over a 1-D ``Mesh`` of every device (all processes); batch sharded, state replicated."""

  def __init__(self, model, tx, num_classes: int, normalization: str, protocol: str,
               devices=None, diagnostics: bool = False, eval_tta=((1.0,), False)):
    devices = devices or jax.devices()
    self.mesh = jax.make_mesh((len(devices),), (AXIS,), (jax.sharding.AxisType.Auto,),
                              devices=devices)
    self.replicated = NamedSharding(self.mesh, P())
    self.batch_sharding = NamedSharding(self.mesh, P(AXIS))
    self._train = jax.jit(with_record(make_train_step(model, tx, normalization, None,
                                                      diagnostics)),
                          in_shardings=(self.replicated, self.replicated, self.batch_sharding),
                          out_shardings=self.replicated, donate_argnums=(0,))
    # Evaluation: a mesh of this process's devices only (module docstring).
    self.eval_devices = _own(devices)
    local = self.mesh if len(self.eval_devices) == len(devices) else jax.make_mesh(
        (len(self.eval_devices),), (AXIS,), (jax.sharding.AxisType.Auto,),
        devices=self.eval_devices)
    self.eval_replicated = NamedSharding(local, P())
    self.eval_batch_sharding = NamedSharding(local, P(AXIS))
    self._eval = jax.jit(make_eval_step(model, num_classes, protocol, None, *eval_tta),
                         in_shardings=(self.eval_replicated, self.eval_batch_sharding),
                         out_shardings=self.eval_replicated)

  def place(self, state):
    """A host pytree (state, record), replicated over the mesh."""
    # Through the host: the train step donates its state, and device_put of arrays that
    # already sit on one device could alias the caller's buffers.
    return jax.device_put(jax.device_get(state), self.replicated)

  def to_host(self, tree):
    """The host copy of a replicated output (state, record, metrics): waits for it."""
    return jax.device_get(tree)

  def put(self, batch):
    """This process's host batch ``(b, ...)`` -> its part of one global array, sharded over
    the mesh (each process places its own share)."""
    return jax.tree_util.tree_map(
        lambda x: jax.make_array_from_process_local_data(self.batch_sharding, np.asarray(x)),
        batch)

  def _eval_view(self, x):
    """A replicated state leaf as an array of this process's devices (its local copies,
    nothing is moved)."""
    if x.sharding == self.eval_replicated:
      return x
    return jax.make_array_from_single_device_arrays(
        x.shape, self.eval_replicated, [s.data for s in x.addressable_shards])

  def _eval_state(self, state):
    return jax.tree_util.tree_map(self._eval_view, state)

  def _put_eval(self, batch):
    return jax.device_put(jax.tree_util.tree_map(np.asarray, batch), self.eval_batch_sharding)


def make_runner(mode: str, model, tx, num_classes: int, normalization: str, protocol: str,
                devices=None, diagnostics: bool = False, eval_tta=((1.0,), False)):
  """A :class:`PmapRunner` or :class:`MeshRunner`; ``model`` must synchronise BatchNorm over
  ``"batch"`` for pmap and not at all for mesh (``model_from_config`` does this).
  ``eval_tta``: ``(scales, flip)`` of the evaluation's test-time augmentation."""
  if mode == "pmap":
    return PmapRunner(model, tx, num_classes, normalization, protocol, devices, diagnostics,
                      eval_tta)
  if mode == "mesh":
    return MeshRunner(model, tx, num_classes, normalization, protocol, devices, diagnostics,
                      eval_tta)
  raise ValueError(f"unknown parallel mode {mode!r}; choose from {MODES}.")
