"""Entry point: python -m ppool_jax.train --config NAME[:ARG] --workdir DIR

``--config`` is a package config name (``synthetic_demo``, ``table1:voc_aug,vgg16,p``, ...;
see :mod:`ppool_jax.configs`) or the path of a config file (``experiments/configs/x.py``).
Config fields are overridable from the command line (``--config.model.pooling=max``).
Multi-host: pass ``--config.distributed.coordinator_address=host:port``,
``--config.distributed.num_processes`` and ``--config.distributed.process_id`` (or set them
in the config); each process then reads its own shard of every batch.
SIGTERM or SIGINT: the run finishes its step, checkpoints it and exits with status 0; the
same command resumes it.
"""

from absl import app, flags, logging

FLAGS = flags.FLAGS


def define_flags() -> None:
  """The CLI's flags; defined only when the module runs, so importing it registers none."""
  from ppool_jax.configs import define_config_flag
  define_config_flag("config")
  flags.DEFINE_string("workdir", None, "Run directory: checkpoints, metrics.csv, tensorboard/.")
  flags.mark_flags_as_required(["config", "workdir"])


def main(_):
  from ppool_jax.train.loop import train
  from ppool_jax.train.runs import IncompatibleRunError
  from ppool_jax.train.runtime import TrainingPreempted
  logging.set_verbosity(logging.WARNING)  # orbax logs every save at INFO
  try:
    _, scores = train(FLAGS.config, FLAGS.workdir)
  except IncompatibleRunError as e:
    raise SystemExit(f"IncompatibleRunError: {e}") from None
  except TrainingPreempted as e:  # checkpointed: a clean stop, status 0
    print(f"preempted: {e}", flush=True)
    return
  if scores:
    print("final eval: " + ", ".join(f"{k}={v:.4f}" for k, v in scores.items()
                                     if not hasattr(v, "shape") or v.shape == ()))


if __name__ == "__main__":
  define_flags()
  app.run(main)
