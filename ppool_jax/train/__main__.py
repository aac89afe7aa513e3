"""Entry point: python -m ppool_jax.train --config NAME[:ARG] --workdir DIR

``--config`` is a package config name (``synthetic_demo``, ``table1:voc_aug,vgg16,p``, ...;
see :mod:`ppool_jax.configs`) or the path of a config file (``experiments/configs/x.py``).
Config fields are overridable from the command line (``--config.model.pooling=max``).
Multi-host: pass ``--config.distributed.coordinator_address=host:port``,
``--config.distributed.num_processes`` and ``--config.distributed.process_id`` (or set them
in the config); each process then reads its own shard of every batch.

Errors in the config, missing data or weights and an incompatible workdir are one line,
``ppool_jax.train: error: ...``, exit status 2 (``--verbose``: the traceback); see
:mod:`ppool_jax.cli`.

SIGTERM or SIGINT: the run finishes its step, checkpoints it and exits with status 0; the
same command resumes it.

``--print_rules`` (no ``--workdir`` needed): print every parameter's learning-rate and
weight-decay multipliers and the ``(regex, multiplier)`` rules that decide them
(:func:`ppool_jax.train.optim.rules_table`), then exit without training.
"""

from absl import flags

from ppool_jax import cli

FLAGS = flags.FLAGS


def define_flags() -> None:
  """The CLI's flags; defined only when the module runs, so importing it registers none."""
  from ppool_jax.configs import define_config_flag
  define_config_flag("config")
  flags.DEFINE_string("workdir", None, "Run directory: checkpoints, metrics.csv, tensorboard/.")
  flags.DEFINE_bool("print_rules", False, "Print each parameter's lr and weight-decay "
                    "multipliers and the rules deciding them, then exit without training.")
  flags.mark_flags_as_required(["config"])
  flags.register_multi_flags_validator(
      ["workdir", "print_rules"], lambda f: bool(f["workdir"]) or f["print_rules"],
      message="--workdir is required (except with --print_rules).")


def print_rules(cfg) -> None:
  """Prints :func:`ppool_jax.train.optim.rules_table` for the model of ``cfg`` (shapes only:
  nothing is computed or loaded)."""
  import jax
  import jax.numpy as jnp

  from ppool_jax.train.loop import model_from_config
  from ppool_jax.train.optim import check_rules, rules_table
  model, c = model_from_config(cfg), cfg.dataset.crop_size
  params = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, c, c, 3))))
  check_rules(cfg, params["params"])
  print(rules_table(cfg, params["params"]), flush=True)


def main(_):
  if FLAGS.print_rules:
    print_rules(FLAGS.config)
    return
  from ppool_jax.train.loop import train
  from ppool_jax.train.runtime import TrainingPreempted
  try:
    _, scores = train(FLAGS.config, FLAGS.workdir)
  except TrainingPreempted as e:  # checkpointed: a clean stop, status 0
    print(f"preempted: {e}", flush=True)
    return
  if scores:
    print("final eval: " + ", ".join(f"{k}={v:.4f}" for k, v in scores.items()
                                     if not hasattr(v, "shape") or v.shape == ()))


def errors() -> tuple[type[BaseException], ...]:
  """The training errors besides :data:`ppool_jax.cli.ERRORS` reported in one line."""
  from ppool_jax.train.checkpoints import NonFiniteStateError
  from ppool_jax.train.loop import NonFiniteTrainingError
  return NonFiniteTrainingError, NonFiniteStateError


if __name__ == "__main__":
  cli.run(main, command="train", define_flags=define_flags, errors=errors())
