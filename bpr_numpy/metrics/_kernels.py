"""Numba kernels of the evaluation: per block of users, the AUC pair counts, top-k lists and hits.

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

import numpy as np
from numba import njit

from .._topk_kernels import _top_k, _worse

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
def _sorted_copy(a: np.ndarray) -> np.ndarray:
    """``a`` sorted ascending (no NaN), by heapsort: what ``np.sort`` gives, at a fraction of its compile.

    numba compiles ``np.sort`` as a generic quicksort that took about 0.8 s of a first
    ``metrics.evaluate``'s 3.2 s; this sorts the (at most a few hundred) test positives of a user.
    """
    out = a.copy()
    n = out.shape[0]
    for start in range(n // 2 - 1, -1, -1):
        _sift_max(out, start, n)
    for end in range(n - 1, 0, -1):
        out[0], out[end] = out[end], out[0]
        _sift_max(out, 0, end)
    return out


@njit(cache=True, inline="always")
def _sift_max(a: np.ndarray, pos: int, size: int) -> None:
    """Restore the max-heap ``a[:size]`` below ``pos``."""
    while True:
        child = 2 * pos + 1
        if child >= size:
            return
        if child + 1 < size and a[child + 1] > a[child]:
            child += 1
        if a[child] > a[pos]:
            a[pos], a[child] = a[child], a[pos]
            pos = child
        else:
            return


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
    srt = _sorted_copy(pos)
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
