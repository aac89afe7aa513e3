"""The experiments of ppool_jax: scripts run from the repository root as modules,

  python -m experiments.run_finetune_table --seeds 1 2 3 --extra_seeds 4 5
  python -m experiments.run_finetune_hed --steps 200 --head_steps 100 --crop 96 --lr 2e-9 \
      --seeds 1 2
  python -m experiments.run_synthetic_table --steps 400 --seeds 0 1 2

Each ``run_*`` script is a configuration of the shared pieces: :mod:`experiments.runner` (train
or load a cached run, divergence, alpha maps) and :mod:`experiments.report` (statistics, tables,
the analysis-preserving write); configs are modules of :mod:`experiments.configs`. Not part of
the installed package (``pip install .`` ships ``ppool_jax`` only). ``experiments/bench/`` holds
the benchmarks, run as files (``python experiments/bench/pool_op.py``).
"""
