"""The fused top-k behind ``BPR.recommend`` and ``BPR.similar_items`` against brute force.

The reference scores every item in NumPy and sorts on (-score, item index): the documented
rank order. Factors are small integers (times a power of two), so every score is exact in
float32 and float64 whatever the summation order of the BLAS product: ties are common and
the comparison can be exact. No test looks at timings.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile

import numpy as np
import pytest
import scipy.sparse as sp
from _budget import examples
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bpr_numpy import BPR, datasets
from bpr_numpy.model import _retrieval
from bpr_numpy.model._retrieval import top_k as _top_k

DTYPES = (np.float32, np.float64)


# --------------------------------------------------------------------------- reference


def ref_top_k(query, items, bias, k, rows, exclude):
    """Brute force: every score, liked items and NaN dropped, stable sort on (-score, index)."""
    scores = query[rows].astype(np.float64) @ items.T.astype(np.float64) + bias
    top = np.full((len(rows), k), -1, dtype=np.int64)
    vals = np.full((len(rows), k), -np.inf)
    for a, u in enumerate(rows):
        s = scores[a]
        cand = ~np.isnan(s)
        if exclude is not None:
            cand[exclude.indices[exclude.indptr[u]:exclude.indptr[u + 1]]] = False
        idx = np.flatnonzero(cand)
        best = idx[np.lexsort((idx, -s[idx]))][:k]
        top[a, :len(best)] = best
        vals[a, :len(best)] = s[best]
    return top, vals


def model_with(user_factors, item_factors, item_bias, threads=1):
    """A BPR holding the given factors (no training)."""
    m = BPR(factors=user_factors.shape[1], threads=threads, dtype=user_factors.dtype)
    m.user_factors, m.item_factors, m.item_biases = user_factors, item_factors, item_bias
    return m


@st.composite
def problems(draw, max_rows=90, max_items=70):
    """Integer factors with spread-out norms (so the early stop fires), ties, liked items."""
    dtype = draw(st.sampled_from(DTYPES))
    n_query = draw(st.integers(1, max_rows))
    n_items = draw(st.integers(1, max_items))
    f = draw(st.integers(1, 6))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    q = rng.integers(-3, 4, (n_query, f)) * rng.integers(0, 4, (n_query, 1))
    v = rng.integers(-3, 4, (n_items, f)) * rng.choice([0, 1, 2, 8], (n_items, 1))  # a few big items
    b = rng.integers(-4, 5, n_items) * draw(st.sampled_from([0, 1, 4]))
    density = draw(st.sampled_from([0.0, 0.2, 0.6, 1.0]))
    liked = sp.random(n_query, n_items, density=density, format="csr", random_state=rng, dtype=np.float64)
    if draw(st.booleans()):  # unsorted rows must work too: reverse each row
        idx, val = liked.indices.copy(), liked.data.copy()
        for u in range(n_query):
            lo, hi = liked.indptr[u], liked.indptr[u + 1]
            idx[lo:hi], val[lo:hi] = idx[lo:hi][::-1], val[lo:hi][::-1]
        liked = sp.csr_matrix((val, idx, liked.indptr.copy()), shape=liked.shape)
    rows = rng.integers(0, n_query, draw(st.integers(0, 2 * max_rows)))
    return (q.astype(dtype) / 2, v.astype(dtype), (b / 4).astype(dtype), liked, rows)


# --------------------------------------------------------------------------- the kernel


@contextlib.contextmanager
def path(name):
    """Force the kernels (``"numba"``) or the NumPy twin (``"numpy"``) of ``top_k``'s path without prune."""
    chooser = _retrieval._chooser()
    old = chooser.path
    chooser.path = name
    try:
        yield chooser
    finally:
        chooser.path = old


@settings(deadline=None, max_examples=examples(150), suppress_health_check=[HealthCheck.too_slow])
@given(problems(), st.integers(0, 80), st.integers(1, 40), st.integers(1, 40), st.booleans(),
       st.sampled_from([None, True, False]), st.sampled_from([1, 2]), st.sampled_from(["numba", "numpy"]))
def test_top_k_is_the_brute_force_ranking(problem, k, block, tile, exclude, prune, threads, which):
    q, v, b, liked, rows = problem
    k = min(k, v.shape[0])
    ex = liked if exclude else None
    with path(which):
        items, scores = _top_k(q, v, b, k, rows=rows, exclude=ex, threads=threads, block=block, tile=tile,
                               prune=prune)
    want_items, want_scores = ref_top_k(q, v, b, k, rows, ex)
    np.testing.assert_array_equal(items, want_items)
    np.testing.assert_array_equal(scores.astype(np.float64), want_scores)
    assert items.dtype == np.int64 and scores.dtype == q.dtype


@settings(deadline=None, max_examples=examples(40), suppress_health_check=[HealthCheck.too_slow])
@given(problems(max_rows=200), st.integers(1, 12), st.integers(1, 30), st.integers(1, 30))
def test_threads_give_the_same_lists(problem, k, block, tile):
    q, v, b, liked, rows = problem
    k = min(k, v.shape[0])
    one = _top_k(q, v, b, k, rows=rows, exclude=liked, threads=1, block=block, tile=tile, prune=True)
    two = _top_k(q, v, b, k, rows=rows, exclude=liked, threads=2, block=block, tile=tile, prune=True)
    for x, y in zip(one, two):
        np.testing.assert_array_equal(x, y)


def test_nan_scores_are_never_returned():
    # A diverged model: NaN in one item and one user. NaN scores are not candidates
    # (as in the metrics), and the bound, NaN too, never settles a row early.
    rng = np.random.default_rng(0)
    q = rng.standard_normal((70, 4)).astype(np.float32)
    v = rng.standard_normal((300, 4)).astype(np.float32)
    b = np.zeros(300, np.float32)
    v[5, 2] = np.nan
    q[3, 0] = np.nan
    items, scores = _top_k(q, v, b, 10, rows=np.arange(70), tile=16, block=8, prune=True)
    want_items, _ = ref_top_k(q, v, b, 10, np.arange(70), None)
    np.testing.assert_array_equal(items, want_items)
    assert (items[3] == -1).all() and np.isneginf(scores[3]).all()  # every score of user 3 is NaN
    assert 5 not in items


def test_early_stop_on_skewed_items_is_exact():
    # Item norms falling by powers of two (exact scores still): most rows settle after
    # the first tiles, and the lists are still the brute-force ones.
    rng = np.random.default_rng(1)
    q = rng.integers(-4, 5, (500, 8))
    v = rng.integers(-4, 5, (2000, 8)) * 2.0 ** -(rng.permutation(2000)[:, None] // 200)
    b = rng.integers(-8, 9, 2000) / 8
    liked = sp.random(500, 2000, density=0.01, format="csr", random_state=2)
    for dtype in DTYPES:
        args = (q.astype(dtype), v.astype(dtype), b.astype(dtype), 10)
        got = _top_k(*args, rows=np.arange(500), exclude=liked, tile=64, block=50, prune=True)
        want = ref_top_k(*args, np.arange(500), liked)
        np.testing.assert_array_equal(got[0], want[0])
        np.testing.assert_array_equal(got[1].astype(np.float64), want[1])


# --------------------------------------------------------------------------- the model API


@settings(deadline=None, max_examples=examples(40), suppress_health_check=[HealthCheck.too_slow])
@given(problems(), st.integers(1, 90), st.sampled_from([1, 2]))
def test_recommend_batch_is_the_brute_force_top_n(problem, n, threads):
    q, v, b, liked, rows = problem
    m = model_with(q, v, b, threads=threads)
    items, scores = m.recommend(rows, n=n, user_items=liked)
    k = min(n, v.shape[0])
    want_items, want_scores = ref_top_k(q, v, b, k, rows, liked)
    assert items.shape == scores.shape == (len(rows), k)  # n > n_items: capped at the catalogue
    np.testing.assert_array_equal(items, want_items)
    np.testing.assert_array_equal(scores.astype(np.float64), want_scores)


@pytest.mark.parametrize("dtype", DTYPES)
def test_recommend_pads_when_every_item_is_liked(dtype):
    rng = np.random.default_rng(3)
    m = model_with(rng.standard_normal((100, 3)).astype(dtype), rng.standard_normal((7, 3)).astype(dtype),
                   np.zeros(7, dtype))
    liked = sp.csr_matrix(np.ones((100, 7)))
    items, scores = m.recommend(np.arange(100), n=3, user_items=liked)
    assert (items == -1).all() and np.isneginf(scores).all() and scores.dtype == dtype
    single, single_scores = m.recommend(5, n=3, user_items=liked)
    assert single.size == 0 and single_scores.size == 0


def test_recommend_many_users_spans_several_blocks_and_tiles():
    # The default block and tile sizes: 5000 items make two tiles of 4096, 600 users
    # three blocks; integer factors keep the comparison exact.
    rng = np.random.default_rng(4)
    q = rng.integers(-2, 3, (600, 5)).astype(np.float32)
    v = (rng.integers(-2, 3, (5000, 5)) * rng.choice([1, 4], (5000, 1))).astype(np.float32)
    b = rng.integers(-3, 4, 5000).astype(np.float32)
    liked = sp.random(600, 5000, density=0.02, format="csr", random_state=5)
    for threads in (1, 2):
        items, scores = model_with(q, v, b, threads=threads).recommend(np.arange(600), n=10, user_items=liked)
        want_items, want_scores = ref_top_k(q, v, b, 10, np.arange(600), liked)
        np.testing.assert_array_equal(items, want_items)
        np.testing.assert_array_equal(scores.astype(np.float64), want_scores)


@pytest.mark.parametrize("dtype", DTYPES)
def test_similar_items_is_the_brute_force_cosine(dtype):
    rng = np.random.default_rng(6)
    v = rng.integers(-2, 3, (40, 3)).astype(dtype)
    v[7] = 0  # a zero vector: similarity 0 to everything
    m = model_with(rng.standard_normal((5, 3)).astype(dtype), v, np.zeros(40, dtype))
    norms = np.linalg.norm(v, axis=1)
    unit = v / np.where(norms > 0, norms, 1)[:, None]
    got, sims = m.similar_items(np.arange(40), n=50)
    assert got.shape == (40, 39)
    for i in range(40):
        s = unit.astype(np.float64) @ unit[i].astype(np.float64)
        s[i] = -np.inf
        want = np.lexsort((np.arange(40), -s))[:39]
        # Cosines of integer vectors are not exact: compare the scores, and the lists where
        # no two neighbours are within rounding.
        np.testing.assert_allclose(sims[i], s[want], rtol=1e-5, atol=1e-6)
        assert i not in got[i] and sorted(got[i]) == sorted(want)


# --------------------------------------------------------------------------- the NumPy twin
# Small requests without prune may be ranked by ``_retrieval._top_k_numpy`` instead of the
# kernels (rent or buy, ``bpr_numpy._twins``), so a result must not depend on which ran:
# items, scores, dtypes and shapes are compared bit for bit, on scores that are not exact too.


def assert_same_lists(got, want):
    for g, w in zip(got, want, strict=True):
        assert g.dtype == w.dtype and g.shape == w.shape
        np.testing.assert_array_equal(g, w)
        assert np.array_equal(g.view(np.uint8), w.view(np.uint8))  # bit for bit (-0.0, NaN payloads)


@st.composite
def twin_problems(draw):
    """Factors full of ties or continuous, NaN and infinite entries, exclusions with empty rows."""
    dtype = draw(st.sampled_from(DTYPES))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    n_query, n_items, f = draw(st.integers(1, 12)), draw(st.integers(1, 40)), draw(st.integers(1, 40))
    kind = draw(st.sampled_from(["ties", "continuous", "zeros"]))
    if kind == "ties":  # small integer sets: many equal scores, some of them -0.0 and 0.0
        q = rng.choice([-1.0, 0.0, 0.5, 1.0], (n_query, f))
        v = rng.choice([-2.0, -0.0, 0.0, 1.0, 3.0], (n_items, f))
        b = rng.choice([-1.0, -0.0, 0.0, 0.25, 2.0], n_items)
    elif kind == "continuous":  # rounding: the summation order of the product shows in the bits
        q, v, b = rng.standard_normal((n_query, f)), rng.standard_normal((n_items, f)), rng.standard_normal(n_items)
    else:
        q, v, b = np.zeros((n_query, f)), rng.standard_normal((n_items, f)), rng.choice([-0.0, 0.0, 1.0], n_items)
    if draw(st.booleans()):  # a diverged model: NaN in a few items' factors or biases, or in a query
        v[rng.random(n_items) < 0.2, rng.integers(0, f)] = np.nan
        b[rng.random(n_items) < 0.2] = np.nan
        q[rng.random(n_query) < 0.1, 0] = np.nan
    if draw(st.booleans()):  # infinite biases (inf - inf is NaN: not a candidate)
        b[rng.random(n_items) < 0.2] = np.inf
        b[rng.random(n_items) < 0.2] = -np.inf
    exclude = None
    if draw(st.booleans()):
        dense = rng.random((n_query, n_items)) < draw(st.sampled_from([0.0, 0.3, 0.8, 1.0]))
        dense[rng.random(n_query) < 0.3] = False  # some empty rows
        exclude = sp.csr_matrix(dense.astype(np.float64))
    rows = rng.integers(0, n_query, draw(st.integers(0, 70)))  # repeats; 64 and more only with prune=False
    k = draw(st.integers(0, n_items + 2))  # past the catalogue: padded rows
    return q.astype(dtype), v.astype(dtype), b.astype(dtype), k, rows, exclude


@settings(deadline=None, max_examples=examples(300), suppress_health_check=[HealthCheck.too_slow])
@given(twin_problems(), st.sampled_from([None, 1, 3, 50]), st.sampled_from([None, 1, 7, 16]),
       st.sampled_from([1, 2]), st.sampled_from([None, False]))
def test_numpy_twin_equals_the_kernels(problem, block, tile, threads, prune):
    q, v, b, k, rows, exclude = problem
    if prune is None and len(rows) >= 64:
        prune = False  # the default would prune: the kernels' path only
    kwargs = dict(rows=rows, exclude=exclude, threads=threads, block=block, tile=tile, prune=prune)
    with path("numba"):
        want = _top_k(q, v, b, k, **kwargs)
    with path("numpy") as chooser:
        spent = chooser.twin_seconds
        got = _top_k(q, v, b, k, **kwargs)
        assert chooser.twin_seconds > spent or len(rows) == 0 or k == 0  # the twin ran
    assert_same_lists(got, want)
    assert got[0].shape == (len(rows), k) and got[1].dtype == q.dtype


@pytest.mark.parametrize("dtype", DTYPES)
def test_numpy_twin_equals_the_kernels_on_larger_products(dtype):
    # Products large enough for BLAS's blocked code paths (the default block and tile, and
    # several blocks: one BLAS thread then), continuous scores: the bits of every score count.
    rng = np.random.default_rng(8)
    q, v = rng.standard_normal((63, 300)).astype(dtype), rng.standard_normal((9000, 300)).astype(dtype)
    b = rng.standard_normal(9000).astype(dtype)
    liked = sp.random(63, 9000, density=0.05, format="csr", random_state=9)
    for kwargs in (dict(), dict(block=10, threads=2), dict(block=7, tile=1000)):
        got = {}
        for which in ("numba", "numpy"):
            with path(which):
                got[which] = _top_k(q, v, b, 50, rows=np.arange(63)[::-1], exclude=liked, **kwargs)
        assert_same_lists(got["numpy"], got["numba"])


def test_the_request_picks_the_path(monkeypatch):
    rng = np.random.default_rng(7)
    q, v = rng.standard_normal((70, 4)).astype(np.float32), rng.standard_normal((50, 4)).astype(np.float32)
    b = rng.standard_normal(50).astype(np.float32)
    chooser = _retrieval._chooser()
    calls = []
    monkeypatch.setattr(chooser, "twin", lambda *args: calls.append(args) or _retrieval._top_k_numpy(*args))
    monkeypatch.setattr(chooser, "kernel_available", lambda: False)  # a new machine
    monkeypatch.setattr(chooser, "twin_seconds", 0.0)
    _top_k(q, v, b, 5, rows=np.arange(63))  # small, not pruned: the twin
    assert len(calls) == 1
    _top_k(q, v, b, 5, rows=np.arange(64))  # pruned by default: the kernels
    _top_k(q, v, b, 5, rows=np.arange(3), prune=True)
    _top_k(q, v, b.astype(np.float64), 5, rows=np.arange(3))  # the bias in another dtype: the kernels
    monkeypatch.setattr(_retrieval, "SMALL_REQUEST_SCORES", 3 * 50 - 1)
    _top_k(q, v, b, 5, rows=np.arange(3))  # too large
    assert len(calls) == 1
    monkeypatch.setattr(_retrieval, "SMALL_REQUEST_SCORES", 3 * 50)
    _top_k(q, v, b, 5, rows=np.arange(3))
    assert len(calls) == 2
    monkeypatch.setattr(chooser, "kernel_available", lambda: True)  # compiled or cached: no rent to pay
    _top_k(q, v, b, 5, rows=np.arange(3))
    with path("numpy"):  # forced: the twin for any request without prune, never with it
        _top_k(q, v, b, 5, rows=np.arange(70), prune=False)
        _top_k(q, v, b, 5, rows=np.arange(70))
    assert len(calls) == 3


def test_recommend_is_the_same_through_both_paths():
    data = datasets.synthetic_small(random_state=0)
    train, _ = datasets.split_random(data, test_fraction=0.2, random_state=0)
    results = {}
    for dtype in DTYPES:
        model = BPR(factors=32, epochs=2, threads=1, random_state=0, dtype=dtype).fit(train.matrix)
        vectors = model.user_factors[:5] * 1.5
        for which in ("numba", "numpy"):
            with path(which):
                results[dtype, which] = (
                    model.recommend(0, n=10),
                    model.recommend(np.arange(63), n=25),
                    model.recommend([3, 3, 1], n=2000, filter_liked=False),
                    model.recommend(user_factors=vectors, n=7, filter_liked=False),
                    model.similar_items(np.arange(40), n=8),
                )
        for got, want in zip(results[dtype, "numpy"], results[dtype, "numba"], strict=True):
            assert_same_lists(got, want)


def test_a_new_machine_recommends_without_compiling():
    # An empty numba cache: the first small recommend ranks with the twin, compiling nothing.
    code = ("import numpy as np; from bpr_numpy import BPR; from bpr_numpy import _topk_kernels as kern; "
            "rng = np.random.default_rng(0); m = BPR(factors=4); "
            "m.user_factors, m.item_factors = rng.standard_normal((9, 4)), rng.standard_normal((30, 4)); "
            "m.item_biases = rng.standard_normal(30); items, _ = m.recommend(2, n=5, filter_liked=False); "
            "assert len(items) == 5 and not kern._offer_tile.signatures, kern._offer_tile.signatures")
    with tempfile.TemporaryDirectory() as cache:
        subprocess.run([sys.executable, "-c", code], check=True, env=dict(os.environ, NUMBA_CACHE_DIR=cache))
