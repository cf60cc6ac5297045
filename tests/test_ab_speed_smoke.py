"""Smoke test of benchmarks/ab_speed.py (alternated A/B fit speed of two checkouts).

Both sides are this checkout, on a 20k-pair synthetic set, 2 rounds, one thread: the
structure of the table and of the Markdown section, the alternation, and that the workers
imported this checkout. No timing assertions.
"""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from _scripts import load_script

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "ab_speed.py"


@pytest.fixture(scope="module")
def ab():
    yield from load_script(SCRIPT, "bpr_numpy_bench_ab_speed")


def test_alternation_is_abba(ab):
    assert [ab.order(r) for r in range(4)] == [("old", "new"), ("new", "old"), ("old", "new"), ("new", "old")]


def test_end_to_end_same_checkout_twice(ab, tmp_path):
    md = tmp_path / "RESULTS.md"
    md.write_text("# Benchmark results\n\n## Another section\n\nkept as is\n", encoding="utf-8")
    out, log = io.StringIO(), io.StringIO()
    rows = ab.main(["--old", str(REPO), "--new", str(REPO), "--cases", "synthetic", "--size", "20k", "--rounds", "2",
                    "--threads", "1", "--factors", "8", "--markdown", str(md)], out=out, log=log)
    assert len(rows) == 1
    row = rows[0]
    assert row.nnz == 20_000 and row.threads == 1 and row.case.epochs == 1 and len(row.ratios) == 2
    assert row.ratio[1] <= row.ratio[0] <= row.ratio[2] and all(r > 0 for r in row.ratios)
    text = out.getvalue()
    assert f"old: {REPO} at " in text and f"new: {REPO} at " in text and "synthetic 0.02M" in text
    fits = [line.split("] ")[1].split(":")[0] for line in log.getvalue().splitlines() if "round " in line]
    assert fits == ["old", "new", "new", "old"]
    doc = md.read_text(encoding="utf-8")
    assert "## Another section\n\nkept as is" in doc and ab.SECTION_TITLE in doc
    assert "| new/old (median, min-max) |" in doc


def test_a_folder_without_the_package_is_refused(ab, tmp_path):
    with pytest.raises(SystemExit, match="no bpr_numpy package"):
        ab.main(["--old", str(tmp_path), "--new", str(REPO), "--cases", "synthetic", "--size", "1k"])
