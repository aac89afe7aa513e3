"""Configs of the experiments (``from experiments.configs import finetune_detail``); the
package's own configs are in :mod:`ppool_jax.configs`."""
