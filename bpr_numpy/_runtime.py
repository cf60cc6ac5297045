"""What training and retrieval share at run time: threads, the parallel lock, aligned arrays, seeds.

Used by the estimator (:mod:`bpr_numpy.model`), the stratified epochs (:mod:`bpr_numpy._strata`),
the distributed trainer and the command line; it holds no model state.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable

import numpy as np

from ._parameters import check_random_state

__all__ = [
    "PARALLEL_LOCK",
    "aligned_empty",
    "available_threads",
    "beyond_cache",
    "hogwild",
    "kernel_ready",
    "membership_bitmap",
    "initial_rows",
    "resolve_seed",
]

# One parallel epoch at a time in the process: on a machine's few cores two Hogwild fits (two
# models fitted from two Python threads) gain nothing from overlapping, and each would wait on
# the other's chunks in the helper pool. Re-entrant: a callback may fit another model.
PARALLEL_LOCK = threading.RLock()


def resolve_seed(random_state) -> int:
    if random_state is None:
        return int(np.random.SeedSequence().generate_state(1, np.uint64)[0] >> np.uint64(1))
    if isinstance(random_state, np.random.Generator):
        return int(random_state.integers(0, 2**63 - 1))
    check_random_state("random_state", random_state)
    return int(random_state)


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


#: Reads of a flag a Hogwild helper thread makes before it blocks: 2.4 ms on the AMD EPYC VM
#: (0.6 ns a read), longer than the bookkeeping between two epochs, so that a fit's helpers do
#: not sleep between its epochs (with 65,536 reads, 40 us, they did: 4% of a MovieLens 100k fit
#: on two threads). A helper spins that long once more after a fit's last epoch.
_SPINS = 1 << 22


class _Helper:
    """A thread of this process that runs the kernel calls :func:`hogwild` hands it, one at a time.

    Between two calls it first spins without the GIL (:func:`bpr_numpy._kernels._primitives._await_call`)
    until a call is posted and the posting thread has entered the kernel, and only then blocks:
    woken from a block, a thread took 70-90 us on the VMs we measure on (a thread pool's submit
    and result cost 200 us an epoch, 8% of a MovieLens 100k fit on two threads); a spinning one
    starts at once, as the threads of numba's and OpenMP's pools do. ``state`` holds the calls
    posted and the posted call's first chunk (written by the caller), the calls done and the
    call the helper waits for (written by the helper, the last without the GIL). The counts in
    ``state`` are the only record of what was posted and done; the condition only wakes a
    blocked thread, with a timeout, so a Ctrl-C between a count and its notification costs at
    most one timeout, never a lost call. Daemon: it holds nothing a process exit must wait for.
    """

    def __init__(self) -> None:
        self.state = np.zeros(4, np.int64)  # calls posted, calls done, the call's first chunk, awaited call
        self._wake = threading.Condition()
        self._call: tuple | None = None
        self.error: BaseException | None = None
        threading.Thread(target=self._serve, name="bpr_numpy-hogwild", daemon=True).start()

    def _serve(self) -> None:
        from ._kernels._primitives import _await_call

        calls = 0
        while True:
            _await_call(self.state, _COUNTER, calls + 1, _SPINS)
            while self.state[0] <= calls:  # not posted within the spin: block
                with self._wake:
                    if self.state[0] <= calls:
                        self._wake.wait(_WAKE_TIMEOUT)
            calls += 1
            kernel, args = self._call  # type: ignore[misc]
            try:
                kernel(*args)
            except BaseException as error:  # handed to the caller, which re-raises it
                self.error = error
            with self._wake:
                self.state[1] = calls
                self._wake.notify_all()

    def post(self, kernel: Callable, args: tuple, chunk_start: int) -> None:
        self._call = (kernel, args)
        self.state[2] = chunk_start
        self.state[0] += 1  # the post itself
        with self._wake:
            self._wake.notify_all()

    def wait(self, posted: int) -> None:
        """Until call ``posted`` is done (a short spin first, then a block). Safe to call again."""
        from ._kernels._primitives import _spin_until

        # Until the helper waits for the next call: done with this one, and without the GIL.
        if _spin_until(self.state, 3, posted + 1, _SPINS):
            return
        while self.state[1] < posted:
            with self._wake:
                if self.state[1] < posted:
                    self._wake.wait(_WAKE_TIMEOUT)


#: Seconds a blocked helper or caller waits before it looks at the counts again.
_WAKE_TIMEOUT = 0.05

_helpers: list[_Helper] = []
_helpers_lock = threading.Lock()  # one Hogwild call at a time uses the helpers, and _COUNTER
# The chunk counter of the parallel calls: one array, so that the helpers can watch it.
_COUNTER = np.zeros(1, np.int64)


def _forget_helpers_after_fork() -> None:
    """In a forked child the helper threads do not exist: start new ones when asked (a child
    posting to its parent's helpers would wait for ever), and the locks a fork may have caught
    held by another thread are made anew (a child's fit would wait for ever on them)."""
    global _helpers_lock
    _helpers.clear()
    _helpers_lock = threading.Lock()
    reinit = getattr(PARALLEL_LOCK, "_at_fork_reinit", None)  # CPython's own hook for its locks
    if reinit is not None:
        reinit()


os.register_at_fork(after_in_child=_forget_helpers_after_fork)


def _start_helpers(count: int) -> None:
    """At least ``count`` helper threads, their waiting kernels compiled (or loaded from numba's
    cache) first, on the calling thread: a fit's warm-up call (no chunks) does it before the first
    epoch's timer starts, which otherwise counted their 0.3 s compile with an empty cache."""
    if len(_helpers) < count:
        from ._kernels._primitives import _await_call, _spin_until

        state = np.zeros(4, np.int64)
        _await_call(state, np.zeros(1, np.int64), 0, 0)  # returns at once: nothing to wait for
        _spin_until(state, 3, 0, 0)
        while len(_helpers) < count:
            _helpers.append(_Helper())


def _wait_for_helpers(helpers: list[_Helper], before: list[int]) -> BaseException | None:
    """Wait for the calls posted to ``helpers`` since their counts were ``before``; their first error."""
    error = None
    for helper, count in zip(helpers, before, strict=True):
        posted = int(helper.state[0])
        if posted > count:
            helper.wait(posted)
        if helper.error is not None:
            error, helper.error = error or helper.error, None
    return error


def hogwild(kernel: Callable, args: tuple, chunk_start: int, chunk_stop: int, threads: int) -> None:
    """Run chunks ``chunk_start .. chunk_stop - 1`` of an epoch through ``kernel`` on ``threads`` threads.

    ``kernel(*args, next_chunk, chunk_stop)`` is a numba kernel compiled with ``nogil=True``
    that takes chunk ``c = next_chunk[0]`` (advancing it atomically) until ``c >= chunk_stop``
    (``_kernels._run_chunks``). On one thread it runs on the calling thread, the chunks in
    order: bitwise reproducible. On more, the calling thread and ``threads - 1`` helper
    threads (:class:`_Helper`) share the counter, each taking the next unstarted chunk when it
    finishes one (Hogwild: lock-free, racing updates of the shared factors).

    Why Python threads and not a numba ``prange`` loop: the serial and the parallel epoch are
    then one compiled function. The ``parallel=True`` twin cost a first ``threads=2`` fit
    1.4-3.3 s more of compilation with an empty cache (``benchmarks/cold_start.py``), and every
    kernel change twice the code to compile and cache.

    A Ctrl-C (or a helper's error) is raised once every helper the call posted to has finished
    its chunks, wherever it lands: the caller sees the factors at rest, and no helper of this
    call is left to take chunks of the next one.
    """
    if threads <= 1:
        kernel(*args, np.full(1, chunk_start, np.int64), chunk_stop)
        return
    with _helpers_lock:
        _start_helpers(threads - 1)
        if chunk_stop - chunk_start <= 1:
            kernel(*args, np.full(1, chunk_start, np.int64), chunk_stop)
            return
        helpers = _helpers[: threads - 1]
        before = [int(helper.state[0]) for helper in helpers]
        _COUNTER[0] = chunk_start
        interrupted: BaseException | None = None
        try:
            for helper in helpers:
                helper.post(kernel, (*args, _COUNTER, chunk_stop), chunk_start)
            kernel(*args, _COUNTER, chunk_stop)
        except BaseException as error:  # re-raised below, once the helpers are done
            interrupted = error
        while True:  # a Ctrl-C while waiting: wait again, the helpers still write
            try:
                failed = _wait_for_helpers(helpers, before)
                break
            except BaseException as error:
                interrupted = interrupted or error
        interrupted = interrupted or failed
        if interrupted is not None:
            raise interrupted
