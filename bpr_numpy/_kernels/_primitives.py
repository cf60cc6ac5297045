"""The kernels' constants and primitives: chunk layout, per-chunk seeds, atomics, prefetches, membership tests."""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

from .._kernel_args import ROW_BLOCK
from .._rng import GOLDEN, mix64

#: Most samples per chunk. The layout depends on the epoch's size only, so that the sampled
#: stream does not depend on threads.
CHUNK_SIZE = 4096

#: Fewest chunks of an epoch that has ``MIN_CHUNKS * BATCH`` samples or more. Threads share
#: the chunks out as they go: on MovieLens 100k's 49,906 samples, 13 chunks of 4096 left one
#: thread of two with 7 chunks to the other's 6 (a tenth of the epoch waiting); 64 balance
#: within a chunk and follow a core that slows down.
MIN_CHUNKS = 64


#: Triplets drawn ahead of the updates; also the longest user run.
BATCH = 32


#: Updates ahead of which the three factor rows of a triplet are prefetched.
PREFETCH_AHEAD = 4


# The dot products and row updates may be reassociated and fused (SIMD);
# no flag that would drop NaN/inf semantics, so divergence stays visible.
# The hot helpers are inlined at numba-IR level (inline="always"): LLVM does
# not inline across jitted functions here, and the calls cost a third of the
# update's time. Inlined code takes the fastmath flags of its caller.
_FASTMATH = {"reassoc", "contract"}


@njit(cache=True)
def _stream_seed(seed, epoch, chunk, stream):
    """Initial state of stream ``stream`` (0: positives, 1: negatives) of a chunk."""
    s = mix64(np.uint64(seed) + GOLDEN * np.uint64(epoch + 1))
    s = mix64(s + GOLDEN * np.uint64(chunk + 1))
    return mix64(s + GOLDEN * np.uint64(stream + 1))


def _is_int64_array(array) -> bool:
    """Whether an intrinsic's argument type is an int64 array (else the intrinsic returns None: a
    typing error at the call, not an LLVM one)."""
    return isinstance(array, types.Array) and array.dtype == types.int64


def _item_pointer(context, builder, signature, args):
    """Pointer to ``array[index]``, an intrinsic's first two arguments (no wraparound)."""
    aryty, indexty = signature.args[:2]
    ary = context.make_array(aryty)(context, builder, args[0])
    index = context.cast(builder, args[1], indexty, types.intp)
    return cgutils.get_item_pointer(context, builder, aryty, ary, [index], wraparound=False)


@intrinsic
def _fetch_add(typingctx, array, index):
    """Atomically add 1 to ``array[index]`` (int64); return the value before."""
    if not _is_int64_array(array):
        return None

    def codegen(context, builder, signature, args):
        ptr = _item_pointer(context, builder, signature, args)
        return builder.atomic_rmw("add", ptr, ir.Constant(ir.IntType(64), 1), "monotonic")

    return types.int64(array, index), codegen


@intrinsic
def _atomic_load(typingctx, array, index):
    """``array[index]`` (int64) read atomically: a load the compiler may not hoist out of a loop."""
    if not _is_int64_array(array):
        return None

    def codegen(context, builder, signature, args):
        return builder.load_atomic(_item_pointer(context, builder, signature, args), "acquire", 8)

    return types.int64(array, index), codegen


@intrinsic
def _atomic_store(typingctx, array, index, value):
    """``array[index] = value`` (int64) with release order: the writes before it are visible first."""
    if not _is_int64_array(array):
        return None

    def codegen(context, builder, signature, args):
        value64 = context.cast(builder, args[2], signature.args[2], types.int64)
        builder.store_atomic(value64, _item_pointer(context, builder, signature, args), "release", 8)
        return context.get_dummy_value()

    return types.void(array, index, value), codegen


@njit(cache=True, nogil=True)
def _spin_until(state, index, target, spins):
    """Whether ``state[index]`` reaches ``target`` within ``spins`` reads (without the GIL)."""
    for _ in range(spins):
        if _atomic_load(state, index) >= target:
            return True
    return _atomic_load(state, index) >= target


@njit(cache=True, nogil=True)
def _await_call(state, next_chunk, calls, spins):
    """A Hogwild helper's wait for call ``calls`` (:class:`bpr_numpy._runtime._Helper`), without the GIL.

    Spins until ``state[0]`` (calls posted) reaches ``calls``, then until the posting thread has
    taken its first chunk (``next_chunk[0]`` past ``state[2]``, the call's first chunk): it is
    then inside the kernel, without the GIL, which the helper takes next without waiting.
    Asked for the GIL while the posting thread still held it, a helper slept until it was
    released and took 50-100 us to wake (the VMs we measure on), a third of a small epoch.
    First it sets ``state[3]`` to ``calls``: the helper is done with the call before and holds no
    GIL, which the posting thread, waiting for it, then takes without waiting either.
    Returns whether the call was posted within ``spins`` reads.
    """
    _atomic_store(state, 3, calls)
    # The index as int64, as the Python callers pass it: a literal 0 would compile a second _spin_until.
    first = np.int64(0)
    if not _spin_until(state, first, calls, spins):
        return False
    _spin_until(next_chunk, first, state[2] + 1, spins)
    return True


@njit(cache=True)
def n_chunks(n_samples):
    """Number of chunks an epoch of ``n_samples`` is cut into (see the module's docstring)."""
    if n_samples <= 0:
        return 0
    return max((n_samples + CHUNK_SIZE - 1) // CHUNK_SIZE, min(MIN_CHUNKS, (n_samples + BATCH - 1) // BATCH))


@njit(cache=True, inline="always")
def _chunk_range(n_samples, chunk):
    """Samples ``start .. stop - 1`` of an epoch of ``n_samples`` that chunk ``chunk`` draws."""
    count = n_chunks(n_samples)
    return chunk * n_samples // count, (chunk + 1) * n_samples // count


@intrinsic
def _prefetch(typingctx, array, row, col):
    """Hint the CPU to fetch ``array[row, col]`` (or ``array[row]`` of a 1-D array) into cache."""
    sig = types.void(array, row, col)

    def codegen(context, builder, signature, args):
        aryty, rowty, colty = signature.args
        ary = context.make_array(aryty)(context, builder, args[0])
        index = [context.cast(builder, args[1], rowty, types.intp)]
        if aryty.ndim == 2:
            index.append(context.cast(builder, args[2], colty, types.intp))
        ptr = cgutils.get_item_pointer(context, builder, aryty, ary, index, wraparound=False)
        i8p = ir.IntType(8).as_pointer()
        i32 = ir.IntType(32)
        fn = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32]), "llvm.prefetch.p0"
        )
        # read, high temporal locality, data cache
        builder.call(fn, [builder.bitcast(ptr, i8p), ir.Constant(i32, 0), ir.Constant(i32, 3), ir.Constant(i32, 1)])
        return context.get_dummy_value()

    return sig, codegen


@njit(cache=True, inline="always")
def _prefetch_row(A, r):
    """Prefetch every cache line of row ``r`` of a C-contiguous 2-D array."""
    step = max(1, 64 // A.itemsize)
    for f in range(0, A.shape[1], step):
        _prefetch(A, r, f)


@njit(cache=True, inline="always")
def _row_of(indptr, row_blocks, k):
    """The row of the CSR that holds position ``k``: the last ``u`` with ``indptr[u] <= k``.

    ``row_blocks[q]`` is the row of position ``q * ROW_BLOCK`` and its last entry the row of the
    last position (:func:`bpr_numpy._kernel_args.row_blocks`), so the answer lies between two
    neighbouring entries, usually equal or a few rows apart: a short binary search of ``indptr``.
    Empty rows share their ``indptr`` value with the next row, so the last ``u`` is the
    non-empty one.
    """
    q = k // ROW_BLOCK
    lo = np.int64(row_blocks[q])
    hi = np.int64(row_blocks[q + 1])
    while lo < hi:
        mid = (lo + hi + 1) >> 1
        if indptr[mid] <= k:
            lo = mid
        else:
            hi = mid - 1
    return lo


@njit(cache=True, inline="always")
def _contains(indices, lo, hi, item):
    """Binary search for ``item`` in the sorted ``indices[lo:hi]``."""
    while lo < hi:
        mid = (lo + hi) >> 1
        v = indices[mid]
        if v < item:
            lo = mid + 1
        elif v > item:
            hi = mid
        else:
            return True
    return False


@njit(cache=True)
def _copy_finite(src, dst):
    """Copy the 1-D ``src`` into ``dst``; return whether every value is finite (one pass over memory)."""
    finite = True
    for k in range(src.shape[0]):
        v = src[k]
        dst[k] = v
        finite &= v - v == 0  # NaN for NaN and +-inf; fastmath is off here, so it is kept
    return finite
