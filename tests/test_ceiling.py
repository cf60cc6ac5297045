"""benchmarks/ceiling.py: the non-BPR references against their definitions, P1's parts against a brute-force count,
the ensemble's invariances, and a smoke run on MovieLens 100k (skipped where ../shared/data/ml-100k is absent).

No timing assertions, and no assertion on how good any model is: the script is a measurement.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
from _scripts import load_script
from hypothesis import given, settings
from hypothesis import strategies as st

from bpr_numpy import metrics

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "ceiling.py"


@pytest.fixture(scope="module")
def ceiling():
    yield from load_script(SCRIPT, "bpr_numpy_bench_ceiling")


def _matrix(rng, n_users, n_items, density):
    dense = (rng.random((n_users, n_items)) < density).astype(np.float64)
    return sp.csr_matrix(dense)


def _problem(seed, n_users=7, n_items=9, ties=False):
    """Disjoint train / test positives / rated-below-4 items, and integer-valued scores when ``ties``."""
    rng = np.random.default_rng(seed)
    kind = rng.integers(0, 4, size=(n_users, n_items))  # 0 other, 1 train, 2 test positive, 3 rated below 4
    train = sp.csr_matrix((kind == 1).astype(np.float64))
    test = sp.csr_matrix((kind == 2).astype(np.float64))
    rated = sp.csr_matrix(((kind == 2) | (kind == 3)).astype(np.float64))
    scores = rng.integers(0, 3, size=(n_users, n_items)).astype(float) if ties else rng.normal(size=(n_users, n_items))
    return kind, train, test, rated, scores


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), ties=st.booleans(), n_users=st.integers(1, 8), n_items=st.integers(2, 12))
def test_p1_parts_match_a_pair_by_pair_count(ceiling, seed, ties, n_users, n_items):
    kind, train, test, rated, scores = _problem(seed, n_users, n_items, ties)
    if not any((kind[u] == 2).any() and (kind[u] != 2).any() for u in range(n_users)):
        return  # no user with both a test positive and a negative: P1 undefined
    got = ceiling.p1_parts(lambda users: scores[users], train, test, rated)
    sums = {"train": [], "rated_below_4": [], "other": [], "share": []}
    for u in range(n_users):
        pos = np.flatnonzero(kind[u] == 2)
        neg = np.flatnonzero(kind[u] != 2)
        if len(pos) == 0 or len(neg) == 0:
            continue
        wrong = {0: 0.0, 1: 0.0, 3: 0.0}
        for p in pos:
            for n in neg:
                k = kind[u, n]
                wrong[k] += 1.0 if scores[u, n] > scores[u, p] else 0.5 if scores[u, n] == scores[u, p] else 0.0
        pairs = len(pos) * len(neg)
        sums["train"].append(wrong[1] / pairs)
        sums["rated_below_4"].append(wrong[3] / pairs)
        sums["other"].append(wrong[0] / pairs)
        sums["share"].append(np.sum(kind[u] == 1) / len(neg))
    for key in ("train", "rated_below_4", "other"):
        assert got[key] == pytest.approx(np.mean(sums[key]), abs=1e-12)
    p1 = metrics.full_auc(lambda users: scores[users], train, test)
    assert got["p1"] == pytest.approx(p1, abs=1e-12)
    assert got["train_share"] == pytest.approx(np.mean(sums["share"]), abs=1e-12)
    assert got["chance"] == pytest.approx(p1 + got["train"] - 0.5 * np.mean(sums["share"]), abs=1e-12)


def test_p1_parts_skip_users_whose_row_is_all_test_positives(ceiling):
    # user 0: every item a test positive (AUC undefined, not averaged); user 1: one test positive
    # scored below one train positive and above the rest.
    kind = np.array([[2, 2, 2, 2], [0, 1, 2, 3]])
    scores = np.array([[0.0, 1.0, 2.0, 3.0], [0.0, 5.0, 1.0, 2.0]])
    train = sp.csr_matrix((kind == 1).astype(np.float64))
    test = sp.csr_matrix((kind == 2).astype(np.float64))
    rated = sp.csr_matrix(((kind == 2) | (kind == 3)).astype(np.float64))
    got = ceiling.p1_parts(lambda users: scores[users], train, test, rated)
    assert got["p1"] == pytest.approx(metrics.full_auc(lambda users: scores[users], train, test), abs=1e-12)
    assert got == pytest.approx({"train": 1 / 3, "rated_below_4": 1 / 3, "other": 0.0, "p1": 1 / 3,
                                 "chance": 1 - 1 / 6 - 1 / 3, "train_share": 1 / 3})


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), penalty=st.floats(0.1, 50.0))
def test_ease_solves_its_constrained_ridge_problem(ceiling, seed, penalty):
    # EASE: B = argmin ||X - XB||^2 + lambda ||B||^2 with diag(B) = 0. Stationarity: the
    # off-diagonal entries of (X'X + lambda I) B - X'X vanish (the diagonal ones carry the
    # constraint's multipliers).
    rng = np.random.default_rng(seed)
    x = _matrix(rng, 12, 6, 0.5)
    dense = x.toarray()
    if np.linalg.matrix_rank(dense) < dense.shape[1]:
        return  # B is then not recoverable from the scores X B
    scores = ceiling.ease_scores(x, penalty)
    b = np.linalg.lstsq(dense, scores, rcond=None)[0]  # the script's B, read back from its scores
    g = dense.T @ dense
    residual = (g + penalty * np.eye(g.shape[0])) @ b - g
    off = ~np.eye(g.shape[0], dtype=bool)
    np.testing.assert_allclose(residual[off], 0.0, atol=1e-7)
    np.testing.assert_allclose(np.diag(b), 0.0, atol=1e-9)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), alpha=st.sampled_from([0.5, 1.0, 1.5]), beta=st.sampled_from([0.0, 0.5]),
       top_k=st.sampled_from([None, 1, 2, 5]))
def test_rp3beta_is_the_three_step_walk(ceiling, seed, alpha, beta, top_k):
    rng = np.random.default_rng(seed)
    x = _matrix(rng, 8, 5, 0.5).toarray()
    got = ceiling.rp3beta_scores(sp.csr_matrix(x), alpha, beta, top_k)
    n_users, n_items = x.shape
    deg_u = np.maximum(x.sum(1), 1)
    deg_i = np.maximum(x.sum(0), 1)
    w = np.zeros((n_items, n_items))
    for i in range(n_items):
        for j in range(n_items):
            if i == j:
                continue
            walk = sum((x[v, i] / deg_i[i]) ** alpha * (x[v, j] / deg_u[v]) ** alpha for v in range(n_users))
            w[i, j] = walk / deg_i[j] ** beta
    if top_k is not None:  # each target item (column) keeps its top_k sources, lower index first on ties
        for j in range(n_items):
            ranked = sorted(range(n_items), key=lambda i: (-round(w[i, j], 12), i))  # round-off is a tie
            w[ranked[top_k:], j] = 0.0
    np.testing.assert_allclose(got, x @ w, atol=1e-12)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_ensemble_ignores_each_models_scale_and_offset_per_user(ceiling, seed):
    rng = np.random.default_rng(seed)
    a, b = rng.normal(size=(5, 7)), rng.normal(size=(5, 7))
    scale, shift = rng.uniform(0.1, 10, size=(5, 1)), rng.normal(size=(5, 1))
    plain = ceiling.standardised_mean([lambda u: a[u], lambda u: b[u]])
    moved = ceiling.standardised_mean([lambda u: a[u] * scale[u] + shift[u], lambda u: b[u]])
    users = np.arange(5)
    np.testing.assert_allclose(plain(users), moved(users), atol=1e-10)
    one = ceiling.standardised_mean([lambda u: a[u]])(users)  # one model: its own ranking
    assert np.array_equal(np.argsort(one, axis=1, kind="stable"), np.argsort(a, axis=1, kind="stable"))
    flat = ceiling.standardised_mean([lambda u: np.ones((len(u), 7))])(users)  # constant rows: no division by 0
    assert np.all(flat == 0.0)


@pytest.mark.slow
def test_quick_run_on_movielens(ceiling, ml100k_path, tmp_path):
    md = tmp_path / "RESULTS.md"
    md.write_text("# Benchmark results\n\n## Another section\n\nkept as is\n", encoding="utf-8")
    out, log = io.StringIO(), io.StringIO()
    result = ceiling.main(["--data", str(ml100k_path), "--quick", "--seeds", "2", "--markdown", str(md)],
                          out=out, log=log)
    names = [r.name for r in result["rows"]]
    assert names[0] == "popularity" and names[-1].startswith("ensemble of the 2")
    assert any(n.startswith("EASE") for n in names) and any(n.startswith("RP3beta") for n in names)
    for row in result["rows"]:
        n = 2 if row.name.startswith("bpr_numpy") else 1
        assert all(len(v) == n for v in row.values.values())
        lost = row.mean("train") + row.mean("rated_below_4") + row.mean("other")
        assert row.mean("full_auc") == pytest.approx(1 - lost, abs=1e-9)
        assert row.mean("chance") >= 0.0 and 0.0 <= row.mean("precision@10") <= 1.0
    assert len(result["verdict"]) == 4
    text = md.read_text(encoding="utf-8")
    assert "## Another section\n\nkept as is" in text and "## How far from the ceiling" in text
    assert "P1, train positives at chance" in out.getvalue()
