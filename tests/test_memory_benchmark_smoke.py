"""Smoke test of benchmarks/memory.py on a small synthetic set, bpr_numpy only (no figures asserted)."""

from __future__ import annotations

from pathlib import Path

import pytest
from _scripts import load_script

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "memory.py"

pytestmark = pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux's /proc")


@pytest.fixture(scope="module")
def memory():
    yield from load_script(SCRIPT, "bpr_numpy_bench_memory")


def test_measures_bpr_numpy_in_a_child_process(memory, capsys):
    summary = memory.main(["--pairs", "20000", "--threads", "1", "--repeats", "1", "--libs", "bpr_numpy"])
    figures = summary["bpr_numpy"]
    assert figures["peak_mib"] >= figures["before_mib"] > 0
    assert figures["fit_increment_mib"] >= 0
    assert "whole-process peak MiB" in capsys.readouterr().out
