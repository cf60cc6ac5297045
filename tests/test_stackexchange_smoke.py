"""Smoke test of benchmarks/stackexchange.py (the StackExchange model, reproduced and fixed).

Runs ``main([..., "--quick"])`` once on MovieLens 100k (skipped where ../shared/data/ml-100k is
absent) and checks the structure of what it returns and writes, and the qualitative result with
generous margins: the Keras design (A) stays near chance, the fix (B) and pure CF (C) learn. No
timing assertions.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from _scripts import load_script

pytestmark = pytest.mark.slow

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "stackexchange.py"
ML100K = Path(__file__).resolve().parents[2] / "shared" / "data" / "ml-100k"
RUNS = ("A", "A+lr", "A+bpr", "A+uniform", "A+identity", "A+all", "B", "C")


@pytest.fixture(scope="module")
def bench():
    yield from load_script(SCRIPT, "bpr_numpy_bench_stackexchange")


@pytest.fixture(scope="module")
def quick(bench, tmp_path_factory):
    if not (ML100K / "ua.base").is_file():
        pytest.skip(f"MovieLens 100k not found at {ML100K}")
    folder = tmp_path_factory.mktemp("stackexchange")
    md = folder / "RESULTS.md"
    md.write_text("# Benchmark results\n\n## Another section\n\nkept as is\n", encoding="utf-8")
    out, log = io.StringIO(), io.StringIO()
    result = bench.main(["--data", str(ML100K), "--quick", "--markdown", str(md)], out=out, log=log)
    return result, out.getvalue(), log.getvalue(), md


def test_structure(quick):
    result, out, _, _ = quick
    runs = result["runs"]
    assert tuple(runs) == RUNS
    assert len(runs["A"].losses) == len(runs["A"].aucs) == 2          # --quick: 2 epochs of A
    assert all(len(runs[k].losses) == 1 for k in RUNS[1:6])           # one-change rows: 1 epoch
    assert len(runs["B"].losses) == len(runs["B"].aucs) >= 10
    for run in runs.values():
        assert {"auc", "full_auc", "precision@10"} <= set(run.final)
        assert np.all(np.isfinite(run.losses)) and run.seconds >= 0
    assert len(result["cold"]["rows"]) == 4
    assert result["cold"]["held"] == 168                              # 10% of 1682 items
    for header in ("P2 AUC", "P1 full AUC", "precision@10", "fit s", "Per epoch", "Targets", "Cold start"):
        assert header in out


def test_the_keras_design_stays_near_chance_and_the_fix_learns(quick):
    runs = quick[0]["runs"]
    a = runs["A"]
    assert a.final["auc"] < 0.65
    assert max(a.aucs) < 0.65
    assert abs(a.losses[-1] - a.losses[0]) < 0.05                     # 1 - sigma hardly moves
    assert runs["B"].final["auc"] > 0.85
    assert runs["C"].final["auc"] > 0.85
    assert runs["A+all"].final["auc"] > a.final["auc"] + 0.1          # the same loop learns once fixed


def test_cause_figures(quick):
    figures = quick[0]["figures"]
    hard, uniform = figures["negatives"]["hard"], figures["negatives"]["uniform"]
    assert hard["same_genres"] > 0.5 > uniform["same_genres"]
    assert hard["cosine"] > uniform["cosine"]
    assert hard["test_positive"] > uniform["test_positive"]          # more false negatives
    assert figures["model"]["zero_x"] > 0.5                          # x_uij = 0 on identical features
    soft = figures["softmax"]
    assert 0.0 <= soft["score_min"] <= soft["score_max"] <= 1.0
    assert soft["max_abs_x"] <= 1.0 and soft["median_shrink"] < 0.5
    assert soft["loss_floor"] == pytest.approx(1 - 1 / (1 + np.exp(-1.0)))
    slopes = figures["slopes"]
    assert max(abs(s) for s in slopes["sigmoid"]) <= 0.25 + 1e-12
    assert abs(slopes["bpr"][0]) > 0.99 and abs(slopes["sigmoid"][0]) < 0.01   # at x = -6


def test_markdown_section_replaced_not_duplicated(bench, quick):
    result, _, _, md = quick
    text = md.read_text(encoding="utf-8")
    assert text.count(bench.SECTION_TITLE) == 1
    assert "## Another section\n\nkept as is" in text
    assert result["markdown"].startswith(bench.SECTION_TITLE)
    bench.write_markdown(md, result["markdown"])                     # again: replaced in place
    again = md.read_text(encoding="utf-8")
    assert again.count(bench.SECTION_TITLE) == 1 and "kept as is" in again
    if result["plot"] is not None:                                   # only where matplotlib is installed
        assert Path(result["plot"]).is_file() and Path(result["plot"]).parent == md.parent
