"""Top-k heap kernels (numba): one rank order, score descending then lower item index first.

:func:`_top_k` ranks one row (the evaluation's top-k lists, :mod:`bpr_numpy.metrics`); the
kernels after it rank ``query @ items.T + bias`` tile by tile for ``model._top_k`` (recommend,
similar items). Both keep the same worst-first heap (:func:`_worse`, :func:`_sift_down`,
:func:`_heap_push`), so recommendations and top-k metrics agree.

numba's cache checks only a kernel's own file: ``metrics/_kernels.py``'s ``_block_kernel``
compiles in :func:`_top_k` and :func:`_worse` from here, so after editing those (or the heap
kernels :func:`_top_k` calls), delete the cache (``__pycache__`` or ``$NUMBA_CACHE_DIR``).
"""

from __future__ import annotations

import numpy as np
from numba import njit

# Nothing below is compiled at import: numba compiles on the first call.


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
def _offer_row(
    s: np.ndarray,
    bias: np.ndarray,
    order: np.ndarray,
    t0: int,
    excl: np.ndarray,
    ex_lo: int,
    ex_hi: int,
    hs: np.ndarray,
    hix: np.ndarray,
    size: int,
) -> int:
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
def _offer_tile(
    s: np.ndarray,
    bias: np.ndarray,
    order: np.ndarray,
    t0: int,
    active: np.ndarray,
    n_active: int,
    rows: np.ndarray,
    indptr: np.ndarray,
    indices: np.ndarray,
    exclude: bool,
    hs: np.ndarray,
    hix: np.ndarray,
    sizes: np.ndarray,
) -> None:
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
def _drop_settled(
    active: np.ndarray,
    n_active: int,
    hs: np.ndarray,
    sizes: np.ndarray,
    norms: np.ndarray,
    max_norm: float,
    max_bias: float,
    slack: float,
    floor: float,
    ub: np.ndarray,
) -> int:
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
def _heaps_to_rows(hs: np.ndarray, hix: np.ndarray, sizes: np.ndarray, items: np.ndarray, scores: np.ndarray) -> None:
    """Heap sort each row's heap into ``items``/``scores``, best first (the rest is left as is)."""
    for r in range(hs.shape[0]):
        for p in range(sizes[r] - 1, -1, -1):
            items[r, p] = hix[r, 0]
            scores[r, p] = hs[r, 0]
            hs[r, 0] = hs[r, p]
            hix[r, 0] = hix[r, p]
            _sift_down(hs[r], hix[r], 0, p)
