"""Shared test set-up: Hypothesis profiles and one torch thread per test process."""

from __future__ import annotations

import os

# pytest-xdist runs one worker per core; torch's own thread pool on top of that
# oversubscribes the cores and OpenMP spin-waiting makes everything many times slower.
# Subprocesses started by tests (the CLI) inherit the setting.
os.environ.setdefault("OMP_NUM_THREADS", "1")
# tests read a small excerpt of the Shakespeare corpus instead of fetching it (subprocesses inherit this)
os.environ["DIFFUSEKIT_SHAKESPEARE"] = os.path.join(
    os.path.dirname(__file__), "plugins", "masked", "tests", "data", "shakespeare"
)

import torch  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402

torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))

settings.register_profile("ci", max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("dev", max_examples=10, deadline=None)
settings.register_profile("thorough", max_examples=300, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
