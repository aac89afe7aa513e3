"""Training: ``python -m ppool_jax.train --config experiments/configs/<name>.py --workdir DIR``."""

from ppool_jax.train.config import base_config, summed_lr_to_mean_lr
from ppool_jax.train.loop import NonFiniteTrainingError, model_from_config, train
from ppool_jax.train.runs import IncompatibleRunError, LoadedRun, load_run
from ppool_jax.train.steps import TrainState, make_eval_step, make_train_step

__all__ = ["IncompatibleRunError", "LoadedRun", "NonFiniteTrainingError", "TrainState",
           "base_config", "load_run", "make_eval_step", "make_train_step", "model_from_config",
           "summed_lr_to_mean_lr", "train"]
