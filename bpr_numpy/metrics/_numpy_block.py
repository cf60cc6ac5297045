"""Plain-NumPy twin of the numba evaluation kernel, for problems too small to repay its compile.

With an empty numba cache, the first :func:`bpr_numpy.metrics.evaluate` of the README's quick
start (1,999 users × 1,000 items) took 4.3-5.0 s, nearly all of it compiling
:func:`._kernels._block_kernel` (with ``_top_k``, ``_pair_count`` and ``_sorted_copy``); warm,
the same call takes 0.02-0.04 s. :func:`_numpy_block` computes the same outputs with array
operations and compiles nothing: the quick start's first ``evaluate`` takes 0.14-0.17 s with
it (the block itself 50-65 ms, MovieLens 100k's 40 ms). ``_protocol`` may send problems of up to
``SMALL_PROBLEM_SCORES`` scores here (until the process has spent its rent in the twin, by the
rule of :mod:`bpr_numpy._twins`) and larger ones to the kernel, whose speed (several times the
twin's) repays its one compile.

It must equal ``_block_kernel`` exactly — the same dtypes and shapes, the same values bit
for bit: NaN where a metric is undefined or not asked for, the tie rule of the rankings
(higher score first, the lower item index on equal scores), -1 past the candidates,
integer pair counts divided as the kernel divides them — because which of the two runs
depends on the problem's size, and a result must not. ``tests/test_metrics_numpy_block.py``
checks every output against the kernel on random problems; change the two together.
"""

from __future__ import annotations

import numpy as np

from .._topk_numpy import _ranked_entries

#: Scores handled per pass of :func:`_rows` (a 1 MiB float32 slice).
CHUNK_SCORES = 2**18


def _flagged_entries(
    users: np.ndarray, indptr: np.ndarray, indices: np.ndarray, flags: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Block row and item of each flagged stored entry of the CSR rows ``users``, row by row."""
    start = indptr[users]
    length = indptr[users + 1] - start
    total = int(length.sum())
    row = np.repeat(np.arange(len(users)), length)
    # Position of each entry in the CSR arrays: its row's start plus its rank in the row.
    entry = np.arange(total) + np.repeat(start - (np.cumsum(length) - length), length)
    keep = flags[entry]
    return row[keep], indices[entry[keep]].astype(np.int64)


def _dense(row: np.ndarray, col: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Boolean matrix of ``shape``, True at the ``(row, col)`` pairs."""
    out = np.zeros(shape, np.bool_)
    out[row, col] = True
    return out


def _sorted_dense(x: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each row's ``x[r, mask[r]]`` sorted ascending, NaN-padded to the full width, and their counts.

    ``x`` holds no NaN, so the first ``counts[r]`` entries of row ``r`` are its values.
    """
    vals = np.where(mask, x, x.dtype.type(np.nan))
    vals.sort(axis=1)  # NaN sorts last
    return vals, np.count_nonzero(mask, axis=1)


def _sorted_sparse(x: np.ndarray, row: np.ndarray, col: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_sorted_dense` for the few entries ``(row, col)`` (grouped by row): a narrow matrix."""
    n = x.shape[0]
    counts = np.bincount(row, minlength=n)
    vals = np.full((n, max(int(counts.max()) if n else 0, 1)), np.nan, x.dtype)
    vals[row, np.arange(row.size) - np.repeat(np.cumsum(counts) - counts, counts)] = x[row, col]
    vals.sort(axis=1)
    return vals, counts


def _count_below(flat: np.ndarray, base: np.ndarray, counts: np.ndarray, p: np.ndarray, strict: bool) -> np.ndarray:
    """For each query q, how many of ``flat[base[q]:base[q] + counts[q]]`` (sorted) are ``< p[q]``.

    ``<=`` if not ``strict``. All queries bisect at once, branch-free as the kernel's
    ``_count_at_most``. Comparisons, not bits, decide, as in the kernel: -0.0 equals 0.0,
    ±inf compare as numbers. ``flat[base[q]]`` must exist (NaN when the row is empty).
    """
    pos = np.zeros(len(p), np.int64)
    length = counts.astype(np.int64)
    while True:
        half = length >> 1
        if not half.any():
            break
        probe = pos + half
        v = flat[base + probe]
        pos = np.where((v < p) if strict else (v <= p), probe, pos)
        length -= half
    v = flat[base + pos]  # one candidate left (NaN, never counted, for an empty row)
    return pos + ((v < p) if strict else (v <= p))


def _twice_u(srt: np.ndarray, counts: np.ndarray, rows: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Per query, ``Σ_x [p > x] + [p >= x]`` over the sorted negatives of its row, ``srt[rows[q]]``.

    ``_pair_count``'s terms, in int64: ``#(x < p) + #(x <= p)``. The second count differs
    from the first only when a negative equals p, so it bisects only for those queries.
    """
    width = srt.shape[1]
    flat = srt.ravel()
    base = rows.astype(np.int64) * width
    cnt = counts[rows]
    lt = _count_below(flat, base, cnt, p, True)
    le = lt.copy()
    tie = np.flatnonzero((lt < cnt) & (flat[base + np.minimum(lt, width - 1)] == p))
    if tie.size:
        le[tie] = _count_below(flat, base[tie], cnt[tie], p[tie], False)
    return lt + le


def _row_sums(values: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Sums of consecutive runs of ``values`` of lengths ``counts`` (int64, exact)."""
    edges = np.concatenate(([0], np.cumsum(counts)))
    csum = np.concatenate(([0], np.cumsum(values, dtype=np.int64)))
    return csum[edges[1:]] - csum[edges[:-1]]


def _first_per_row(rows: np.ndarray, n_rows: int) -> np.ndarray:
    """Index of the first entry of each row in the grouped ``rows`` (-1 for a row without entries)."""
    first = np.full(n_rows, -1, np.int64)
    if rows.size:
        starts = np.flatnonzero(np.concatenate(([True], rows[1:] != rows[:-1])))
        first[rows[starts]] = starts
    return first


def _numpy_block(
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
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """:func:`._kernels._block_kernel` in NumPy: the same arguments, the same outputs bit for bit.

    Parameters
    ----------
    scores : numpy.ndarray
        ``(n_block, n_items)`` float32 or float64; ``scores[b]`` are the scores of ``users[b]``.
    users : numpy.ndarray
        The block's users (rows of the CSR matrices).
    tr_indptr, tr_indices, tr_pos, te_indptr, te_indices, te_pos : numpy.ndarray
        The whole train and test matrices as CSR arrays with sorted, duplicate-free rows;
        ``*_pos`` flags which stored entries are positives.
    kmax : int
        Length of the top lists (0: none).
    exclude_train : bool
        Rank only the non-train items in the top lists and MRR.
    do_auc, do_mrr : bool
        Compute the AUCs, the first-hit ranks.

    Returns
    -------
    tuple of numpy.ndarray
        ``(full_auc, auc, top, hits, n_rel, first_rank, nan_rows)`` as the kernel's: NaN
        AUCs where undefined or not asked for, ``top`` (int64) padded with -1 past the
        candidates, ``hits`` (bool) False there, ``n_rel`` (int64) for every row,
        ``first_rank`` (int64) 0 where there is no relevant item, ``nan_rows`` flagging the
        rows with a test positive whose scores hold a NaN (not evaluated; the caller raises).
        Rows without a test positive keep every default.
    """
    n_items = scores.shape[1]
    # A few hundred rows at a time, so the dozen temporary passes over the scores stay in
    # cache: the quick start's block took 50 ms in pieces of 262 rows, 61-80 ms in one piece.
    # (An empty block is one empty piece: its outputs keep their shapes.)
    step = max(1, CHUNK_SCORES // max(n_items, 1))
    rest = (tr_indptr, tr_indices, tr_pos, te_indptr, te_indices, te_pos, kmax, exclude_train, do_auc, do_mrr)
    starts = range(0, max(len(scores), 1), step)
    parts = [_rows(scores[start : start + step], users[start : start + step], *rest) for start in starts]
    return tuple(np.concatenate(outs) for outs in zip(*parts, strict=True))  # type: ignore[return-value]


def _rows(
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
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """:func:`_numpy_block` for a few rows at once (the same arguments and outputs)."""
    n_block, n_items = scores.shape
    full_auc = np.full(n_block, np.nan)
    auc = np.full(n_block, np.nan)
    top = np.full((n_block, kmax), -1, np.int64)
    hits = np.zeros((n_block, kmax), np.bool_)
    n_rel = np.zeros(n_block, np.int64)
    first_rank = np.zeros(n_block, np.int64)
    nan_rows = np.zeros(n_block, np.bool_)

    tr_r, tr_j = _flagged_entries(users, tr_indptr, tr_indices, tr_pos)
    te_r, te_j = _flagged_entries(users, te_indptr, te_indices, te_pos)
    train = _dense(tr_r, tr_j, (n_block, n_items))
    n_test = np.bincount(te_r, minlength=n_block)
    te_elig = ~train[te_r, te_j]  # test positives that are not train positives (P2's positives)
    n_elig = np.bincount(te_r[te_elig], minlength=n_block)
    n_rel[:] = n_elig if exclude_train else n_test  # set for every row, as in the kernel

    # The kernel converts the scores to float64 first; only comparisons read them after
    # that, and float32 -> float64 is exact and keeps the order, so float32 blocks stay
    # float32 here (their sorts take half the time). It looks for NaN only in rows with a
    # test positive and leaves a flagged row at the defaults (n_rel aside).
    x = scores if scores.dtype in (np.float32, np.float64) else np.asarray(scores, np.float64)
    active = n_test > 0
    nan_rows[:] = active & np.isnan(x).any(axis=1)
    live = active & ~nan_rows
    rows = np.flatnonzero(live)
    if rows.size == 0:
        return full_auc, auc, top, hits, n_rel, first_rank, nan_rows
    if rows.size < n_block:
        # Keep the live rows only; entries are renumbered to them.
        renumber = np.cumsum(live) - 1
        keep = live[tr_r]
        tr_r, tr_j = renumber[tr_r[keep]], tr_j[keep]
        keep = live[te_r]
        te_r, te_j, te_elig = renumber[te_r[keep]], te_j[keep], te_elig[keep]
        x, train, n_test, n_elig = x[rows], train[rows], n_test[rows], n_elig[rows]
    n = rows.size
    test = _dense(te_r, te_j, (n, n_items))
    te_v = x[te_r, te_j]

    if do_auc:
        # Twice the Mann-Whitney U, in integers: each test positive p placed among the sorted
        # negatives by bisection, #(x < p) + #(x <= p) = Σ_x [p > x] + [p >= x].
        neither, n_neither = _sorted_dense(x, ~(train | test))
        c_neither = _twice_u(neither, n_neither, te_r, te_v)
        # P2: the eligible positives against the items in neither train nor test.
        u2 = _row_sums(np.where(te_elig, c_neither, 0), n_test)
        ok = (n_elig > 0) & (n_neither > 0)
        auc[rows[ok]] = u2[ok] / (2.0 * n_elig[ok] * n_neither[ok])
        # P1: every test positive against the neither items and the train-only items.
        only = ~test[tr_r, tr_j]
        train_only, n_train_only = _sorted_sparse(x, tr_r[only], tr_j[only])
        u1 = _row_sums(c_neither + _twice_u(train_only, n_train_only, te_r, te_v), n_test)
        n_neg1 = n_items - n_test
        ok = n_neg1 > 0
        full_auc[rows[ok]] = u1[ok] / (2.0 * n_test[ok] * n_neg1[ok])

    kk = min(kmax, n_items)
    if not (do_mrr or kk > 0):
        return full_auc, auc, top, hits, n_rel, first_rank, nan_rows
    # Negated scores, NaN where not a candidate: negation is exact and reverses the order,
    # so "ranks above" is "<" here, and one array serves the partition and the comparisons.
    neg = np.where(train, x.dtype.type(np.nan), -x) if exclude_train else -x
    rel = np.ones(te_r.size, np.bool_) if not exclude_train else te_elig  # relevant test positives

    if do_mrr:
        # The best relevant item: the highest score, then the lowest index (a lexsort of the
        # few relevant entries).
        r_rel, j_rel = te_r[rel], te_j[rel]
        order = np.lexsort((j_rel, -te_v[rel], r_rel))
        first = _first_per_row(r_rel[order], n)
        has = first >= 0
        best = j_rel[order][first[has]]
        neg_h = neg if has.all() else neg[has]
        sb = neg_h[np.arange(best.size), best][:, None]
        # Candidates ranked above it: better scores, and equal scores at lower indices. Most
        # rows tie only with the item itself; only the others look at the indices.
        above = np.count_nonzero(neg_h < sb, axis=1)
        eq = neg_h == sb
        tied = np.flatnonzero(np.count_nonzero(eq, axis=1) > 1)
        if tied.size:
            above[tied] += np.count_nonzero(eq[tied] & (np.arange(n_items) < best[tied, None]), axis=1)
        first_rank[rows[has]] = above + 1

    if kk > 0:
        r, j, rank = _ranked_entries(neg, kk)
        top[rows[r], rank] = j
        # A hit is a relevant item: a test positive (not a train positive with exclude_train,
        # and train positives are not candidates then).
        hits[rows[r], rank] = test[r, j]

    return full_auc, auc, top, hits, n_rel, first_rank, nan_rows
