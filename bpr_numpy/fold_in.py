"""Folding in new users: their factors against frozen item factors, without refitting.

A user unseen at training time gets the vector ``w`` that minimises the
expected training objective of its own triplets with every item parameter
held fixed (:func:`bpr_numpy.objective.fold_in_objective`)::

    J(w) = mean_{i in P, j in N} ell(w . (h_i - h_j) + b_i - b_j) + (lambda_u / 2) |w|^2

``P`` are the user's positives, ``N`` the other items: with the default
uniform sampler this is exactly what SGD on the user's samples descends in
expectation, so the folded-in vector is what training would converge to for
that user if the items stood still. ``J`` is smooth and, for the BPR loss with
``lambda_u > 0``, strictly convex: L-BFGS (SciPy) from ``w = 0`` finds its
unique minimum deterministically; no sampling, no learning rate, no epochs.

Users are independent, so a batch is a loop of small problems; the cost of
one is ``O(|P| |N| + n_items * factors)`` per L-BFGS iteration. Past
``max_pairs`` pairs, the negatives (then the positives) are subsampled
uniformly without replacement from a generator seeded by ``random_state`` and
the row's own items, an unbiased estimate of the mean: a row gets the same
vector alone or in any batch.

The objective is the one of the uniform sampler whatever sampler the model was
trained with: popularity-weighted or adaptive negatives would weight the pairs
differently.
"""

from __future__ import annotations

import zlib
from typing import cast

import numpy as np
from scipy.optimize import minimize

from ._parameters import INT64_MAX, check_random_state
from ._validation import as_user_items
from .objective import LOSSES, fold_in_objective

__all__ = ["fold_in_users"]


def _pairs(positives: np.ndarray, negatives: np.ndarray, max_pairs: int, rng: np.random.Generator):
    if len(positives) * len(negatives) <= max_pairs:
        return positives, negatives
    if len(positives) > max_pairs:
        positives = np.sort(rng.choice(positives, max_pairs, replace=False))
    keep = max(1, max_pairs // len(positives))
    if keep < len(negatives):
        negatives = np.sort(rng.choice(negatives, keep, replace=False))
    return positives, negatives


def fold_in_users(
    item_factors: np.ndarray,
    item_bias: np.ndarray | None,
    user_items,
    *,
    loss: str = "bpr",
    user_regularization: float = 0.0,
    max_iter: int = 200,
    tol: float = 1e-6,
    max_pairs: int = 1 << 20,
    random_state: int | None = 0,
) -> np.ndarray:
    """Factors of new users, one per row of ``user_items``, with the items frozen.

    Parameters
    ----------
    item_factors : ndarray, shape (n_items, factors)
    item_bias : ndarray, shape (n_items,), or None
    user_items : sparse matrix or 2-D array, shape (n_new_users, n_items)
        The new users' interactions; stored values > 0 are positives.
    loss : {"bpr", "sigmoid", "warp", "softmax"}
        Pair loss of :func:`~bpr_numpy.objective.fold_in_objective` (``"softmax"``: its
        one-negative case, which is ``"bpr"``).
    user_regularization : float
        ``lambda_u``; 0 lets a user whose positives all outrank its negatives
        grow without bound until ``max_iter``.
    max_iter : int
        L-BFGS iterations per user.
    tol : float
        Stop when the largest gradient component is below ``tol``.
    max_pairs : int
        Pairs evaluated per user at most; above it, pairs are subsampled.
    random_state : int, numpy Generator or None
        Seed of that subsampling (an int in ``[0, 2**63)``).

    Returns
    -------
    numpy.ndarray, shape (n_new_users, factors), dtype of ``item_factors``
        A user with no positive, or whose positives are every item, gets the
        zero vector (nothing to rank): its recommendations follow the item
        biases.
    """
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
    for name, value, low in (("max_iter", max_iter, 1), ("max_pairs", max_pairs, 1)):
        # max_iter goes to L-BFGS as a C int; a larger one means "until converged" anyway
        high = 2**31 - 1 if name == "max_iter" else INT64_MAX
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not low <= value <= high:
            raise ValueError(f"{name} must be an integer in [{low}, {high}], got {value!r}")
    if isinstance(tol, bool) or not isinstance(tol, (int, float, np.floating)) or not tol > 0:
        raise ValueError(f"tol must be a positive number, got {tol!r}")
    check_random_state("random_state", random_state)
    V = np.asarray(item_factors)
    if V.ndim != 2 or V.dtype.kind != "f":
        raise ValueError(f"item_factors must be a 2-D float array, got shape {V.shape} and dtype {V.dtype}")
    n_items, factors = V.shape
    if item_bias is not None and np.shape(item_bias) != (n_items,):
        raise ValueError(f"item_bias has shape {np.shape(item_bias)}; expected ({n_items},), one per item")
    matrix = as_user_items(user_items, require_positive=False)
    if matrix.shape[1] != n_items:
        raise ValueError(f"user_items has {matrix.shape[1]} item columns; the model has {n_items} items")
    # One generator per row, seeded by the row's items: a row's vector does not depend on the batch.
    if random_state is None:
        seed = cast(int, np.random.SeedSequence().entropy)  # fresh entropy is an int
    elif isinstance(random_state, np.random.Generator):
        seed = int(random_state.integers(0, INT64_MAX))
    else:
        seed = int(random_state)
    out = np.zeros((matrix.shape[0], factors), dtype=V.dtype)
    everything = np.arange(n_items)
    for row in range(matrix.shape[0]):
        positives = matrix.indices[matrix.indptr[row] : matrix.indptr[row + 1]].astype(np.intp)
        if len(positives) == 0 or len(positives) == n_items:
            continue
        mask = np.ones(n_items, dtype=bool)
        mask[positives] = False
        rng = np.random.default_rng([seed, zlib.crc32(positives.astype(np.int64).tobytes())])
        positives, negatives = _pairs(positives, everything[mask], max_pairs, rng)
        result = minimize(
            fold_in_objective,
            np.zeros(factors),
            jac=True,
            method="L-BFGS-B",
            args=(V, item_bias, positives, negatives, loss, user_regularization),
            options={"maxiter": max_iter, "gtol": tol},
        )
        if not np.isfinite(result.x).all():
            raise FloatingPointError(f"folding in row {row} produced non-finite factors; raise the regularisation")
        out[row] = result.x
    return out
