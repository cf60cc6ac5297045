"""Plain-NumPy twin of the synthetic generator's numba kernels, for data too small to repay their compile.

With an empty numba cache, ``datasets.synthetic_small(random_state=0)`` (the README quick
start's data: 2,000 users x 1,000 items, 100,000 pairs) took 3.7-4.0 s, nearly all of it
compiling :func:`._synth_kernels.fill_rows_serial` (with ``_fill_block``, ``_exact_row``, the
heapsorts of :mod:`._sorting`), :func:`._synth_kernels.alias_table` and the splitmix64 helpers
of :mod:`bpr_numpy._rng`; warm, the kernels take about 0.02 s. :func:`fill_rows_numpy` and
:func:`alias_table_numpy` compute the same arrays with NumPy and compile nothing.
``synthetic`` sends data of up to ``SMALL_SYNTHETIC_NNZ`` pairs here (by the rent-or-buy rule of
:mod:`bpr_numpy._twins`) and larger data to the kernels, whose speed repays their one compile.

They must equal the kernels exactly: the same ``indices``, bit for bit, and the same alias
table, because which of the two ran depends on the data's size and on the machine's numba
cache, and the data must not. So the twin replays, user by user, the kernel's every step:
each user's own splitmix64 stream (users are independent, so all of them advance in lockstep,
one batch of ``_BATCH`` proposals at a time), the proposals, the acceptance test (``exp`` from
the C library, as numba calls it), the duplicates, the early exit of a batch once a row is
full, the try limit, the Gumbel top-m fallback (``log`` from the C library; ties broken by
position, as ``sort_positions``) and the final sort of each row. The dot products are summed
in the kernel's order (factor by factor from 0.0), never by ``np.dot``, whose order differs.
``tests/test_synthetic_twin.py`` compares the two on random parameters; change them together.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import numpy as np

from .._rng import GOLDEN, MIX1, MIX2, TWO_POW_M52
from ._synth_kernels import _BATCH, _INV32

__all__: list[str] = []

_U12 = np.uint64(12)
_U27 = np.uint64(27)
_U30 = np.uint64(30)
_U31 = np.uint64(31)
_U32 = np.uint64(32)
_LOW32 = np.uint64(0xFFFFFFFF)

#: Cells (users x items) of the work arrays of one group of users: the rejection sampler's
#: table of drawn items (one byte a cell) and the exact rows' keys (8 bytes a cell) stay
#: within about 16 MiB and 128 MiB whatever the catalogue's size.
_GROUP_CELLS = 2**24


def _mix64(z: np.ndarray) -> np.ndarray:
    """:func:`bpr_numpy._rng.mix64` on a uint64 array (wraps as numba's uint64 does); ``z`` is overwritten."""
    z ^= z >> _U30
    z *= MIX1
    z ^= z >> _U27
    z *= MIX2
    z ^= z >> _U31
    return z


def _unit(bits: np.ndarray) -> np.ndarray:
    """:func:`bpr_numpy._rng.unit_open`: 52 bits plus one half, scaled into (0, 1)."""
    return ((bits >> _U12).astype(np.float64) + 0.5) * TWO_POW_M52


def _user_states(seed: np.uint64, users: np.ndarray) -> np.ndarray:
    """The initial splitmix64 state of each user: ``mix64(seed ^ mix64(u * GOLDEN + GOLDEN))``."""
    z = users.astype(np.uint64) * GOLDEN + GOLDEN
    return _mix64(np.uint64(seed) ^ _mix64(z))


def _libm(fn: Callable[[float], float], x: np.ndarray) -> np.ndarray:
    """``fn`` (``math.exp`` or ``math.log``: the C library's, which numba's ``np.exp``/``np.log`` call).

    NumPy's own ``np.exp``/``np.log`` may use SIMD code (AVX-512 here) that differs from the C
    library in the last bit; a key or an acceptance test would then differ from the kernel's.
    """
    return np.array([fn(v) for v in x.ravel().tolist()], dtype=np.float64).reshape(x.shape)


def _accept(u: np.ndarray, x: np.ndarray) -> np.ndarray:
    """``_synth_kernels._accept`` elementwise: ``u < exp(x)``, decided by its bounds where they can.

    The bounds are evaluated with the kernel's operations in the kernel's order; ``exp`` only
    where they leave the answer open (C library's, as numba's).
    """
    yes = u < 1.0 + x
    no = u * (1.0 - x * (1.0 - x * (0.5 - x * (1.0 / 6.0)))) >= 1.0
    open_ = ~yes & ~no
    if open_.any():
        yes[open_] = u[open_] < _libm(math.exp, x[open_])
    return yes


def _dots(w: np.ndarray, columns: Iterable[np.ndarray]) -> np.ndarray:
    """``sum_k w[:, k] * columns[k]`` summed as the kernel sums: factor by factor, from 0.0.

    ``columns`` yields, for each factor ``k``, the items' ``H[i, k]`` (one row of them, or a row
    per user). ``np.dot`` or ``einsum`` would sum in another order (pairwise, blocked), which
    changes the last bits of most dot products here.
    """
    dots = None
    for k, column in enumerate(columns):
        term = w[:, k, None] * column
        dots = 0.0 + term if dots is None else dots + term
    assert dots is not None  # at least one factor
    return dots


def _gumbel(u: np.ndarray) -> np.ndarray:
    """``log(-log(u))`` as ``_exact_row`` computes it (the C library's ``log``, twice)."""
    return _libm(math.log, -_libm(math.log, u))


def _groups(users: np.ndarray, n_items: int, cells_per_user: int = 1) -> list[np.ndarray]:
    """``users`` cut into groups whose work arrays hold at most :data:`_GROUP_CELLS` cells."""
    size = max(1, _GROUP_CELLS // max(1, n_items * cells_per_user))
    return [users[s : s + size] for s in range(0, users.size, size)]


def _reject_rows(
    users: np.ndarray,
    indptr: np.ndarray,
    indices: np.ndarray,
    W: np.ndarray,
    Ht: np.ndarray,
    alias_prob: np.ndarray,
    alias_idx: np.ndarray,
    rank_to_item: np.ndarray,
    alpha: float,
    states: np.ndarray,
) -> np.ndarray:
    """The rejection sampler of ``_fill_block`` for the light ``users``, all in lockstep.

    Writes each row's accepted items (unsorted, in the order of acceptance) into ``indices``
    and advances ``states`` in place. Returns a mask of the users whose loop ran out of tries
    before their row was full (the kernel then draws their row by :func:`_exact_rows`, from the
    state the loop left).
    """
    n_items = Ht.shape[1]
    n_items_u = np.uint64(n_items)
    start = indptr[users]
    m = indptr[users + 1] - start
    limit = 256 * m + 4096
    got = np.zeros(users.size, dtype=np.int64)
    drawn = np.zeros((users.size, n_items), dtype=np.bool_)  # the kernel's ``mark``
    # A batch takes two draws per proposal: the k-th advances the state by k * GOLDEN.
    steps = np.arange(1, 2 * _BATCH + 1, dtype=np.uint64) * GOLDEN
    active = np.arange(users.size)
    batches = 0
    while active.size:
        advanced = states[active, None] + steps
        states[active] = advanced[:, -1]
        z = _mix64(advanced)
        z1 = z[:, 0::2]
        # High 32 bits pick the column, low 32 bits flip the alias coin.
        j = (((z1 >> _U32) * n_items_u) >> _U32).astype(np.int64)
        coin = (z1 & _LOW32).astype(np.float64) * _INV32
        cand = np.where(coin < alias_prob[j], j, alias_idx[j])
        coins = _unit(z[:, 1::2])
        dots = _dots(W[users[active]], (h[cand] for h in Ht))
        ok = _accept(coins, alpha * (dots - 1.0)) & ~drawn[active[:, None], cand]
        # Proposals the kernel accepts, in its order (row by row, then t): of several of the
        # same item in one batch, only the first that passes (the later ones find it marked).
        r, t = np.nonzero(ok)
        item = cand[r, t]
        _, first = np.unique(r * n_items + item, return_index=True)
        first.sort()
        r, item = r[first], item[first]
        # Up to the row's need: the kernel leaves the batch once the row is full.
        per_row = np.bincount(r, minlength=active.size)
        rank = np.arange(r.size) - (np.cumsum(per_row) - per_row)[r]
        row = active[r]
        keep = rank < (m - got)[row]
        row, item, rank = row[keep], item[keep], rank[keep]
        indices[start[row] + got[row] + rank] = rank_to_item[item]
        drawn[row, item] = True
        got += np.bincount(row, minlength=users.size)
        batches += 1
        # ``tries`` grows by a whole batch for a row still not full after it.
        active = active[(got[active] < m[active]) & (_BATCH * batches < limit[active])]
    return got < m


def _exact_rows(
    users: np.ndarray,
    states: np.ndarray,
    indptr: np.ndarray,
    indices: np.ndarray,
    W: np.ndarray,
    H: np.ndarray,
    log_pop: np.ndarray,
    alpha: float,
    rank_to_item: np.ndarray,
) -> None:
    """``_synth_kernels._exact_row`` for each of ``users`` (from its state in ``states``): Gumbel top-m."""
    n_items = H.shape[0]
    steps = np.arange(1, n_items + 1, dtype=np.uint64) * GOLDEN
    u = _unit(_mix64(states[:, None] + steps))
    keys = -(log_pop + alpha * _dots(W[users], H.T) - _gumbel(u))
    # Ascending keys, ties by position: sort_positions' order, which a stable sort gives.
    order = np.argsort(keys, axis=1, kind="stable")
    for r, user in enumerate(users.tolist()):
        a, b = indptr[user], indptr[user + 1]
        indices[a:b] = rank_to_item[order[r, : b - a]]


def fill_rows_numpy(
    indptr: np.ndarray,
    indices: np.ndarray,
    W: np.ndarray,
    H: np.ndarray,
    log_pop: np.ndarray,
    alias_prob: np.ndarray,
    alias_idx: np.ndarray,
    rank_to_item: np.ndarray,
    alpha: float,
    seed: np.uint64,
    block: int,
    heavy: int,
) -> None:
    """:func:`._synth_kernels.fill_rows_serial`, the same ``indices`` bit for bit, with NumPy.

    Parameters
    ----------
    indptr : numpy.ndarray of int64, shape (n_users + 1,)
        Row pointers: user ``u`` gets ``indptr[u + 1] - indptr[u]`` items.
    indices : numpy.ndarray of int32, shape (nnz,)
        Filled in place: each row's distinct items, sorted.
    W : numpy.ndarray of float64, shape (n_users, factors)
        User factors.
    H : numpy.ndarray of float64, shape (n_items, factors)
        Item factors in popularity-rank order.
    log_pop : numpy.ndarray of float64, shape (n_items,)
        Log popularity in rank order.
    alias_prob, alias_idx : numpy.ndarray
        Alias table of the popularity (rank order), from :func:`alias_table_numpy`.
    rank_to_item : numpy.ndarray of int64, shape (n_items,)
        Item of each popularity rank.
    alpha : float
        Affinity scale.
    seed : numpy.uint64
        Seed of the users' streams.
    block : int
        Users per block (the kernel's unit of work; no effect on the output).
    heavy : int
        Rows longer than this are drawn by Gumbel top-m directly.
    """
    n_items = H.shape[0]
    counts = np.diff(indptr)
    users = np.flatnonzero(counts > 0)
    states = _user_states(seed, users)
    is_light = counts[users] <= heavy
    exact_users = [users[~is_light]]
    exact_states = [states[~is_light]]
    light, light_states = users[is_light], states[is_light]
    Ht = np.ascontiguousarray(H.T)  # one contiguous row per factor: fast gathers of proposals
    offset = 0
    for group in _groups(light, n_items):
        group_states = light_states[offset : offset + group.size].copy()
        offset += group.size
        ran_out = _reject_rows(group, indptr, indices, W, Ht, alias_prob, alias_idx, rank_to_item, alpha,
                               group_states)  # fmt: skip
        exact_users.append(group[ran_out])
        exact_states.append(group_states[ran_out])
    exact, exact_state = np.concatenate(exact_users), np.concatenate(exact_states)
    for s in range(0, exact.size, max(1, _GROUP_CELLS // (8 * n_items))):
        sl = slice(s, s + max(1, _GROUP_CELLS // (8 * n_items)))
        _exact_rows(exact[sl], exact_state[sl], indptr, indices, W, H, log_pop, alpha, rank_to_item)
    # Each row sorted (its items are distinct): one sort of (row, item) keys.
    row = np.repeat(np.arange(counts.size, dtype=np.int64), counts)
    key = row * n_items + indices
    key.sort()
    indices[:] = key - row * n_items


def alias_table_numpy(p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """:func:`._synth_kernels.alias_table` (Vose), the same arrays bit for bit, in plain Python.

    Parameters
    ----------
    p : numpy.ndarray of float64, shape (n,)
        Probabilities.

    Returns
    -------
    prob : numpy.ndarray of float64, shape (n,)
    alias : numpy.ndarray of int64, shape (n,)
    """
    n = p.size
    # Python floats are IEEE doubles: the same operations in the same order give the same bits.
    scaled = (p * n).tolist()
    prob = [1.0] * n
    alias = list(range(n))
    small = [i for i in range(n) if scaled[i] < 1.0]
    large = [i for i in range(n) if not scaled[i] < 1.0]
    while small and large:
        s = small.pop()
        g = large.pop()
        prob[s] = scaled[s]
        alias[s] = g
        scaled[g] = (scaled[g] + scaled[s]) - 1.0
        (small if scaled[g] < 1.0 else large).append(g)
    return np.array(prob, dtype=np.float64), np.array(alias, dtype=np.int64)
