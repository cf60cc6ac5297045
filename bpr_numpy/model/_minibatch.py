"""The vectorised NumPy trainer (``BPR(solver="minibatch")``): minibatches of triplets, no numba.

Each epoch visits every training pair once, in a seeded random order, cut into batches of
``batch_size``; each pair gets a negative from the sampler's law (drawn for the whole batch at
once). A batch's step follows the *mean* of its triplets' objectives: the gradient terms of
:func:`bpr_numpy.objective.triplet_terms` (the one source of the math, which the oracle
checks) summed per touched row and divided by the batch's size, then the optimiser's rule of
:func:`bpr_numpy.objective.apply_rows` on those rows. With ``batch_size=1`` and SGD this is the
per-sample step of the numba kernels (``tests/test_minibatch.py`` replays the same triplets
through both).

The parameters are read and written in the model's dtype; the gradient terms are computed in
float64 on the rows a batch reads, so a batch costs ``O(batch_size x factors)`` whatever the
catalogue's size, except with ``optimizer="adam-dense"``, which moves every row at every step
(``O((n_users + n_items) x factors)`` a batch, as Keras 1 did). No numba kernel trains here (the
epoch loop's snapshot still checks the parameters with a small numba helper).

With side features (:mod:`bpr_numpy.hybrid`) the step moves the feature embeddings, through
:func:`bpr_numpy.objective.hybrid_triplet_gradients` on the rows a batch touches
(:func:`apply_hybrid_batch`). A sampler may bring its own NumPy ``draw`` (a "hard" negative per
pair, say: :class:`bpr_numpy.sampling.Sampler`), which only this trainer calls.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
import scipy.sparse as sp

from .. import sampling
from .._parameters import check_allocation
from ..hybrid import Features
from ..objective import (
    OPTIMIZER_ADAM,
    OPTIMIZER_ADAM_DENSE,
    OptimizerState,
    Regularization,
    apply_rows,
    hybrid_representations,
    hybrid_triplet_gradients,
    pair_loss,
    triplet_scores,
    triplet_terms,
)
from ..sampling import MAX_NEGATIVE_TRIES
from ._reporting import EpochReport, epoch_report

if TYPE_CHECKING:  # pragma: no cover
    from ._estimator import BPR

__all__ = ["BatchResult", "apply_batch", "apply_hybrid_batch", "draw_negatives", "run_epoch"]


class BatchResult(NamedTuple):
    """What a batch's step saw: the sum of its pair losses and the count of ``x_uij > 0``, before the step."""

    loss: float
    ordered: int


def apply_batch(
    user_factors: np.ndarray,
    item_factors: np.ndarray,
    item_biases: np.ndarray | None,
    state: OptimizerState,
    users: np.ndarray,
    positives: np.ndarray,
    negatives: np.ndarray,
    *,
    learning_rate: float,
    loss: str,
    regularization: Regularization,
) -> BatchResult:
    """One step on the mean objective of a batch of triplets, in place.

    Parameters
    ----------
    user_factors, item_factors : ndarray
        Updated in place.
    item_biases : ndarray or None
        Updated in place; None for a model without item bias.
    state : OptimizerState
        The optimiser and its memory (sized like the parameters); updated in place. Lazy Adam
        advances the step count of each row the batch touches, once; dense Adam every row's.
    users, positives, negatives : ndarray of int
        The triplets.
    learning_rate, loss, regularization
        As in :func:`bpr_numpy.objective.sgd_step`.
    """
    n = len(users)
    Wu = user_factors[users].astype(np.float64)
    Hi = item_factors[positives].astype(np.float64)
    Hj = item_factors[negatives].astype(np.float64)
    if item_biases is None:
        bi = bj = np.zeros(n)
    else:
        bi, bj = item_biases[positives].astype(np.float64), item_biases[negatives].astype(np.float64)
    terms = triplet_terms(Wu, Hi, Hj, bi, bj, loss=loss, regularization=regularization)
    # Rows repeated in the batch sum their terms, in the batch's order (positives before negatives,
    # as triplet_gradients adds them): a 0/1 matrix of row x triplet times the terms. (np.add.at
    # and np.add.reduceat along the rows took 3 to 10 times as long.)
    rows_u, sum_u = _groups(users)
    rows_i, sum_i = _groups(np.concatenate([positives, negatives]))
    g_u = sum_u @ terms.user
    g_i = sum_i @ np.concatenate([terms.positive, terms.negative])
    g_b = None if item_biases is None else sum_i @ np.concatenate([terms.positive_bias, terms.negative_bias])
    _step((user_factors, item_factors, item_biases), state, rows_u, rows_i, (g_u, g_i, g_b), n, learning_rate)
    return BatchResult(float(pair_loss(terms.scores, loss).sum()), int((terms.scores > 0).sum()))


def apply_hybrid_batch(
    features: Features,
    use_bias: bool,
    state: OptimizerState,
    users: np.ndarray,
    positives: np.ndarray,
    negatives: np.ndarray,
    *,
    learning_rate: float,
    loss: str,
    regularization: Regularization,
) -> BatchResult:
    """:func:`apply_batch` for the model with side features: the step moves the feature embeddings.

    The batch's gradient is :func:`bpr_numpy.objective.hybrid_triplet_gradients` on the feature
    rows the batch touches (its users' and items' stored features), with the batch's rows of
    the feature matrices restricted to those columns: exact, as every other row's gradient is
    zero, and ``O(stored features of the batch x factors)`` whatever the catalogue's size.

    Parameters
    ----------
    features : bpr_numpy.hybrid.Features
        Its embeddings are updated in place.
    use_bias : bool
        Whether the item bias embeddings are trained.
    state : OptimizerState
        Sized by feature rows.
    users, positives, negatives, learning_rate, loss, regularization
        As in :func:`apply_batch`.
    """
    n = len(users)
    rows_u, X = _used_columns(features.users.matrix[users])
    rows_i, Y = _used_columns(features.items.matrix[np.concatenate([positives, negatives])])
    user_embeddings, item_embeddings, item_bias_embeddings = features.drawn_embeddings()
    E = user_embeddings[rows_u].astype(np.float64)
    F = item_embeddings[rows_i].astype(np.float64)
    c = item_bias_embeddings[rows_i].astype(np.float64) if use_bias else None
    local = np.arange(n)
    grads = hybrid_triplet_gradients(E, F, c, X, Y, local, local, local + n, loss=loss, regularization=regularization)
    scores = triplet_scores(*hybrid_representations(E, F, c, X, Y), local, local, local + n)
    params = (features.user_embeddings, features.item_embeddings, features.item_bias_embeddings if use_bias else None)
    _step(
        params,
        state,
        rows_u,
        rows_i,
        (grads.user_embeddings, grads.item_embeddings, grads.item_bias_embeddings if use_bias else None),
        n,
        learning_rate,
    )
    return BatchResult(float(pair_loss(scores, loss).sum()), int((scores > 0).sum()))


def _used_columns(rows: sp.csr_matrix) -> tuple[np.ndarray, sp.csr_matrix]:
    """The columns ``rows`` store an entry in (sorted), and ``rows`` restricted to them."""
    used, local = np.unique(rows.indices, return_inverse=True)
    return used, sp.csr_matrix((rows.data, local.ravel(), rows.indptr), shape=(rows.shape[0], len(used)))


def _step(
    params: tuple,
    state: OptimizerState,
    rows_u: np.ndarray,
    rows_i: np.ndarray,
    grads: tuple,
    n: int,
    learning_rate: float,
) -> None:
    """The optimiser's step on the touched rows, with the batch's summed gradients divided by ``n``.

    ``params`` and ``grads`` are (users, items, item biases or None); the rows are distinct.
    Lazy Adam advances the step count of each touched row once; dense Adam every row's.
    """
    t_u = t_i = None
    if state.code == OPTIMIZER_ADAM:  # lazy: the rows the batch touches
        state.user_steps[rows_u] += 1
        state.item_steps[rows_i] += 1
    elif state.code == OPTIMIZER_ADAM_DENSE:  # dense: every row takes part in every step
        state.user_steps += 1
        state.item_steps += 1
    if state.code >= OPTIMIZER_ADAM:
        t_u, t_i = state.user_steps[rows_u], state.item_steps[rows_i]
    scale = 1.0 / n
    users, items, biases = params
    g_u, g_i, g_b = grads
    apply_rows(users, rows_u, g_u * scale, state.user_first, state.user_second, t_u, state.code, learning_rate)
    apply_rows(items, rows_i, g_i * scale, state.item_first, state.item_second, t_i, state.code, learning_rate)
    if biases is not None:
        apply_rows(biases, rows_i, g_b * scale, state.bias_first, state.bias_second, t_i, state.code, learning_rate)


def _groups(index: np.ndarray) -> tuple[np.ndarray, sp.csr_matrix]:
    """The distinct values of ``index`` (sorted) and the 0/1 matrix that sums a batch's rows into them.

    Row ``r`` of the matrix picks the positions holding the ``r``-th distinct value, in the
    batch's order (a stable sort), so its product with the batch's terms adds them in that order.
    """
    order = np.argsort(index, kind="stable")
    ordered = index[order]
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
    summing = sp.csr_matrix((np.ones(len(order)), order, np.r_[starts, len(order)]), shape=(len(starts), len(order)))
    return ordered[starts], summing


def _candidates(rng: np.random.Generator, n: int, n_items: int, alias: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """``n`` draws of the sampler's candidate law: uniform, or from its alias table (Walker's draw)."""
    prob, table = alias
    column = rng.integers(0, n_items, n)
    if not prob.size:
        return column
    return np.where(rng.random(n) < prob[column], column, table[column])


def _liked(keys: np.ndarray, users: np.ndarray, items: np.ndarray, n_items: int) -> np.ndarray:
    """Whether each ``(user, item)`` is a training pair: ``keys`` are the pairs' ``u * n_items + i``, sorted."""
    wanted = users.astype(np.int64) * n_items + items
    at = np.minimum(np.searchsorted(keys, wanted), len(keys) - 1)
    return keys[at] == wanted if len(keys) else np.zeros(len(wanted), bool)


def draw_negatives(
    rng: np.random.Generator,
    users: np.ndarray,
    keys: np.ndarray,
    n_items: int,
    skip_liked: bool,
    alias: tuple[np.ndarray, np.ndarray],
    keeps_liked: bool = False,
) -> np.ndarray:
    """A negative for each user by the sampler's law; -1 where the sample is skipped.

    A known positive is redrawn (up to ``MAX_NEGATIVE_TRIES`` draws in all; the kernels' batch
    negative gets one more, a first draw and as many redraws), skips
    the sample with ``skip_liked`` (the skip variants), or is kept with ``keeps_liked``.
    """
    negatives = _candidates(rng, len(users), n_items, alias)
    if keeps_liked:
        return negatives
    liked = _liked(keys, users, negatives, n_items)
    for _ in range(0 if skip_liked else MAX_NEGATIVE_TRIES - 1):
        again = np.flatnonzero(liked)
        if not again.size:
            break
        negatives[again] = _candidates(rng, again.size, n_items, alias)
        liked[again] = _liked(keys, users[again], negatives[again], n_items)
    negatives[liked] = -1
    return negatives


def _drawn(
    spec: sampling.Sampler, rng: np.random.Generator, users: np.ndarray, positives: np.ndarray, matrix: sp.csr_matrix
) -> np.ndarray:
    """A sampler's own ``draw`` for a batch, checked: one item (or -1, skip) per triplet."""
    draw = spec.draw
    assert draw is not None, "called for a sampler with its own draw"
    drawn = np.asarray(draw(users, positives, matrix, rng))
    if drawn.shape != users.shape or drawn.dtype.kind not in "iu":
        raise ValueError(
            f"sampler {spec.name!r}: draw must return one integer item per triplet "
            f"(shape {users.shape}), got dtype {drawn.dtype} and shape {drawn.shape}"
        )
    if drawn.size and (drawn.min() < -1 or drawn.max() >= matrix.shape[1]):
        raise ValueError(f"sampler {spec.name!r}: draw returned an item outside [-1, {matrix.shape[1]})")
    return drawn.astype(np.intp)


def run_epoch(
    model: BPR,
    matrix: sp.csr_matrix,
    rows: np.ndarray,
    threads: int,
    alias: tuple[np.ndarray, np.ndarray],
    bitmap: np.ndarray | None,
    reg: Regularization,
    n_samples: int | None = None,
) -> EpochReport | None:
    """One epoch of minibatches over ``matrix`` (the signature of :func:`._kernel_epoch.run_epoch`).

    ``rows``, ``threads`` and ``bitmap`` are not used (each pair's user is spelled out here;
    NumPy uses its own threads for the products);
    ``n_samples=0`` (the kernels' warm-up) does nothing. The epoch's stream is seeded with
    ``(seed, epoch)``, so ``fit`` then ``partial_fit`` draws what one longer ``fit`` draws.
    With side features the batches move the feature embeddings, and the factors are the
    representations they give at the end of the epoch.
    """
    if n_samples == 0:
        return None
    from ._training import epoch_learning_rate

    epoch = model._epochs_done
    seed, state = model._seed, model._optimizer_state
    assert seed is not None and state is not None, "start() resolves the seed and the optimiser state first"
    rng = np.random.default_rng((seed, epoch))
    learning_rate = epoch_learning_rate(model, epoch)
    spec = sampling.REGISTRY[model.sampler]
    n_items = matrix.shape[1]
    user_of = np.repeat(np.arange(matrix.shape[0], dtype=np.int64), np.diff(matrix.indptr))
    keys = user_of * n_items + matrix.indices  # sorted: CSR rows in order, columns sorted
    features = model._features
    user_factors, item_factors, item_biases = model._factors()
    biases = item_biases if model.item_bias else None
    batch = min(int(model.batch_size), max(matrix.nnz, 1))  # a larger batch is the whole epoch
    # About ten float64 arrays of batch x factors are alive at once during a step.
    check_allocation(10 * batch * (int(model.factors) + 2) * 8, f"batch_size={model.batch_size}")
    loss_sum, ordered, skipped = 0.0, 0, 0
    start = time.perf_counter()
    order = rng.permutation(matrix.nnz)
    for first in range(0, matrix.nnz, batch):
        pairs = order[first : first + batch]
        users = user_of[pairs].astype(np.intp)
        positives = matrix.indices[pairs].astype(np.intp)
        if spec.draw is not None:
            negatives = _drawn(spec, rng, users, positives, matrix)
        else:
            negatives = draw_negatives(rng, users, keys, n_items, spec.codes.skip_liked, alias, spec.keeps_liked)
        kept = negatives >= 0
        if not kept.all():
            skipped += int((~kept).sum())
            users, positives, negatives = users[kept], positives[kept], negatives[kept]
        if not len(users):
            continue
        if features is None:
            result = apply_batch(
                user_factors,
                item_factors,
                biases,
                state,
                users,
                positives,
                negatives,
                learning_rate=learning_rate,
                loss=model.loss,
                regularization=reg,
            )
        else:
            result = apply_hybrid_batch(
                features,
                bool(model.item_bias),
                state,
                users,
                positives,
                negatives,
                learning_rate=learning_rate,
                loss=model.loss,
                regularization=reg,
            )
        loss_sum += result.loss
        ordered += result.ordered
    if features is not None:
        # In place: the epoch snapshot holds these very arrays.
        for live, fresh in zip(model._parameters(), features.representations(bool(model.item_bias)), strict=False):
            np.copyto(live, fresh)
    seconds = time.perf_counter() - start
    model._epochs_done += 1
    return epoch_report(model._epochs_done, loss_sum, ordered, skipped, matrix.nnz, seconds)
