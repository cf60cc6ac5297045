"""numba kernels of the synthetic data generator (imported lazily, cached on disk).

Every user draws from their own random stream, derived from the seed and
the user's index (splitmix64), so the output does not depend on how users
are grouped into blocks or on the number of threads.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from .._rng import GOLDEN as _GAMMA
from .._rng import mix64 as _mix64
from .._rng import next_bits as _next
from .._rng import unit_open as _unit
from ._sorting import sort_positions, sort_values

__all__: list[str] = []

_S32 = np.uint64(32)
_LOW32 = np.uint64(0xFFFFFFFF)
_INV32 = 1.0 / 4294967296.0  # 2**-32
_BATCH = 32


@njit(cache=True, nogil=True, inline="always")
def _push_column(i, scaled, small, ns, large, nl):  # pragma: no cover - compiled
    """Push column ``i`` on the stack it belongs to: ``small`` (mass below 1) or ``large``.

    Returns the new stack heights ``(ns, nl)``. Vose's construction sorts
    every column this way at the start, and again each time a large column
    gives away mass, so both places use this one rule.
    """
    if scaled[i] < 1.0:
        small[ns] = i
        return ns + 1, nl
    large[nl] = i
    return ns, nl + 1


@njit(cache=True, nogil=True)
def alias_table(p):  # pragma: no cover - compiled
    """Walker/Vose alias table of a probability vector (O(1) sampling)."""
    n = p.size
    prob = np.ones(n)
    alias = np.arange(n)
    scaled = p * n
    small = np.empty(n, dtype=np.int64)
    large = np.empty(n, dtype=np.int64)
    ns = 0
    nl = 0
    for i in range(n):
        ns, nl = _push_column(i, scaled, small, ns, large, nl)
    while ns > 0 and nl > 0:
        ns -= 1
        s = small[ns]
        nl -= 1
        g = large[nl]
        prob[s] = scaled[s]
        alias[s] = g
        scaled[g] = (scaled[g] + scaled[s]) - 1.0
        ns, nl = _push_column(g, scaled, small, ns, large, nl)
    return prob, alias


@njit(cache=True, nogil=True, inline="always")
def _accept(u, x):  # pragma: no cover - compiled
    """``u < exp(x)`` for ``x <= 0``, mostly without computing ``exp``.

    Squeeze: ``1 + x <= exp(x) <= 1 / (1 - x + x**2/2 - x**3/6)`` for
    ``x <= 0``; about 9 in 10 proposals are decided by the bounds alone,
    which halves the cost of a rejection-sampling step.
    """
    if u < 1.0 + x:
        return True
    if u * (1.0 - x * (1.0 - x * (0.5 - x * (1.0 / 6.0)))) >= 1.0:
        return False
    return u < np.exp(x)


@njit(cache=True, nogil=True)
def _exact_row(u, a, m, W, H, log_pop, alpha, state, rank_to_item, indices):  # pragma: no cover - compiled
    """Draw ``m`` distinct items for user ``u`` exactly, by Gumbel top-m over all items.

    Taking the m largest ``log w_i + Gumbel_i`` is the same distribution as
    drawing m times without replacement with probability proportional to
    ``w_i`` (what the rejection sampler does); used for heavy users, whose
    rows take a large share of the catalogue and would make rejection slow.
    """
    n_items = H.shape[0]
    f = H.shape[1]
    keys = np.empty(n_items)
    for i in range(n_items):
        dot = 0.0
        for t in range(f):
            dot += W[u, t] * H[i, t]
        state, z = _next(state)
        keys[i] = -(log_pop[i] + alpha * dot - np.log(-np.log(_unit(z))))
    order = np.arange(n_items)
    sort_positions(order, keys)  # ascending negated keys: the best first
    for t in range(m):
        indices[a + t] = rank_to_item[order[t]]


@njit(cache=True, nogil=True)
def _fill_block(
    u0,
    u1,
    indptr,
    indices,
    W,
    H,
    log_pop,
    alias_prob,
    alias_idx,
    rank_to_item,
    alpha,  # pragma: no cover
    seed,
    heavy,
):
    """Fill the rows of users ``u0..u1-1`` (see :func:`fill_rows_serial`)."""
    n_items = H.shape[0]
    f = W.shape[1]
    n_items_u = np.uint64(n_items)
    mark = np.full(n_items, -1, dtype=np.int64)
    cand = np.empty(_BATCH, dtype=np.int64)
    coins = np.empty(_BATCH)
    dots = np.empty(_BATCH)
    for u in range(u0, u1):
        a = indptr[u]
        m = indptr[u + 1] - a
        if m == 0:
            continue
        state = _mix64(seed ^ _mix64(np.uint64(u) * _GAMMA + _GAMMA))
        got = 0
        if m <= heavy:
            tries = 0
            limit = 256 * m + 4096
            while got < m and tries < limit:
                # Draw a batch of proposals first, then their dot products:
                # independent loads of factor rows overlap in the CPU.
                for t in range(_BATCH):
                    state, z1 = _next(state)
                    # High 32 bits pick the column, low 32 bits flip the alias coin.
                    j = np.int64(((z1 >> _S32) * n_items_u) >> _S32)
                    coin = np.float64(z1 & _LOW32) * _INV32
                    cand[t] = j if coin < alias_prob[j] else alias_idx[j]
                    state, z3 = _next(state)
                    coins[t] = _unit(z3)
                for t in range(_BATCH):
                    i = cand[t]
                    dot = 0.0
                    for k in range(f):
                        dot += W[u, k] * H[i, k]
                    dots[t] = dot
                for t in range(_BATCH):
                    tries += 1
                    i = cand[t]
                    if mark[i] == u:
                        continue
                    if _accept(coins[t], alpha * (dots[t] - 1.0)):
                        mark[i] = u
                        indices[a + got] = rank_to_item[i]
                        got += 1
                        if got == m:
                            break
        if got < m:
            _exact_row(u, a, m, W, H, log_pop, alpha, state, rank_to_item, indices)
        sort_values(indices, a, a + m)


@njit(cache=True, nogil=True)
def fill_rows_serial(
    indptr,
    indices,
    W,
    H,
    log_pop,
    alias_prob,
    alias_idx,
    rank_to_item,
    alpha,  # pragma: no cover
    seed,
    block,
    heavy,
):
    """Fill each user's slice of ``indices`` with distinct, sorted item indices.

    Items are handled in popularity order (``H``, ``log_pop`` and the alias
    table are indexed by popularity rank, ``rank_to_item`` maps back): the
    proposals concentrate on popular items, so their factor rows stay in
    cache.

    Light users: rejection sampling. Propose item ``i`` with probability
    ``pop_i`` (alias table), reject it if the user already has it, accept
    with probability ``exp(alpha * (cos(w_u, h_i) - 1))`` (<= 1 because the
    factors are unit vectors). Accepted draws are then distributed as
    successive sampling without replacement proportional to
    ``pop_i * exp(alpha * cos)``. Users with more than ``heavy`` items, or
    whose rejection loop runs too long, use :func:`_exact_row`.
    """
    n_users = indptr.size - 1
    for u0 in range(0, n_users, block):
        _fill_block(
            u0,
            min(n_users, u0 + block),
            indptr,
            indices,
            W,
            H,
            log_pop,
            alias_prob,
            alias_idx,
            rank_to_item,
            alpha,
            seed,
            heavy,
        )


@njit(cache=True, parallel=True)
def fill_rows_parallel(
    indptr,
    indices,
    W,
    H,
    log_pop,
    alias_prob,
    alias_idx,
    rank_to_item,
    alpha,  # pragma: no cover
    seed,
    block,
    heavy,
):
    """:func:`fill_rows_serial` with blocks of users spread over numba's threads (same output)."""
    n_users = indptr.size - 1
    n_blocks = (n_users + block - 1) // block
    for b in prange(n_blocks):
        u0 = b * block
        _fill_block(
            u0,
            min(n_users, u0 + block),
            indptr,
            indices,
            W,
            H,
            log_pop,
            alias_prob,
            alias_idx,
            rank_to_item,
            alpha,
            seed,
            heavy,
        )
