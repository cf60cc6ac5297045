"""Shared test configuration: hypothesis profiles, the MovieLens location, the boundscheck
mode and the count of generated cases."""

import os
import signal
import sys
import tempfile
from pathlib import Path

# BPR_NUMPY_BOUNDSCHECK=1: every numba kernel is compiled with bounds checking, so
# an out-of-bounds access raises IndexError instead of reading or writing memory.
# Must happen before numba is imported. The kernels are cached on disk and numba's
# cache key ignores the boundscheck flag, so code compiled without it would be
# reused silently: this mode compiles into a cache folder of its own.
if os.environ.get("BPR_NUMPY_BOUNDSCHECK", "") not in ("", "0"):
    _base = os.environ.get("NUMBA_CACHE_DIR") or os.path.join(tempfile.gettempdir(),
                                                              f"bpr_numpy-numba-{getattr(os, 'getuid', lambda: 0)()}")
    if os.path.basename(_base) != "boundscheck":
        os.environ["NUMBA_CACHE_DIR"] = os.path.join(_base, "boundscheck")
    os.environ["NUMBA_BOUNDSCHECK"] = "1"  # inherited by the suite's subprocesses too
    if "numba" in sys.modules:  # imported by a plugin: read the variables again
        from numba.core import config as _numba_config

        _numba_config.reload_config()

import pytest  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402

# A run started in the background by a shell without job control (`pytest ... &` in a script)
# ignores SIGINT, and so does every process it starts (an ignored signal stays ignored across
# exec). Python then installs no KeyboardInterrupt handler, and the Ctrl-C tests would send
# interrupts that nothing sees (test_interrupt.py waiting 600 s for each). They test the handling
# an interactive run has: the session puts Python's handler back, and the processes it starts
# (xdist's workers, the tests' own) then begin with the default disposition.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

# Numba compiles on first call, so per-example deadlines would fail at random.
settings.register_profile("default", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("ci", deadline=None, suppress_health_check=[HealthCheck.too_slow])
# A longer hunt for counter-examples: HYPOTHESIS_PROFILE=nightly python -m pytest
settings.register_profile("nightly", deadline=None, max_examples=2000,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))

#: MovieLens 100k, read from ../shared/data beside the repository (never committed here).
ML100K = Path(os.environ.get("BPR_NUMPY_ML100K", Path(__file__).resolve().parents[2] / "shared" / "data" / "ml-100k"))


#: The Gowalla carve of the LightGCN papers (train.txt, valid.txt), read from ../shared/data; never committed.
GOWALLA = Path(os.environ.get("BPR_NUMPY_GOWALLA", Path(__file__).resolve().parents[2] / "shared" / "data" / "gowalla"))


@pytest.fixture(scope="session")
def gowalla_path():
    if not (GOWALLA / "train.txt").is_file() or not (GOWALLA / "valid.txt").is_file():
        pytest.skip(f"the Gowalla carve (train.txt, valid.txt) not found at {GOWALLA}")
    return GOWALLA


@pytest.fixture(scope="session")
def ml100k_path():
    if not (ML100K / "ua.base").is_file():
        pytest.skip(f"MovieLens 100k not found at {ML100K}")
    return ML100K


@pytest.fixture(scope="session")
def ua(ml100k_path):
    """MovieLens 100k's official ``ua`` split, ratings >= 4: ``(train, test)`` CSR matrices."""
    from bpr_numpy.datasets import load_movielens_100k

    train, test = load_movielens_100k(ml100k_path, split="ua", min_rating=4.0)
    return train.matrix, test.matrix


# --------------------------------------------------------------------------- generated cases
# Every property test's passing cases are counted (from hypothesis's own run
# statistics) and the total is printed at the end of the session:
# "hypothesis: N generated cases ran in M property tests".
_CASES = {"cases": 0, "tests": 0}


@pytest.hookimpl(hookwrapper=True, trylast=True)
def pytest_runtest_call(item):
    try:
        from hypothesis.statistics import collector
    except ImportError:  # pragma: no cover - hypothesis without the statistics hook
        yield
        return
    outer = collector.value

    def count(stats):
        _CASES["tests"] += 1
        for key, phase in stats.items():
            if key.endswith("-phase") and isinstance(phase, dict):
                _CASES["cases"] += sum(1 for case in phase.get("test-cases", ()) if case.get("status") == "valid")
        if outer is not None:
            outer(stats)

    with collector.with_value(count):
        yield


def pytest_sessionfinish(session):
    # Under pytest-xdist (``-n``) each worker counts its own tests and hands the count to the
    # controller, which adds them up (pytest_testnodedown) before printing the total.
    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is not None:
        workeroutput["hypothesis_cases"] = dict(_CASES)


@pytest.hookimpl(optionalhook=True)  # an xdist hook: unknown (and never called) without pytest-xdist
def pytest_testnodedown(node, error):
    counts = getattr(node, "workeroutput", {}).get("hypothesis_cases", {})
    for key in _CASES:
        _CASES[key] += counts.get(key, 0)


def pytest_terminal_summary(terminalreporter):
    if _CASES["tests"]:
        terminalreporter.write_line(f"hypothesis: {_CASES['cases']} generated cases ran in "
                                    f"{_CASES['tests']} property tests")
