"""Shared test configuration: hypothesis profiles and the MovieLens location."""

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

# Numba compiles on first call, so per-example deadlines would fail at random.
settings.register_profile("default", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("ci", deadline=None, suppress_health_check=[HealthCheck.too_slow])
# A longer hunt for counter-examples: HYPOTHESIS_PROFILE=nightly python -m pytest
settings.register_profile("nightly", deadline=None, max_examples=2000,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))

#: MovieLens 100k, read from ../shared/data beside the repository (never committed here).
ML100K = Path(os.environ.get("BPR_NUMPY_ML100K", Path(__file__).resolve().parents[2] / "shared" / "data" / "ml-100k"))


@pytest.fixture(scope="session")
def ml100k_path():
    if not (ML100K / "ua.base").is_file():
        pytest.skip(f"MovieLens 100k not found at {ML100K}")
    return ML100K
