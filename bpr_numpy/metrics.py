"""Ranking metrics for implicit-feedback models: AUC (protocols P1 and P2) and top-k metrics.

All metrics are computed in one pass over blocks of users (``evaluate``); the
single-metric functions (``full_auc``, ``auc``, ``precision_at_k``, ...) are thin
wrappers around it. Memory is bounded by one block of scores
(``block_size × n_items``, float32 or float64) and a few scratch rows, besides the
train and test matrices; a dense users × items array is never built.

Conventions (see ``DESIGN.md`` §4)
----------------------------------
Positives
    A stored value ``> 0`` in ``train`` or ``test`` is a positive. Stored values
    ``<= 0`` (explicit zeros included) are not positives. Duplicate entries are
    summed first, as scipy does.
Evaluated users
    Only users with at least one test positive are scored. ``evaluate`` reports
    their number as ``"n_users"``. A metric that is undefined for a user (see
    below) leaves that user out of that metric's average; in the per-user output
    the user's value is NaN.
P1, ``full_auc``
    Per user, ROC AUC of the scores over *all* items: test positives are labelled
    1 and every other item, train positives included, 0. A user whose every item is
    a test positive has no negative and is left out.
P2, ``auc``
    Per user, AUC of the *eligible* test positives (test positives that are not
    train positives) against the items that are neither train nor test positives.
    A user with no eligible test positive, or with no such negative left (the train
    and test rows cover the whole catalogue), is left out.
Ties
    A (positive, negative) pair with equal scores counts one half in both AUCs.
Top-k metrics and MRR
    Rank the *candidates* — every item that is not a train positive of the user
    (``exclude_train=True``, protocol P2) or every item (``exclude_train=False``) —
    by score, descending; among equal scores the **lower item index ranks first**.
    The relevant items are the test positives among the candidates (with
    ``exclude_train=True`` a test positive that is also a train positive cannot be
    recommended and does not count, not even in recall's denominator); ``n_rel``
    is their number. Users with ``n_rel = 0`` are left out. When ``k`` exceeds the
    number of candidates, all candidates are ranked and the missing positions are
    misses (precision still divides by ``k``).

MRR is taken over the full ranking of the candidates (no cut-off).

AUC is the Mann-Whitney U statistic, the sum of the positives' ranks minus
``n_pos (n_pos + 1) / 2``: for each negative, the number of positives scoring above
it plus one half of those scoring equal, counted exactly in integers inside a numba
kernel. With few positives (<= 64) every positive is compared with every negative
(a vectorised loop, about 0.3 ns a pair); with more, each negative is placed by a
binary search in the sorted positive scores (16 searches in lockstep). The item
scores are never sorted: sorting costs more than the whole count
(``scipy.stats.rankdata`` takes about 2 ms for a 10,000-item row, the kernel
tens of microseconds).
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
import scipy.sparse as sp
from numba import njit

from . import _rng
from ._validation import check_sparse_structure

__all__ = [
    "evaluate",
    "full_auc",
    "auc",
    "precision_at_k",
    "recall_at_k",
    "ndcg_at_k",
    "map_at_k",
    "hit_rate_at_k",
    "mrr",
    "coverage_at_k",
    "auc_from_scores",
    "popularity_scorer",
    "random_scorer",
    "METRIC_NAMES",
    "DEFAULT_BLOCK_BYTES",
]

#: Names accepted by ``evaluate(metrics=...)``. Top-k metrics get ``@k`` appended in
#: the result keys.
METRIC_NAMES: tuple[str, ...] = (
    "full_auc",
    "auc",
    "precision",
    "recall",
    "ndcg",
    "map",
    "hit_rate",
    "mrr",
    "coverage",
)
_TOPK_METRICS = frozenset({"precision", "recall", "ndcg", "map", "hit_rate", "coverage"})

#: Memory budget of one block of float64 scores when ``block_size`` is not given.
#: Throughput is flat from about 2 to 30 MiB (10k-item rows) and 12% lower at 64 MiB,
#: where the block no longer stays in cache between the product and the kernel.
DEFAULT_BLOCK_BYTES: int = 16 * 2**20

BlockScorer = Callable[[np.ndarray], np.ndarray]


# --------------------------------------------------------------------------- numba kernels
# Nothing below is compiled at import: numba compiles on the first call.


# Scores holding a NaN are rejected (the kernel flags them while copying a row),
# so in the copies NaN is free to mean "not a candidate": NaN compares false with
# everything, which lets the inner loops drop the mask test and vectorise.

#: Up to this many positives, AUC pair counts compare every positive with every
#: negative (vectorised, about 0.3 ns a pair on the Zen 1 machine it was measured
#: on); above it, binary searches of the negatives in the sorted positives (16 at a
#: time, about 16-25 ns a negative) are cheaper. Measured on 10,000-item rows.
_LINEAR_MAX_POS = 64
_SEARCH_WIDTH = 16


@njit(cache=True, inline="always")
def _count_at_most(a: np.ndarray, n: int, x: float) -> int:
    """Number of entries of sorted ``a[:n]`` that are <= x (n >= 1), by bisection."""
    base = 0
    length = n
    while length > 1:
        half = length >> 1
        base = base + half if a[base + half] <= x else base
        length -= half
    return base + 1 if a[base] <= x else base


@njit(cache=True)
def _pair_count(pos: np.ndarray, neg: np.ndarray) -> int:
    """Twice the Mann-Whitney U of ``pos`` against the non-NaN entries of ``neg``.

    ``Σ_{p, x} 2·[p > x] + [p == x]`` = ``Σ [p > x] + [p >= x]``: integers, so ties
    are counted exactly and the AUC is one division away.
    """
    n = pos.shape[0]
    total = 0
    if n == 0:
        return total
    if n <= _LINEAR_MAX_POS:
        for i in range(n):
            p = pos[i]
            c = 0
            for j in range(neg.shape[0]):
                x = neg[j]
                c += np.int64(p > x) + np.int64(p >= x)
            total += c
        return total
    # Binary searches for _SEARCH_WIDTH negatives in lockstep: their steps are
    # independent, so the CPU overlaps them instead of waiting on one search's loads.
    srt = np.sort(pos)
    base = np.zeros(_SEARCH_WIDTH, np.int64)
    m = neg.shape[0]
    for c0 in range(0, m, _SEARCH_WIDTH):
        w = min(_SEARCH_WIDTH, m - c0)
        base[:w] = 0
        length = n
        while length > 1:
            half = length >> 1
            for i in range(w):
                b = base[i]
                base[i] = b + half if srt[b + half] < neg[c0 + i] else b
            length -= half
        for i in range(w):
            x = neg[c0 + i]
            if x == x:
                b = base[i]
                lo = b + 1 if srt[b] < x else b  # number of positives < x
                hi = lo
                if lo < n and srt[lo] == x:  # a tie: rare with real-valued scores
                    hi = _count_at_most(srt, n, x)
                total += 2 * n - hi - lo  # 2 (n - hi) above + (hi - lo) equal
    return total


@njit(cache=True, inline="always")
def _worse(s_a: float, i_a: int, s_b: float, i_b: int) -> bool:
    """True if (s_a, i_a) ranks below (s_b, i_b): lower score, or equal score and higher index."""
    return s_a < s_b or (s_a == s_b and i_a > i_b)


@njit(cache=True)
def _sift_down(hs: np.ndarray, hi: np.ndarray, pos: int, size: int) -> None:
    # Min-heap on rank quality: the root is the worst of the kept items.
    while True:
        left = 2 * pos + 1
        if left >= size:
            return
        child = left
        right = left + 1
        if right < size and _worse(hs[right], hi[right], hs[left], hi[left]):
            child = right
        if _worse(hs[child], hi[child], hs[pos], hi[pos]):
            hs[pos], hs[child] = hs[child], hs[pos]
            hi[pos], hi[child] = hi[child], hi[pos]
            pos = child
        else:
            return


@njit(cache=True, inline="always")
def _heap_push(hs, hi, size, x, item):
    """Add ``(x, item)`` to the worst-first heap ``hs/hi[:size]`` (sift up; the caller counts it)."""
    pos = size
    hs[pos] = x
    hi[pos] = item
    while pos > 0:
        parent = (pos - 1) >> 1
        if _worse(hs[pos], hi[pos], hs[parent], hi[parent]):
            hs[pos], hs[parent] = hs[parent], hs[pos]
            hi[pos], hi[parent] = hi[parent], hi[pos]
            pos = parent
        else:
            break


@njit(cache=True)
def _top_k(cand: np.ndarray, kmax: int, out: np.ndarray) -> int:
    """Write the best ``kmax`` non-NaN entries of ``cand`` to ``out``, best first.

    Order: score descending, then index ascending. Returns how many were written
    (fewer than ``kmax`` when there are fewer candidates).
    """
    n_items = cand.shape[0]
    hs = np.empty(kmax, np.float64)
    hi = np.empty(kmax, np.int64)
    size = 0
    j = 0
    while j < n_items and size < kmax:
        x = cand[j]
        if x == x:
            _heap_push(hs, hi, size, x, j)
            size += 1
        j += 1
    # Items arrive in increasing index, so a newcomer that ties the worst kept item has
    # the higher index and loses: only a strictly higher score may enter, which is the
    # documented tie-break (and NaN never enters).
    if size == kmax:
        root = hs[0]
        for jj in range(j, n_items):
            if cand[jj] > root:
                hs[0] = cand[jj]
                hi[0] = jj
                _sift_down(hs, hi, 0, size)
                root = hs[0]
    # Heap sort: popping the worst fills the list from its end, best first.
    for r in range(size - 1, -1, -1):
        out[r] = hi[0]
        hs[0] = hs[r]
        hi[0] = hi[r]
        _sift_down(hs, hi, 0, r)
    return size


# --------------------------------------------------------------------------- fused recommend
# ``model._top_k`` ranks ``query @ items.T + bias`` without a full score block: it walks
# the items in tiles (in an order that puts likely winners first), one BLAS product per
# (block of rows, tile), and these kernels feed each tile to per-row heaps of the same
# rank order as :func:`_top_k`. Rows whose heap can no longer change are dropped early.

_SCREEN = 32  # scores screened per branch-free count in _offer_row


@njit(cache=True, inline="always")
def _in_sorted(a: np.ndarray, lo: int, hi: int, x: int) -> bool:
    """True if ``x`` is in ``a[lo:hi]``, which is sorted ascending (binary search)."""
    end = hi
    while lo < hi:
        mid = (lo + hi) >> 1
        if a[mid] < x:
            lo = mid + 1
        else:
            hi = mid
    return lo < end and a[lo] == x


@njit(cache=True)
def _offer_row(s: np.ndarray, bias: np.ndarray, order: np.ndarray, t0: int, excl: np.ndarray, ex_lo: int,
               ex_hi: int, hs: np.ndarray, hix: np.ndarray, size: int) -> int:
    """Offer one row's scores for the items ``order[t0:t0 + len(s)]`` to its top-k heap.

    Parameters
    ----------
    s : numpy.ndarray
        ``query . item`` for those items (one row of a tile product).
    bias : numpy.ndarray
        Item biases in tile order; ``bias[t0 + j]`` is added to ``s[j]`` here, in the
        scores' dtype (the same rounding as ``scores += bias``).
    order : numpy.ndarray
        Item index of each tile position (the ties and the output use item indices).
    excl, ex_lo, ex_hi : numpy.ndarray, int, int
        ``excl[ex_lo:ex_hi]``, sorted ascending, are items that are not candidates.
    hs, hix : numpy.ndarray
        The heap (scores in the scores' dtype, item indices): a min-heap on rank
        quality, so the root is the worst kept item (:func:`_sift_down`).
    size : int
        Items in the heap so far.

    Returns
    -------
    int
        The new heap size. NaN scores never enter (not candidates, as in :func:`_top_k`).
    """
    kmax = hs.shape[0]
    w = s.shape[0]
    j = 0
    while size < kmax and j < w:
        x = s[j] + bias[t0 + j]
        item = order[t0 + j]
        if x == x and not _in_sorted(excl, ex_lo, ex_hi, item):
            _heap_push(hs, hix, size, x, item)
            size += 1
        j += 1
    if size < kmax:
        return size
    root = hs[0]
    while j < w:
        # Once the heap is full almost every score is below its root: a branch-free count
        # over a short run (it vectorises) skips the run without a compare-and-branch per
        # item. NaN compares false, so it is never counted (never a candidate).
        stop = min(w, j + _SCREEN)
        hits = 0
        for jj in range(j, stop):
            hits += s[jj] + bias[t0 + jj] >= root
        if hits:
            for jj in range(j, stop):
                x = s[jj] + bias[t0 + jj]
                if x >= root:
                    item = order[t0 + jj]
                    # Tiles are not in index order, so an equal score enters when its
                    # index is lower than the root's (the tie rule), not only a higher score.
                    if (x > root or item < hix[0]) and not _in_sorted(excl, ex_lo, ex_hi, item):
                        hs[0] = x
                        hix[0] = item
                        _sift_down(hs, hix, 0, kmax)
                        root = hs[0]
        j = stop
    return size


@njit(cache=True, nogil=True)
def _offer_tile(s: np.ndarray, bias: np.ndarray, order: np.ndarray, t0: int, active: np.ndarray, n_active: int,
                rows: np.ndarray, indptr: np.ndarray, indices: np.ndarray, exclude: bool, hs: np.ndarray,
                hix: np.ndarray, sizes: np.ndarray) -> None:
    """:func:`_offer_row` for the open rows of a block: ``s[a]`` belongs to row ``active[a]``.

    ``rows[r]`` is the CSR row (``indptr``/``indices``, sorted indices) holding the
    exclusions of block row ``r``; ``exclude=False`` ignores them.
    """
    for a in range(n_active):
        r = active[a]
        lo = hi = 0
        if exclude:
            lo, hi = indptr[rows[r]], indptr[rows[r] + 1]
        sizes[r] = _offer_row(s[a], bias, order, t0, indices, lo, hi, hs[r], hix[r], sizes[r])


@njit(cache=True, nogil=True)
def _drop_settled(active: np.ndarray, n_active: int, hs: np.ndarray, sizes: np.ndarray, norms: np.ndarray,
                  max_norm: float, max_bias: float, slack: float, floor: float, ub: np.ndarray) -> int:
    """Drop the rows whose heap no item left can enter; compact ``active`` and ``ub``.

    Every item left scores at most ``|q| max_norm + max_bias`` (Cauchy-Schwarz), plus
    the rounding of a float dot product of this length, which ``slack`` bounds
    (relative to ``|q| max_norm + |max_bias|``; ``floor`` covers underflow). A row is settled when its heap is full
    and its root scores strictly more: an equal score could still enter by a lower
    index. NaN or infinite bounds settle nothing.

    Parameters
    ----------
    active : numpy.ndarray
        Block rows still open; ``ub[a]`` is the query of ``active[a]``.
    n_active : int
    hs, sizes : numpy.ndarray
        The heaps' scores and sizes, by block row.
    norms : numpy.ndarray
        Euclidean norm of each block row's query (float64).
    max_norm, max_bias : float
        Largest item norm and item bias among the items not yet offered.
    slack, floor : float
    ub : numpy.ndarray
        Queries of the open rows, compacted in place with ``active``.

    Returns
    -------
    int
        The number of rows still open (the first entries of ``active``).
    """
    kmax = hs.shape[1]
    keep = 0
    for a in range(n_active):
        r = active[a]
        if sizes[r] == kmax:
            p = norms[r] * max_norm
            bound = p + max_bias + slack * (p + abs(max_bias)) + floor
            if hs[r, 0] > bound:
                continue
        if keep != a:
            active[keep] = r
            ub[keep, :] = ub[a, :]
        keep += 1
    return keep


@njit(cache=True, nogil=True)
def _heaps_to_rows(hs: np.ndarray, hix: np.ndarray, sizes: np.ndarray, items: np.ndarray,
                   scores: np.ndarray) -> None:
    """Heap sort each row's heap into ``items``/``scores``, best first (the rest is left as is)."""
    for r in range(hs.shape[0]):
        for p in range(sizes[r] - 1, -1, -1):
            items[r, p] = hix[r, 0]
            scores[r, p] = hs[r, 0]
            hs[r, 0] = hs[r, p]
            hix[r, 0] = hix[r, p]
            _sift_down(hs[r], hix[r], 0, p)


@njit(cache=True)
def _block_kernel(
    scores: np.ndarray,
    users: np.ndarray,
    tr_indptr: np.ndarray,
    tr_indices: np.ndarray,
    tr_pos: np.ndarray,
    te_indptr: np.ndarray,
    te_indices: np.ndarray,
    te_pos: np.ndarray,
    kmax: int,
    exclude_train: bool,
    do_auc: bool,
    do_mrr: bool,
):
    """Per-user AUCs, top-``kmax`` lists, hits and first-hit ranks for one block of users.

    ``scores[b]`` (float32 or float64) are the scores of user ``users[b]``; the CSR
    arrays are the whole train and test matrices with sorted, duplicate-free rows,
    ``*_pos`` flagging which stored entries are positives. Returns ``(full_auc, auc,
    top, hits, n_rel, first_rank, nan_rows)``: NaN AUCs where undefined, ``top``
    padded with -1 past the candidates, ``first_rank`` 0 where there is no relevant
    item, ``nan_rows`` flagging users whose scores hold a NaN (their row is not
    evaluated; the caller raises).
    """
    n_block, n_items = scores.shape
    full_auc = np.full(n_block, np.nan)
    auc = np.full(n_block, np.nan)
    top = np.full((n_block, kmax), -1, np.int64)
    hits = np.zeros((n_block, kmax), np.bool_)
    n_rel = np.zeros(n_block, np.int64)
    first_rank = np.zeros(n_block, np.int64)
    nan_rows = np.zeros(n_block, np.bool_)
    # Scratch rows, reused across users; `mark` is cleared through the CSR rows.
    mark = np.zeros(n_items, np.uint8)  # bit 0: train positive, bit 1: test positive
    neither = np.empty(n_items, np.float64)  # scores, NaN at train and test positives
    cand = np.empty(n_items, np.float64)  # scores, NaN at non-candidates
    for b in range(n_block):
        u = users[b]
        s = scores[b]
        t0, t1 = tr_indptr[u], tr_indptr[u + 1]
        e0, e1 = te_indptr[u], te_indptr[u + 1]
        n_train = 0
        for p in range(t0, t1):
            if tr_pos[p]:
                mark[tr_indices[p]] = 1
                n_train += 1
        n_test = 0
        n_both = 0
        for p in range(e0, e1):
            if te_pos[p]:
                j = te_indices[p]
                n_test += 1
                n_both += mark[j]
                mark[j] |= 2
        n_elig = n_test - n_both  # test positives that are not train positives
        n_rel[b] = n_elig if exclude_train else n_test

        if n_test > 0:
            # One pass over the row converts float32 scores, checks for NaN, and
            # leaves an L1/L2-resident copy the later passes read instead of the block.
            n_nan = 0
            for j in range(n_items):  # an explicit loop: 3x faster than cand[:] = s
                x = np.float64(s[j])
                cand[j] = x
                n_nan += np.int64(x != x)
            if n_nan > 0:
                nan_rows[b] = True
                for p in range(t0, t1):
                    mark[tr_indices[p]] = 0
                for p in range(e0, e1):
                    mark[te_indices[p]] = 0
                continue
            pos1 = np.empty(n_test, np.float64)  # eligible first, then train-and-test
            a = 0
            c = n_elig
            best = -1  # best relevant item: highest score, lowest index on ties
            for p in range(e0, e1):
                if not te_pos[p]:
                    continue
                j = te_indices[p]
                train_too = mark[j] & 1
                if train_too:
                    pos1[c] = s[j]
                    c += 1
                else:
                    pos1[a] = s[j]
                    a += 1
                if not train_too or not exclude_train:
                    if best < 0 or _worse(s[best], best, s[j], j):
                        best = j

            if do_auc:
                for j in range(n_items):
                    neither[j] = cand[j]
                for p in range(t0, t1):
                    if tr_pos[p]:
                        neither[tr_indices[p]] = np.nan
                for p in range(e0, e1):
                    if te_pos[p]:
                        neither[te_indices[p]] = np.nan
                n_neither = n_items - n_train - n_elig
                u2 = _pair_count(pos1[:n_elig], neither)
                if n_elig > 0 and n_neither > 0:
                    auc[b] = u2 / (2.0 * n_elig * n_neither)
                # P1: negatives are the neither-items plus the train-only items.
                u1 = u2 + _pair_count(pos1[n_elig:], neither)
                train_only = np.empty(n_train - n_both, np.float64)
                c = 0
                for p in range(t0, t1):
                    if tr_pos[p] and mark[tr_indices[p]] == 1:
                        train_only[c] = s[tr_indices[p]]
                        c += 1
                u1 += _pair_count(pos1, train_only)
                n_neg1 = n_items - n_test
                if n_neg1 > 0:
                    full_auc[b] = u1 / (2.0 * n_test * n_neg1)

            if (do_mrr and best >= 0) or kmax > 0:
                if exclude_train:
                    for p in range(t0, t1):
                        if tr_pos[p]:
                            cand[tr_indices[p]] = np.nan

            if do_mrr and best >= 0:
                sb = cand[best]
                above = 0
                for j in range(best):  # lower index wins ties
                    above += np.int64(cand[j] >= sb)
                for j in range(best + 1, n_items):
                    above += np.int64(cand[j] > sb)
                first_rank[b] = above + 1

            if kmax > 0:
                size = _top_k(cand, kmax, top[b])
                for r in range(size):
                    m = mark[top[b, r]]
                    hits[b, r] = (m & 2) != 0 and (not exclude_train or (m & 1) == 0)

        for p in range(t0, t1):
            mark[tr_indices[p]] = 0
        for p in range(e0, e1):
            mark[te_indices[p]] = 0
    return full_auc, auc, top, hits, n_rel, first_rank, nan_rows


# --------------------------------------------------------------------------- validation


def _check_matrix(x: Any, name: str) -> sp.csr_array:
    """Return ``x`` as a canonical CSR array (sorted, no duplicates), or raise naming ``name``."""
    if sp.issparse(x):
        if x.ndim != 2:
            raise ValueError(f"{name} must be 2-D, got a {x.ndim}-D sparse array")
        if x.dtype.kind not in "biuf":
            raise TypeError(f"{name} must hold real numbers, got dtype {x.dtype}")
        # The index arrays are checked before scipy converts them or the kernel
        # reads them: an out-of-range index would be an out-of-bounds access.
        canonical = check_sparse_structure(x, name)
        try:
            csr = sp.csr_array(x)
        except (ValueError, TypeError, IndexError) as exc:  # a corrupt dia/lil/dok matrix
            raise ValueError(f"{name} could not be converted to CSR: {exc}") from None
        if x.format != "csr":
            canonical = check_sparse_structure(csr, name)
    else:
        if isinstance(x, (str, bytes)) or not hasattr(x, "__len__") and not hasattr(x, "__array__"):
            raise TypeError(
                f"{name} must be a 2-D scipy.sparse matrix or array-like, got {type(x).__name__}"
            )
        try:
            arr = np.asarray(x)
        except (ValueError, TypeError) as exc:  # ragged nested lists
            raise TypeError(f"{name} could not be read as an array: {exc}") from None
        if arr.ndim != 2:
            raise ValueError(f"{name} must be 2-D, got an array with {arr.ndim} dimension(s)")
        if arr.dtype.kind not in "biuf":
            raise TypeError(f"{name} must hold real numbers, got dtype {arr.dtype}")
        if arr.dtype == np.float16:  # numeric, but not a dtype scipy.sparse supports
            arr = arr.astype(np.float32)
        csr = sp.csr_array(arr)
        canonical = True
    if csr.data.dtype.kind == "f" and not np.all(np.isfinite(csr.data)):
        raise ValueError(f"{name} contains NaN or infinite values")
    if not canonical:  # computed from the arrays: scipy's cached flag may predate an in-place edit
        # the kernel relies on sorted, duplicate-free rows; copy so the caller's
        # matrix is left as it was
        csr = csr.copy()
        csr.sum_duplicates()
    return csr


def _check_k(k: int | Sequence[int]) -> list[int]:
    ks = [k] if isinstance(k, (numbers.Integral, np.integer)) else k
    if isinstance(ks, (str, bytes)) or not isinstance(ks, Iterable):
        raise TypeError(f"k must be an int or a sequence of ints, got {type(k).__name__}")
    out: list[int] = []
    for kk in ks:
        if isinstance(kk, bool) or not isinstance(kk, (numbers.Integral, np.integer)):
            raise TypeError(f"k must be an int or a sequence of ints, got {kk!r}")
        if not 1 <= kk < 2**63:  # counts of items are int64
            raise ValueError(f"k must be >= 1 and below 2**63, got {kk}")
        if int(kk) not in out:
            out.append(int(kk))
    if not out:
        raise ValueError("k must not be an empty sequence")
    return out


def _as_block_scorer(model: Any) -> tuple[BlockScorer, int | None, int | None]:
    """Turn a factor model or a ``score_block`` callable into ``(scorer, n_users, n_items)``.

    A model with ``user_factors`` and ``item_factors`` (and optionally ``item_bias``)
    wins over being callable, so an estimator that also defines ``__call__`` is
    scored from its factors. ``n_users``/``n_items`` are None for a callable.
    """
    if hasattr(model, "user_factors") and hasattr(model, "item_factors"):
        uf = getattr(model, "user_factors")
        itf = getattr(model, "item_factors")
        if uf is None or itf is None:
            raise ValueError("model has no factors (is it fitted?)")
        uf = np.asarray(uf)
        itf = np.asarray(itf)
        if uf.ndim != 2 or itf.ndim != 2:
            raise ValueError(
                f"user_factors and item_factors must be 2-D, got shapes {uf.shape} and {itf.shape}"
            )
        if uf.shape[1] != itf.shape[1]:
            raise ValueError(
                f"user_factors has {uf.shape[1]} factors but item_factors has {itf.shape[1]}"
            )
        if uf.dtype.kind not in "biuf" or itf.dtype.kind not in "biuf":
            raise TypeError(f"factors must be real numbers, got {uf.dtype} and {itf.dtype}")
        if uf.dtype.kind != "f":
            uf = uf.astype(np.float64)
        if itf.dtype.kind != "f":
            itf = itf.astype(np.float64)
        if not (np.all(np.isfinite(uf)) and np.all(np.isfinite(itf))):
            raise ValueError("model factors contain NaN or infinite values")
        bias = getattr(model, "item_bias", None)
        if bias is not None:
            bias = np.asarray(bias)
            if bias.shape != (itf.shape[0],):
                raise ValueError(
                    f"item_bias has shape {bias.shape} but item_factors has {itf.shape[0]} rows"
                )
            if bias.dtype.kind not in "biuf" or not np.all(np.isfinite(bias)):
                raise ValueError("item_bias must be finite real numbers")
        itf_t = itf.T  # BLAS takes the transposed view without a copy

        def score_factors(users: np.ndarray) -> np.ndarray:
            block = uf[users] @ itf_t
            if bias is not None:
                block += bias
            return block

        return score_factors, uf.shape[0], itf.shape[0]
    if callable(model):
        return model, None, None
    raise TypeError(
        "model must have user_factors and item_factors attributes or be a callable "
        f"score_block(users) -> (len(users), n_items) array, got {type(model).__name__}"
    )


def _score(scorer: BlockScorer, users: np.ndarray, n_items: int) -> np.ndarray:
    block = scorer(users)
    block = np.asarray(block)
    if block.shape != (len(users), n_items):
        raise ValueError(
            f"the scorer returned shape {block.shape} for {len(users)} users; "
            f"expected ({len(users)}, {n_items})"
        )
    if block.dtype.kind not in "biuf":
        raise TypeError(f"the scorer returned dtype {block.dtype}; expected real numbers")
    # float32 goes to the kernel as is: it converts each row while copying it, which
    # saves two passes over the block (a cast and a NaN check, 30% of the time at
    # 10k items). Other types become float64, so the kernel compiles at most twice.
    dtype = block.dtype if block.dtype in (np.float32, np.float64) else np.float64
    return np.ascontiguousarray(block, dtype=dtype)


# --------------------------------------------------------------------------- evaluation


def _resolve_metrics(metrics: Iterable[str] | None) -> list[str]:
    if metrics is None:
        return list(METRIC_NAMES)
    if isinstance(metrics, str):
        metrics = [metrics]
    out = []
    for m in metrics:
        if not isinstance(m, str):
            raise TypeError(f"metric names must be strings, got {m!r}")
        if m not in METRIC_NAMES:
            hint = "; the cut-off is given by k" if "@" in m else ""
            raise ValueError(
                f"unknown metric {m!r}; expected some of {', '.join(METRIC_NAMES)}{hint}"
            )
        if m not in out:
            out.append(m)
    if not out:
        raise ValueError("metrics must name at least one metric")
    return out


def _nanmean(x: np.ndarray) -> float:
    ok = ~np.isnan(x)
    return float(x[ok].mean()) if ok.any() else float("nan")


def evaluate(
    model: Any,
    train: Any,
    test: Any,
    k: int | Sequence[int] = 10,
    *,
    metrics: Iterable[str] | None = None,
    per_user: bool = False,
    exclude_train: bool = True,
    block_size: int | None = None,
) -> dict[str, Any]:
    """Evaluate a model on held-out positives, all metrics in one pass over user blocks.

    Parameters
    ----------
    model : object or callable
        Either an object with ``user_factors`` (n_users × f), ``item_factors``
        (n_items × f) and optionally ``item_bias`` (n_items,) — scores are
        ``user_factors[u] @ item_factors.T + item_bias`` — or a callable
        ``score_block(users) -> array of shape (len(users), n_items)`` (baselines:
        :func:`popularity_scorer`, :func:`random_scorer`). Scores must not be NaN;
        ±inf is allowed.
    train, test : scipy.sparse matrix/array or 2-D array-like, shape (n_users, n_items)
        Stored values ``> 0`` are positives. Must have the same shape, be finite,
        and match the model's ``n_users``/``n_items`` when the model has factors.
    k : int or sequence of int, default 10
        Cut-off(s) of the top-k metrics; every ``k`` gets its own keys.
    metrics : iterable of str, optional
        Subset of :data:`METRIC_NAMES` (``"full_auc", "auc", "precision", "recall",
        "ndcg", "map", "hit_rate", "mrr", "coverage"``); all by default. Work not
        needed by the chosen metrics is skipped.
    per_user : bool, default False
        Also return per-user values (for paired significance tests).
    exclude_train : bool, default True
        Remove each user's train positives from the ranking of the top-k metrics and
        MRR (protocol P2). ``full_auc`` (P1) and ``auc`` (P2) follow their protocol
        whatever this says.
    block_size : int, optional
        Users scored at a time. By default chosen so one block of float64 scores
        takes about :data:`DEFAULT_BLOCK_BYTES` (16 MiB).

    Returns
    -------
    dict
        ``"full_auc"``, ``"auc"``, ``f"precision@{k}"``, ``f"recall@{k}"``,
        ``f"ndcg@{k}"``, ``f"map@{k}"``, ``f"hit_rate@{k}"``, ``"mrr"``,
        ``f"coverage@{k}"`` (those requested) as floats — means over the users for
        which each metric is defined, NaN if there are none — and ``"n_users"``, the
        number of users with at least one test positive (the users evaluated). With
        ``per_user=True`` also ``"users"`` (int64 indices of those users, ascending)
        and ``"per_user"``, a dict from the same metric keys (coverage excepted) to
        float arrays aligned with ``"users"``, NaN where the metric is undefined.

    Notes
    -----
    Definitions, for one user with candidates ranked as in the module docstring,
    ``rel(r) = 1`` if the item at rank ``r`` (1-based) is relevant, ``n_rel`` the
    number of relevant items:

    - ``full_auc`` (P1): ``(#{(p, n): s_p > s_n} + ½ #{(p, n): s_p = s_n}) / (n_pos n_neg)``
      with p over test positives and n over all other items.
    - ``auc`` (P2): the same with p over test positives that are not train positives
      and n over items that are neither.
    - ``precision@k = hits@k / k`` (k fixed, as LightFM), ``hits@k = Σ_{r≤k} rel(r)``.
    - ``recall@k = hits@k / n_rel``.
    - ``ndcg@k = DCG / IDCG``, ``DCG = Σ_{r≤k} rel(r) / log2(r + 1)``,
      ``IDCG = Σ_{r ≤ min(k, n_rel)} 1 / log2(r + 1)``.
    - ``map@k = Σ_{r≤k} rel(r) · precision@r / min(k, n_rel)``.
    - ``hit_rate@k = 1`` if ``hits@k > 0`` else 0.
    - ``mrr = 1 / r*`` with ``r*`` the rank of the best relevant item in the *full*
      ranking of the candidates (no cut-off).
    - ``coverage@k``: number of distinct items in the top-k lists of the users with
      ``n_rel > 0``, divided by ``n_items`` (NaN when there are no such users).
    """
    wanted = _resolve_metrics(metrics)
    ks = _check_k(k)
    train_csr = _check_matrix(train, "train")
    test_csr = _check_matrix(test, "test")
    if train_csr.shape != test_csr.shape:
        raise ValueError(f"train has shape {train_csr.shape} but test has shape {test_csr.shape}")
    n_users, n_items = train_csr.shape
    scorer, m_users, m_items = _as_block_scorer(model)
    if m_users is not None and (m_users, m_items) != (n_users, n_items):
        raise ValueError(
            f"model has {m_users} users and {m_items} items but train/test have shape "
            f"{train_csr.shape}"
        )
    if block_size is None:
        block_size = max(1, DEFAULT_BLOCK_BYTES // (8 * max(n_items, 1)))
    elif isinstance(block_size, bool) or not isinstance(block_size, (numbers.Integral, np.integer)):
        raise TypeError(f"block_size must be an int, got {block_size!r}")
    elif block_size < 1:
        raise ValueError(f"block_size must be >= 1, got {block_size}")
    block_size = int(block_size)

    tr_pos = train_csr.data > 0
    te_pos = test_csr.data > 0
    # Users with a test positive, without a Python loop over users.
    te_rows = np.repeat(np.arange(n_users), np.diff(test_csr.indptr))
    users = np.flatnonzero(np.bincount(te_rows[te_pos], minlength=n_users) > 0).astype(np.int64)
    n_eval = len(users)

    want_topk = any(m in _TOPK_METRICS for m in wanted)
    # No ranking is longer than the catalogue: ranks beyond it are misses, never stored
    # (a k of 10**12 must not allocate 10**12 slots).
    kmax = min(max(ks), n_items) if want_topk else 0
    do_auc = "full_auc" in wanted or "auc" in wanted
    do_mrr = "mrr" in wanted
    # index arrays in one dtype each so the kernel compiles once
    tr_indptr = train_csr.indptr.astype(np.int64)
    te_indptr = test_csr.indptr.astype(np.int64)
    tr_indices = train_csr.indices.astype(np.int32, copy=False)
    te_indices = test_csr.indices.astype(np.int32, copy=False)

    per: dict[str, np.ndarray] = {}
    keys_user: list[str] = []
    if "full_auc" in wanted:
        keys_user.append("full_auc")
    if "auc" in wanted:
        keys_user.append("auc")
    for kk in ks:
        for m in ("precision", "recall", "ndcg", "map", "hit_rate"):
            if m in wanted:
                keys_user.append(f"{m}@{kk}")
    if do_mrr:
        keys_user.append("mrr")
    for key in keys_user:
        per[key] = np.full(n_eval, np.nan)
    # Smallest rank at which each item appears in any top list: coverage@k for every k.
    min_rank = np.full(n_items, np.iinfo(np.int64).max, np.int64) if "coverage" in wanted else None
    # 1 / log2(r + 1) for r = 1..kmax, and the cumulative ideal DCG.
    discount = 1.0 / np.log2(np.arange(2, kmax + 2, dtype=np.float64))
    ideal = np.concatenate(([0.0], np.cumsum(discount)))

    n_topk_users = 0
    for start in range(0, n_eval, block_size):
        ub = users[start : start + block_size]
        sl = slice(start, start + len(ub))
        scores = _score(scorer, ub, n_items)
        fa, a2, top, hits, n_rel, first_rank, nan_rows = _block_kernel(
            scores, ub, tr_indptr, tr_indices, tr_pos, te_indptr, te_indices, te_pos,
            kmax, bool(exclude_train), do_auc, do_mrr,
        )  # fmt: skip
        if nan_rows.any():
            raise ValueError(f"the scorer returned NaN scores (user {ub[nan_rows][0]})")
        if "full_auc" in per:
            per["full_auc"][sl] = fa
        if "auc" in per:
            per["auc"][sl] = a2
        if do_mrr:
            per["mrr"][sl] = np.where(first_rank > 0, 1.0 / np.maximum(first_rank, 1), np.nan)
        if kmax == 0:
            continue
        has = n_rel > 0
        n_topk_users += int(np.count_nonzero(has))
        cum = np.cumsum(hits, axis=1)
        ranks = np.arange(1, kmax + 1)
        prec_at_r = cum / ranks
        for kk in ks:
            kc = min(kk, kmax)  # the columns that can hold a hit
            nh = cum[:, kc - 1].astype(np.float64)
            if f"precision@{kk}" in per:
                per[f"precision@{kk}"][sl] = np.where(has, nh / kk, np.nan)
            if f"recall@{kk}" in per:
                per[f"recall@{kk}"][sl] = np.where(has, nh / np.maximum(n_rel, 1), np.nan)
            if f"hit_rate@{kk}" in per:
                per[f"hit_rate@{kk}"][sl] = np.where(has, (nh > 0).astype(np.float64), np.nan)
            denom_n = np.minimum(n_rel, kk)
            if f"ndcg@{kk}" in per:
                dcg = hits[:, :kc] @ discount[:kc]
                idcg = np.maximum(ideal[denom_n], 1e-300)  # users with n_rel = 0 become NaN
                per[f"ndcg@{kk}"][sl] = np.where(has, dcg / idcg, np.nan)
            if f"map@{kk}" in per:
                ap = (prec_at_r[:, :kc] * hits[:, :kc]).sum(axis=1)
                per[f"map@{kk}"][sl] = np.where(has, ap / np.maximum(denom_n, 1), np.nan)
        if min_rank is not None:
            top_has = top[has]
            for r in range(kmax):
                col = top_has[:, r]
                col = col[col >= 0]
                # duplicates in col all write the same value, so fancy assignment is safe
                min_rank[col] = np.minimum(min_rank[col], r)

    result: dict[str, Any] = {}
    for key in keys_user:
        result[key] = _nanmean(per[key])
    if min_rank is not None:
        for kk in ks:
            result[f"coverage@{kk}"] = (
                float(np.count_nonzero(min_rank < kk)) / n_items if n_topk_users else float("nan")
            )
    # Present keys in the documented order.
    order = ["full_auc", "auc"]
    for kk in ks:
        order += [f"{m}@{kk}" for m in ("precision", "recall", "ndcg", "map", "hit_rate")]
    order += ["mrr"] + [f"coverage@{kk}" for kk in ks]
    result = {key: result[key] for key in order if key in result}
    result["n_users"] = n_eval
    if per_user:
        result["users"] = users
        result["per_user"] = per
    return result


# --------------------------------------------------------------------------- single metrics


def full_auc(model: Any, train: Any, test: Any, *, block_size: int | None = None) -> float:
    """Mean per-user ROC AUC over all items, train positives as negatives (protocol P1).

    Per user: ``(#{(p, n): s_p > s_n} + ½ #{(p, n): s_p = s_n}) / (n_pos n_neg)`` with
    p over the test positives and n over every other item (train positives
    included). Averaged over users with at least one test positive and one other
    item. See :func:`evaluate` for the parameters.

    Returns
    -------
    float
        The mean, NaN when no user qualifies.
    """
    return evaluate(model, train, test, metrics=["full_auc"], block_size=block_size)["full_auc"]


def auc(model: Any, train: Any, test: Any, *, block_size: int | None = None) -> float:
    """Mean per-user AUC with train positives removed (protocol P2).

    Per user: the pair count of :func:`full_auc` with p over the test positives that
    are not train positives and n over the items that are neither. Users with no
    such positive or no such negative are left out. See :func:`evaluate`.

    Returns
    -------
    float
        The mean, NaN when no user qualifies.
    """
    return evaluate(model, train, test, metrics=["auc"], block_size=block_size)["auc"]


def _topk_metric(name: str, model: Any, train: Any, test: Any, k: int, exclude_train: bool,
                 block_size: int | None) -> float:  # fmt: skip
    if isinstance(k, bool) or not isinstance(k, (numbers.Integral, np.integer)):
        raise TypeError(f"k must be an int, got {k!r}")
    res = evaluate(model, train, test, k, metrics=[name], exclude_train=exclude_train,
                   block_size=block_size)  # fmt: skip
    return res[f"{name}@{int(k)}"]


def precision_at_k(model: Any, train: Any, test: Any, k: int = 10, *, exclude_train: bool = True,
                   block_size: int | None = None) -> float:  # fmt: skip
    """Mean precision@k: hits in the top k divided by k (k fixed, as in LightFM).

    The top k are taken among the non-train items (``exclude_train=True``, P2),
    ties broken by lower item index; if fewer than k candidates exist all are
    ranked and the rest count as misses. Averaged over users with at least one
    relevant item. See :func:`evaluate`.

    Returns
    -------
    float
    """
    return _topk_metric("precision", model, train, test, k, exclude_train, block_size)


def recall_at_k(model: Any, train: Any, test: Any, k: int = 10, *, exclude_train: bool = True,
                block_size: int | None = None) -> float:  # fmt: skip
    """Mean recall@k: hits in the top k divided by the user's number of relevant items.

    Relevant items are the test positives among the candidates (with
    ``exclude_train=True``, test positives that are not train positives). See
    :func:`evaluate`.

    Returns
    -------
    float
    """
    return _topk_metric("recall", model, train, test, k, exclude_train, block_size)


def ndcg_at_k(model: Any, train: Any, test: Any, k: int = 10, *, exclude_train: bool = True,
              block_size: int | None = None) -> float:  # fmt: skip
    """Mean NDCG@k with binary relevance.

    ``DCG = Σ_{hit at rank r ≤ k} 1 / log2(r + 1)``; ``IDCG`` is the DCG of
    ``min(k, n_rel)`` hits at ranks 1, 2, .... See :func:`evaluate`.

    Returns
    -------
    float
    """
    return _topk_metric("ndcg", model, train, test, k, exclude_train, block_size)


def map_at_k(model: Any, train: Any, test: Any, k: int = 10, *, exclude_train: bool = True,
             block_size: int | None = None) -> float:  # fmt: skip
    """Mean average precision@k: ``Σ_{hit at rank r ≤ k} precision@r / min(k, n_rel)``.

    See :func:`evaluate`.

    Returns
    -------
    float
    """
    return _topk_metric("map", model, train, test, k, exclude_train, block_size)


def hit_rate_at_k(model: Any, train: Any, test: Any, k: int = 10, *, exclude_train: bool = True,
                  block_size: int | None = None) -> float:  # fmt: skip
    """Fraction of users with at least one relevant item in their top k.

    See :func:`evaluate`.

    Returns
    -------
    float
    """
    return _topk_metric("hit_rate", model, train, test, k, exclude_train, block_size)


def coverage_at_k(model: Any, train: Any, test: Any, k: int = 10, *, exclude_train: bool = True,
                  block_size: int | None = None) -> float:  # fmt: skip
    """Fraction of the catalogue that appears in at least one evaluated user's top k.

    The users are those with at least one relevant item (as for the other top-k
    metrics); the denominator is ``n_items``. See :func:`evaluate`.

    Returns
    -------
    float
    """
    return _topk_metric("coverage", model, train, test, k, exclude_train, block_size)


def mrr(model: Any, train: Any, test: Any, *, exclude_train: bool = True,
        block_size: int | None = None) -> float:  # fmt: skip
    """Mean reciprocal rank of the first relevant item in the full ranking (no cut-off).

    The rank is taken among the candidates (non-train items with
    ``exclude_train=True``), ties broken by lower item index. See :func:`evaluate`.

    Returns
    -------
    float
    """
    return evaluate(model, train, test, metrics=["mrr"], exclude_train=exclude_train,
                    block_size=block_size)["mrr"]  # fmt: skip


def auc_from_scores(
    scores: np.ndarray, positives: np.ndarray, candidates: np.ndarray | None = None
) -> np.ndarray:
    """Per-row AUC of a dense score matrix (Mann-Whitney U, ties one half).

    Parameters
    ----------
    scores : array of shape (n_rows, n_items) or (n_items,)
        Scores, not NaN.
    positives : bool array of the same shape
        Items labelled 1. Positives outside ``candidates`` are ignored.
    candidates : bool array of the same shape, optional
        Items taking part (default: all). Negatives are the candidates that are
        not positives.

    Returns
    -------
    ndarray of float64, shape (n_rows,) (a 0-d array for 1-D input)
        ``(#{(p, n): s_p > s_n} + ½ #{(p, n): s_p = s_n}) / (n_pos n_neg)``; NaN for
        rows without a positive or without a negative.
    """
    s = np.asarray(scores, dtype=np.float64)
    one_d = s.ndim == 1
    s = np.atleast_2d(s)
    if s.ndim != 2:
        raise ValueError(f"scores must be 1-D or 2-D, got {s.ndim}-D")
    pos = np.atleast_2d(np.asarray(positives, dtype=bool))
    if pos.shape != s.shape:
        raise ValueError(f"positives has shape {pos.shape} but scores has shape {s.shape}")
    if candidates is None:
        cand = np.ones_like(pos)
    else:
        cand = np.atleast_2d(np.asarray(candidates, dtype=bool))
        if cand.shape != s.shape:
            raise ValueError(f"candidates has shape {cand.shape} but scores has shape {s.shape}")
    if np.isnan(s).any():
        raise ValueError("scores contain NaN")
    # Non-candidates play the part of train positives, so P2 of the kernel is this AUC.
    excl = sp.csr_array(~cand)
    tst = sp.csr_array(pos & cand)
    n = s.shape[0]
    _, a2, *_ = _block_kernel(
        np.ascontiguousarray(s), np.arange(n, dtype=np.int64),
        excl.indptr.astype(np.int64), excl.indices.astype(np.int32), excl.data.astype(bool),
        tst.indptr.astype(np.int64), tst.indices.astype(np.int32), tst.data.astype(bool),
        0, True, True, False,
    )  # fmt: skip
    return a2[0] if one_d else a2


# --------------------------------------------------------------------------- baselines


def popularity_scorer(train: Any) -> BlockScorer:
    """Block scorer ranking items by their number of train positives.

    Parameters
    ----------
    train : scipy.sparse matrix or 2-D array-like, shape (n_users, n_items)
        Stored values ``> 0`` are positives.

    Returns
    -------
    callable
        ``score_block(users) -> (len(users), n_items)`` float64 array, every row the
        item popularity counts (ties broken by lower item index when ranked).
    """
    csr = _check_matrix(train, "train")
    counts = np.bincount(csr.indices[csr.data > 0], minlength=csr.shape[1]).astype(np.float64)

    def score_block(users: np.ndarray) -> np.ndarray:
        return np.broadcast_to(counts, (len(users), counts.shape[0]))

    return score_block


# SplitMix64 (bpr_numpy._rng), vectorised over NumPy arrays for the baseline scorer.
_SM_GAMMA, _SM_M1, _SM_M2 = _rng.GOLDEN, _rng.MIX1, _rng.MIX2


def random_scorer(n_items: int, seed: int = 0) -> BlockScorer:
    """Block scorer giving uniform random scores in [0, 1), reproducible per (seed, user, item).

    The score of (u, i) is a SplitMix64 hash of ``(seed, u, i)``, so it does not
    depend on the block size or on which other users are scored with u.

    Parameters
    ----------
    n_items : int
        Number of items (columns of each block).
    seed : int, default 0
        Any integer; different seeds give independent scores.

    Returns
    -------
    callable
        ``score_block(users) -> (len(users), n_items)`` float64 array.
    """
    if isinstance(n_items, bool) or not isinstance(n_items, (numbers.Integral, np.integer)):
        raise TypeError(f"n_items must be an int, got {n_items!r}")
    if n_items < 1:
        raise ValueError(f"n_items must be >= 1, got {n_items}")
    n_items = int(n_items)
    # fold the seed into 64 bits once; arbitrary Python ints are accepted
    key = _splitmix64(np.array([int(seed) & 0xFFFFFFFFFFFFFFFF], dtype=np.uint64))[0]
    items = np.arange(n_items, dtype=np.uint64)

    def score_block(users: np.ndarray) -> np.ndarray:
        u = np.asarray(users, dtype=np.uint64)[:, None]
        with np.errstate(over="ignore"):
            x = _splitmix64(_splitmix64(u ^ key) + items)
        return (x >> np.uint64(11)).astype(np.float64) * (1.0 / 2.0**53)

    return score_block


def _splitmix64(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        z = x + _SM_GAMMA
        z = (z ^ (z >> np.uint64(30))) * _SM_M1
        z = (z ^ (z >> np.uint64(27))) * _SM_M2
        return z ^ (z >> np.uint64(31))
