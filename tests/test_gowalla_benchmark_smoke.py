"""Smoke test of benchmarks/gowalla.py (--quick: 2 epochs on the first 2,000 users), bpr_numpy's rows only.

No timing or quality assertions: the script must run end to end, print one table row per setting
and write its Markdown section without touching the rest of the file. Skipped without the data.
"""

import io
from pathlib import Path

import pytest
from _scripts import load_script

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gowalla.py"


@pytest.fixture(scope="module")
def gowalla_script():
    yield from load_script(SCRIPT, "bpr_numpy_bench_gowalla")


def test_quick_run_prints_the_table_and_writes_its_section(gowalla_path, gowalla_script, tmp_path):
    report = tmp_path / "RESULTS.md"
    report.write_text("# Benchmark results\n\n## Another section\n\nkept\n")
    tuned = tmp_path / "best.json"
    tuned.write_text('{"best_params": {"learning_rate": 0.05, "regularization": 0.01, "epochs": 3}}')
    out = io.StringIO()
    code = gowalla_script.main(["--data", str(gowalla_path), "--quick", "--libs", "none", "--threads", "1",
                                "--rows", "default,negatives,softmax,tuned", "--tuned", str(tuned),
                                "--markdown", str(report)], log=out)
    assert code == 0
    text = out.getvalue()
    for label in ("BPR() defaults", "8 negatives per positive", "sampled softmax", "the tuner's pick"):
        assert label in text
    written = report.read_text()
    assert "## Another section\n\nkept" in written and gowalla_script.SECTION_TITLE in written
    assert written.count("| bpr_numpy: ") == 4


def test_unknown_rows_and_missing_data_are_usage_errors(gowalla_script, tmp_path):
    assert gowalla_script.main(["--rows", "nope", "--data", str(tmp_path)]) == 2
    assert gowalla_script.main(["--data", str(tmp_path)]) == 2
