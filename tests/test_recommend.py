"""The fused top-k behind ``BPR.recommend`` and ``BPR.similar_items`` against brute force.

The reference scores every item in NumPy and sorts on (-score, item index): the documented
rank order. Factors are small integers (times a power of two), so every score is exact in
float32 and float64 whatever the summation order of the BLAS product: ties are common and
the comparison can be exact. No test looks at timings.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from _budget import examples
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bpr_numpy import BPR
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


@settings(deadline=None, max_examples=examples(150), suppress_health_check=[HealthCheck.too_slow])
@given(problems(), st.integers(0, 80), st.integers(1, 40), st.integers(1, 40), st.booleans(),
       st.sampled_from([None, True, False]), st.sampled_from([1, 2]))
def test_top_k_is_the_brute_force_ranking(problem, k, block, tile, exclude, prune, threads):
    q, v, b, liked, rows = problem
    k = min(k, v.shape[0])
    ex = liked if exclude else None
    items, scores = _top_k(q, v, b, k, rows=rows, exclude=ex, threads=threads, block=block, tile=tile, prune=prune)
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
