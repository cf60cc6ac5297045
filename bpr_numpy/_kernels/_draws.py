"""Drawing triplets: positives in user runs, negatives by each sampler's law (uniform, popularity, DNS, AOBPR,
WARP's search).

The laws are defined in :mod:`bpr_numpy.sampling`, which tests them against these draws.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from .._rng import below, next_bits, unit_open
from ..sampling import ADAPTIVE_AOBPR, ADAPTIVE_DNS, MAX_NEGATIVE_TRIES
from ._primitives import BATCH, ROW_BLOCK, _chunk_range, _contains, _prefetch, _prefetch_row, _row_of, _stream_seed


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
def _chunk_streams(epoch_samples, n_positives, user_run, seed, epoch, chunk):
    """Where chunk ``chunk`` of an epoch starts, its size, its two seeded streams and its runs' starts.

    Every consumer of a chunk (the plain and hybrid epochs, the sample stream) starts here, so
    they draw the same triplets. Returns ``(first, n_samples, pos_state, neg_state, starts)``.
    """
    first, stop = _chunk_range(epoch_samples, chunk)
    n_samples = stop - first
    # Stream numbers as int64, not literals: numba compiles a function once per literal argument.
    pos_state = _stream_seed(seed, epoch, chunk, np.int64(0))
    neg_state = _stream_seed(seed, epoch, chunk, np.int64(1))
    pos_state, starts = _draw_run_starts(pos_state, n_positives, n_samples, user_run)
    return first, n_samples, pos_state, neg_state, starts


@njit(cache=True, inline="always")
def _batch_buffers():
    """A batch's triplets ``(users, positives, negatives)`` and its rows' ``(base, length)``, for
    :func:`_draw_batch` and :func:`_settle_negatives`."""
    return (
        np.empty(BATCH, np.int64),
        np.empty(BATCH, np.int64),
        np.empty(BATCH, np.int64),
        np.empty(BATCH, np.int64),
        np.empty(BATCH, np.int64),
    )


@njit(cache=True, inline="always")
def _prefetch_runs(starts, batch, stage, user_run, row_blocks, indptr, indices, U):
    """Stage ``stage`` of fetching what the runs of batch ``batch`` read first.

    A run's first sample follows a chain of dependent loads (position -> user ->
    row bounds -> row), each a cache miss on a large matrix. Issued over three
    batches, one link per batch: stage 0 fetches the row index and ``indices`` at
    the start positions, stage 1 finds the users (:func:`_row_of`, cached by now) and
    fetches their row bounds and factor rows, stage 2 reads the bounds and fetches the
    rows' first 256 entries. Only hints: nothing it does changes a result.
    """
    per_batch = _runs_per_batch(user_run)
    for r in range(batch * per_batch, min((batch + 1) * per_batch, starts.shape[0])):
        k = starts[r]
        if stage == 0:
            _prefetch(row_blocks, k // ROW_BLOCK, 0)
            _prefetch(indices, k, 0)
            continue
        u = _row_of(indptr, row_blocks, k)
        if stage == 1:
            _prefetch(indptr, u, 0)
            _prefetch_row(U, u)
            continue
        lo = indptr[u]
        for p in range(lo, min(indptr[u + 1], lo + 256), 64 // indices.itemsize):
            _prefetch(indices, p, 0)


@njit(cache=True, inline="always")
def _draw_batch(
    pos_state,
    neg_state,
    indptr,
    indices,
    row_blocks,
    n_items,
    n,
    user_run,
    bu,
    bi,
    bj,
    base,
    length,
    draw_negatives,
    popularity,
    bitmap,
    starts,
    batch,
):
    """Draw ``n`` users and positives into ``bu, bi`` and their first negative candidates into ``bj``
    (:func:`_settle_negatives` then tests them); return the advanced stream states.

    Positive: a uniform observed pair (position uniform over the nnz, taken
    from ``starts``, :func:`_draw_run_starts` of the chunk, batch ``batch``),
    then ``user_run - 1`` more samples of the same user, each with a positive
    uniform over the user's row; every sample's marginal distribution is the
    bootstrap's (pair uniform over the nnz), while the user's factor row stays
    in cache for the run. Runs restart at each batch. Negative: a candidate
    (uniform, or popularity through the alias table), and when it is a known
    positive of u, either redrawn, at most ``MAX_NEGATIVE_TRIES`` more draws, or
    given up (``skip_liked``): that is :func:`_settle_negatives`, which every
    caller calls right after this one. ``j = -1`` marks a sample to skip (and count): a
    user who holds every item, a skipped liked candidate, or no negative found in
    the redraws. ``bitmap`` is None or :func:`bpr_numpy._runtime.positives_bitmap`
    of the CSR: the first candidate's test is then one bit instead of a binary
    search (the same answer, so the same stream); here it is only prefetched.
    Without ``draw_negatives`` (samplers that pick the negative at update time)
    ``bj`` is 0 for every sample that is not skipped. ``base`` and ``length`` are
    scratch arrays of the batch size, for :func:`_settle_negatives`.

    The work runs in passes over the batch so that the cache misses of
    different samples overlap instead of queueing: run starts, then users,
    items and first negative candidates (prefetching the bitmap words), then
    (:func:`_settle_negatives`) the membership tests, then the rare redraws.

    Two functions, not one, for a first fit's compilation: numba's IR inliner copies an
    inlined function block by block, each block with the function's whole scope, so the
    copy grows with blocks times variables. As one function (83 blocks, 884 variables
    once its own helpers are in) the copies took 0.36-0.41 s of a first fit with an empty
    cache, as two about 0.15 s together, and the machine code is the same instructions
    (``benchmarks/RESULTS.md``, "The batch draw in two halves"). Do not merge them again,
    nor wrap the pair in one inlined helper: that helper would be copied whole.
    """
    run0 = batch * _runs_per_batch(user_run)
    for t in range(0, n, user_run):
        bi[t] = starts[run0 + t // user_run]
    for t in range(n):
        if t % user_run == 0:
            k = bi[t]
            u = _row_of(indptr, row_blocks, k)
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
    return pos_state, neg_state


@njit(cache=True, inline="always")
def _settle_negatives(
    neg_state,
    indptr,
    indices,
    n_items,
    n,
    bu,
    bj,
    base,
    length,
    skip_liked,
    popularity,
    bitmap,
):
    """Test the first negative candidates :func:`_draw_batch` left in ``bj`` against the users' rows, and
    settle those that are known positives; return the advanced negative stream.

    Every caller of :func:`_draw_batch` calls this right after it, with the same arrays (why two
    functions: :func:`_draw_batch`). ``base`` and ``length`` hold each sample's row as
    :func:`_draw_batch` left them (``length`` 0: no test). With ``bitmap`` a test is one bit;
    without, the tests are branch-free binary searches advanced one level at a time for the whole
    batch. A candidate that is a known positive is, with ``skip_liked``, given up (``bj[t] = -1``),
    otherwise redrawn, one sample at a time (rare), at most ``MAX_NEGATIVE_TRIES`` draws (-1 if
    none is found).
    """
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
    return neg_state


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
def _is_positive(indices, lo, hi, bitmap, u, j):
    """Whether ``j`` is a positive of ``u`` (row ``indices[lo:hi]``): a bit of ``bitmap``, or a binary search."""
    if bitmap is None:
        return _contains(indices, lo, hi, j)
    return (bitmap[u, j >> 6] >> np.uint64(j & 63)) & np.uint64(1) != 0


@njit(cache=True, inline="always")
def _draw_dns_candidates(state, indptr, indices, bitmap, bu, bj, n, candidates, n_items):
    """DNS's extra candidates for the batch's samples, before their updates: ``candidates[t, c]``.

    Each is what :func:`_dns_choose` draws at the update: uniform, redrawn while it is a positive
    (at most ``MAX_NEGATIVE_TRIES`` draws), for every sample with a negative (``bj[t] >= 0``), the
    samples in order. Candidates do not depend on the factors, so drawing them here takes the
    same draws from the same stream in the same order, and DNS picks the same negatives: drawn
    here, the membership test reads the bitmap where there is one (a binary search of the row
    otherwise), and the candidates' rows can be prefetched ahead of the updates. Where no
    candidate was found, the slot holds the sample's own negative ``bj[t]``, which cannot win
    (the first of ties is kept): the choice then needs no test per candidate (see
    :func:`bpr_numpy._kernels._updates._apply_batch`).
    """
    for t in range(n):
        if bj[t] < 0:
            continue
        u = bu[t]
        lo = indptr[u]
        hi = indptr[u + 1]
        for c in range(candidates.shape[1]):
            found = bj[t]
            for _ in range(MAX_NEGATIVE_TRIES):
                state, item = _draw_candidate(state, n_items, None)
                if not _is_positive(indices, lo, hi, bitmap, u, item):
                    found = item
                    break
            candidates[t, c] = found
    return state


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
        state, j, n_draws = _warp_search(
            state, U, V, b, use_bias, indices, lo, hi, u, i, warp_max_sampled, n_items, popularity
        )
        if j < 0:
            return state, np.int64(-2), weight
        weight = _warp_weight(n_items, n_draws)
    return state, j, weight


@njit(cache=True)
def _draw_adaptive_negatives(U, V, b, use_bias, indptr, indices, users, adaptive, seed):
    """One negative per entry of ``users`` from DNS or AOBPR with fixed factors, as training draws them.

    The first candidate is a uniform non-positive (training's batch draw),
    then :func:`_adaptive_negative`; -1 where none was found. For the tests'
    comparison with the exact laws of :mod:`bpr_numpy.sampling`.
    """
    n_items = V.shape[0]
    state = _stream_seed(seed, np.int64(0), np.int64(0), np.int64(1))
    out = np.empty(users.shape[0], np.int64)
    for k in range(users.shape[0]):
        u = users[k]
        lo = indptr[u]
        hi = indptr[u + 1]
        state, j = _draw_negative(state, indices, lo, hi, n_items, None)
        if j >= 0:
            state, j, _ = _adaptive_negative(
                state, U, V, b, use_bias, indices, lo, hi, u, 0, j, n_items, None, adaptive
            )
        out[k] = j
    return out
