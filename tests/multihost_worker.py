"""One process of the 2-process training test:
python multihost_worker.py PID PORT WORKDIR OUT [pmap|mesh]."""

import os
import sys

os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"

import jax  # noqa: E402
import numpy as np  # noqa: E402

jax.config.update("jax_cpu_collectives_implementation", "gloo")

sys.path.insert(0, os.path.dirname(__file__))
import tiny_config  # noqa: E402

from ppool_jax.train import train  # noqa: E402


def main():
  pid, port, workdir, out = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
  cfg = tiny_config.get_config()
  cfg.total_steps = 6
  cfg.checkpoint_every = 3
  cfg.distributed.coordinator_address = f"localhost:{port}"
  cfg.distributed.num_processes = 2
  cfg.distributed.process_id = pid
  cfg.parallel = sys.argv[5] if len(sys.argv) > 5 else "pmap"
  state, _ = train(cfg, workdir)
  assert jax.process_count() == 2 and jax.device_count() == 4
  leaves = jax.tree_util.tree_leaves(jax.device_get(state.params))
  np.savez(out, *[np.asarray(x) for x in leaves])


if __name__ == "__main__":
  main()
