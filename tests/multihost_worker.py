"""One process of the 2-process training test:
python multihost_worker.py PID PORT WORKDIR OUT [pmap|mesh].

Writes the final parameters to OUT and, to OUT.eval.npz, what this process's final evaluation
did: the eval examples it read (``indices``), its eval-step calls (``calls``), its own
share's counts (``local/...``), the counts summed over the processes (``total/...``) and the
scores (``score/...``)."""

import os
import sys

os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"

import jax  # noqa: E402
import numpy as np  # noqa: E402

jax.config.update("jax_cpu_collectives_implementation", "gloo")

sys.path.insert(0, os.path.dirname(__file__))
import tiny_config  # noqa: E402

from ppool_jax.train import loop, train  # noqa: E402

EVAL_IMAGES = 5   # odd: the processes' shares differ (3 and 2 images: 2 and 1 eval calls)


def _record_evaluation(seen: dict) -> None:
  """Hooks the loop's evaluation: reads of the eval source, eval-step calls, the counts."""
  sources, make_runner = loop.sources, loop.make_runner
  local_counts, counts = loop.local_evaluation_counts, loop.evaluation_counts

  class Reads:
    def __init__(self, source):
      self.source = source

    def __len__(self):
      return len(self.source)

    def __getitem__(self, i):
      seen["indices"].append(i)
      return self.source[i]

  def wrapped_sources(cfg, *a, **k):
    train_source, eval_source = sources(cfg, *a, **k)
    return train_source, Reads(eval_source)

  def wrapped_runner(*a, **k):
    runner = make_runner(*a, **k)
    eval_counts = runner.eval_counts

    def counted(*args):
      seen["calls"] += 1
      return eval_counts(*args)
    runner.eval_counts = counted
    return runner

  def record(key, f):
    def g(*a, **k):
      seen[key] = f(*a, **k)
      return seen[key]
    return g

  loop.sources, loop.make_runner = wrapped_sources, wrapped_runner
  loop.local_evaluation_counts = record("local", local_counts)
  loop.evaluation_counts = record("total", counts)


def main():
  pid, port, workdir, out = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
  cfg = tiny_config.get_config()
  cfg.total_steps = 6
  cfg.checkpoint_every = 3
  cfg.dataset.synthetic_eval = EVAL_IMAGES
  cfg.eval.scales, cfg.eval.flip = (0.75, 1.0), True   # test-time augmentation too
  cfg.distributed.coordinator_address = f"localhost:{port}"
  cfg.distributed.num_processes = 2
  cfg.distributed.process_id = pid
  cfg.parallel = sys.argv[5] if len(sys.argv) > 5 else "pmap"
  seen = {"indices": [], "calls": 0}
  _record_evaluation(seen)
  state, scores = train(cfg, workdir)   # evaluates once, after the last step
  assert jax.process_count() == 2 and jax.device_count() == 4
  leaves = jax.tree_util.tree_leaves(jax.device_get(state.params))
  np.savez(out, *[np.asarray(x) for x in leaves])
  np.savez(out + ".eval.npz", indices=np.asarray(seen["indices"]), calls=seen["calls"],
           **{f"local/{k}": v for k, v in seen["local"].items()},
           **{f"total/{k}": v for k, v in seen["total"].items()},
           **{f"score/{k}": np.asarray(v) for k, v in scores.items()})


if __name__ == "__main__":
  main()
