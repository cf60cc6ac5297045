"""Seeded train/test splits that keep the id space (aligned matrices)."""

from __future__ import annotations

import math
import numbers
from typing import Any

import numpy as np

from .._parameters import Integer, check_random_state
from ._interactions import Interactions

__all__ = ["split_random", "split_leave_k_out"]


def _rng(random_state: Any) -> np.random.Generator:
    check_random_state("random_state", random_state)
    return random_state if isinstance(random_state, np.random.Generator) else np.random.default_rng(random_state)


def _check_interactions(x: Any) -> Interactions:
    if not isinstance(x, Interactions):
        raise TypeError(f"expected an Interactions, got {type(x).__name__}")
    return x


def split_random(
    interactions: Interactions,
    test_fraction: float = 0.2,
    *,
    random_state: int | np.random.Generator | None = None,
) -> tuple[Interactions, Interactions]:
    """Move a uniformly random fraction of all stored pairs to a test set.

    Parameters
    ----------
    interactions : Interactions
        The pairs to split.
    test_fraction : float
        In (0, 1). Exactly ``round(test_fraction * nnz)`` pairs go to test,
        drawn without replacement over all pairs (users with many pairs give
        more test pairs; some users may end with none, or with all their
        pairs in test).
    random_state : int, numpy.random.Generator or None
        Seed or generator. The same seed gives the same split; ``None`` draws
        fresh entropy (not reproducible).

    Returns
    -------
    (train, test) : tuple of Interactions
        Same ``user_ids``/``item_ids`` and shape as the input; disjoint;
        together exactly the input pairs (ratings and timestamps follow their
        pairs).
    """
    x = _check_interactions(interactions)
    if isinstance(test_fraction, bool) or not isinstance(test_fraction, numbers.Real):
        raise TypeError(f"test_fraction must be a number, got {type(test_fraction).__name__}")
    if not (math.isfinite(test_fraction) and 0.0 < test_fraction < 1.0):
        raise ValueError(f"test_fraction must be strictly between 0 and 1, got {test_fraction}")
    rng = _rng(random_state)
    n = x.nnz
    n_test = int(round(test_fraction * n))
    mask = np.zeros(n, dtype=bool)
    if n_test:
        mask[rng.choice(n, size=n_test, replace=False)] = True
    note = f"split_random(test_fraction={test_fraction}): {n - n_test} train / {n_test} test pairs"
    return x.select_pairs(~mask, note=note + " (train part)"), x.select_pairs(mask, note=note + " (test part)")


def split_leave_k_out(
    interactions: Interactions,
    k: int = 1,
    *,
    strategy: str = "random",
    random_state: int | np.random.Generator | None = None,
    min_train: int = 1,
) -> tuple[Interactions, Interactions]:
    """Hold out ``k`` pairs of every user.

    Parameters
    ----------
    interactions : Interactions
        The pairs to split.
    k : int
        Pairs per user moved to test (>= 1).
    strategy : {"random", "latest"}
        ``"random"``: ``k`` pairs drawn uniformly per user. ``"latest"``: the
        ``k`` pairs with the largest timestamps (needs ``timestamps``); among
        equal timestamps the pair with the larger item index counts as later,
        so the split is deterministic and needs no seed.
    random_state : int, numpy.random.Generator or None
        Seed for ``"random"``; ``None`` draws fresh entropy.
    min_train : int
        Pairs a user must keep in train (>= 0). Users with fewer than
        ``k + min_train`` pairs keep *all* their pairs in train and get no
        test pair (counted in the summary notes), so no user loses their
        whole history.

    Returns
    -------
    (train, test) : tuple of Interactions
        Same id space; disjoint; together exactly the input pairs. Every
        user with at least ``k + min_train`` pairs has exactly ``k`` test pairs.
    """
    from ._csr_kernels import _mark_top_k_per_row

    x = _check_interactions(interactions)
    for name, v, lo in (("k", k, 1), ("min_train", min_train, 0)):
        Integer(lo).check(name, v, None)  # int64 at most: they reach a numba kernel
    if strategy not in ("random", "latest"):
        raise ValueError(f"strategy must be 'random' or 'latest', got {strategy!r}")
    counts = np.diff(x.matrix.indptr)
    eligible = counts >= k + min_train
    if strategy == "latest":
        if x.timestamps is None:
            raise ValueError("strategy='latest' needs timestamps; this Interactions has none (use strategy='random')")
        keys = np.ascontiguousarray(x.timestamps)
    else:
        keys = _rng(random_state).random(x.nnz)
    mask = np.zeros(x.nnz, dtype=bool)
    _mark_top_k_per_row(x.matrix.indptr.astype(np.int64), keys, int(k), eligible, mask)
    n_elig = int(eligible.sum())
    n_short = int(np.count_nonzero((counts > 0) & ~eligible))
    note = (
        f"split_leave_k_out(k={k}, strategy={strategy!r}, min_train={min_train}): {n_elig} users hold out {k} "
        f"pairs; {n_short} users with fewer than {k + min_train} pairs keep all in train"
    )
    return x.select_pairs(~mask, note=note + " (train part)"), x.select_pairs(mask, note=note + " (test part)")
