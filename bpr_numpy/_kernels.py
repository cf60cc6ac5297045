"""numba kernels: random numbers, triplet sampling and the BPR SGD update.

The update is the one of :func:`bpr_numpy.objective.sgd_step` (the math lives
there; ``tests/test_kernels.py`` replays triplet sequences through both and
compares). Kernels take plain arrays and scalars, never objects; validation is
the caller's job (:mod:`bpr_numpy.model`).

Reproducibility: an epoch is cut into chunks of ``CHUNK_SIZE`` samples; chunk
``c`` of epoch ``e`` draws its positives and its negatives from two SplitMix64
streams seeded from ``(seed, e, c)``. The chunk layout depends only on the
number of samples, so the stream of sampled triplets is the same whatever the
thread count, and the serial path (one thread) is bitwise reproducible. With
several threads the chunks run Hogwild (lock-free, racing updates), as every
fast BPR does.

Speed: the triplets do not depend on the factors, so a chunk draws them a
batch (``BATCH``) at a time ahead of the updates and prefetches what the next
step will read: the CSR entries of the drawn positions, then the three factor
rows of each triplet. The updates are then applied in the same order as
without batching; only the memory latency is hidden.

Every function compiles lazily, on first call, and is cached on disk
(``cache=True``): importing this module compiles nothing.
"""

from __future__ import annotations

import math

import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic

from ._rng import GOLDEN, below, mix64, next_bits

#: Samples per chunk. Fixed, so that the sampled stream does not depend on threads.
CHUNK_SIZE = 4096

#: Negative draws tried for one positive before the sample is skipped.
MAX_NEGATIVE_TRIES = 64

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
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32]),
                                            "llvm.prefetch.p0")
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


@njit(cache=True, inline="always")
def _draw_batch(pos_state, neg_state, indptr, indices, user_of, n_items, n, user_run, bu, bi, bj, base, length,
                U, V, prefetch_rows):
    """Draw ``n`` triplets into ``bu, bi, bj``; return the advanced stream states.

    Positive: a uniform observed pair (position uniform over the nnz), then
    ``user_run - 1`` more samples of the same user, each with a positive
    uniform over the user's row; every sample's marginal distribution is the
    bootstrap's (pair uniform over the nnz), while the user's factor row stays
    in cache for the run. Runs restart at each batch. Negative:
    j uniform over items, resampled while it is a known positive of u (binary
    search of u's sorted row), at most ``MAX_NEGATIVE_TRIES`` draws; ``j = -1``
    when none was found (a user who holds every item, or bad luck on a nearly
    full row): the caller skips and counts that sample. ``base`` and
    ``length`` are scratch arrays of the batch size. With ``prefetch_rows``
    the factor rows of each triplet are prefetched for the updates.

    The work runs in passes over the batch so that the cache misses of
    different samples overlap instead of queueing: positions (prefetching the
    CSR entries), then users, items and first negative candidates (prefetching
    row bounds and factor rows), then the membership tests as branch-free
    binary searches advanced one level at a time for the whole batch, then
    the rare redraws one sample at a time.
    """
    nnz = indices.shape[0]
    for t in range(0, n, user_run):
        pos_state, bits = next_bits(pos_state)
        k = below(bits, nnz)
        bi[t] = k
        _prefetch(user_of, k, 0)
        _prefetch(indices, k, 0)
    for t in range(n):
        if t % user_run == 0:
            k = bi[t]
            u = np.int64(user_of[k])
        else:
            u = bu[t - 1]
            lo = indptr[u]
            pos_state, bits = next_bits(pos_state)
            k = lo + below(bits, indptr[u + 1] - lo)
        bu[t] = u
        bi[t] = np.int64(indices[k])
        lo = indptr[u]
        row = indptr[u + 1] - lo
        if row >= n_items:
            bj[t] = -1  # holds every item: no negative exists
            length[t] = 0
            continue
        neg_state, bits = next_bits(neg_state)
        bj[t] = below(bits, n_items)
        base[t] = lo
        length[t] = row
        if prefetch_rows:
            _prefetch_row(U, u)
            _prefetch_row(V, bi[t])
            _prefetch_row(V, bj[t])
    # Lower-bound search of bj[t] in each row, all rows one level at a time.
    level = np.int64(0)
    for t in range(n):
        level = max(level, length[t])
    while level > 1:
        for t in range(n):
            m = length[t]
            if m > 1:
                half = m >> 1
                mid = base[t] + half
                base[t] = mid if indices[mid] <= bj[t] else base[t]
                length[t] = m - half
        level -= level >> 1
    for t in range(n):
        j = bj[t]
        if j < 0 or length[t] == 0 or indices[base[t]] != j:
            continue  # skipped user, empty row, or j is not a positive: keep it
        # j is a known positive of u: redraw, one sample at a time (rare).
        u = bu[t]
        lo = indptr[u]
        hi = indptr[u + 1]
        bj[t] = -1
        for _ in range(MAX_NEGATIVE_TRIES - 1):
            neg_state, bits = next_bits(neg_state)
            candidate = below(bits, n_items)
            if not _contains(indices, lo, hi, candidate):
                bj[t] = candidate
                if prefetch_rows:
                    _prefetch_row(V, candidate)
                break
    return pos_state, neg_state


@njit(cache=True, inline="always")
def _pair_loss_and_slope(x, loss_code):
    """``ell(x)`` and ``ell'(x)`` in float64, as :mod:`bpr_numpy.objective` defines them.

    Same formulation as ``objective._sigmoid``/``_softplus`` (``exp(-|x|)``),
    so the kernel agrees with the reference to round-off, with no overflow.
    The loss comes in two parts, ``ell(x) = linear + log(factor)``, so that a
    caller summing many losses can multiply the factors (each in [1, 2]) and
    take one logarithm per batch of ``BATCH`` samples instead of one per sample.
    Returns ``(linear, factor, slope)``.
    """
    e = math.exp(-abs(x))
    inv = 1.0 / (1.0 + e)
    if x >= 0.0:
        g = e * inv  # sigma(-x)
        sx = inv     # sigma(x)
    else:
        g = inv
        sx = e * inv
    if loss_code == 0:
        return max(-x, 0.0), 1.0 + e, -g  # softplus(-x) = max(-x, 0) + log(1 + exp(-|x|))
    return g, 1.0, -g * sx


@njit(cache=True, inline="always")
def _sgd_update(U, V, b, u, i, j, lr, reg_u, reg_i, reg_j, reg_b, loss_code, use_bias, scratch):
    """One SGD step on triplet (u, i, j), in place, from the old row values.

    ``lr`` and the ``reg_*`` arrive in the factors' dtype, so float32 models
    stay in float32 arithmetic; ``scratch`` is a 1-element array of that dtype
    through which the float64 slope is rounded once. Returns
    ``(x_uij, linear, factor)`` before the step, with
    ``ell(x_uij) = linear + log(factor)`` (see :func:`_pair_loss_and_slope`).
    """
    n_factors = U.shape[1]
    # float32 zero: numba unifies it to float64 when the factors are float64.
    x = np.float32(0.0)
    for f in range(n_factors):
        x += U[u, f] * (V[i, f] - V[j, f])
    if use_bias:
        x += b[i] - b[j]
    linear, factor, slope64 = _pair_loss_and_slope(np.float64(x), loss_code)
    scratch[0] = slope64
    slope = scratch[0]
    for f in range(n_factors):
        wu = U[u, f]
        hi = V[i, f]
        hj = V[j, f]
        U[u, f] = wu - lr * (slope * (hi - hj) + reg_u * wu)
        V[i, f] = hi - lr * (slope * wu + reg_i * hi)
        V[j, f] = hj - lr * (reg_j * hj - slope * wu)
    if use_bias:
        bi = b[i]
        bj = b[j]
        b[i] = bi - lr * (slope + reg_b * bi)
        b[j] = bj - lr * (reg_b * bj - slope)
    return np.float64(x), linear, factor


@njit(cache=True, fastmath=_FASTMATH)
def _run_chunk(U, V, b, indptr, indices, user_of, n_samples, user_run, seed, epoch, chunk,
               lr, reg_u, reg_i, reg_j, reg_b, loss_code, use_bias):
    """Sample and apply ``n_samples`` triplets from chunk ``chunk``'s streams.

    Returns ``(sum of ell(x_uij), count of x_uij > 0, skipped samples)``.
    """
    n_items = V.shape[0]
    pos_state = _stream_seed(seed, epoch, chunk, 0)
    neg_state = _stream_seed(seed, epoch, chunk, 1)
    bu = np.empty(BATCH, np.int64)
    bi = np.empty(BATCH, np.int64)
    bj = np.empty(BATCH, np.int64)
    base = np.empty(BATCH, np.int64)
    length = np.empty(BATCH, np.int64)
    scratch = np.empty(1, U.dtype)
    loss_sum = 0.0
    product = 1.0
    ordered = 0
    skipped = 0
    for start in range(0, n_samples, BATCH):
        n = min(BATCH, n_samples - start)
        pos_state, neg_state = _draw_batch(pos_state, neg_state, indptr, indices, user_of, n_items, n, user_run,
                                           bu, bi, bj, base, length, U, V, False)
        for t in range(min(PREFETCH_AHEAD, n)):
            if bj[t] >= 0:
                _prefetch_row(U, bu[t])
                _prefetch_row(V, bi[t])
                _prefetch_row(V, bj[t])
        for t in range(n):
            ahead = t + PREFETCH_AHEAD
            if ahead < n and bj[ahead] >= 0:
                _prefetch_row(U, bu[ahead])
                _prefetch_row(V, bi[ahead])
                _prefetch_row(V, bj[ahead])
            j = bj[t]
            if j < 0:
                skipped += 1
                continue
            x, linear, factor = _sgd_update(U, V, b, bu[t], bi[t], j, lr, reg_u, reg_i, reg_j, reg_b,
                                            loss_code, use_bias, scratch)
            loss_sum += linear
            product *= factor
            if x > 0.0:
                ordered += 1
        # One logarithm per batch: each factor is in [1, 2], BATCH of them stay far from overflow.
        loss_sum += math.log(product)
        product = 1.0
    return loss_sum, ordered, skipped


@njit(cache=True)
def _epoch_serial(U, V, b, indptr, indices, user_of, n_samples, user_run, seed, epoch,
                  lr, reg_u, reg_i, reg_j, reg_b, loss_code, use_bias, out_loss, out_ordered, out_skipped):
    """One epoch, chunks in order on the calling thread: bitwise reproducible."""
    n_chunks = out_loss.shape[0]
    for c in range(n_chunks):
        n = min(CHUNK_SIZE, n_samples - c * CHUNK_SIZE)
        out_loss[c], out_ordered[c], out_skipped[c] = _run_chunk(
            U, V, b, indptr, indices, user_of, n, user_run, seed, epoch, c,
            lr, reg_u, reg_i, reg_j, reg_b, loss_code, use_bias)


@njit(cache=True, parallel=True)
def _epoch_parallel(U, V, b, indptr, indices, user_of, n_samples, user_run, seed, epoch,
                    lr, reg_u, reg_i, reg_j, reg_b, loss_code, use_bias, out_loss, out_ordered, out_skipped):
    """One epoch, chunks spread over threads (Hogwild); same triplet stream as serial."""
    n_chunks = out_loss.shape[0]
    for c in prange(n_chunks):
        n = min(CHUNK_SIZE, n_samples - c * CHUNK_SIZE)
        out_loss[c], out_ordered[c], out_skipped[c] = _run_chunk(
            U, V, b, indptr, indices, user_of, n, user_run, seed, epoch, c,
            lr, reg_u, reg_i, reg_j, reg_b, loss_code, use_bias)


@njit(cache=True)
def _sample_stream(indptr, indices, user_of, n_items, n_samples, user_run, seed, epoch):
    """The triplets an epoch would draw, without training (for tests and inspection).

    Returns arrays ``(users, positives, negatives)`` of length ``n_samples``,
    ``negatives[k] = -1`` for skipped samples.
    """
    users = np.empty(n_samples, np.int64)
    positives = np.empty(n_samples, np.int64)
    negatives = np.empty(n_samples, np.int64)
    dummy = np.empty((1, 1), np.float32)
    base = np.empty(BATCH, np.int64)
    length = np.empty(BATCH, np.int64)
    n_chunks = (n_samples + CHUNK_SIZE - 1) // CHUNK_SIZE
    for c in range(n_chunks):
        pos_state = _stream_seed(seed, epoch, c, 0)
        neg_state = _stream_seed(seed, epoch, c, 1)
        end = min(n_samples, (c + 1) * CHUNK_SIZE)
        for start in range(c * CHUNK_SIZE, end, BATCH):
            n = min(BATCH, end - start)
            pos_state, neg_state = _draw_batch(
                pos_state, neg_state, indptr, indices, user_of, n_items, n, user_run,
                users[start:start + n], positives[start:start + n], negatives[start:start + n], base, length,
                dummy, dummy, False)
    return users, positives, negatives


@njit(cache=True, fastmath=_FASTMATH)
def _sgd_triplets(U, V, b, users, positives, negatives, lr, reg_u, reg_i, reg_j, reg_b, loss_code, use_bias):
    """Apply the SGD update to an explicit triplet sequence, in order.

    Negatives equal to -1 are skipped (as in an epoch). Returns ``x_uij``
    before each step (NaN for skipped entries).
    """
    xs = np.full(users.shape[0], np.nan)
    scratch = np.empty(1, U.dtype)
    for k in range(users.shape[0]):
        if negatives[k] < 0:
            continue
        xs[k], _, _ = _sgd_update(U, V, b, users[k], positives[k], negatives[k],
                               lr, reg_u, reg_i, reg_j, reg_b, loss_code, use_bias, scratch)
    return xs


def n_chunks(n_samples: int) -> int:
    """Number of chunks an epoch of ``n_samples`` is cut into."""
    return (n_samples + CHUNK_SIZE - 1) // CHUNK_SIZE
