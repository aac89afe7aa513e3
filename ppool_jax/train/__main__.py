"""Entry point: python -m ppool_jax.train --config experiments/configs/<name>.py --workdir DIR

Config fields are overridable from the command line (``--config.model.pooling=max``).
Multi-host: pass ``--config.distributed.coordinator_address=host:port``,
``--config.distributed.num_processes`` and ``--config.distributed.process_id`` (or set them
in the config); each process then reads its own shard of every batch.
"""

from absl import app, flags, logging
from ml_collections import config_flags

config_flags.DEFINE_config_file("config", None, "Experiment config file (experiments/configs).")
flags.DEFINE_string("workdir", None, "Run directory: checkpoints, metrics.csv, tensorboard/.")
flags.mark_flags_as_required(["config", "workdir"])
FLAGS = flags.FLAGS


def main(_):
  from ppool_jax.train.loop import train
  from ppool_jax.train.runs import IncompatibleRunError
  logging.set_verbosity(logging.WARNING)  # orbax logs every save at INFO
  try:
    _, scores = train(FLAGS.config, FLAGS.workdir)
  except IncompatibleRunError as e:
    raise SystemExit(f"IncompatibleRunError: {e}") from None
  if scores:
    print("final eval: " + ", ".join(f"{k}={v:.4f}" for k, v in scores.items()
                                     if not hasattr(v, "shape") or v.shape == ()))


if __name__ == "__main__":
  app.run(main)
