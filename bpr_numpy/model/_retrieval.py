"""Exact top-k retrieval over factor models: ``recommend`` and ``similar_items`` rank with it.

The heaps and the tile kernels are :mod:`bpr_numpy._topk_kernels`, shared with the top-k metrics so
that recommendations and metrics rank alike. Small requests may go to their plain-NumPy twin,
:func:`_top_k_numpy`, instead (the same outputs bit for bit; see :mod:`bpr_numpy._twins`).
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

import numpy as np
import scipy.sparse as sp

from .._topk_numpy import _ranked_entries

if TYPE_CHECKING:
    from .._twins import KernelOrTwin

__all__ = ["top_k"]

#: Largest request (rows × items) that :func:`top_k` may rank with its NumPy twin
#: (:func:`_top_k_numpy`) instead of the numba kernels, by the rent-or-buy rule of
#: :mod:`bpr_numpy._twins`; only requests without ``prune`` (fewer than 64 rows, or
#: ``similar_items``) qualify. Measured on a shared 2-core AMD EPYC VM: with an empty numba
#: cache a newcomer's first ``recommend(0, n=10)`` after a fit on ``synthetic_small`` (1,000
#: items) took 1.5-1.9 s, nearly all compiling the kernels, and 6-8 ms with the twin. Warm,
#: kernels / twin (median, float32, 32 factors, k=10): that call 0.05 / 0.10 ms, 63 × 47,000
#: scores 12-16 / 37-50 ms, 3,000 × 1,000 (``prune=False``) 15-20 / 37-47 ms: the twin costs
#: 8-12 ns a score more, 25-35 ms a call at 3 million scores, about 2% of the compile it saves.
SMALL_REQUEST_SCORES: int = 3_000_000

_CHOOSER: KernelOrTwin | None = None


def _chooser() -> KernelOrTwin:
    """The module's :class:`~bpr_numpy._twins.KernelOrTwin` for retrieval, made on first use.

    ``_offer_tile`` stands for the kernels of the path (whether numba has it compiled or
    cached); the twin is :func:`_top_k_numpy`. Made lazily: importing the package must not
    import numba.
    """
    global _CHOOSER
    if _CHOOSER is None:
        from .. import _topk_kernels as kern
        from .._twins import KernelOrTwin

        _CHOOSER = KernelOrTwin(kern._offer_tile, _top_k_numpy)
    return _CHOOSER


def _blas_limit(n_blocks: int) -> contextlib.AbstractContextManager:
    """One BLAS thread for a request of several blocks (a no-op for one block, or without threadpoolctl).

    Bulk calls run on exactly ``threads`` threads: one single-threaded product per worker. The
    twin takes the same limit, so that both paths run the same products.
    """
    if n_blocks > 1:
        try:
            from threadpoolctl import threadpool_limits
        except ImportError:  # threadpoolctl is optional; without it BLAS keeps its own threads
            pass
        else:
            return threadpool_limits(1, user_api="blas")
    return contextlib.nullcontext()


def top_k(
    query: np.ndarray,
    item_factors: np.ndarray,
    item_bias: np.ndarray,
    k: int,
    *,
    rows: np.ndarray | None = None,
    exclude: sp.csr_matrix | None = None,
    threads: int = 1,
    block: int | None = None,
    tile: int | None = None,
    prune: bool | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Row-wise top-k of ``query[rows] @ item_factors.T + item_bias``, best first.

    Ranks exactly as :func:`bpr_numpy._topk_kernels._top_k` (so recommendations and top-k
    metrics agree): score descending, equal scores by the lower item index; NaN scores
    and excluded items are not candidates; rows with fewer than k candidates are padded
    with item -1 and score -inf. The scores are those of ``query @ item_factors.T``
    plus ``item_bias`` in the factors' dtype.

    The full score block is never built. Rows go in blocks and items in tiles: one BLAS
    product per (block, tile), about 4 MiB so that it is read back from cache, fed to
    one small heap per row by numba kernels; ``threads`` workers take whole blocks in
    turn. With ``prune``
    the items are visited in decreasing order of a score estimate, and a row stops as
    soon as no item left can reach its heap by the Cauchy-Schwarz bound
    ``|q| max|v| + max b`` (rounding included): exact, and on trained models, whose
    item norms and biases are skewed, most of the product is skipped.

    Parameters
    ----------
    query : numpy.ndarray
        (n_query, f) factors of the rows, same dtype as ``item_factors``.
    item_factors : numpy.ndarray
        (n_items, f).
    item_bias : numpy.ndarray
        (n_items,).
    k : int
        0 <= k <= n_items.
    rows : numpy.ndarray, optional
        Rows of ``query`` to rank, in output order (default: all).
    exclude : scipy.sparse.csr_matrix, optional
        Row ``rows[i]`` lists the items that are not candidates for output row ``i``.
    threads : int
        Worker threads, each ranking whole blocks of rows.
    block, tile : int, optional
        Rows per block and items per tile (defaults from the 4 MiB budget).
    prune : bool, optional
        Reorder the items and settle rows early (default: for 64 rows or more, where
        ordering the items, O(n_items log n_items), pays for itself). Without it, a request of
        at most :data:`SMALL_REQUEST_SCORES` scores may be ranked by the NumPy twin
        :func:`_top_k_numpy` (the same outputs) while the kernels would need compiling.

    Returns
    -------
    items : numpy.ndarray
        (len(rows), k) int64.
    scores : numpy.ndarray
        (len(rows), k) in the factors' dtype.
    """
    import concurrent.futures

    dtype = item_factors.dtype
    rows = np.arange(query.shape[0], dtype=np.int64) if rows is None else np.asarray(rows, dtype=np.int64)
    n, (n_items, f) = len(rows), item_factors.shape
    items = np.full((n, k), -1, dtype=np.int64)
    scores = np.full((n, k), -np.inf, dtype=dtype)
    if n == 0 or k == 0:
        return items, scores
    if prune is None:
        prune = n >= 64
    tile = int(tile or (min(n_items, 4096) if prune else n_items))
    block = int(block or max(1, 2**22 // (dtype.itemsize * tile)))
    if prune:
        norms = np.sqrt(np.einsum("ij,ij->i", item_factors, item_factors, dtype=np.float64))
        sample = query[rows[:: max(1, n // 1024)]]
        typical = float(np.sqrt(np.einsum("ij,ij->i", sample, sample, dtype=np.float64)).mean())
        # Likely winners first: the score of a typical row if it were aligned with the item.
        order = np.argsort(-(typical * norms + item_bias), kind="stable")  # NaN keys last
        factors, bias = np.ascontiguousarray(item_factors[order]), item_bias[order]
        # Largest norm and bias of the items from each tile on (NaN, from a diverged
        # model, propagates and disables the early stop: slower, still exact).
        max_norm = np.maximum.accumulate(norms[order][::-1])[::-1][::tile]
        max_bias = np.maximum.accumulate(bias.astype(np.float64)[::-1])[::-1][::tile]
    else:
        order = np.arange(n_items, dtype=np.int64)
        factors, bias = np.ascontiguousarray(item_factors), np.ascontiguousarray(item_bias)
    eps = float(np.finfo(dtype).eps)
    # Rounding of a length-f dot product plus the bias add, with room to spare.
    slack, floor = 2 * (f + 2) * eps, (f + 2) * float(np.finfo(dtype).tiny)
    indptr: np.ndarray
    indices: np.ndarray
    if exclude is None:
        indptr, indices = np.zeros(1, dtype=np.int64), np.zeros(0, dtype=np.int64)
    else:
        if not exclude.has_sorted_indices:  # the kernels binary-search each row
            exclude = exclude.copy()
            exclude.sort_indices()
        indptr, indices = exclude.indptr, exclude.indices
    if not prune and item_bias.dtype == dtype and dtype in (np.float32, np.float64):
        # The twin is exact for this path only (the kernels add the bias in the scores'
        # dtype; pruning runs products of other shapes).
        chooser = _chooser()
        rank = chooser.choose(n * n_items <= SMALL_REQUEST_SCORES)
        if rank is not chooser.kernel:
            return rank(query, factors, bias, k, rows, block, tile, indptr, indices, exclude is not None)

    from .. import _topk_kernels as kern

    def run(start: int) -> None:
        # One block of rows from start to finish: products, heaps and output rows are
        # the block's own, so blocks need no synchronisation between them.
        r = rows[start : start + block]
        m = len(r)
        ub = np.ascontiguousarray(query[r])
        buf = np.empty(m * tile, dtype=dtype)
        heap_s, heap_i = np.empty((m, k), dtype=dtype), np.empty((m, k), dtype=np.int64)
        sizes = np.zeros(m, dtype=np.int64)
        active, n_active = np.arange(m, dtype=np.int64), m
        q_norms = np.sqrt(np.einsum("ij,ij->i", ub, ub, dtype=np.float64)) if prune else None
        for t, t0 in enumerate(range(0, n_items, tile)):
            if prune and t:
                n_active = kern._drop_settled(
                    active, n_active, heap_s, sizes, q_norms, max_norm[t], max_bias[t], slack, floor, ub
                )
                if not n_active:
                    break
            w = min(tile, n_items - t0)
            s = buf[: n_active * w].reshape(n_active, w)
            np.matmul(ub[:n_active], factors[t0 : t0 + w].T, out=s)
            kern._offer_tile(
                s, bias, order, t0, active, n_active, r, indptr, indices, exclude is not None, heap_s, heap_i, sizes
            )
        kern._heaps_to_rows(heap_s, heap_i, sizes, items[start : start + m], scores[start : start + m])

    starts = range(0, n, block)
    with _blas_limit(len(starts)):
        # Parallel over whole blocks rather than within each tile: a per-tile barrier
        # (threaded BLAS, then threaded heaps) waits for the slower core thousands of
        # times, and lost to one thread when the other core was busy. The products
        # release the GIL and the kernels are nogil.
        if threads > 1 and len(starts) > 1:
            with concurrent.futures.ThreadPoolExecutor(min(threads, len(starts))) as pool:
                for _ in pool.map(run, starts):  # handed out in turn: a faster core takes more blocks
                    pass
        else:
            for start in starts:
                run(start)
    return items, scores


def _top_k_numpy(
    query: np.ndarray,
    factors: np.ndarray,
    bias: np.ndarray,
    k: int,
    rows: np.ndarray,
    block: int,
    tile: int,
    indptr: np.ndarray,
    indices: np.ndarray,
    exclude: bool,
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`top_k` without ``prune``, in NumPy: the kernels' path for small requests, compiling nothing.

    With an empty numba cache (every new machine, container or CI job) the kernels of
    :func:`top_k` (``_offer_tile``, ``_offer_row``, ``_heaps_to_rows``, ``_sift_down``) compile
    on the first call: 1.4-1.9 s before a newcomer's first ``recommend(0, n=10)``, whose
    ranking takes well under a millisecond. This twin ranks with array operations instead;
    :func:`top_k` calls it, by the rent-or-buy rule of :mod:`bpr_numpy._twins`, for requests
    without ``prune`` of at most :data:`SMALL_REQUEST_SCORES` scores.

    It must equal the kernels' path exactly — the same dtypes, shapes and values bit for bit
    — because which of the two runs depends on the request's size and on the process's past,
    and a result must not. So it runs the very products of that path (the same row blocks and
    item tiles, each ``np.matmul`` into a contiguous buffer, under the same BLAS thread
    limit), adds the bias in the scores' dtype as ``_offer_row`` does (which is why
    :func:`top_k` sends it only factors and bias of one float dtype), and ranks as the heaps
    do (:func:`bpr_numpy._topk_numpy._ranked_entries`: score descending, equal scores by
    the lower item index, NaN scores and excluded items not candidates, short rows padded
    with item -1 and score -inf). ``tests/test_recommend.py`` compares the two on random
    requests; change them together.

    Parameters
    ----------
    query, factors, bias : numpy.ndarray
        As :func:`top_k`'s ``query``, ``item_factors`` (C-contiguous) and ``item_bias`` (the
        factors' dtype, float32 or float64).
    k : int
        ``1 <= k <= n_items``.
    rows : numpy.ndarray
        int64 rows of ``query``, in output order (not empty).
    block, tile : int
        Rows per block and items per tile, as :func:`top_k` chose them for the kernels.
    indptr, indices : numpy.ndarray
        CSR arrays of the exclusions (row ``rows[i]`` for output row ``i``).
    exclude : bool
        Whether to apply them.

    Returns
    -------
    items, scores : numpy.ndarray
        As :func:`top_k`'s.
    """
    dtype = factors.dtype
    n, n_items = len(rows), factors.shape[0]
    items = np.full((n, k), -1, dtype=np.int64)
    scores = np.full((n, k), -np.inf, dtype=dtype)
    starts = range(0, n, block)
    with _blas_limit(len(starts)):
        for start in starts:
            r = rows[start : start + block]
            m = len(r)
            ub = np.ascontiguousarray(query[r])
            buf = np.empty(m * tile, dtype=dtype)
            neg = np.empty((m, n_items), dtype=dtype)  # negated scores, NaN: not a candidate
            for t0 in range(0, n_items, tile):
                w = min(tile, n_items - t0)
                s = buf[: m * w].reshape(m, w)
                np.matmul(ub, factors[t0 : t0 + w].T, out=s)
                np.add(s, bias[t0 : t0 + w], out=s)  # s[j] + bias[j] in the scores' dtype, as _offer_row
                np.negative(s, out=neg[:, t0 : t0 + w])
            if exclude:
                lo, length = indptr[r], indptr[r + 1] - indptr[r]
                entry = np.arange(int(length.sum())) + np.repeat(lo - (np.cumsum(length) - length), length)
                neg[np.repeat(np.arange(m), length), indices[entry]] = np.nan
            # At most n_items entrants: past them the rows stay padded, as the kernels pad them.
            i, j, place = _ranked_entries(neg, min(k, n_items))
            items[start + i, place] = j
            scores[start + i, place] = -neg[i, j]
    return items, scores
