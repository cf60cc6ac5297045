"""The epoch kernels' arguments, bundled, and the one place that builds them.

Related arrays travel together in tuples (as pynndescent's heaps do), so an entry point of
:mod:`bpr_numpy._kernels` or :mod:`bpr_numpy._hybrid_kernels` takes a handful of bundles
instead of thirty positional values, and the estimator's training loop
(:mod:`bpr_numpy.model._training`), the stratified epochs (:mod:`bpr_numpy._strata`) and the
tests all build them with the functions here. The kernels unpack each bundle on entry and run
the same code as before: the bundles change no triplet and no bit.

A bundle holding ``None`` where an option is off (no popularity table, no adaptive sampler, no
optimiser state, no bitmap, no run prefetching) lets numba prune that branch at compile time, so
each combination in use compiles to its own lean specialisation.
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import numpy as np

from .objective import Regularization

__all__ = [
    "Parameters",
    "TrainingData",
    "EpochSettings",
    "Sampling",
    "Outputs",
    "FeatureMatrices",
    "epoch_settings",
    "epoch_outputs",
    "training_data",
]


class Parameters(NamedTuple):
    """The trained arrays, updated in place: factors and biases (or, for side features, embeddings)."""

    user_factors: np.ndarray
    item_factors: np.ndarray
    item_bias: np.ndarray


class TrainingData(NamedTuple):
    """The positives the epoch samples from: canonical CSR, its row index (:func:`row_blocks`), the bitmap."""

    indptr: np.ndarray
    indices: np.ndarray
    row_blocks: np.ndarray
    bitmap: np.ndarray | None  # users x items bits of the positives, or None (see _runtime.membership_bitmap)


class EpochSettings(NamedTuple):
    """The scalars of an epoch; the step size and penalties in the parameters' dtype."""

    n_samples: int
    user_run: int
    seed: int
    epoch: int
    learning_rate: np.floating
    reg_user: np.floating
    reg_positive: np.floating
    reg_negative: np.floating
    reg_bias: np.floating
    loss_code: int
    use_bias: bool
    skip_liked: bool
    prefetch_runs: Literal[True] | None  # not False: None prunes the code from the kernel (epoch_settings)


class Sampling(NamedTuple):
    """The negative sampler's state: the popularity alias table and the adaptive sampler's tuple.

    ``popularity`` is None or ``(prob, alias)`` (:func:`bpr_numpy.sampling.alias_table`);
    ``adaptive`` is None or ``(kind, warp_max_sampled, dns_candidates, lam, ranks, spread)``
    (:func:`bpr_numpy._kernels._adaptive_negative`); ``negatives`` is None (one negative per
    positive) or ``(n_negatives, dns_candidates)`` (:mod:`bpr_numpy._kernels._negatives`).
    """

    popularity: tuple | None
    adaptive: tuple | None
    negatives: tuple | None = None


class Outputs(NamedTuple):
    """Per-chunk results the kernels write: loss sums, ordered counts, skipped counts."""

    loss: np.ndarray
    ordered: np.ndarray
    skipped: np.ndarray


class FeatureMatrices(NamedTuple):
    """Side features as CSR parts: users x user features, items x item features."""

    user_indptr: np.ndarray
    user_indices: np.ndarray
    user_data: np.ndarray
    item_indptr: np.ndarray
    item_indices: np.ndarray
    item_data: np.ndarray


#: CSR positions per entry of the row index (:func:`row_blocks`): 64 positions share one int32,
#: 1/16 of a byte per pair where an array of each position's user took 4 bytes (76 MiB on 20M
#: pairs); the samplers search the few rows between two entries (:func:`bpr_numpy._kernels._row_of`).
ROW_BLOCK = 64


def row_blocks(indptr: np.ndarray) -> np.ndarray:
    """The row index the samplers find a position's user with (:func:`bpr_numpy._kernels._row_of`).

    Entry ``q`` is the row of CSR position ``q * ROW_BLOCK``, the last entry the row of the last
    position: ``ceil(nnz / ROW_BLOCK) + 1`` int32 (one entry without positions).
    """
    nnz = int(indptr[-1]) if indptr.shape[0] else 0
    positions = np.append(np.arange(0, nnz, ROW_BLOCK, dtype=np.int64), max(nnz - 1, 0))
    return (np.searchsorted(indptr, positions, side="right") - 1).clip(0).astype(np.int32)


def training_data(indptr: np.ndarray, indices: np.ndarray, bitmap: np.ndarray | None = None) -> TrainingData:
    """The :class:`TrainingData` of a canonical CSR, its row index built here."""
    return TrainingData(indptr, indices, row_blocks(indptr), bitmap)


def epoch_settings(
    *,
    n_samples: int,
    user_run: int,
    seed: int,
    epoch: int,
    learning_rate: float,
    regularization: Regularization,
    loss_code: int,
    use_bias: bool,
    skip_liked: bool,
    dtype,
    prefetch_runs: bool = False,
) -> EpochSettings:
    """An epoch's :class:`EpochSettings`, every value of the type the kernels are compiled for.

    ``loss_code`` is :func:`bpr_numpy.objective.loss_code` of the loss; the step size and the
    penalties are cast to ``dtype``, the parameters' (the kernels compute the SGD step in it).
    ``prefetch_runs`` travels as True or None: numba compiles the run prefetching only into the
    specialisation that can take it, so the small matrices' kernel (a first fit's) compiles
    without it.
    """
    t = np.dtype(dtype).type
    return EpochSettings(
        int(n_samples),
        int(user_run),
        int(seed),
        int(epoch),
        t(learning_rate),
        t(regularization.user),
        t(regularization.positive),
        t(regularization.negative),
        t(regularization.bias),
        int(loss_code),
        bool(use_bias),
        bool(skip_liked),
        True if prefetch_runs else None,
    )


def epoch_outputs(chunks: int) -> Outputs:
    """Zeroed :class:`Outputs` for an epoch of ``chunks`` chunks (``_kernels.n_chunks``)."""
    return Outputs(np.zeros(chunks), np.zeros(chunks, np.int64), np.zeros(chunks, np.int64))
