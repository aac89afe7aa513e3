"""Test-wide setup: 8 host CPU devices so pmap paths run without a GPU; deterministic
hypothesis examples (the same ones every run, so a property test cannot flake in CI)."""

import os

from hypothesis import settings

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

settings.register_profile("deterministic", derandomize=True, database=None)
settings.load_profile("deterministic")
