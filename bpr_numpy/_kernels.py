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

from ._rng import GOLDEN, below, mix64, next_bits, unit_open
from .objective import ADAM_BETA1, ADAM_BETA2, ADAM_EPSILON
from .sampling import ADAPTIVE_AOBPR, ADAPTIVE_DNS

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
def _draw_batch(pos_state, neg_state, indptr, indices, user_of, n_items, n, user_run, bu, bi, bj, base, length,
                U, V, prefetch_rows, draw_negatives, skip_liked, popularity):
    """Draw ``n`` triplets into ``bu, bi, bj``; return the advanced stream states.

    Positive: a uniform observed pair (position uniform over the nnz), then
    ``user_run - 1`` more samples of the same user, each with a positive
    uniform over the user's row; every sample's marginal distribution is the
    bootstrap's (pair uniform over the nnz), while the user's factor row stays
    in cache for the run. Runs restart at each batch. Negative: a candidate
    (uniform, or popularity through the alias table), and when it is a known
    positive of u (binary search of u's sorted row) either redrawn, at most
    ``MAX_NEGATIVE_TRIES`` draws, or, with ``skip_liked``, given up. ``j = -1``
    marks a sample to skip (and count): a user who holds every item, a
    skipped liked candidate, or no negative found in the redraws. Without
    ``draw_negatives`` (samplers that pick the negative at update time) ``bj``
    is 0 for every sample that is not skipped. ``base`` and ``length`` are
    scratch arrays of the batch size. With ``prefetch_rows`` the factor rows
    of each triplet are prefetched for the updates.

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
            continue  # skipped user, no negative drawn, empty row, or j is not a positive: keep it
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
def _pair_loss_and_slope(x, loss_code, weight):
    """``omega ell(x)`` and ``omega ell'(x)`` in float64, as :mod:`bpr_numpy.objective` defines them.

    Written with ``exp(-|x|)``, overflow-free; it agrees with the reference's
    SciPy ``expit``/``log_expit`` to round-off (the kernel tests hold it to that).
    The loss comes in two parts, ``ell(x) = linear + log(factor)``, so that a
    caller summing many losses can multiply the factors (each in [1, 2]) and
    take one logarithm per batch of ``BATCH`` samples instead of one per sample.
    Returns ``(linear, factor, slope)``. ``weight`` (``omega``) is 1 except
    for WARP, whose loss has no logarithmic part.
    """
    if loss_code == 2:
        if x < 1.0:
            return weight * (1.0 - x), 1.0, -weight
        return 0.0, 1.0, 0.0
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
def _score_difference(U, V, b, u, i, j, use_bias):
    """``x_uij`` in the factors' dtype."""
    # float32 zero: numba unifies it to float64 when the factors are float64.
    x = np.float32(0.0)
    for f in range(U.shape[1]):
        x += U[u, f] * (V[i, f] - V[j, f])
    if use_bias:
        x += b[i] - b[j]
    return x


@njit(cache=True, inline="always")
def _sgd_update(U, V, b, u, i, j, lr, reg_u, reg_i, reg_j, reg_b, loss_code, weight, use_bias, scratch):
    """One SGD step on triplet (u, i, j), in place, from the old row values.

    ``lr`` and the ``reg_*`` arrive in the factors' dtype, so float32 models
    stay in float32 arithmetic; ``scratch`` is a 1-element array of that dtype
    through which the float64 slope is rounded once. Returns
    ``(x_uij, linear, factor)`` before the step, with
    ``omega ell(x_uij) = linear + log(factor)`` (see :func:`_pair_loss_and_slope`).
    """
    # The dot product is written out here, not taken from _score_difference: with the
    # loop bound shared by both loops LLVM compiles this step 7% faster (measured on
    # MovieLens 100k, alternating with the previous kernel in one process).
    n_factors = U.shape[1]
    x = np.float32(0.0)  # float32 zero: numba unifies it to float64 when the factors are float64
    for f in range(n_factors):
        x += U[u, f] * (V[i, f] - V[j, f])
    if use_bias:
        x += b[i] - b[j]
    linear, factor, slope64 = _pair_loss_and_slope(np.float64(x), loss_code, weight)
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


@njit(cache=True, inline="always")
def _adaptive_rule(theta, g, m, v, code, lr, c1, c2):
    """One element of an AdaGrad (code 1) or Adam (code 2) step, in float64; returns ``(theta, m, v)``.

    The rules of :func:`bpr_numpy.objective._optimizer_rows`: AdaGrad's
    accumulator is ``v``; Adam's bias corrections arrive as ``c1 = 1 / (1 -
    beta1^t)`` and ``c2 = 1 / (1 - beta2^t)`` for the row's step count ``t``.
    """
    if code == 1:
        v = v + g * g
        return theta - lr * g / math.sqrt(v), m, v
    m = ADAM_BETA1 * m + (1.0 - ADAM_BETA1) * g
    v = ADAM_BETA2 * v + (1.0 - ADAM_BETA2) * g * g
    return theta - lr * (m * c1) / (math.sqrt(v * c2) + ADAM_EPSILON), m, v


@njit(cache=True, inline="always")
def _adam_corrections(steps, row):
    """Advance a row's Adam step count; return its bias corrections ``(c1, c2)``."""
    steps[row] += 1
    t = np.float64(steps[row])
    return 1.0 / (1.0 - ADAM_BETA1 ** t), 1.0 / (1.0 - ADAM_BETA2 ** t)


@njit(cache=True, inline="always")
def _adaptive_update(U, V, b, u, i, j, lr, reg_u, reg_i, reg_j, reg_b, loss_code, weight, use_bias, scratch, opt):
    """One AdaGrad or Adam step on triplet (u, i, j): the gradients of :func:`_sgd_update`, another rule.

    ``opt`` is :meth:`bpr_numpy.objective.OptimizerState.kernel_args`.
    Returns what :func:`_sgd_update` returns.
    """
    code, mU, mV, mb, vU, vV, vb, tU, tV = opt
    x = _score_difference(U, V, b, u, i, j, use_bias)
    linear, factor, slope64 = _pair_loss_and_slope(np.float64(x), loss_code, weight)
    scratch[0] = slope64
    slope = np.float64(scratch[0])
    lr = np.float64(lr)
    cu1 = cu2 = ci1 = ci2 = cj1 = cj2 = 1.0
    if code == 2:
        cu1, cu2 = _adam_corrections(tU, u)
        ci1, ci2 = _adam_corrections(tV, i)
        cj1, cj2 = _adam_corrections(tV, j)
    adam = code == 2
    for f in range(U.shape[1]):
        wu = np.float64(U[u, f])
        hi = np.float64(V[i, f])
        hj = np.float64(V[j, f])
        gu = slope * (hi - hj) + reg_u * wu
        gi = slope * wu + reg_i * hi
        gj = reg_j * hj - slope * wu
        U[u, f], m, vU[u, f] = _adaptive_rule(wu, gu, mU[u, f] if adam else 0.0, vU[u, f], code, lr, cu1, cu2)
        if adam:
            mU[u, f] = m
        V[i, f], m, vV[i, f] = _adaptive_rule(hi, gi, mV[i, f] if adam else 0.0, vV[i, f], code, lr, ci1, ci2)
        if adam:
            mV[i, f] = m
        V[j, f], m, vV[j, f] = _adaptive_rule(hj, gj, mV[j, f] if adam else 0.0, vV[j, f], code, lr, cj1, cj2)
        if adam:
            mV[j, f] = m
    if use_bias:
        bi = np.float64(b[i])
        bj = np.float64(b[j])
        gbi = slope + reg_b * bi
        gbj = reg_b * bj - slope
        b[i], m, vb[i] = _adaptive_rule(bi, gbi, mb[i] if adam else 0.0, vb[i], code, lr, ci1, ci2)
        if adam:
            mb[i] = m
        b[j], m, vb[j] = _adaptive_rule(bj, gbj, mb[j] if adam else 0.0, vb[j], code, lr, cj1, cj2)
        if adam:
            mb[j] = m
    return np.float64(x), linear, factor


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


@njit(cache=True, fastmath=_FASTMATH)
def _run_chunk(U, V, b, indptr, indices, user_of, n_samples, user_run, seed, epoch, chunk,
               lr, reg_u, reg_i, reg_j, reg_b, loss_code, use_bias, skip_liked, popularity, adaptive, opt, trace):
    """Sample and apply ``n_samples`` triplets from chunk ``chunk``'s streams.

    ``skip_liked``: a known positive drawn as negative skips the step
    instead of being redrawn; ``popularity`` is None (uniform candidates) or
    the alias table ``(prob, alias)`` of the popularity samplers (see
    :mod:`bpr_numpy.sampling`); ``adaptive`` is None or the tuple of
    :func:`_adaptive_negative` (DNS, AOBPR, WARP); ``opt`` is None for SGD or
    :meth:`bpr_numpy.objective.OptimizerState.kernel_args`. ``trace`` is None
    or an array whose row ``chunk * CHUNK_SIZE + k`` receives ``(u, i, j,
    weight)`` of the chunk's ``k``-th sample (``j = -1``: skipped; ``j = -2``:
    WARP found no violation), for the tests' replay.

    The optional arguments are None-or-tuple on purpose: numba prunes the
    branches on ``is None`` at compile time, so the default path (uniform,
    SGD, no trace) compiles to the lean loop it was, and each combination in
    use gets its own specialisation (cached like the rest).

    Returns ``(sum of omega ell(x_uij), count of x_uij > 0, skipped samples)``.
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
    # Negatives chosen at update time (from the current factors) are not drawn in the batch.
    draw_negatives = True
    if adaptive is not None:
        draw_negatives = adaptive[0] != ADAPTIVE_AOBPR and adaptive[1] == 0
    loss_sum = 0.0
    product = 1.0
    ordered = 0
    skipped = 0
    for start in range(0, n_samples, BATCH):
        n = min(BATCH, n_samples - start)
        pos_state, neg_state = _draw_batch(pos_state, neg_state, indptr, indices, user_of, n_items, n, user_run,
                                           bu, bi, bj, base, length, U, V, False, draw_negatives,
                                           skip_liked, popularity)
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
            u = bu[t]
            i = bi[t]
            j = bj[t]
            weight = 1.0
            if adaptive is not None:
                if j >= 0:
                    neg_state, j, weight = _adaptive_negative(neg_state, U, V, b, use_bias, indices, indptr[u],
                                                              indptr[u + 1], u, i, j, n_items, popularity,
                                                              adaptive)
            if trace is not None:
                row = chunk * CHUNK_SIZE + start + t
                trace[row, 0] = u
                trace[row, 1] = i
                trace[row, 2] = j
                trace[row, 3] = weight
            if j < 0:
                if j == -1:
                    skipped += 1
                else:
                    ordered += 1  # WARP: every draw within the margin, nothing to learn from this positive
                continue
            if opt is None:
                x, linear, factor = _sgd_update(U, V, b, u, i, j, lr, reg_u, reg_i, reg_j, reg_b, loss_code, weight,
                                                use_bias, scratch)
            else:
                x, linear, factor = _adaptive_update(U, V, b, u, i, j, lr, reg_u, reg_i, reg_j, reg_b, loss_code,
                                                     weight, use_bias, scratch, opt)
            loss_sum += linear
            product *= factor
            if x > 0.0:
                ordered += 1
        # One logarithm per batch: each factor is in [1, 2], BATCH of them stay far from overflow.
        loss_sum += math.log(product)
        product = 1.0
    return loss_sum, ordered, skipped


@njit(cache=True)
def _epoch_serial(U, V, b, indptr, indices, user_of, n_samples, user_run, seed, epoch, chunk_start, chunk_stop,
                  lr, reg_u, reg_i, reg_j, reg_b, loss_code, use_bias, skip_liked, popularity, adaptive, opt, trace,
                  out_loss, out_ordered, out_skipped):
    """Chunks ``chunk_start .. chunk_stop - 1`` of an epoch, in order on the calling thread: bitwise reproducible.

    An epoch is usually one call over all its chunks; AOBPR cuts it where its
    rankings are refreshed.
    """
    for c in range(chunk_start, chunk_stop):
        n = min(CHUNK_SIZE, n_samples - c * CHUNK_SIZE)
        out_loss[c], out_ordered[c], out_skipped[c] = _run_chunk(
            U, V, b, indptr, indices, user_of, n, user_run, seed, epoch, c,
            lr, reg_u, reg_i, reg_j, reg_b, loss_code, use_bias, skip_liked, popularity, adaptive, opt, trace)


@njit(cache=True, parallel=True)
def _epoch_parallel(U, V, b, indptr, indices, user_of, n_samples, user_run, seed, epoch, chunk_start, chunk_stop,
                    lr, reg_u, reg_i, reg_j, reg_b, loss_code, use_bias, skip_liked, popularity, adaptive, opt, trace,
                    out_loss, out_ordered, out_skipped):
    """:func:`_epoch_serial` with the chunks spread over threads (Hogwild); same triplet streams."""
    for c in prange(chunk_start, chunk_stop):
        n = min(CHUNK_SIZE, n_samples - c * CHUNK_SIZE)
        out_loss[c], out_ordered[c], out_skipped[c] = _run_chunk(
            U, V, b, indptr, indices, user_of, n, user_run, seed, epoch, c,
            lr, reg_u, reg_i, reg_j, reg_b, loss_code, use_bias, skip_liked, popularity, adaptive, opt, trace)


@njit(cache=True)
def _sample_stream(indptr, indices, user_of, n_items, n_samples, user_run, seed, epoch,
                   skip_liked, popularity):
    """The triplets an epoch of a factor-free sampler would draw, without training (tests, inspection).

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
                dummy, dummy, False, True, skip_liked, popularity)
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
def _apply_triplets(U, V, b, users, positives, negatives, weights, lr, reg_u, reg_i, reg_j, reg_b, loss_code,
                    use_bias, opt):
    """Apply the model's update to an explicit triplet sequence, in order (``opt`` as in :func:`_run_chunk`).

    Negatives below 0 are skipped (as in an epoch). Returns ``x_uij`` before
    each step (NaN for skipped entries).
    """
    xs = np.full(users.shape[0], np.nan)
    scratch = np.empty(1, U.dtype)
    for k in range(users.shape[0]):
        if negatives[k] < 0:
            continue
        if opt is None:
            xs[k], _, _ = _sgd_update(U, V, b, users[k], positives[k], negatives[k], lr, reg_u, reg_i, reg_j,
                                      reg_b, loss_code, weights[k], use_bias, scratch)
        else:
            xs[k], _, _ = _adaptive_update(U, V, b, users[k], positives[k], negatives[k], lr, reg_u, reg_i, reg_j,
                                           reg_b, loss_code, weights[k], use_bias, scratch, opt)
    return xs


def n_chunks(n_samples: int) -> int:
    """Number of chunks an epoch of ``n_samples`` is cut into."""
    return (n_samples + CHUNK_SIZE - 1) // CHUNK_SIZE
