"""Synthetic implicit feedback with planted low-rank preferences and power laws."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, overload

import numpy as np

from .._parameters import Integer, Real, check_allocation, check_random_state
from ._csr import _make_csr
from ._interactions import Interactions, LoadSummary

if TYPE_CHECKING:
    from .._twins import KernelOrTwin

__all__ = ["synthetic", "synthetic_small", "synthetic_benchmark", "PlantedTruth", "SYNTHETIC_PRESETS"]

_PARALLEL_MIN_NNZ = 2_000_000

#: Largest data (pairs) that :func:`synthetic` may generate with the NumPy twin of its kernels
#: (:mod:`._synth_numpy`, the same output bit for bit) instead of compiling them. Measured on
#: a shared 2-core AMD EPYC VM: with an empty numba cache, ``synthetic_small()`` (100,000
#: pairs) took 3.7-4.0 s, nearly all compiling the kernels. Warm, kernel / twin: 100,000 pairs
#: 0.07 / 0.21 s, 250,000 (5,000 x 2,000) 0.13 / 0.53 s, 500,000 0.27 / 1.4 s, 1,000,000
#: 0.69 / 5.1 s. Up to here the twin costs well under a tenth of the compile it saves.
SMALL_SYNTHETIC_NNZ: int = 150_000

#: Largest ``n_users * n_items`` for the twin. Its table of drawn items (a byte a cell) and its
#: exact rows (a key a cell, the C library's ``log`` called twice a key) grow with the
#: catalogue, not with ``nnz``: 100,000 pairs over 100,000 x 100,000 took the twin 1.9 s.
SMALL_SYNTHETIC_CELLS: int = 2**22

#: Largest number of proposals the kernel may try (``256 * nnz + 4096 * n_users``: every row
#: running out of tries, as with a large ``affinity_scale``) for the twin. Its worst case there,
#: 3,500 x 1,000 with 100,000 pairs and ``affinity_scale=30`` (40M tries), took 5.4 s against
#: the kernel's 2.2 s plus its compile; ``synthetic_small`` may try up to 34M (0.21 s with the
#: default parameters, 1.9M proposals; 3.4 s at ``affinity_scale=10``, 32M).
SMALL_SYNTHETIC_TRIES: int = 40_000_000

#: The generator's choice between ``fill_rows_serial`` and its twin (rent or buy, see
#: :mod:`bpr_numpy._twins`), made on the first call: the kernels' module imports numba.
_FILL: KernelOrTwin | None = None


def _fill_chooser() -> KernelOrTwin:
    """The process's :class:`~bpr_numpy._twins.KernelOrTwin` of the generator (built on first use)."""
    global _FILL
    if _FILL is None:
        from .._twins import KernelOrTwin
        from ._synth_kernels import fill_rows_serial
        from ._synth_numpy import fill_rows_numpy

        _FILL = KernelOrTwin(fill_rows_serial, fill_rows_numpy)
    return _FILL


def _is_small(n_users: int, n_items: int, nnz: int) -> bool:
    """Whether the twin of the generator costs, in the worst case, less than compiling the kernels."""
    return (
        nnz <= SMALL_SYNTHETIC_NNZ
        and n_users * n_items <= SMALL_SYNTHETIC_CELLS
        and 256 * nnz + 4096 * n_users <= SMALL_SYNTHETIC_TRIES
    )


#: name -> (n_users, n_items, nnz). "benchmark" is the 20M row of the speed table in
#: docs/design.md, 'What the peers do'.
SYNTHETIC_PRESETS: dict[str, tuple[int, int, int]] = {
    "small": (2_000, 1_000, 100_000),
    "medium": (20_000, 10_000, 1_000_000),
    "benchmark": (200_000, 50_000, 20_000_000),
}


@dataclass(frozen=True, eq=False)
class PlantedTruth:
    """The structure :func:`synthetic` planted: what a perfect model would know.

    A user ``u`` draws their items without replacement with probability
    proportional to ``exp(scores(u, i))``.

    Attributes
    ----------
    user_factors : numpy.ndarray, shape (n_users, factors)
        Unit-norm user vectors.
    item_factors : numpy.ndarray, shape (n_items, factors)
        Unit-norm item vectors.
    item_log_popularity : numpy.ndarray, shape (n_items,)
        ``log`` of the power-law popularity weight (up to a constant).
    affinity_scale : float
        Multiplier of the cosine affinity.
    """

    user_factors: np.ndarray
    item_factors: np.ndarray
    item_log_popularity: np.ndarray
    affinity_scale: float

    def affinity(self, users: Any, items: Any) -> np.ndarray:
        """``affinity_scale * cos(w_u, h_i)`` for paired index arrays (broadcasting)."""
        u = np.asarray(users, dtype=np.int64)
        i = np.asarray(items, dtype=np.int64)
        return self.affinity_scale * np.einsum("...k,...k->...", self.user_factors[u], self.item_factors[i])

    def scores(self, users: Any, items: Any) -> np.ndarray:
        """Log-weight of drawing item ``i`` for user ``u``: log popularity + affinity."""
        return self.item_log_popularity[np.asarray(items, dtype=np.int64)] + self.affinity(users, items)


def _positive_int(v: Any, name: str) -> int:
    Integer(1).check(name, v, None)  # int64 at most: the sizes reach numba kernels
    return int(v)


def _nonneg_float(v: Any, name: str) -> float:
    Real().check(name, v, None)
    return float(v)


def _apportion(weights: np.ndarray, total: int, lo: int, hi: int) -> np.ndarray:
    """Integers in [lo, hi] summing to ``total``, proportional to ``weights`` where unclipped.

    Water-filling: find the scale ``s`` with ``sum(clip(s * w, lo, hi)) ==
    total`` by bisection, then round by largest remainders.
    """
    w = weights / weights.sum()

    def filled(s: float) -> float:
        return float(np.clip(s * w, lo, hi).sum())

    s_lo, s_hi = 0.0, float(total)
    while filled(s_hi) < total:
        s_hi *= 2.0
    for _ in range(100):
        mid = 0.5 * (s_lo + s_hi)
        if filled(mid) < total:
            s_lo = mid
        else:
            s_hi = mid
        if filled(s_hi) - total < 0.5:
            break
    x = np.clip(s_hi * w, lo, hi)
    c = np.floor(x).astype(np.int64)
    rem = int(total - c.sum())
    frac = x - c
    if rem > 0:
        order = np.argsort(-frac, kind="stable")
        order = order[c[order] < hi]
        c[order[:rem]] += 1
        rem -= min(rem, order.size)
    elif rem < 0:
        order = np.argsort(frac, kind="stable")
        order = order[c[order] > lo]
        c[order[:-rem]] -= 1
        rem += min(-rem, order.size)
    if rem != 0:  # pragma: no cover - bisection keeps the rounding within one unit per user
        raise RuntimeError("could not apportion interactions to users")
    return c


def _unit_rows(rng: np.random.Generator, n: int, f: int) -> np.ndarray:
    x = rng.standard_normal((n, f))
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    x /= norms
    return x


# The return type follows ``return_truth`` (the overloads say so to type checkers).
@overload
def synthetic(
    n_users: int = 10_000,
    n_items: int = 5_000,
    nnz: int = 500_000,
    *,
    factors: int = 16,
    popularity_exponent: float = 0.8,
    activity_exponent: float = 0.5,
    affinity_scale: float = 3.0,
    random_state: int | np.random.Generator = 0,
    dtype: Any = np.float32,
    max_items_per_user: int | None = None,
    chunk_users: int = 1024,
    parallel: bool | None = None,
    return_truth: Literal[False] = False,
) -> Interactions: ...
@overload
def synthetic(
    n_users: int = 10_000,
    n_items: int = 5_000,
    nnz: int = 500_000,
    *,
    factors: int = 16,
    popularity_exponent: float = 0.8,
    activity_exponent: float = 0.5,
    affinity_scale: float = 3.0,
    random_state: int | np.random.Generator = 0,
    dtype: Any = np.float32,
    max_items_per_user: int | None = None,
    chunk_users: int = 1024,
    parallel: bool | None = None,
    return_truth: Literal[True],
) -> tuple[Interactions, PlantedTruth]: ...
@overload
def synthetic(
    n_users: int = 10_000,
    n_items: int = 5_000,
    nnz: int = 500_000,
    *,
    factors: int = 16,
    popularity_exponent: float = 0.8,
    activity_exponent: float = 0.5,
    affinity_scale: float = 3.0,
    random_state: int | np.random.Generator = 0,
    dtype: Any = np.float32,
    max_items_per_user: int | None = None,
    chunk_users: int = 1024,
    parallel: bool | None = None,
    return_truth: bool = False,
) -> Interactions | tuple[Interactions, PlantedTruth]: ...
def synthetic(
    n_users: int = 10_000,
    n_items: int = 5_000,
    nnz: int = 500_000,
    *,
    factors: int = 16,
    popularity_exponent: float = 0.8,
    activity_exponent: float = 0.5,
    affinity_scale: float = 3.0,
    random_state: int | np.random.Generator = 0,
    dtype: Any = np.float32,
    max_items_per_user: int | None = None,
    chunk_users: int = 1024,
    parallel: bool | None = None,
    return_truth: bool = False,
) -> Interactions | tuple[Interactions, PlantedTruth]:
    """Generate implicit feedback with planted low-rank preferences.

    The model:

    * item ``i`` has popularity ``pop_i = rank_i ** -popularity_exponent``
      (ranks a random permutation: a power law, Zipf-like);
    * user ``u`` interacts with ``n_u`` items, ``n_u`` proportional to
      ``rank_u ** -activity_exponent`` (power-law activity), at least 1 (when
      ``nnz >= n_users``) and at most ``max_items_per_user``, summing to
      exactly ``nnz``;
    * users and items have unit vectors ``w_u``, ``h_i`` in ``factors``
      dimensions (isotropic random directions);
    * user ``u`` draws ``n_u`` distinct items, each draw with probability
      proportional to ``pop_i * exp(affinity_scale * cos(w_u, h_i))`` among the
      items not drawn yet.

    The affinity of a pair has standard deviation about
    ``affinity_scale / sqrt(factors)``; the default (3, 16 factors) gives
    planted scores a held-out AUC of about 0.7 from affinity alone and more
    with popularity. Sampling is exact (rejection sampling from the
    popularity proposal, exact Gumbel top-k for heavy users).

    Memory and speed: the CSR arrays are allocated once at their final size
    (``nnz`` is known in advance) and users are filled in blocks of
    ``chunk_users`` (in parallel from 2M pairs on); peak memory is the final
    CSR plus the factor matrices, about 1.3x the CSR. Measured on a 2-core
    VM: 5M pairs in about 3 s (peak 55 MB for a 40 MB CSR), the 20M
    benchmark preset in 14-18 s. The first call compiles the kernel (a few
    seconds, cached on disk), except on small data (``synthetic_small``'s
    size), which a NumPy twin of the kernel generates, the same bit for bit,
    without compiling.

    Parameters
    ----------
    n_users, n_items : int
        Shape of the matrix.
    nnz : int
        Exact number of (user, item) pairs; at most ``n_users * n_items``.
    factors : int
        Dimension of the planted vectors.
    popularity_exponent, activity_exponent : float
        Power-law exponents (>= 0; 0 gives uniform popularity / activity).
    affinity_scale : float
        Strength of the personal signal (>= 0; 0 gives popularity only).
    max_items_per_user : int, optional
        Cap on a user's items. Default: half the catalogue (raised to
        ``ceil(nnz / n_users)`` if that is needed to reach ``nnz``), so that
        every user keeps unobserved items to sample negatives from.
    random_state : int or numpy.random.Generator
        Seed. The output depends only on it and the parameters (not on
        ``chunk_users`` or the number of threads).
    dtype : float32 or float64
        Data type of the stored values (all 1.0).
    chunk_users : int
        Users per block of work.
    parallel : bool, optional
        Spread blocks over numba's threads (``numba.set_num_threads``).
        Default: only from 2,000,000 pairs on, so that small runs do not pay
        the extra one-time compilation of the parallel kernel. The output is
        the same either way.
    return_truth : bool
        Also return the :class:`PlantedTruth`.

    Returns
    -------
    Interactions or (Interactions, PlantedTruth)
        User ids ``0..n_users-1``, item ids ``0..n_items-1``, binary matrix
        with sorted unique indices.
    """
    from ._synth_kernels import alias_table, fill_rows_parallel
    from ._synth_numpy import alias_table_numpy

    n_users = _positive_int(n_users, "n_users")
    n_items = _positive_int(n_items, "n_items")
    nnz = _positive_int(nnz, "nnz")
    factors = _positive_int(factors, "factors")
    chunk_users = _positive_int(chunk_users, "chunk_users")
    a = _nonneg_float(popularity_exponent, "popularity_exponent")
    b = _nonneg_float(activity_exponent, "activity_exponent")
    alpha = _nonneg_float(affinity_scale, "affinity_scale")
    if np.dtype(dtype) not in (np.float32, np.float64):
        raise TypeError(f"dtype must be float32 or float64, got {np.dtype(dtype)}")
    if parallel not in (None, True, False):
        raise TypeError(f"parallel must be True, False or None, got {parallel!r}")
    if nnz > n_users * n_items:
        raise ValueError(f"nnz={nnz} exceeds n_users * n_items = {n_users * n_items}")
    if n_items >= 2**31 - 1 or n_users >= 2**31 - 1:
        raise ValueError("n_users and n_items must be below 2**31 - 1")
    if random_state is None:
        raise TypeError("random_state must be a non-negative int or a numpy Generator, got None")
    check_random_state("random_state", random_state)
    rng = random_state if isinstance(random_state, np.random.Generator) else np.random.default_rng(int(random_state))

    # The planted factors (and H's reordered copy) and the interactions' indices, before any is made.
    check_allocation(
        8 * (n_users + 2 * n_items) * factors + 4 * nnz,
        f"synthetic data of {n_users} users, {n_items} items, {nnz} pairs and {factors} factors",
    )
    user_rank = rng.permutation(n_users) + 1.0
    item_rank = rng.permutation(n_items) + 1.0
    W = _unit_rows(rng, n_users, factors)
    H = _unit_rows(rng, n_items, factors)
    seed = np.uint64(rng.integers(0, 2**63 - 1, dtype=np.int64))

    if max_items_per_user is None:
        cap = min(n_items, max(n_items // 2, -(-nnz // n_users), 1))
    else:
        cap = _positive_int(max_items_per_user, "max_items_per_user")
        if cap > n_items:
            raise ValueError(f"max_items_per_user={cap} exceeds n_items={n_items}")
        if nnz > n_users * cap:
            raise ValueError(f"nnz={nnz} cannot be reached with at most {cap} items for each of {n_users} users")
    counts = _apportion(user_rank**-b, nnz, 1 if nnz >= n_users else 0, cap)
    log_pop = -a * np.log(item_rank)
    # The kernel works in popularity order (rank 0 = most popular) for cache locality.
    rank_to_item = np.argsort(item_rank).astype(np.int64)
    log_pop_ranked = log_pop[rank_to_item]
    p = np.exp(log_pop_ranked - log_pop_ranked.max())
    p /= p.sum()
    if parallel is None:
        parallel = nnz >= _PARALLEL_MIN_NNZ
    # Small data may take the NumPy twin, which compiles nothing (the same output, bit for bit);
    # the alias table goes with the generator (the twin's avoids that kernel's compile too).
    chooser = _fill_chooser()
    fill = fill_rows_parallel if parallel else chooser.choose(_is_small(n_users, n_items, nnz))
    prob, alias = (alias_table_numpy if fill == chooser.timed_twin else alias_table)(p)

    indptr = np.zeros(n_users + 1, dtype=np.int64)
    np.cumsum(counts, out=indptr[1:])
    indices = np.empty(nnz, dtype=np.int32)
    heavy = max(64, n_items // 4)
    fill(
        indptr,
        indices,
        W,
        np.ascontiguousarray(H[rank_to_item]),
        log_pop_ranked,
        prob,
        alias,
        rank_to_item,
        alpha,
        seed,
        chunk_users,
        heavy,
    )

    matrix = _make_csr(np.ones(nnz, dtype=dtype), indices, indptr, (n_users, n_items))
    desc = (
        f"synthetic(n_users={n_users}, n_items={n_items}, nnz={nnz}, factors={factors}, "
        f"popularity_exponent={a}, activity_exponent={b}, affinity_scale={alpha})"
    )
    summary = LoadSummary(
        source=desc,
        rows_in=nnz,
        stored=nnz,
        n_users=n_users,
        n_items=n_items,
        notes=(
            "planted model: p(i | u) proportional to pop_i * exp(affinity_scale * cos(w_u, h_i)), "
            "drawn without replacement",
        ),
    )
    data = Interactions(
        matrix=matrix,
        user_ids=np.arange(n_users, dtype=np.int64),
        item_ids=np.arange(n_items, dtype=np.int64),
        summary=summary,
    )
    if return_truth:
        return data, PlantedTruth(W, H, log_pop, alpha)
    return data


@overload
def synthetic_small(
    random_state: int | np.random.Generator = 0, *, return_truth: Literal[False] = False, **kwargs: Any
) -> Interactions: ...
@overload
def synthetic_small(
    random_state: int | np.random.Generator = 0, *, return_truth: Literal[True], **kwargs: Any
) -> tuple[Interactions, PlantedTruth]: ...
def synthetic_small(
    random_state: int | np.random.Generator = 0, **kwargs: Any
) -> Interactions | tuple[Interactions, PlantedTruth]:
    """2,000 users x 1,000 items, 100,000 pairs: for examples, CI and quick runs.

    Parameters
    ----------
    random_state : int or numpy.random.Generator
        Seed.
    **kwargs
        Other :func:`synthetic` options (``return_truth=True`` etc.).

    Returns
    -------
    Interactions
    """
    n_users, n_items, nnz = SYNTHETIC_PRESETS["small"]
    return synthetic(n_users, n_items, nnz, random_state=random_state, **kwargs)


@overload
def synthetic_benchmark(
    random_state: int | np.random.Generator = 0, *, return_truth: Literal[False] = False, **kwargs: Any
) -> Interactions: ...
@overload
def synthetic_benchmark(
    random_state: int | np.random.Generator = 0, *, return_truth: Literal[True], **kwargs: Any
) -> tuple[Interactions, PlantedTruth]: ...
def synthetic_benchmark(
    random_state: int | np.random.Generator = 0, **kwargs: Any
) -> Interactions | tuple[Interactions, PlantedTruth]:
    """200,000 users x 50,000 items, 20,000,000 pairs: the benchmark scale row.

    Parameters
    ----------
    random_state : int or numpy.random.Generator
        Seed.
    **kwargs
        Other :func:`synthetic` options.

    Returns
    -------
    Interactions
    """
    n_users, n_items, nnz = SYNTHETIC_PRESETS["benchmark"]
    return synthetic(n_users, n_items, nnz, random_state=random_state, **kwargs)
