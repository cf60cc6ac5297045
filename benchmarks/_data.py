"""The benchmarks' data: MovieLens 100k's ``ua`` split and synthetic power-law sets of any size, as the
canonical CSR matrix every peer adapter gets, and the tiny matrices the warm-up fits use.
"""

from __future__ import annotations

import math
import os
import sys
import time
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import scipy.sparse as sp

# MovieLens 100k next to the checkout (the scripts' default --data).
DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "ml-100k"
# peers.py's default scaling sizes (the largest is its synthetic set) and their --quick stand-ins (a smoke run).
SCALING_SIZES = (1_000_000, 5_000_000, 20_000_000)
QUICK_SIZES = (100_000, 200_000, 400_000)


def canonical_csr(matrix: Any) -> sp.csr_matrix:
    """The one input all adapters get: users x items CSR, float32 ones, sorted unique indices.

    Parameters
    ----------
    matrix : scipy sparse matrix or array
        Stored values > 0 are positives.

    Returns
    -------
    scipy.sparse.csr_matrix
    """
    csr = sp.csr_matrix(matrix, dtype=np.float32, copy=True)
    csr.sum_duplicates()  # also sorts the indices
    csr.data = (csr.data > 0).astype(np.float32)
    csr.eliminate_zeros()
    csr.sort_indices()
    csr.data[:] = 1.0
    return csr


def tiny_matrix(n_users: int = 64, n_items: int = 48, per_user: int = 8, seed: int = 0) -> sp.csr_matrix:
    """A small random interaction matrix (every user has items and unobserved items).

    Parameters
    ----------
    n_users, n_items, per_user : int
        Shape and items per user (``per_user < n_items``).
    seed : int

    Returns
    -------
    scipy.sparse.csr_matrix
    """
    rng = np.random.default_rng(seed)
    rows = np.repeat(np.arange(n_users), per_user)
    cols = np.concatenate([rng.choice(n_items, per_user, replace=False) for _ in range(n_users)])
    return canonical_csr(sp.csr_matrix((np.ones(rows.size, np.float32), (rows, cols)), shape=(n_users, n_items)))


def load_movielens(path: str | os.PathLike) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    """MovieLens 100k ``ua`` split, ratings >= 4: (train, test) as canonical CSR matrices.

    Parameters
    ----------
    path : str or os.PathLike
        The ``ml-100k`` folder or zip.

    Returns
    -------
    (scipy.sparse.csr_matrix, scipy.sparse.csr_matrix)
        943 x 1682 each (ua.base / ua.test positives).
    """
    from bpr_numpy.datasets import load_movielens_100k

    train, test = load_movielens_100k(path, split="ua", min_rating=4.0)
    return canonical_csr(train.matrix), canonical_csr(test.matrix)


def synthetic_shape(nnz: int) -> tuple[int, int, int]:
    """Users, items and pairs of a synthetic set with ``nnz`` pairs.

    The shape is the 20M benchmark preset (200,000 users x 50,000 items) scaled by
    ``nnz / 20M`` in both directions, so 20M is the benchmark set itself and smaller sizes
    keep its 4:1 user:item ratio and 100 pairs per user on average. For small sizes the
    item count is raised to at least 4 x the mean pairs per user (at most 25% density), so
    that users keep unobserved items to draw negatives from (1M and up are unaffected).

    Parameters
    ----------
    nnz : int

    Returns
    -------
    (int, int, int)
    """
    from bpr_numpy.datasets import SYNTHETIC_PRESETS

    n_users, n_items, full = SYNTHETIC_PRESETS["benchmark"]
    s = nnz / full
    users = max(1, round(n_users * s))
    items = max(2, round(n_items * s), math.ceil(4 * nnz / users))
    return users, items, int(nnz)


def synthetic_data(nnz: int, seed: int = 0, log: TextIO | None = None) -> sp.csr_matrix:
    """The power-law synthetic set of :func:`bpr_numpy.datasets.synthetic` at ``nnz`` pairs."""
    from bpr_numpy.datasets import synthetic

    log = sys.stderr if log is None else log
    n_users, n_items, nnz = synthetic_shape(nnz)
    t0 = time.perf_counter()
    data = synthetic(n_users, n_items, nnz, random_state=seed)
    csr = canonical_csr(data.matrix)
    print(f"generated synthetic {n_users:,} users x {n_items:,} items, {nnz:,} pairs in "
          f"{time.perf_counter() - t0:.1f} s", file=log, flush=True)
    return csr
