"""numba kernels: random numbers, triplet sampling and the BPR SGD update.

The update is the one of :func:`bpr_numpy.objective.sgd_step` (the math lives
there; ``tests/test_kernels.py`` replays triplet sequences through both and
compares). Kernels take plain arrays and scalars, never objects; validation is
the caller's job (:mod:`bpr_numpy.model`).

Reproducibility: an epoch is cut into :func:`n_chunks` chunks of equal size
(within one sample), at most ``CHUNK_SIZE`` samples each and at least
``MIN_CHUNKS`` of them when there are enough samples; chunk ``c`` of epoch
``e`` draws its positives and its negatives from two SplitMix64 streams
seeded from ``(seed, e, c)``. The chunk layout depends only on the number of
samples, so the stream of sampled triplets is the same whatever the thread
count, and the serial path (one thread) is bitwise reproducible. With
several threads the chunks run Hogwild (lock-free, racing updates), as every
fast BPR does, each thread taking the next unstarted chunk when it finishes
one (see :func:`_epoch_parallel`).

Speed: the triplets do not depend on the factors, so a chunk draws them a
batch (``BATCH``) at a time ahead of the updates and prefetches what the next
step will read: the three factor rows (and biases) of each triplet, and on
matrices beyond the caches the rows each run of one user starts from
(:func:`_prefetch_runs`). The updates are then applied in the same order as
without batching; only the memory latency is hidden. When the catalogue is
dense enough (see :func:`bpr_numpy.model._membership_bitmap`) the test "is
the drawn negative a positive of u?" reads one bit of a users x items
bitmap instead of binary-searching u's row: the same answer, hence the same
stream, 10% faster on MovieLens 100k.

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

from ._rng import GOLDEN, below, mix64, next_bits, unit_open
from .objective import (ADAM_BETA1, ADAM_BETA2, ADAM_EPSILON, LOSS_BPR, LOSS_WARP, OPTIMIZER_ADAGRAD,
                        OPTIMIZER_ADAM)
from .sampling import ADAPTIVE_AOBPR, ADAPTIVE_DNS

#: Most samples per chunk. The layout depends on the epoch's size only, so that the sampled
#: stream does not depend on threads.
CHUNK_SIZE = 4096

#: Fewest chunks of an epoch that has ``MIN_CHUNKS * BATCH`` samples or more. Threads share
#: the chunks out as they go: on MovieLens 100k's 49,906 samples, 13 chunks of 4096 left one
#: thread of two with 7 chunks to the other's 6 (a tenth of the epoch waiting); 64 balance
#: within a chunk and follow a core that slows down.
MIN_CHUNKS = 64

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
def _fetch_add(typingctx, array, index):
    """Atomically add 1 to ``array[index]`` (int64); return the value before."""
    if not isinstance(array, types.Array) or array.dtype != types.int64:
        return None  # a typing error at the call, not an LLVM one
    sig = types.int64(array, index)

    def codegen(context, builder, signature, args):
        aryty, indexty = signature.args
        ary = context.make_array(aryty)(context, builder, args[0])
        ptr = cgutils.get_item_pointer(context, builder, aryty, ary,
                                       [context.cast(builder, args[1], indexty, types.intp)], wraparound=False)
        return builder.atomic_rmw("add", ptr, ir.Constant(ir.IntType(64), 1), "monotonic")

    return sig, codegen


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


@njit(cache=True)
def _copy_finite(src, dst):
    """Copy the 1-D ``src`` into ``dst``; return whether every value is finite (one pass over memory)."""
    finite = True
    for k in range(src.shape[0]):
        v = src[k]
        dst[k] = v
        finite &= v - v == 0  # NaN for NaN and +-inf; fastmath is off here, so it is kept
    return finite


@njit(cache=True)
def _membership_bitmap(indptr, indices, n_items):
    """Bit ``j`` of row ``u`` set when ``(u, j)`` is a positive: ``(n_users, ceil(n_items / 64))`` uint64 words."""
    words = (n_items + 63) >> 6
    bits = np.zeros((indptr.shape[0] - 1, words), np.uint64)
    for u in range(indptr.shape[0] - 1):
        for k in range(indptr[u], indptr[u + 1]):
            j = indices[k]
            bits[u, j >> 6] |= np.uint64(1) << np.uint64(j & 63)
    return bits


@njit(cache=True, inline="always")
def _draw_candidate(state, n_items, popularity):
    """One negative candidate: uniform over items (``popularity`` None), or from the alias table ``(prob, alias)``."""
    state, bits = next_bits(state)
    k = below(bits, n_items)
    if popularity is None:
        return state, k
    state, bits = next_bits(state)
    if unit_open(bits) < popularity[0][k]:
        return state, k
    return state, popularity[1][k]


@njit(cache=True, inline="always")
def _draw_negative(state, indices, lo, hi, n_items, popularity):
    """A candidate that is not in ``indices[lo:hi]``, redrawn at most ``MAX_NEGATIVE_TRIES`` times; -1 if none."""
    for _ in range(MAX_NEGATIVE_TRIES):
        state, j = _draw_candidate(state, n_items, popularity)
        if not _contains(indices, lo, hi, j):
            return state, j
    return state, np.int64(-1)


@njit(cache=True, inline="always")
def _runs_per_batch(user_run):
    """Runs in a full batch (runs restart at each batch; the last run of a batch may be shorter)."""
    return (BATCH + user_run - 1) // user_run


@njit(cache=True, inline="always")
def _draw_run_starts(pos_state, nnz, n_samples, user_run):
    """The positions (uniform over the nnz) that start the runs of a chunk of ``n_samples``, in order.

    Drawn before the chunk's other positives, so that the rows they lead to can be
    prefetched batches ahead (:func:`_prefetch_runs`). Returns ``(pos_state, starts)``.
    """
    per_batch = _runs_per_batch(user_run)
    n_batches = (n_samples + BATCH - 1) // BATCH
    starts = np.empty(max(n_batches * per_batch, 1), np.int64)
    r = 0
    for start in range(0, n_samples, BATCH):
        for _ in range(0, min(BATCH, n_samples - start), user_run):
            pos_state, bits = next_bits(pos_state)
            starts[r] = below(bits, nnz)
            r += 1
    return pos_state, starts[:r]


@njit(cache=True, inline="always")
def _prefetch_runs(starts, batch, stage, user_run, user_of, indptr, indices, U):
    """Stage ``stage`` of fetching what the runs of batch ``batch`` read first.

    A run's first sample follows a chain of dependent loads (position -> user ->
    row bounds -> row), each a cache miss on a large matrix. Issued over three
    batches, one link per batch: stage 0 fetches ``user_of`` and ``indices`` at
    the start positions, stage 1 reads the users (cached by now) and fetches
    their row bounds and factor rows, stage 2 reads the bounds and fetches the
    rows' first 256 entries. Only hints: nothing it does changes a result.
    """
    per_batch = _runs_per_batch(user_run)
    for r in range(batch * per_batch, min((batch + 1) * per_batch, starts.shape[0])):
        k = starts[r]
        if stage == 0:
            _prefetch(user_of, k, 0)
            _prefetch(indices, k, 0)
            continue
        u = user_of[k]
        if stage == 1:
            _prefetch(indptr, u, 0)
            _prefetch_row(U, u)
            continue
        lo = indptr[u]
        for p in range(lo, min(indptr[u + 1], lo + 256), 64 // indices.itemsize):
            _prefetch(indices, p, 0)


@njit(cache=True, inline="always")
def _draw_batch(pos_state, neg_state, indptr, indices, user_of, n_items, n, user_run, bu, bi, bj, base, length,
                U, V, prefetch_rows, draw_negatives, skip_liked, popularity, bitmap, starts, batch):
    """Draw ``n`` triplets into ``bu, bi, bj``; return the advanced stream states.

    Positive: a uniform observed pair (position uniform over the nnz, taken
    from ``starts``, :func:`_draw_run_starts` of the chunk, batch ``batch``),
    then ``user_run - 1`` more samples of the same user, each with a positive
    uniform over the user's row; every sample's marginal distribution is the
    bootstrap's (pair uniform over the nnz), while the user's factor row stays
    in cache for the run. Runs restart at each batch. Negative: a candidate
    (uniform, or popularity through the alias table), and when it is a known
    positive of u (binary search of u's sorted row) either redrawn, at most
    ``MAX_NEGATIVE_TRIES`` draws, or, with ``skip_liked``, given up. ``j = -1``
    marks a sample to skip (and count): a user who holds every item, a
    skipped liked candidate, or no negative found in the redraws. ``bitmap``
    is None or :func:`_membership_bitmap` of the CSR: the first candidate's
    test is then one bit instead of a binary search (the same answer, so the
    same stream). Without
    ``draw_negatives`` (samplers that pick the negative at update time) ``bj``
    is 0 for every sample that is not skipped. ``base`` and ``length`` are
    scratch arrays of the batch size. With ``prefetch_rows`` the factor rows
    of each triplet are prefetched for the updates.

    The work runs in passes over the batch so that the cache misses of
    different samples overlap instead of queueing: run starts, then users,
    items and first negative candidates (prefetching the bitmap words, or
    factor rows when asked), then the membership tests as branch-free
    binary searches advanced one level at a time for the whole batch, then
    the rare redraws one sample at a time.
    """
    run0 = batch * _runs_per_batch(user_run)
    for t in range(0, n, user_run):
        bi[t] = starts[run0 + t // user_run]
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
        length[t] = 0
        if row >= n_items:
            bj[t] = -1  # holds every item: no negative exists
            continue
        if not draw_negatives:
            bj[t] = 0
            continue
        neg_state, bj[t] = _draw_candidate(neg_state, n_items, popularity)
        base[t] = lo
        length[t] = row
        if bitmap is not None:
            _prefetch(bitmap, u, bj[t] >> 6)
        if prefetch_rows:
            _prefetch_row(U, u)
            _prefetch_row(V, bi[t])
            _prefetch_row(V, bj[t])
    # Lower-bound search of bj[t] in each row, all rows one level at a time.
    level = np.int64(0)
    if bitmap is None:
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
        if j < 0 or length[t] == 0:
            continue  # skipped user, no negative drawn, or an empty row
        if bitmap is None:
            liked = indices[base[t]] == j
        else:
            liked = (bitmap[bu[t], j >> 6] >> np.uint64(j & 63)) & np.uint64(1) != 0
        if not liked:
            continue
        # j is a known positive of u: skip or redraw, one sample at a time (rare).
        if skip_liked:
            bj[t] = -1
            continue
        u = bu[t]
        neg_state, j = _draw_negative(neg_state, indices, indptr[u], indptr[u + 1], n_items, popularity)
        bj[t] = j
        if prefetch_rows and j >= 0:
            _prefetch_row(V, j)
    return pos_state, neg_state


@njit(cache=True, inline="always")
def _item_score(U, V, b, u, j, use_bias):
    """``x_uj = w_u . h_j + b_j`` in float64."""
    x = 0.0
    for f in range(U.shape[1]):
        x += np.float64(U[u, f]) * np.float64(V[j, f])
    if use_bias:
        x += np.float64(b[j])
    return x


@njit(cache=True, inline="always")
def _dns_choose(state, U, V, b, use_bias, indices, lo, hi, u, j, n_candidates, n_items):
    """DNS: the highest-scored of ``j`` and ``n_candidates - 1`` more uniform non-positives (first wins ties)."""
    best = j
    best_score = _item_score(U, V, b, u, j, use_bias)
    for _ in range(n_candidates - 1):
        state, c = _draw_negative(state, indices, lo, hi, n_items, None)
        if c < 0:
            continue
        score = _item_score(U, V, b, u, c, use_bias)
        if score > best_score:
            best = c
            best_score = score
    return state, best


@njit(cache=True, inline="always")
def _aobpr_draw(state, U, indices, lo, hi, u, ranks, spread, lam, n_items):
    """AOBPR: a geometric rank of a factor drawn by ``|w_uf| sigma_f``; non-positives only, -1 if none.

    See :mod:`bpr_numpy.sampling` for the definition; ``ranks``/``spread``
    come from :func:`bpr_numpy.sampling.aobpr_rankings` (a last row for the
    item bias, whose user weight is 1).
    """
    n_factors = U.shape[1]
    n_rows = ranks.shape[0]
    total = 0.0
    for f in range(n_rows):
        w = np.float64(U[u, f]) if f < n_factors else 1.0
        total += abs(w) * spread[f]
    log_q = -1.0 / lam
    tail = -math.expm1(n_items * log_q)  # 1 - q^n: the truncation of the geometric law
    for _ in range(MAX_NEGATIVE_TRIES):
        state, bits = next_bits(state)
        r = np.int64(math.log1p(-unit_open(bits) * tail) / log_q)
        r = min(r, n_items - 1)
        state, bits = next_bits(state)
        if total > 0.0:
            target = unit_open(bits) * total
            f = 0
            acc = 0.0
            while f < n_rows - 1:
                w = np.float64(U[u, f]) if f < n_factors else 1.0
                acc += abs(w) * spread[f]
                if acc > target:
                    break
                f += 1
        else:  # all weights zero: every factor equally likely
            f = below(bits, n_rows)
        w = np.float64(U[u, f]) if f < n_factors else 1.0
        j = np.int64(ranks[f, r] if w >= 0.0 else ranks[f, n_items - 1 - r])
        if not _contains(indices, lo, hi, j):
            return state, j
    return state, np.int64(-1)


@njit(cache=True, inline="always")
def _warp_search(state, U, V, b, use_bias, indices, lo, hi, u, i, max_sampled, n_items, popularity):
    """WARP as LightFM draws it: candidates until one violates ``x_uj > x_ui - 1`` and is not a positive.

    Every draw counts, a drawn positive included (LightFM's convention).
    Returns ``(state, j, n_draws)``; ``j = -1`` when ``max_sampled`` draws
    found no violation (no step is taken).
    """
    x_ui = _item_score(U, V, b, u, i, use_bias)
    for n_draws in range(1, max_sampled + 1):
        state, j = _draw_candidate(state, n_items, popularity)
        if _item_score(U, V, b, u, j, use_bias) > x_ui - 1.0 and not _contains(indices, lo, hi, j):
            return state, j, n_draws
    return state, np.int64(-1), max_sampled


@njit(cache=True, inline="always")
def _warp_weight(n_items, n_draws):
    """:func:`bpr_numpy.objective.warp_weight`."""
    return math.log(max(1.0, math.floor((n_items - 1) / n_draws)))


@njit(cache=True, inline="always")
def _pair_loss_and_slope(x, loss_code, weight, one):
    """``omega ell(x)`` and ``omega ell'(x)``, as :mod:`bpr_numpy.objective` defines them, returned in float64.

    Written with ``exp(-|x|)``, overflow-free; it agrees with the reference's
    SciPy ``expit``/``log_expit`` to round-off (the kernel tests hold it to that).
    The exponential and the division are computed in the type of ``x`` and
    ``one`` (1 in that type): float32 for the SGD step of a float32 model,
    whose slope is rounded to float32 anyway (7% faster on MovieLens 100k
    than float64's ``exp`` and division), float64 everywhere else.
    The loss comes in two parts, ``ell(x) = linear + log(factor)``, so that a
    caller summing many losses can multiply the factors (each in [1, 2]) and
    take one logarithm per batch of ``BATCH`` samples instead of one per sample.
    Returns ``(linear, factor, slope)``. ``weight`` (``omega``) is 1 except
    for WARP, whose loss has no logarithmic part.
    """
    x64 = np.float64(x)
    if loss_code == LOSS_WARP:
        if x64 < 1.0:
            return weight * (1.0 - x64), 1.0, -weight
        return 0.0, 1.0, 0.0
    e = math.exp(-abs(x))
    inv = one / (one + e)
    if x >= 0:
        g = e * inv  # sigma(-x)
        sx = inv     # sigma(x)
    else:
        g = inv
        sx = e * inv
    if loss_code == LOSS_BPR:
        # softplus(-x) = max(-x, 0) + log(1 + exp(-|x|))
        return max(-x64, 0.0), 1.0 + np.float64(e), -np.float64(g)
    return np.float64(g), 1.0, -np.float64(g * sx)


@njit(cache=True, inline="always")
def _adaptive_rule(theta, g, m, v, code, lr, c1, c2):
    """One element of an AdaGrad or Adam step (``code``), in float64; returns ``(theta, m, v)``.

    The rules of :func:`bpr_numpy.objective._optimizers._optimizer_rows`: AdaGrad's
    accumulator is ``v``; Adam's bias corrections arrive as ``c1 = 1 / (1 -
    beta1^t)`` and ``c2 = 1 / (1 - beta2^t)`` for the row's step count ``t``.
    """
    if code == OPTIMIZER_ADAGRAD:
        v = v + g * g
        return theta - lr * g / math.sqrt(v), m, v
    m = ADAM_BETA1 * m + (1.0 - ADAM_BETA1) * g
    v = ADAM_BETA2 * v + (1.0 - ADAM_BETA2) * g * g
    return theta - lr * (m * c1) / (math.sqrt(v * c2) + ADAM_EPSILON), m, v


@njit(cache=True, inline="always")
def _adam_factors(steps):
    """Adam's bias corrections ``(c1, c2)`` after ``steps`` steps of a row."""
    t = np.float64(steps)
    return 1.0 / (1.0 - ADAM_BETA1 ** t), 1.0 / (1.0 - ADAM_BETA2 ** t)


@njit(cache=True, inline="always")
def _adam_corrections(steps, row):
    """Advance a row's Adam step count; return its bias corrections ``(c1, c2)``."""
    steps[row] += 1
    return _adam_factors(steps[row])


@njit(cache=True, inline="always")
def _adaptive_negative(state, U, V, b, use_bias, indices, lo, hi, u, i, j, n_items, popularity, adaptive):
    """The negative of a factor-dependent sampler or of WARP, chosen at update time from the current factors.

    ``adaptive`` is ``(kind, warp_max_sampled, dns_candidates, lam, ranks,
    spread)``: ``kind`` one of ``sampling.ADAPTIVE_*``, ``warp_max_sampled``
    0 unless the loss is WARP. ``j`` is the batch's candidate (a uniform
    non-positive for DNS; unused by AOBPR and WARP). Returns
    ``(state, j, weight)``: ``j = -1`` when no negative was found (skipped),
    ``j = -2`` when WARP's draws found no margin violation (no step).
    """
    kind, warp_max_sampled, dns_candidates, lam, ranks, spread = adaptive
    weight = 1.0
    if kind == ADAPTIVE_DNS:
        state, j = _dns_choose(state, U, V, b, use_bias, indices, lo, hi, u, j, dns_candidates, n_items)
    elif kind == ADAPTIVE_AOBPR:
        state, j = _aobpr_draw(state, U, indices, lo, hi, u, ranks, spread, lam, n_items)
    if warp_max_sampled > 0:
        state, j, n_draws = _warp_search(state, U, V, b, use_bias, indices, lo, hi, u, i, warp_max_sampled,
                                         n_items, popularity)
        if j < 0:
            return state, np.int64(-2), weight
        weight = _warp_weight(n_items, n_draws)
    return state, j, weight


@njit(cache=True, inline="always")
def _apply_batch(U, V, b, indptr, indices, bu, bi, bj, bw, n, lr, reg_u, reg_i, reg_j, reg_b, loss_code, use_bias,
                 scratch, neg_state, popularity, adaptive, opt, trace, trace_row, xs):
    """Apply triplets ``0 .. n-1`` of ``(bu, bi, bj)`` in order, in place, each from the current row values.

    The SGD step is the one of :func:`bpr_numpy.objective.sgd_step`; ``lr``
    and the ``reg_*`` arrive in the factors' dtype, so float32 models stay in
    float32 arithmetic (the slope's exponential too, see
    :func:`_pair_loss_and_slope`), and ``scratch`` (a 1-element array of that
    dtype) gives 1 in that dtype and rounds the slope to it. With ``opt``
    (:meth:`bpr_numpy.objective.OptimizerState.kernel_args`) the step is
    AdaGrad's or Adam's instead. ``bw`` is None (weight 1, or the
    weight ``adaptive`` gives) or the weights of an explicit sequence;
    ``adaptive`` as in :func:`_adaptive_negative`. ``trace`` (None or an
    array) receives ``(u, i, j, weight)`` of sample ``t`` in row ``trace_row
    + t``; ``xs`` (None or an array) receives ``x_uij`` before each step (NaN
    where skipped). ``j = -1`` skips a sample (counted), ``j = -2`` is WARP's
    "no violation found" (no step, counted as ordered). Every applied
    triplet has ``i != j``, as :func:`bpr_numpy.objective.sgd_step` requires
    (epochs draw non-positives): Adam's step counts of u, i and j advance
    before their corrections are taken, which relies on it.

    The SGD step is written out in this loop, not called: an inlined helper
    that takes the factor arrays costs four reference-count increments and
    decrements per sample (atomic, on counters both threads share), which
    made the epoch 15% slower on one thread and scale worse on two (measured
    on MovieLens 100k). A caller summing many losses gets ``omega ell(x) =
    linear + log(factor)`` per sample (see :func:`_pair_loss_and_slope`) and
    one logarithm per batch.

    Returns ``(neg_state, sum of omega ell(x_uij), count of x_uij > 0, skipped)``.
    """
    n_factors = U.shape[1]
    n_items = V.shape[0]
    scratch[0] = 1
    one = scratch[0]  # 1 in the factors' dtype
    if adaptive is not None:
        dns_only = adaptive[0] == ADAPTIVE_DNS and adaptive[1] == 0  # DNS without WARP
        dns_candidates = adaptive[2]
    if opt is not None:
        # Unpacked once per batch: inside the sample loop each array would be reference-counted per sample.
        code, m_u, m_v, m_b, v_u, v_v, v_b, t_u, t_v = opt
        adam = code == OPTIMIZER_ADAM
    loss_sum = 0.0
    product = 1.0
    ordered = 0
    skipped = 0
    # The rows (biases included: the other thread's writes evict them) of the triplet
    # PREFETCH_AHEAD steps ahead are requested first; the loop starts that far before 0.
    for t in range(-PREFETCH_AHEAD, n):
        ahead = t + PREFETCH_AHEAD
        if ahead < n and bj[ahead] >= 0:
            _prefetch_row(U, bu[ahead])
            _prefetch_row(V, bi[ahead])
            _prefetch_row(V, bj[ahead])
            if use_bias:
                _prefetch(b, bi[ahead], 0)
                _prefetch(b, bj[ahead], 0)
        if t < 0:
            continue
        u = bu[t]
        i = bi[t]
        j = bj[t]
        weight = 1.0 if bw is None else bw[t]
        if adaptive is not None:
            if j >= 0 and dns_only:
                # DNS alone (the common case) without _adaptive_negative, whose tuple of arrays unpacked
                # per sample cost DNS with 2 candidates a fifth of its epoch on MovieLens 100k.
                neg_state, j = _dns_choose(neg_state, U, V, b, use_bias, indices, indptr[u], indptr[u + 1], u, j,
                                           dns_candidates, n_items)
            elif j >= 0:
                neg_state, j, weight = _adaptive_negative(neg_state, U, V, b, use_bias, indices, indptr[u],
                                                          indptr[u + 1], u, i, j, n_items, popularity, adaptive)
        if trace is not None:
            trace[trace_row + t, 0] = u
            trace[trace_row + t, 1] = i
            trace[trace_row + t, 2] = j
            trace[trace_row + t, 3] = weight
        if j < 0:
            if j == -1:
                skipped += 1
            else:
                ordered += 1  # WARP: every draw within the margin, nothing to learn from this positive
            continue
        # x_uij in the factors' dtype (a float32 zero: numba unifies it to float64 for float64 factors).
        x32 = np.float32(0.0)
        for f in range(n_factors):
            x32 += U[u, f] * (V[i, f] - V[j, f])
        if use_bias:
            x32 += b[i] - b[j]
        x = np.float64(x32)
        if opt is None:
            linear, factor, slope64 = _pair_loss_and_slope(x32, loss_code, weight, one)
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
                b_i = b[i]
                b_j = b[j]
                b[i] = b_i - lr * (slope + reg_b * b_i)
                b[j] = b_j - lr * (reg_b * b_j - slope)
        else:
            # AdaGrad or Adam (objective/_optimizers.py, _optimizer_rows): the SGD step's gradients, in float64, another
            # rule per element. Written out here for the reason the SGD step is.
            linear, factor, slope64 = _pair_loss_and_slope(x, loss_code, weight, 1.0)
            scratch[0] = slope64
            slope = np.float64(scratch[0])
            rate = np.float64(lr)
            cu1 = cu2 = ci1 = ci2 = cj1 = cj2 = 1.0
            if adam:
                t_u[u] += 1
                t_v[i] += 1
                t_v[j] += 1
                cu1, cu2 = _adam_factors(t_u[u])
                ci1, ci2 = _adam_factors(t_v[i])
                cj1, cj2 = _adam_factors(t_v[j])
            for f in range(n_factors):
                wu = np.float64(U[u, f])
                hi = np.float64(V[i, f])
                hj = np.float64(V[j, f])
                gu = slope * (hi - hj) + reg_u * wu
                gi = slope * wu + reg_i * hi
                gj = reg_j * hj - slope * wu
                U[u, f], m, v_u[u, f] = _adaptive_rule(wu, gu, m_u[u, f] if adam else 0.0, v_u[u, f], code, rate,
                                                       cu1, cu2)
                if adam:
                    m_u[u, f] = m
                V[i, f], m, v_v[i, f] = _adaptive_rule(hi, gi, m_v[i, f] if adam else 0.0, v_v[i, f], code, rate,
                                                       ci1, ci2)
                if adam:
                    m_v[i, f] = m
                V[j, f], m, v_v[j, f] = _adaptive_rule(hj, gj, m_v[j, f] if adam else 0.0, v_v[j, f], code, rate,
                                                       cj1, cj2)
                if adam:
                    m_v[j, f] = m
            if use_bias:
                b_i = np.float64(b[i])
                b_j = np.float64(b[j])
                gbi = slope + reg_b * b_i
                gbj = reg_b * b_j - slope
                b[i], m, v_b[i] = _adaptive_rule(b_i, gbi, m_b[i] if adam else 0.0, v_b[i], code, rate, ci1, ci2)
                if adam:
                    m_b[i] = m
                b[j], m, v_b[j] = _adaptive_rule(b_j, gbj, m_b[j] if adam else 0.0, v_b[j], code, rate, cj1, cj2)
                if adam:
                    m_b[j] = m
        if xs is not None:
            xs[t] = x
        loss_sum += linear
        product *= factor
        if x > 0.0:
            ordered += 1
    # Each factor is in [1, 2]: BATCH of them stay far from overflow.
    return neg_state, loss_sum + math.log(product), ordered, skipped


@njit(cache=True, fastmath=_FASTMATH)
def _run_chunk(U, V, b, indptr, indices, user_of, epoch_samples, user_run, seed, epoch, chunk,
               lr, reg_u, reg_i, reg_j, reg_b, loss_code, use_bias, skip_liked, popularity, adaptive, opt, trace,
               bitmap=None, prefetch_runs=False):
    """Sample and apply the triplets of chunk ``chunk`` of an epoch of ``epoch_samples``, from the chunk's streams.

    ``skip_liked``: a known positive drawn as negative skips the step
    instead of being redrawn; ``popularity`` is None (uniform candidates) or
    the alias table ``(prob, alias)`` of the popularity samplers (see
    :mod:`bpr_numpy.sampling`); ``adaptive`` is None or the tuple of
    :func:`_adaptive_negative` (DNS, AOBPR, WARP); ``opt`` is None for SGD or
    :meth:`bpr_numpy.objective.OptimizerState.kernel_args`. ``trace`` is None
    or an array whose row ``k`` receives ``(u, i, j, weight)`` of the epoch's
    ``k``-th sample (``j = -1``: skipped; ``j = -2``: WARP found no
    violation), for the tests' replay. ``bitmap``: see :func:`_draw_batch`.
    ``prefetch_runs``: fetch the runs' rows batches ahead (:func:`_prefetch_runs`),
    for matrices bigger than the caches: 18% faster on 20M pairs, 2.5% slower
    on MovieLens 100k, where everything is cached already.

    The optional arguments are None-or-tuple on purpose: numba prunes the
    branches on ``is None`` at compile time, so the default path (uniform,
    SGD, no trace) compiles to the lean loop it was, and each combination in
    use gets its own specialisation (cached like the rest).

    Returns ``(sum of omega ell(x_uij), count of x_uij > 0, skipped samples)``.
    """
    n_items = V.shape[0]
    first, stop = _chunk_range(epoch_samples, chunk)
    n_samples = stop - first
    pos_state = _stream_seed(seed, epoch, chunk, 0)
    neg_state = _stream_seed(seed, epoch, chunk, 1)
    bu = np.empty(BATCH, np.int64)
    bi = np.empty(BATCH, np.int64)
    bj = np.empty(BATCH, np.int64)
    base = np.empty(BATCH, np.int64)
    length = np.empty(BATCH, np.int64)
    scratch = np.empty(1, U.dtype)
    # Negatives chosen at update time (from the current factors) are not drawn in the batch.
    draw_negatives = True
    if adaptive is not None:
        draw_negatives = adaptive[0] != ADAPTIVE_AOBPR and adaptive[1] == 0
    loss_sum = 0.0
    ordered = 0
    skipped = 0
    pos_state, starts = _draw_run_starts(pos_state, indices.shape[0], n_samples, user_run)
    n_batches = (n_samples + BATCH - 1) // BATCH
    for batch in range(-3, n_batches):
        # The runs' chains of loads, one link per batch, three batches ahead (_prefetch_runs).
        for stage in range(3 if prefetch_runs else 0):
            if 0 <= batch + 3 - stage < n_batches:
                _prefetch_runs(starts, batch + 3 - stage, stage, user_run, user_of, indptr, indices, U)
        if batch < 0:
            continue
        start = batch * BATCH
        n = min(BATCH, n_samples - start)
        pos_state, neg_state = _draw_batch(pos_state, neg_state, indptr, indices, user_of, n_items, n, user_run,
                                           bu, bi, bj, base, length, U, V, False, draw_negatives,
                                           skip_liked, popularity, bitmap, starts, batch)
        neg_state, batch_loss, batch_ordered, batch_skipped = _apply_batch(
            U, V, b, indptr, indices, bu, bi, bj, None, n, lr, reg_u, reg_i, reg_j, reg_b, loss_code, use_bias,
            scratch, neg_state, popularity, adaptive, opt, trace, first + start, None)
        loss_sum += batch_loss
        ordered += batch_ordered
        skipped += batch_skipped
    return loss_sum, ordered, skipped


@njit(cache=True)
def _epoch_chunk(params, data, settings, sampling, opt, trace, outs, c):
    """Chunk ``c`` of the epoch the bundles describe (:mod:`bpr_numpy._kernel_args`), its results into ``outs``.

    The bundles are unpacked here and reach :func:`_run_chunk` as arguments, where numba prunes
    the branches of the options that are None. Not inlined on purpose: inlined into the prange
    loop of :func:`_epoch_parallel`, numba's parfor pass dropped its writes to the unpacked
    arrays as dead code (the epoch then trained nothing; caught by the tests).
    """
    U, V, b = params
    indptr, indices, user_of, bitmap = data
    (n_samples, user_run, seed, epoch, lr, reg_u, reg_i, reg_j, reg_b, loss_code, use_bias, skip_liked,
     prefetch_runs) = settings
    popularity, adaptive = sampling
    out_loss, out_ordered, out_skipped = outs
    out_loss[c], out_ordered[c], out_skipped[c] = _run_chunk(
        U, V, b, indptr, indices, user_of, n_samples, user_run, seed, epoch, c,
        lr, reg_u, reg_i, reg_j, reg_b, loss_code, use_bias, skip_liked, popularity, adaptive, opt, trace,
        bitmap, prefetch_runs)


@njit(cache=True, nogil=True)
def _epoch_serial(params, data, settings, sampling, opt, trace, outs, chunk_start, chunk_stop):
    """Chunks ``chunk_start .. chunk_stop - 1`` of an epoch, in order on the calling thread: bitwise reproducible.

    An epoch is usually one call over all its chunks; AOBPR cuts it where its
    rankings are refreshed. Releases the GIL: the strata of a stratified epoch
    (:mod:`bpr_numpy._strata`) run on threads of one process.

    The arguments are the bundles of :mod:`bpr_numpy._kernel_args` (``params``: Parameters,
    ``data``: TrainingData, ``settings``: EpochSettings, ``sampling``: Sampling, ``outs``:
    Outputs); ``opt`` and ``trace`` are as in :func:`_run_chunk`.
    """
    for c in range(chunk_start, chunk_stop):
        _epoch_chunk(params, data, settings, sampling, opt, trace, outs, c)


@njit(cache=True, parallel=True)
def _epoch_parallel(params, data, settings, sampling, opt, trace, outs, chunk_start, chunk_stop):
    """:func:`_epoch_serial` with the chunks spread over threads (Hogwild); same triplet streams.

    Each thread takes the next unstarted chunk (an atomic counter) until none
    is left: a static split would make the epoch wait for the slowest
    thread's share, and the cores of a shared machine do not run at one
    speed. (The loop has one iteration per chunk so that numba's static split
    gives every thread one; a thread's first iteration does its whole share,
    the others find the counter spent. Asking numba for the thread count
    inside the kernel would make it uncacheable.)
    """
    # Unpacked out here, not per chunk through _epoch_chunk: the parallel region then captures
    # plain arrays and scalars (with the bundles captured, MovieLens 100k fits on 2 threads took
    # 12% longer, alternated A/B).
    U, V, b = params
    indptr, indices, user_of, bitmap = data
    (n_samples, user_run, seed, epoch, lr, reg_u, reg_i, reg_j, reg_b, loss_code, use_bias, skip_liked,
     prefetch_runs) = settings
    popularity, adaptive = sampling
    out_loss, out_ordered, out_skipped = outs
    next_chunk = np.full(1, chunk_start, np.int64)
    for _ in prange(max(1, chunk_stop - chunk_start)):
        c = _fetch_add(next_chunk, 0)
        while c < chunk_stop:
            out_loss[c], out_ordered[c], out_skipped[c] = _run_chunk(
                U, V, b, indptr, indices, user_of, n_samples, user_run, seed, epoch, c,
                lr, reg_u, reg_i, reg_j, reg_b, loss_code, use_bias, skip_liked, popularity, adaptive, opt, trace,
                bitmap, prefetch_runs)
            c = _fetch_add(next_chunk, 0)


@njit(cache=True)
def _sample_stream(data, n_items, n_samples, user_run, seed, epoch, skip_liked, popularity):
    """The triplets an epoch of a factor-free sampler would draw, without training (tests, inspection).

    ``data`` is a :class:`bpr_numpy._kernel_args.TrainingData`. Returns arrays ``(users,
    positives, negatives)`` of length ``n_samples``, ``negatives[k] = -1`` for skipped samples.
    """
    indptr, indices, user_of, bitmap = data
    # The bitmap goes on as an argument: numba prunes ``bitmap is None`` branches of arguments
    # only, and _draw_batch is inlined into the function that calls it.
    return _sample_stream_arrays(indptr, indices, user_of, bitmap, n_items, n_samples, user_run, seed, epoch,
                                 skip_liked, popularity)


@njit(cache=True)
def _sample_stream_arrays(indptr, indices, user_of, bitmap, n_items, n_samples, user_run, seed, epoch, skip_liked,
                          popularity):
    """:func:`_sample_stream` on the unpacked training data."""
    users = np.empty(n_samples, np.int64)
    positives = np.empty(n_samples, np.int64)
    negatives = np.empty(n_samples, np.int64)
    dummy = np.empty((1, 1), np.float32)
    base = np.empty(BATCH, np.int64)
    length = np.empty(BATCH, np.int64)
    for c in range(n_chunks(n_samples)):
        pos_state = _stream_seed(seed, epoch, c, 0)
        neg_state = _stream_seed(seed, epoch, c, 1)
        first, end = _chunk_range(n_samples, c)
        pos_state, starts = _draw_run_starts(pos_state, indices.shape[0], end - first, user_run)
        for start in range(first, end, BATCH):
            n = min(BATCH, end - start)
            pos_state, neg_state = _draw_batch(
                pos_state, neg_state, indptr, indices, user_of, n_items, n, user_run,
                users[start:start + n], positives[start:start + n], negatives[start:start + n], base, length,
                dummy, dummy, False, True, skip_liked, popularity, bitmap, starts, (start - first) // BATCH)
    return users, positives, negatives


@njit(cache=True)
def _draw_adaptive_negatives(U, V, b, use_bias, indptr, indices, users, adaptive, seed):
    """One negative per entry of ``users`` from DNS or AOBPR with fixed factors, as training draws them.

    The first candidate is a uniform non-positive (training's batch draw),
    then :func:`_adaptive_negative`; -1 where none was found. For the tests'
    comparison with the exact laws of :mod:`bpr_numpy.sampling`.
    """
    n_items = V.shape[0]
    state = _stream_seed(seed, 0, 0, 1)
    out = np.empty(users.shape[0], np.int64)
    for k in range(users.shape[0]):
        u = users[k]
        lo = indptr[u]
        hi = indptr[u + 1]
        state, j = _draw_negative(state, indices, lo, hi, n_items, None)
        if j >= 0:
            state, j, _ = _adaptive_negative(state, U, V, b, use_bias, indices, lo, hi, u, 0, j, n_items, None,
                                             adaptive)
        out[k] = j
    return out


@njit(cache=True, fastmath=_FASTMATH)
def _apply_triplets(params, triplets, settings, opt):
    """Apply the model's update to an explicit triplet sequence, in order (``opt`` as in :func:`_run_chunk`).

    ``params``: Parameters; ``triplets``: ``(users, positives, negatives, weights)``;
    ``settings``: EpochSettings (its step size, penalties, loss and bias switch). Negatives
    below 0 are skipped (as in an epoch). Returns ``x_uij`` before each step (NaN for skipped
    entries).
    """
    U, V, b = params
    users, positives, negatives, weights = triplets
    _, _, _, _, lr, reg_u, reg_i, reg_j, reg_b, loss_code, use_bias, _, _ = settings
    xs = np.full(users.shape[0], np.nan)
    scratch = np.empty(1, U.dtype)
    no_csr = np.zeros(1, np.int64)
    for start in range(0, users.shape[0], BATCH):
        stop = min(start + BATCH, users.shape[0])
        _apply_batch(U, V, b, no_csr, no_csr, users[start:stop], positives[start:stop], negatives[start:stop],
                     weights[start:stop], stop - start, lr, reg_u, reg_i, reg_j, reg_b, loss_code, use_bias, scratch,
                     np.uint64(0), None, None, opt, None, 0, xs[start:stop])
    return xs
