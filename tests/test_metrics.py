"""Tests of bpr_numpy.metrics against per-user brute-force references from the definitions."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import scipy.sparse as sp
from _budget import examples
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy.stats import rankdata

from bpr_numpy import metrics as M
from bpr_numpy._topk_kernels import _top_k

TOPK_NAMES = ("precision", "recall", "ndcg", "map", "hit_rate")


# --------------------------------------------------------------------------- references


def ref_auc(s: np.ndarray, pos: np.ndarray, neg: np.ndarray) -> float:
    """Fraction of (positive, negative) pairs ordered right, ties one half."""
    ps, ns = s[pos], s[neg]
    if len(ps) == 0 or len(ns) == 0:
        return math.nan
    gt = (ps[:, None] > ns[None, :]).sum()
    eq = (ps[:, None] == ns[None, :]).sum()
    return (gt + 0.5 * eq) / (len(ps) * len(ns))


def ref_ranking(s: np.ndarray, cand: np.ndarray) -> list[int]:
    """Candidates by a full stable sort on (-score, index)."""
    return sorted(np.flatnonzero(cand).tolist(), key=lambda j: (-s[j], j))


def reference(S, train, test, ks, exclude_train=True):
    """Every metric, one user at a time, straight from the definitions."""
    trp = np.asarray(train) > 0
    tep = np.asarray(test) > 0
    n_users, n_items = S.shape
    per = {"full_auc": [], "auc": [], "mrr": []}
    for k in ks:
        for m in TOPK_NAMES:
            per[f"{m}@{k}"] = []
    covered = {k: set() for k in ks}
    users = []
    for u in range(n_users):
        if not tep[u].any():
            continue
        users.append(u)
        s = S[u]
        per["full_auc"].append(ref_auc(s, tep[u], ~tep[u]))
        per["auc"].append(ref_auc(s, tep[u] & ~trp[u], ~tep[u] & ~trp[u]))
        cand = ~trp[u] if exclude_train else np.ones(n_items, bool)
        rel = tep[u] & cand
        n_rel = int(rel.sum())
        ranking = ref_ranking(s, cand)
        if n_rel == 0:
            per["mrr"].append(math.nan)
            for k in ks:
                for m in TOPK_NAMES:
                    per[f"{m}@{k}"].append(math.nan)
            continue
        first = next(r for r, j in enumerate(ranking) if rel[j])
        per["mrr"].append(1.0 / (first + 1))
        for k in ks:
            h = [bool(rel[j]) for j in ranking[:k]]
            covered[k].update(ranking[:k])
            per[f"precision@{k}"].append(sum(h) / k)
            per[f"recall@{k}"].append(sum(h) / n_rel)
            dcg = sum(1 / math.log2(r + 2) for r, x in enumerate(h) if x)
            idcg = sum(1 / math.log2(r + 2) for r in range(min(k, n_rel)))
            per[f"ndcg@{k}"].append(dcg / idcg)
            ap = sum(sum(h[: r + 1]) / (r + 1) for r, x in enumerate(h) if x)
            per[f"map@{k}"].append(ap / min(k, n_rel))
            per[f"hit_rate@{k}"].append(float(any(h)))
    out = {}
    for key, vals in per.items():
        arr = np.array(vals, dtype=float)
        out[key] = float(np.nanmean(arr)) if np.any(~np.isnan(arr)) else math.nan
    any_rel = any(not math.isnan(x) for x in per["mrr"])
    for k in ks:
        out[f"coverage@{k}"] = len(covered[k]) / n_items if any_rel else math.nan
    out["n_users"] = len(users)
    return out, np.array(users, dtype=np.int64), {k: np.array(v, float) for k, v in per.items()}


def assert_same(got: dict, want: dict, keys=None):
    for key in keys or want:
        g, w = got[key], want[key]
        if isinstance(w, float) and math.isnan(w):
            assert math.isnan(g), (key, g, w)
        else:
            assert g == pytest.approx(w, rel=1e-12, abs=1e-12), (key, g, w)


def scorer_of(S):
    S = np.asarray(S, dtype=float)
    return lambda users: S[users]


# --------------------------------------------------------------------------- generators


def to_sparse(dense: np.ndarray, rng: np.random.Generator, fmt: str) -> object:
    """A sparse matrix equal to ``dense`` with explicit zeros, and for CSR duplicates and
    unsorted rows (non-canonical), so the validation's canonicalisation is exercised."""
    rows, cols, vals = [], [], []
    for (i, j), v in np.ndenumerate(dense):
        if v != 0 or rng.random() < 0.2:  # explicit zeros too
            if v != 0 and rng.random() < 0.3:
                part = float(rng.integers(-2, 3))
                rows += [i, i]
                cols += [j, j]
                vals += [part, v - part]  # duplicates summing to v
            else:
                rows.append(i)
                cols.append(j)
                vals.append(float(v))
    perm = rng.permutation(len(vals))
    rows, cols, vals = (np.array(x)[perm] if len(x) else np.array(x) for x in (rows, cols, vals))
    shape = dense.shape
    if fmt == "coo":
        return sp.coo_array((vals, (rows.astype(int), cols.astype(int))), shape=shape)
    if fmt == "dense":
        return dense
    # raw CSR from unsorted entries with duplicates: not canonical
    order = np.argsort(rows, kind="stable")
    indptr = np.zeros(shape[0] + 1, dtype=np.int32)
    np.add.at(indptr, rows.astype(int) + 1, 1)
    indptr = np.cumsum(indptr).astype(np.int32)
    csr = sp.csr_matrix(
        (vals[order], cols[order].astype(np.int32), indptr), shape=shape
    )
    return csr if fmt == "csr_matrix" else sp.csr_array(csr)


@st.composite
def problems(draw):
    n_users = draw(st.integers(1, 7))
    n_items = draw(st.integers(1, 9))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    values = draw(st.sampled_from([(0.0, 1.0), (0.0, 1.0, 2.0), (-1.0, 0.0, 0.5, 3.0),
                                   (0.0, 1.0, -np.inf, np.inf)]))  # fmt: skip
    S = rng.choice(np.array(values), size=(n_users, n_items))
    test = rng.choice([-1, 0, 0, 0, 1, 2], size=(n_users, n_items)).astype(float)
    train = rng.choice([-1, 0, 0, 1, 1, 3], size=(n_users, n_items)).astype(float)
    for u in range(n_users):
        mode = rng.integers(0, 6)
        if mode == 0:
            test[u] = 0  # no test positive
        elif mode == 1:  # train holds every item but the test ones
            train[u] = np.where(test[u] > 0, 0, 1)
        elif mode == 2:  # ... and one test item too
            train[u] = np.where(test[u] > 0, 0, 1)
            pos = np.flatnonzero(test[u] > 0)
            if len(pos):
                train[u, pos[0]] = 1
        elif mode == 3:
            train[u] = 1  # train holds everything
    fmt_tr = draw(st.sampled_from(["csr", "csr_matrix", "coo", "dense"]))
    fmt_te = draw(st.sampled_from(["csr", "csr_matrix", "coo", "dense"]))
    ks = draw(st.lists(st.integers(1, 12), min_size=1, max_size=3, unique=True))
    block_size = draw(st.integers(1, n_users + 1))
    exclude_train = draw(st.booleans())
    return (S, train, test, to_sparse(train, rng, fmt_tr), to_sparse(test, rng, fmt_te), ks,
            block_size, exclude_train)  # fmt: skip


# --------------------------------------------------------------------------- fast path vs reference


@settings(deadline=None, max_examples=examples(300), suppress_health_check=[HealthCheck.too_slow])
@given(problems())
def test_evaluate_matches_reference(problem):
    S, train, test, train_m, test_m, ks, block_size, exclude_train = problem
    want, users, per = reference(S, train, test, ks, exclude_train)
    got = M.evaluate(scorer_of(S), train_m, test_m, k=ks, per_user=True,
                     exclude_train=exclude_train, block_size=block_size)  # fmt: skip
    assert_same(got, want)
    assert got["n_users"] == want["n_users"]
    np.testing.assert_array_equal(got["users"], users)
    assert set(got["per_user"]) == set(per)
    for key, arr in per.items():
        np.testing.assert_allclose(got["per_user"][key], arr, rtol=1e-12, atol=1e-12,
                                   err_msg=key)  # fmt: skip


@settings(deadline=None, max_examples=examples(60))
@given(problems(), st.data())
def test_metric_subsets_agree_with_full_pass(problem, data):
    S, _, _, train_m, test_m, ks, block_size, exclude_train = problem
    full = M.evaluate(scorer_of(S), train_m, test_m, k=ks, exclude_train=exclude_train)
    chosen = data.draw(st.lists(st.sampled_from(M.METRIC_NAMES), min_size=1, unique=True))
    sub = M.evaluate(scorer_of(S), train_m, test_m, k=ks, metrics=chosen,
                     exclude_train=exclude_train, block_size=block_size)  # fmt: skip
    for key, val in sub.items():
        base = key.split("@")[0]
        assert base in chosen or key == "n_users"
        # Same definition, possibly another summation order: equal to round-off (1 ulp was seen for NDCG).
        assert val == pytest.approx(full[key], rel=1e-12, abs=1e-15) or (math.isnan(val) and math.isnan(full[key])), key


@settings(deadline=None, max_examples=examples(100))
@given(
    st.integers(1, 6),
    st.integers(1, 12),
    st.integers(1, 15),
    st.integers(0, 2**32 - 1),
)
def test_top_k_kernel_order_is_stable_sort(n_rows, n_items, kmax, seed):
    """The heap's list is exactly a stable sort on (-score, index), truncated."""
    rng = np.random.default_rng(seed)
    cand = rng.choice([0.0, 1.0, 2.0, np.nan, -np.inf], size=n_items)
    out = np.full(kmax, -1, np.int64)
    size = _top_k(cand, kmax, out)
    want = ref_ranking(cand, ~np.isnan(cand))[:kmax]
    assert size == len(want)
    assert out[:size].tolist() == want


@settings(deadline=None, max_examples=examples(100))
@given(st.integers(1, 5), st.integers(1, 10), st.integers(0, 2**32 - 1), st.booleans())
def test_auc_from_scores_matches_pairs(n_rows, n_items, seed, with_candidates):
    rng = np.random.default_rng(seed)
    s = rng.choice([0.0, 1.0, 2.0], size=(n_rows, n_items))
    pos = rng.random((n_rows, n_items)) < 0.4
    cand = rng.random((n_rows, n_items)) < 0.8 if with_candidates else None
    got = M.auc_from_scores(s, pos, cand)
    c = np.ones_like(pos) if cand is None else cand
    want = [ref_auc(s[r], pos[r] & c[r], ~pos[r] & c[r]) for r in range(n_rows)]
    np.testing.assert_allclose(got, want, rtol=1e-12)


@pytest.mark.parametrize("n_pos", [1, 63, 64, 65, 200, 700])
@pytest.mark.parametrize("path", ["numba", "numpy"])
def test_many_positives_binary_search_path(n_pos, path, monkeypatch):
    """Users with more positives than the vectorised path takes (the bisection path),
    with heavy ties, against the pair count and against rank sums from rankdata; through
    the numba kernel (this small problem would go to its NumPy twin) and the twin."""
    from bpr_numpy.metrics import _protocol

    monkeypatch.setattr(_protocol._BLOCK, "path", path)
    rng = np.random.default_rng(n_pos)
    n_users, n_items = 4, 900
    S = rng.integers(0, 7, size=(n_users, n_items)).astype(float)
    S[1] = rng.normal(size=n_items)  # no ties
    S[2] = 3.0  # all tied
    test = np.zeros((n_users, n_items))
    train = np.zeros((n_users, n_items))
    for u in range(n_users):
        items = rng.permutation(n_items)
        test[u, items[:n_pos]] = 1
        train[u, items[n_pos : n_pos + 100]] = 1
        train[u, items[: n_pos // 3]] = 1  # some overlap: P1 and P2 positives differ
    got = M.evaluate(scorer_of(S), sp.csr_array(train), sp.csr_array(test), per_user=True,
                     metrics=["full_auc", "auc"])  # fmt: skip
    tep, trp = test > 0, train > 0
    for u in range(n_users):
        fa = ref_auc(S[u], tep[u], ~tep[u])
        a2 = ref_auc(S[u], tep[u] & ~trp[u], ~tep[u] & ~trp[u])
        assert got["per_user"]["full_auc"][u] == pytest.approx(fa, rel=1e-12)
        if math.isnan(a2):
            assert math.isnan(got["per_user"]["auc"][u])
        else:
            assert got["per_user"]["auc"][u] == pytest.approx(a2, rel=1e-12)
        # Mann-Whitney from average ranks, a third independent route (P1)
        r = rankdata(S[u], method="average")
        n1 = tep[u].sum()
        mw = (r[tep[u]].sum() - n1 * (n1 + 1) / 2) / (n1 * (n_items - n1))
        assert got["per_user"]["full_auc"][u] == pytest.approx(mw, rel=1e-12)


@settings(deadline=None, max_examples=examples(60))
@given(st.integers(1, 6), st.integers(1, 8), st.integers(1, 3), st.integers(0, 2**32 - 1),
       st.booleans(), st.sampled_from([np.float32, np.float64, np.int64]))  # fmt: skip
def test_factor_model_matches_callable(n_users, n_items, f, seed, with_bias, dtype):
    """A factor object scores as user_factors @ item_factors.T + item_bias; small
    integer factors make ties frequent."""
    rng = np.random.default_rng(seed)
    model = SimpleNamespace(
        user_factors=rng.integers(-1, 2, size=(n_users, f)).astype(dtype),
        item_factors=rng.integers(-1, 2, size=(n_items, f)).astype(dtype),
    )
    if with_bias:
        model.item_biases = rng.integers(0, 2, size=n_items).astype(dtype)
    S = model.user_factors.astype(float) @ model.item_factors.astype(float).T
    if with_bias:
        S = S + model.item_biases
    train = (rng.random((n_users, n_items)) < 0.3).astype(float)
    test = (rng.random((n_users, n_items)) < 0.3).astype(float)
    got = M.evaluate(model, sp.csr_array(train), sp.csr_array(test), k=[1, 3], block_size=2)
    want, _, _ = reference(S, train, test, [1, 3])
    assert_same(got, want)


# --------------------------------------------------------------------------- known values


def _one_user(scores, test_items, train_items=(), n_items=None):
    n_items = n_items or len(scores)
    te = np.zeros((1, n_items))
    te[0, list(test_items)] = 1
    tr = np.zeros((1, n_items))
    tr[0, list(train_items)] = 1
    return scorer_of(np.array([scores], float)), sp.csr_array(tr), sp.csr_array(te)


def test_auc_known_values():
    perfect = _one_user([5, 4, 3, 2, 1], [0, 1])
    assert M.full_auc(*perfect) == 1.0
    assert M.auc(*perfect) == 1.0
    reverse = _one_user([1, 2, 3, 4, 5], [0, 1])
    assert M.full_auc(*reverse) == 0.0
    assert M.auc(*reverse) == 0.0
    const = _one_user([7, 7, 7, 7, 7], [0, 1], [4])
    assert M.full_auc(*const) == 0.5
    assert M.auc(*const) == 0.5
    # train item 4 scores highest: it hurts P1, not P2
    p1p2 = _one_user([3, 2, 1, 0, 9], [0, 1], [4])
    assert M.full_auc(*p1p2) == pytest.approx(4 / 6)
    assert M.auc(*p1p2) == 1.0


def test_topk_known_values():
    # items by score: 2, 0, 4, 1, 3, 5 ; train item 0 removed -> ranking 2, 4, 1, 3, 5
    scorer, tr, te = _one_user([9, 5, 10, 1, 7, 0], [4, 3, 5], [0])
    res = M.evaluate(scorer, tr, te, k=[2, 3])
    assert res["precision@2"] == pytest.approx(1 / 2)  # hits: rank 2 (item 4)
    assert res["recall@2"] == pytest.approx(1 / 3)
    assert res["ndcg@2"] == pytest.approx((1 / math.log2(3)) / (1 + 1 / math.log2(3)))
    assert res["map@2"] == pytest.approx((1 / 2) / 2)
    assert res["hit_rate@2"] == 1.0
    assert res["precision@3"] == pytest.approx(1 / 3)
    assert res["mrr"] == pytest.approx(1 / 2)
    assert res["coverage@2"] == pytest.approx(2 / 6)
    # with the train item kept, item 0 takes rank 2 and item 4 drops to 3
    res = M.evaluate(scorer, tr, te, k=3, exclude_train=False)
    assert res["precision@3"] == pytest.approx(1 / 3)
    assert res["ndcg@3"] == pytest.approx((1 / 2) / (1 + 1 / math.log2(3) + 1 / 2))
    assert res["mrr"] == pytest.approx(1 / 3)
    # k larger than the candidates: all ranked, precision still over k
    res = M.evaluate(scorer, tr, te, k=50)
    assert res["recall@50"] == 1.0
    assert res["precision@50"] == pytest.approx(3 / 50)
    assert res["hit_rate@50"] == 1.0


def test_tie_break_lower_index_first():
    scorer, tr, te = _one_user([1, 1, 1, 1], [2])
    assert M.precision_at_k(scorer, tr, te, k=2) == 0.0  # items 0, 1 win the tie
    assert M.precision_at_k(scorer, tr, te, k=3) == pytest.approx(1 / 3)
    assert M.mrr(scorer, tr, te) == pytest.approx(1 / 3)


def test_single_metric_functions_match_evaluate():
    rng = np.random.default_rng(3)
    S = rng.integers(0, 4, size=(30, 20)).astype(float)
    tr = sp.random_array((30, 20), density=0.3, rng=rng, format="csr")
    te = sp.random_array((30, 20), density=0.1, rng=rng, format="csr")
    sc = scorer_of(S)
    res = M.evaluate(sc, tr, te, k=5, block_size=4)
    assert M.full_auc(sc, tr, te) == res["full_auc"]
    assert M.auc(sc, tr, te) == res["auc"]
    assert M.precision_at_k(sc, tr, te, 5) == res["precision@5"]
    assert M.recall_at_k(sc, tr, te, 5) == res["recall@5"]
    assert M.ndcg_at_k(sc, tr, te, 5) == res["ndcg@5"]
    assert M.map_at_k(sc, tr, te, 5) == res["map@5"]
    assert M.hit_rate_at_k(sc, tr, te, 5) == res["hit_rate@5"]
    assert M.mrr(sc, tr, te) == res["mrr"]
    assert M.coverage_at_k(sc, tr, te, 5) == res["coverage@5"]
    assert list(res) == ["full_auc", "auc", "precision@5", "recall@5", "ndcg@5", "map@5",
                         "hit_rate@5", "mrr", "coverage@5", "n_users"]  # fmt: skip


def test_no_test_positives_gives_nan_and_zero_users():
    scorer, tr, te = _one_user([1, 2, 3], [])
    res = M.evaluate(scorer, tr, te)
    assert res["n_users"] == 0
    assert all(math.isnan(v) for key, v in res.items() if key != "n_users")


def test_block_size_and_dtype_do_not_change_results():
    rng = np.random.default_rng(0)
    model = SimpleNamespace(
        user_factors=rng.normal(size=(97, 8)),
        item_factors=rng.normal(size=(53, 8)),
        item_bias=rng.normal(size=53),
    )
    tr = sp.random_array((97, 53), density=0.2, rng=rng, format="csr")
    te = sp.random_array((97, 53), density=0.05, rng=rng, format="csr")
    base = M.evaluate(model, tr, te, k=[5, 10], per_user=True)
    for bs in (1, 7, 96, 1000):
        res = M.evaluate(model, tr, te, k=[5, 10], block_size=bs, per_user=True)
        for key in base["per_user"]:
            np.testing.assert_allclose(res["per_user"][key], base["per_user"][key], rtol=1e-12)


def test_score_dtypes_give_identical_results():
    """float32 blocks go to the kernel unconverted, ints are cast: same ranking, same ties."""
    rng = np.random.default_rng(5)
    S = rng.integers(-3, 4, size=(40, 25))
    tr = sp.random_array((40, 25), density=0.3, rng=rng, format="csr")
    te = sp.random_array((40, 25), density=0.1, rng=rng, format="csr")
    base = M.evaluate(scorer_of(S), tr, te, k=[3, 7], block_size=6)
    for dtype in (np.float32, np.int64, np.int8, np.float16):
        block = S.astype(dtype)
        res = M.evaluate(lambda users: block[users], tr, te, k=[3, 7], block_size=6)
        assert res == base, dtype
    bad = S.astype(np.float32)
    bad[7, 3] = np.nan
    with pytest.raises(ValueError, match="scorer returned NaN"):
        M.evaluate(lambda users: bad[users], tr, sp.csr_array(np.ones((40, 25))))
    with pytest.raises(TypeError, match="scorer returned dtype complex"):
        M.evaluate(lambda users: S[users].astype(complex), tr, te)


# --------------------------------------------------------------------------- baselines


def test_popularity_scorer():
    train = sp.csr_array(np.array([[1, 0, 2, -1], [0, 0, 3, 1], [1, 0, 1, 0.0]]))
    sc = M.popularity_scorer(train)
    np.testing.assert_array_equal(sc(np.array([0, 2])), [[2, 0, 3, 1], [2, 0, 3, 1]])
    test = sp.csr_array(np.array([[0, 1, 0, 1], [1, 0, 0, 0], [0, 0, 0, 1.0]]))
    res = M.evaluate(sc, train, test, k=1)
    # user 0 candidates 1, 3 (pops 0, 1) -> item 3 first: a hit
    # user 1 candidates 0, 1 (2, 0) -> item 0: hit ; user 2 candidates 1, 3 -> item 3: hit
    assert res["precision@1"] == 1.0


def test_random_scorer_is_reproducible_and_block_independent():
    sc = M.random_scorer(50, seed=7)
    a = sc(np.arange(10))
    b = np.vstack([sc(np.arange(0, 4)), sc(np.arange(4, 10))])
    np.testing.assert_array_equal(a, b)
    assert a.shape == (10, 50)
    assert np.all((a >= 0) & (a < 1))
    assert not np.array_equal(a, M.random_scorer(50, seed=8)(np.arange(10)))
    assert len(np.unique(a)) == a.size
    # a random model's AUC is near one half
    rng = np.random.default_rng(1)
    te = sp.random_array((400, 50), density=0.1, rng=rng, format="csr")
    tr = sp.random_array((400, 50), density=0.1, rng=rng, format="csr")
    assert M.full_auc(M.random_scorer(50, seed=1), tr, te) == pytest.approx(0.5, abs=0.03)


# --------------------------------------------------------------------------- validation


def test_validation_errors():
    sc = scorer_of(np.zeros((3, 4)))
    good = sp.csr_array(np.eye(3, 4))
    with pytest.raises(ValueError, match=r"train has shape \(3, 4\) but test has shape \(3, 5\)"):
        M.evaluate(sc, good, sp.csr_array(np.eye(3, 5)))
    bad = np.eye(3, 4)
    bad[1, 1] = np.nan
    with pytest.raises(ValueError, match="test contains NaN or infinite"):
        M.evaluate(sc, good, bad)
    with pytest.raises(ValueError, match="train contains NaN or infinite"):
        M.evaluate(sc, sp.csr_array(bad), good)
    with pytest.raises(ValueError, match="train must be 2-D"):
        M.evaluate(sc, np.ones(4), good)
    with pytest.raises(ValueError, match="test must be 2-D"):
        M.evaluate(sc, good, np.ones((1, 3, 4)))
    with pytest.raises(TypeError, match="test must be a 2-D"):
        M.evaluate(sc, good, None)
    with pytest.raises(TypeError, match="train must hold real numbers"):
        M.evaluate(sc, np.array([["a", "b"]]), good)
    with pytest.raises(ValueError, match="k must be >= 1"):
        M.evaluate(sc, good, good, k=0)
    with pytest.raises(TypeError, match="k must be an int"):
        M.evaluate(sc, good, good, k=2.5)
    with pytest.raises(ValueError, match="unknown metric 'foo'"):
        M.evaluate(sc, good, good, metrics=["foo"])
    with pytest.raises(ValueError, match="block_size must be >= 1"):
        M.evaluate(sc, good, good, block_size=0)
    # the scorer's output is checked too
    with pytest.raises(ValueError, match=r"scorer returned shape \(3, 5\)"):
        M.evaluate(scorer_of(np.zeros((3, 5))), good, good)
    with pytest.raises(ValueError, match="scorer returned NaN"):
        M.evaluate(scorer_of(np.full((3, 4), np.nan)), good, good)
    with pytest.raises(TypeError, match="model must have user_factors"):
        M.evaluate(object(), good, good)


def test_validation_against_model_shape():
    good = sp.csr_array(np.eye(3, 4))
    model = SimpleNamespace(user_factors=np.ones((3, 2)), item_factors=np.ones((5, 2)))
    msg = r"model has 3 users and 5 items but train/test have shape \(3, 4\)"
    with pytest.raises(ValueError, match=msg):
        M.evaluate(model, good, good)
    model = SimpleNamespace(user_factors=np.ones((3, 2)), item_factors=np.ones((4, 3)))
    with pytest.raises(ValueError, match="user_factors has 2 factors but item_factors has 3"):
        M.evaluate(model, good, good)
    model = SimpleNamespace(user_factors=np.ones((3, 2)), item_factors=np.ones((4, 2)),
                            item_bias=np.ones(5))  # fmt: skip
    with pytest.raises(ValueError, match=r"item_bias has shape \(5,\)"):
        M.evaluate(model, good, good)
    model = SimpleNamespace(user_factors=np.full((3, 2), np.nan), item_factors=np.ones((4, 2)))
    with pytest.raises(ValueError, match="factors contain NaN"):
        M.evaluate(model, good, good)
    model = SimpleNamespace(user_factors=None, item_factors=None)
    with pytest.raises(ValueError, match="no factors"):
        M.evaluate(model, good, good)


def test_inputs_are_not_modified():
    # a non-canonical CSR (duplicates) is summed on a copy, not in place
    tr = sp.csr_array((np.array([1.0, -1.0, 1.0]), np.array([1, 1, 0]), np.array([0, 2, 3])),
                      shape=(2, 3))  # fmt: skip
    te = sp.csr_array(np.array([[1.0, 0, 1], [0, 1, 0]]))
    before = (tr.data.copy(), tr.indices.copy(), tr.indptr.copy())
    M.evaluate(scorer_of(np.zeros((2, 3))), tr, te)
    for a, b in zip(before, (tr.data, tr.indices, tr.indptr)):
        np.testing.assert_array_equal(a, b)


def test_import_does_not_compile():
    import os
    import subprocess
    import sys
    from pathlib import Path

    import bpr_numpy

    root = str(Path(bpr_numpy.__file__).resolve().parents[1])  # metrics is a package: its __file__ is deeper
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([root, os.environ.get("PYTHONPATH", "")]))
    code = ("import bpr_numpy.metrics; from bpr_numpy.metrics._kernels import _block_kernel; "
            "from bpr_numpy._topk_kernels import _top_k; "
            "assert not _block_kernel.signatures and not _top_k.signatures")  # fmt: skip
    subprocess.run([sys.executable, "-c", code], check=True, env=env)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from([-2.0, -1.5, -0.0, 0.0, 0.25, 1.0, 3.5]) | st.floats(-1e6, 1e6), max_size=300))
def test_the_pair_counts_heapsort_is_numpys_sort(values):
    """``_pair_count`` sorts a user's test positives with its own heapsort (cheaper to compile than np.sort)."""
    from bpr_numpy.metrics._kernels import _sorted_copy

    a = np.array(values, dtype=np.float64)
    got = _sorted_copy(a)
    assert np.array_equal(got, np.sort(a))  # -0.0 and 0.0 compare equal, as the counts treat them
    assert np.array_equal(a, np.array(values, dtype=np.float64))  # the input is not touched


def test_evaluate_reads_an_interactions_as_its_matrix_and_checks_its_ids():
    from bpr_numpy import BPR
    from bpr_numpy.datasets import Interactions

    rng = np.random.default_rng(0)
    users = rng.integers(0, 30, 400)
    items = rng.integers(0, 40, 400)
    data = Interactions.from_arrays([f"u{u}" for u in users], [f"i{i}" for i in items])
    train, test = data.select_pairs(np.arange(data.nnz) % 5 != 0), data.select_pairs(np.arange(data.nnz) % 5 == 0)
    model = BPR(epochs=2, threads=1, random_state=0).fit(train)
    wanted = M.evaluate(model, train.matrix, test.matrix, k=5)
    assert M.evaluate(model, train, test, k=5) == wanted
    other = Interactions.from_arrays([f"v{u}" for u in users], [f"i{i}" for i in items])
    with pytest.raises(ValueError, match="test's user_ids differ from the model's"):
        M.evaluate(model, train, other, k=5)
