"""Canonical CSR matrices: built over our own arrays, checked when handed in, made from COO pairs.

Every :class:`~bpr_numpy.datasets.Interactions` holds a users x items CSR
matrix with sorted unique column indices and finite float data. This module
wraps arrays we already know to be canonical without copying them
(:func:`_make_csr`), checks a matrix someone else built (:func:`_check_csr`),
and sorts (row, column) pairs, merging repeated ones by the ``dedupe`` rules of
:meth:`~bpr_numpy.datasets.Interactions.from_arrays` (:func:`_coo_to_csr`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

_CHECK_CHUNK = 1 << 20  # entries per slice of _check_csr (tests shrink it)


def _csr_module():
    # scipy is imported on first use: `import bpr_numpy.datasets` stays cheap.
    import scipy.sparse as sp

    return sp


def _index_dtype(n: int) -> type:
    return np.int32 if n < 2**31 - 1 else np.int64


def _make_csr(data: np.ndarray, indices: np.ndarray, indptr: np.ndarray, shape: tuple[int, int]):
    """A csr_matrix over our arrays, flagged canonical (we guarantee it)."""
    sp = _csr_module()
    idt = _index_dtype(max(shape[1], indices.size, 1))
    m = sp.csr_matrix(
        (data, indices.astype(idt, copy=False), indptr.astype(_index_dtype(max(indptr[-1], 1)), copy=False)),
        shape=shape,
        copy=False,
    )
    m.has_sorted_indices = True
    m.has_canonical_format = True
    return m


def _check_csr(matrix: Any) -> None:
    """Raise unless ``matrix`` is a CSR matrix with sorted unique indices and finite float data."""
    sp = _csr_module()
    if not sp.issparse(matrix) or matrix.format != "csr":
        raise TypeError(f"matrix must be a scipy.sparse CSR matrix, got {type(matrix).__name__}")
    if matrix.dtype not in (np.float32, np.float64):
        raise TypeError(f"matrix data must be float32 or float64, got {matrix.dtype}")
    n_rows, n_cols = matrix.shape
    indptr, indices = matrix.indptr, matrix.indices
    nnz = indices.size
    if indptr.size != n_rows + 1 or indptr[0] != 0 or indptr[-1] != nnz or matrix.data.size != nnz:
        raise ValueError("matrix has an inconsistent indptr/indices/data")
    if nnz:
        if np.any(np.diff(indptr) < 0):
            raise ValueError("matrix indptr is not non-decreasing")
        if indices.min() < 0 or indices.max() >= n_cols:
            raise ValueError(f"matrix has a column index outside [0, {n_cols})")
        row_starts = indptr[1:-1]
        row_starts = np.unique(row_starts[(row_starts > 0) & (row_starts < nnz)])
        # In slices, so that checking a 100M-pair matrix needs megabytes, not a
        # second copy of it.
        for s0 in range(0, nnz, _CHECK_CHUNK):
            s1 = min(nnz - 1, s0 + _CHECK_CHUNK)  # steps k -> k+1 for k in [s0, s1)
            if s1 > s0:
                step_ok = indices[s0 + 1 : s1 + 1] > indices[s0:s1]
                lo, hi = np.searchsorted(row_starts, [s0 + 1, s1 + 1])
                step_ok[row_starts[lo:hi] - 1 - s0] = True  # a new row may start anywhere
                if not step_ok.all():
                    raise ValueError("matrix column indices must be sorted and unique within each row")
            if not np.isfinite(matrix.data[s0 : s0 + _CHECK_CHUNK]).all():
                raise ValueError("matrix holds NaN or infinite values")


def _coo_to_csr(
    rows: np.ndarray,
    cols: np.ndarray,
    n_rows: int,
    ratings: np.ndarray | None,
    timestamps: np.ndarray | None,
    dedupe: str,
    describe_pair: Callable[[int, int], str],
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None, np.ndarray | None, int]:
    """Sort COO entries by (row, col) and merge duplicates.

    Returns
    -------
    r, c : row and column of each distinct pair, sorted.
    rat : merged rating per pair (None without ratings).
    ts : timestamp per pair (None without timestamps).
    counts : occurrences per pair when ``dedupe == "sum"`` and there are no
        ratings (the implicit rating of each occurrence is 1), else None.
    n_dups : rows merged away.
    """
    from ._csr_kernels import _order_by_row_col

    n = rows.size
    order = _order_by_row_col(rows, cols, n_rows)
    r = rows[order]
    c = cols[order]
    rat = ratings[order] if ratings is not None else None
    ts = timestamps[order] if timestamps is not None else None
    if n == 0:
        return r, c, rat, ts, None, 0
    new = np.empty(n, dtype=bool)
    new[0] = True
    np.not_equal(r[1:], r[:-1], out=new[1:])
    new[1:] |= c[1:] != c[:-1]
    starts = np.flatnonzero(new)
    n_dups = n - starts.size
    if n_dups == 0:
        return r, c, rat, ts, None, 0
    if dedupe == "error":
        k = int(np.argmax(~new))
        raise ValueError(
            f"duplicate (user, item) pair {describe_pair(int(order[k - 1]), int(order[k]))}; "
            "pass dedupe='max', 'sum', 'last' or 'first' to merge repeated pairs"
        )
    sizes = np.diff(np.append(starts, n))
    counts = None
    if dedupe in ("max", "sum"):
        if rat is not None:
            rat = (np.maximum if dedupe == "max" else np.add).reduceat(rat, starts)
        elif dedupe == "sum":
            counts = sizes.astype(np.float64)
        if ts is not None:
            ts = np.maximum.reduceat(ts, starts)  # the pair's latest interaction
    else:
        pick = starts.copy()
        if ts is None:
            if dedupe == "last":
                pick += sizes - 1  # stable order: the last occurrence in input order
        else:
            # Only rows inside duplicate groups need the (timestamp, input
            # order) sort; usually a small share of the data.
            dup_groups = np.flatnonzero(sizes > 1)
            members = np.flatnonzero(np.repeat(sizes > 1, sizes))
            g = np.repeat(dup_groups, sizes[dup_groups])
            o2 = members[np.lexsort((members, ts[members], g))]
            gsizes = sizes[dup_groups]
            gstarts = np.concatenate(([0], np.cumsum(gsizes)[:-1]))
            pick[dup_groups] = o2[gstarts + gsizes - 1] if dedupe == "last" else o2[gstarts]
        if rat is not None:
            rat = rat[pick]
        ts = ts[pick] if ts is not None else None
    return r[starts], c[starts], rat, ts, counts, n_dups
