"""Baseline block scorers for ``evaluate``: item popularity and reproducible random scores."""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np

from .. import _rng
from ._inputs import BlockScorer, _check_matrix


def popularity_scorer(train: Any) -> BlockScorer:
    """Block scorer ranking items by their number of train positives.

    Parameters
    ----------
    train : scipy.sparse matrix or 2-D array-like, shape (n_users, n_items)
        Stored values ``> 0`` are positives.

    Returns
    -------
    callable
        ``score_block(users) -> (len(users), n_items)`` float64 array, every row the
        item popularity counts (ties broken by lower item index when ranked).
    """
    csr = _check_matrix(train, "train")
    counts = np.bincount(csr.indices[csr.data > 0], minlength=csr.shape[1]).astype(np.float64)

    def score_block(users: np.ndarray) -> np.ndarray:
        return np.broadcast_to(counts, (len(users), counts.shape[0]))

    return score_block


# SplitMix64 (bpr_numpy._rng), vectorised over NumPy arrays for the baseline scorer.
_SM_GAMMA, _SM_M1, _SM_M2 = _rng.GOLDEN, _rng.MIX1, _rng.MIX2


def random_scorer(n_items: int, seed: int = 0) -> BlockScorer:
    """Block scorer giving uniform random scores in [0, 1), reproducible per (seed, user, item).

    The score of (u, i) is a SplitMix64 hash of ``(seed, u, i)``, so it does not
    depend on the block size or on which other users are scored with u.

    Parameters
    ----------
    n_items : int
        Number of items (columns of each block).
    seed : int, default 0
        Any integer; different seeds give independent scores.

    Returns
    -------
    callable
        ``score_block(users) -> (len(users), n_items)`` float64 array.
    """
    if isinstance(n_items, bool) or not isinstance(n_items, (numbers.Integral, np.integer)):
        raise TypeError(f"n_items must be an int, got {n_items!r}")
    if n_items < 1:
        raise ValueError(f"n_items must be >= 1, got {n_items}")
    n_items = int(n_items)
    # fold the seed into 64 bits once; arbitrary Python ints are accepted
    key = _splitmix64(np.array([int(seed) & 0xFFFFFFFFFFFFFFFF], dtype=np.uint64))[0]
    items = np.arange(n_items, dtype=np.uint64)

    def score_block(users: np.ndarray) -> np.ndarray:
        u = np.asarray(users, dtype=np.uint64)[:, None]
        with np.errstate(over="ignore"):
            x = _splitmix64(_splitmix64(u ^ key) + items)
        return (x >> np.uint64(11)).astype(np.float64) * (1.0 / 2.0**53)

    return score_block


def _splitmix64(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        z = x + _SM_GAMMA
        z = (z ^ (z >> np.uint64(30))) * _SM_M1
        z = (z ^ (z >> np.uint64(27))) * _SM_M2
        return z ^ (z >> np.uint64(31))
