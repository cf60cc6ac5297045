"""numba kernels for building and splitting CSR matrices.

Imported lazily (numba's import and the first compilation cost about a
second; ``import bpr_numpy.datasets`` must stay cheap). Compiled code is
cached on disk (``cache=True``).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from ._sorting import sort_positions

__all__: list[str] = []


@njit(cache=True, nogil=True)
def _order_by_row_col(rows, cols, n_rows):  # pragma: no cover - compiled
    """Stable order of COO entries by (row, col).

    A counting sort by row (O(n)) followed by a stable per-row sort by
    column: a global ``argsort`` of ``row * n_cols + col`` is several times
    slower at 20M entries, and the stability keeps input order among
    duplicates, which the de-duplication rules rely on.
    """
    n = rows.size
    start = np.zeros(n_rows + 1, dtype=np.int64)
    for k in range(n):
        start[rows[k] + 1] += 1
    for r in range(n_rows):
        start[r + 1] += start[r]
    fill = start[:-1].copy()
    order = np.empty(n, dtype=np.int64)
    for k in range(n):
        r = rows[k]
        order[fill[r]] = k
        fill[r] += 1
    for r in range(n_rows):
        a = start[r]
        b = start[r + 1]
        if b - a < 2:
            continue
        in_order = True
        for t in range(a + 1, b):
            if cols[order[t]] < cols[order[t - 1]]:
                in_order = False
                break
        if in_order:
            continue
        sort_positions(order[a:b], cols)
    return order


@njit(cache=True, nogil=True)
def _mark_top_k_per_row(indptr, keys, k, eligible, out):  # pragma: no cover - compiled
    """Set ``out`` at the ``k`` entries of each eligible row with the largest keys.

    Ties go to the entry stored later in the row (larger column index):
    entries are sorted by (key, position) and we take the tail.
    """
    n_rows = indptr.size - 1
    longest = 0
    for r in range(n_rows):
        longest = max(longest, indptr[r + 1] - indptr[r])
    pos = np.empty(longest, dtype=np.int64)
    for r in range(n_rows):
        if not eligible[r]:
            continue
        a = indptr[r]
        b = indptr[r + 1]
        m = b - a
        if m <= k:
            for t in range(a, b):
                out[t] = True
            continue
        row = pos[:m]
        for t in range(m):
            row[t] = a + t
        sort_positions(row, keys)
        for t in range(m - k, m):
            out[row[t]] = True
