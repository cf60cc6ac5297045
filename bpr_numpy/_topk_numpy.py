"""The rank order of :mod:`bpr_numpy._topk_kernels` in NumPy, for the kernels' plain-NumPy twins.

The twins (:func:`bpr_numpy.metrics._numpy_block._numpy_block`,
:func:`bpr_numpy.model._retrieval._top_k_numpy`) stand in for numba kernels on problems too
small to repay their compile, and must rank exactly as the kernels' heaps do: score descending,
equal scores by the lower index, NaN never a candidate. This module imports no numba.
"""

from __future__ import annotations

import numpy as np


def _ranked_entries(neg: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each row's ``k`` best candidates in negated scores, best first, as the kernels' heaps rank them.

    Parameters
    ----------
    neg : numpy.ndarray
        ``(n_rows, n_cols)`` negated scores, NaN where an entry is not a candidate. Negation
        is exact and reverses the order, so "ranks above" is ``<`` here; -0.0 equals 0.0 and
        ±inf are candidates, as in the kernels' comparisons.
    k : int
        ``1 <= k <= n_cols``.

    Returns
    -------
    row, col, rank : numpy.ndarray
        The entrants, grouped by row and best first within a row (negated score ascending,
        then column ascending: the kernels' ``_worse``); ``rank`` is each one's place in its
        row's list (0 for the best). A row with fewer than ``k`` candidates has them all.
    """
    n = neg.shape[0]
    # The k-th best candidate of each row (NaN, which sorts last, when fewer than k).
    thr = np.partition(neg, k - 1, axis=1)[:, k - 1 : k]
    sel = neg <= thr  # all False in a row whose thr is NaN
    over = np.flatnonzero(np.count_nonzero(sel, axis=1) > k)
    if over.size:
        # Ties at the threshold: every better score enters, and the lowest-index equals.
        better = neg[over] < thr[over]
        tie = neg[over] == thr[over]
        need = k - np.count_nonzero(better, axis=1)
        sel[over] = better | (tie & (np.cumsum(tie, axis=1) <= need[:, None]))
    short = np.flatnonzero(np.isnan(thr[:, 0]))
    if short.size:
        sel[short] = ~np.isnan(neg[short])  # fewer candidates than k: all of them
    r, j = np.nonzero(sel)
    # Each row's entrants, best first: negated score ascending, then index ascending (lexsort's
    # last key is the primary one, and it takes -0.0 == 0.0).
    order = np.lexsort((j, neg[r, j], r))
    r, j = r[order], j[order]
    counts = np.bincount(r, minlength=n)
    rank = np.arange(r.size) - np.repeat(np.cumsum(counts) - counts, counts)
    return r, j, rank
