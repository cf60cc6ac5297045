"""Small in-place sorts for the numba kernels.

numba's own ``np.sort``/``np.argsort`` are compiled from large generic
implementations: using them added about 8 seconds to the first compilation
of the synthetic generator. These heapsorts compile in a fraction of that,
run in O(n log n) with no allocation, and are deterministic: ties are broken
by position, which makes ``sort_positions`` equivalent to a stable sort.
"""

from __future__ import annotations

from numba import njit

__all__: list[str] = []


@njit(cache=True, nogil=True, inline="always")
def _before(keys, p, q):  # pragma: no cover - compiled
    kp = keys[p]
    kq = keys[q]
    return kp < kq or (kp == kq and p < q)


@njit(cache=True, nogil=True)
def _sift_positions(pos, keys, root, end):  # pragma: no cover - compiled
    while True:
        child = 2 * root + 1
        if child >= end:
            return
        if child + 1 < end and _before(keys, pos[child], pos[child + 1]):
            child += 1
        if _before(keys, pos[root], pos[child]):
            tmp = pos[root]
            pos[root] = pos[child]
            pos[child] = tmp
            root = child
        else:
            return


@njit(cache=True, nogil=True)
def sort_positions(pos, keys):  # pragma: no cover - compiled
    """Sort the array of positions ``pos`` in place by ``(keys[p], p)``."""
    n = pos.size
    for start in range(n // 2 - 1, -1, -1):
        _sift_positions(pos, keys, start, n)
    for end in range(n - 1, 0, -1):
        tmp = pos[0]
        pos[0] = pos[end]
        pos[end] = tmp
        _sift_positions(pos, keys, 0, end)


@njit(cache=True, nogil=True)
def _sift_values(a, lo, root, end):  # pragma: no cover - compiled
    while True:
        child = 2 * root + 1
        if child >= end:
            return
        if child + 1 < end and a[lo + child] < a[lo + child + 1]:
            child += 1
        if a[lo + root] < a[lo + child]:
            tmp = a[lo + root]
            a[lo + root] = a[lo + child]
            a[lo + child] = tmp
            root = child
        else:
            return


@njit(cache=True, nogil=True)
def sort_values(a, lo, hi):  # pragma: no cover - compiled
    """Sort ``a[lo:hi]`` in place, ascending."""
    n = hi - lo
    if n < 2:
        return
    if n <= 16:  # insertion sort: fewer moves on short rows
        for i in range(lo + 1, hi):
            v = a[i]
            j = i - 1
            while j >= lo and a[j] > v:
                a[j + 1] = a[j]
                j -= 1
            a[j + 1] = v
        return
    for start in range(n // 2 - 1, -1, -1):
        _sift_values(a, lo, start, n)
    for end in range(n - 1, 0, -1):
        tmp = a[lo]
        a[lo] = a[lo + end]
        a[lo + end] = tmp
        _sift_values(a, lo, 0, end)
