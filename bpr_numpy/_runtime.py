"""What training and retrieval share at run time: threads, the parallel lock, aligned arrays, seeds.

Used by the estimator (:mod:`bpr_numpy.model`), the stratified epochs (:mod:`bpr_numpy._strata`),
the distributed trainer and the command line; it holds no model state.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager

import numpy as np

from ._parameters import check_random_state

__all__ = [
    "PARALLEL_LOCK",
    "aligned_empty",
    "available_threads",
    "beyond_cache",
    "kernel_ready",
    "membership_bitmap",
    "initial_rows",
    "numba_threads",
    "resolve_seed",
]

# One parallel epoch at a time in the process: numba's workqueue layer aborts on concurrent
# parallel regions (two models fitted from two Python threads), and on a machine's few cores two
# Hogwild fits gain nothing from overlapping. Re-entrant: a callback may fit another model.
PARALLEL_LOCK = threading.RLock()


def resolve_seed(random_state) -> int:
    if random_state is None:
        return int(np.random.SeedSequence().generate_state(1, np.uint64)[0] >> np.uint64(1))
    if isinstance(random_state, np.random.Generator):
        return int(random_state.integers(0, 2**63 - 1))
    check_random_state("random_state", random_state)
    return int(random_state)


@contextmanager
def numba_threads(threads: int):
    """Run this Python thread's numba parallel regions on ``threads`` threads (numba keeps the
    count per calling thread). The regions themselves take :data:`PARALLEL_LOCK`."""
    import numba

    previous = numba.get_num_threads()
    numba.set_num_threads(threads)
    try:
        yield
    finally:
        numba.set_num_threads(previous)


_INIT_BLOCK = 16384  # rows per generator of the initial factors
_ALIGN = 64  # bytes: a cache line


def aligned_empty(shape, dtype) -> np.ndarray:
    """An uninitialised C-contiguous array whose data starts on a cache line.

    numpy's allocations start 16 bytes past one, so every 256-byte factor row (64 float32)
    spans five lines instead of four, and the kernels' row prefetch (one per line) misses the
    fifth; two threads also share the line between neighbouring rows.
    """
    dtype = np.dtype(dtype)
    count = int(np.prod(shape, dtype=np.int64))
    buffer = np.empty(count * dtype.itemsize + _ALIGN, np.uint8)
    offset = -buffer.ctypes.data % _ALIGN
    return buffer[offset : offset + count * dtype.itemsize].view(dtype).reshape(shape)


def kernel_ready(a: np.ndarray, dtype) -> np.ndarray:
    """``a`` itself when the kernels can train it in place (dtype, C order, writeable, line-aligned), else a copy."""
    if a.dtype == dtype and a.flags.c_contiguous and a.flags.writeable and a.ctypes.data % _ALIGN == 0:
        return a
    out = aligned_empty(a.shape, dtype)
    out[...] = a
    return out


def initial_rows(
    seed: int, stream: int, rows: int, factors: int, std: float, dtype, threads: int, law: str = "normal"
) -> np.ndarray:
    """``rows x factors`` random draws of standard deviation ``std``, in ``dtype``, on ``threads`` threads.

    ``law`` is ``"normal"`` or ``"uniform"`` (on ``[-a, a)`` with ``a = sqrt(3) std``, Keras's
    ``Embedding`` initialiser for ``a = 0.05``). Blocks of :data:`_INIT_BLOCK` rows each have
    their own generator seeded by ``(seed, stream, block)``, so the values do not depend on the
    thread count; numpy fills them without the GIL. Drawn in the model's dtype (numpy's float32
    ziggurat for float32): 16M float64 normals then a cast took 0.3 s on 20M pairs (a tenth of
    an epoch), this takes 0.1 s on two threads. (A numba Box-Muller fill was slower: 0.41 s on
    one thread.)
    """
    out = aligned_empty((rows, factors), dtype)

    def fill(block: int) -> None:
        part = out[block * _INIT_BLOCK : (block + 1) * _INIT_BLOCK]
        rng = np.random.default_rng([seed, stream, block])
        with np.errstate(over="ignore"):  # an overflow is reported by model._training.init_factors, naming init_std
            if law == "uniform":
                rng.random(part.shape, dtype=dtype, out=part)
                part *= dtype.type(2.0)
                part -= dtype.type(1.0)
                part *= dtype.type(np.sqrt(3.0) * std)
            else:
                rng.standard_normal(part.shape, dtype=dtype, out=part)
                part *= dtype.type(std)

    blocks = range((rows + _INIT_BLOCK - 1) // _INIT_BLOCK)
    if threads == 1 or len(blocks) == 1:
        for block in blocks:
            fill(block)
    else:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(fill, blocks))
    return out


def membership_bitmap(indptr: np.ndarray, indices: np.ndarray, n_items: int) -> np.ndarray | None:
    """The samplers' bitmap of positives (:func:`positives_bitmap`), or None.

    A bit per (user, item) answers "is j a positive of u?" in one load where the binary search
    of u's row takes several dependent ones (18% of an epoch on MovieLens 100k). It is built
    only when it is no bigger than twice the CSR's index array (density >= 1/64 with int32
    indices): on sparse catalogues it would cost far more memory than the interactions.
    """
    n_users = indptr.shape[0] - 1
    if n_users * ((n_items + 63) // 64) * 8 > 2 * indices.nbytes:
        return None
    return positives_bitmap(indptr, indices, n_items)


def positives_bitmap(indptr: np.ndarray, indices: np.ndarray, n_items: int) -> np.ndarray:
    """Bit ``j`` of row ``u`` set when ``(u, j)`` is a positive: ``(n_users, ceil(n_items / 64))`` uint64 words.

    In NumPy, not numba: it was the first fit's one compiled helper outside the epoch (0.37 s
    of compilation with an empty cache). The CSR is canonical (rows in order, indices sorted and
    unique), so the words ``u * words + j // 64`` come in nondecreasing order and each word is
    the OR of one run of bits.
    """
    n_users = indptr.shape[0] - 1
    words = (n_items + 63) >> 6
    bits = np.zeros((n_users, words), np.uint64)
    if indices.shape[0]:
        users = np.repeat(np.arange(n_users, dtype=np.int64), np.diff(indptr))
        columns = indices.astype(np.int64)
        keys = users * words + (columns >> 6)
        values = np.left_shift(np.uint64(1), (columns & 63).astype(np.uint64))
        starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
        bits.reshape(-1)[keys[starts]] = np.bitwise_or.reduceat(values, starts)
    return bits


#: Bytes of factor rows and interactions above which the kernels fetch each run's rows batches
#: ahead (``_kernels._prefetch_runs``): +18% on 20M pairs (230 MB), -2.5% on MovieLens 100k
#: (1 MB, all in cache). A few times the per-core caches of the machines we measure on.
_PREFETCH_RUNS_BYTES = 4 << 20


def beyond_cache(*arrays: np.ndarray) -> bool:
    return sum(a.nbytes for a in arrays) > _PREFETCH_RUNS_BYTES


def available_threads() -> int:
    import numba

    return int(numba.config.NUMBA_NUM_THREADS)
