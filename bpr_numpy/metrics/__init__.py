"""Ranking metrics for implicit-feedback models: AUC (protocols P1 and P2) and top-k metrics.

All metrics are computed in one pass over blocks of users (``evaluate``); the
single-metric functions (``full_auc``, ``auc``, ``precision_at_k``, ...) are thin
wrappers around it. Memory is bounded by one block of scores
(``block_size × n_items``, float32 or float64) and a few scratch rows, besides the
train and test matrices; a dense users × items array is never built.

Conventions (see section "Evaluation protocols" of ``docs/design.md``)
----------------------------------------------------------------------
Positives
    A stored value ``> 0`` in ``train`` or ``test`` is a positive. Stored values
    ``<= 0`` (explicit zeros included) are not positives. Duplicate entries are
    summed first, as scipy does.
Evaluated users
    Only users with at least one test positive are scored. ``evaluate`` reports
    their number as ``"n_users"``. A metric that is undefined for a user (see
    below) leaves that user out of that metric's average; in the per-user output
    the user's value is NaN.
P1, ``full_auc``
    Per user, ROC AUC of the scores over *all* items: test positives are labelled
    1 and every other item, train positives included, 0. A user whose every item is
    a test positive has no negative and is left out.
P2, ``auc``
    Per user, AUC of the *eligible* test positives (test positives that are not
    train positives) against the items that are neither train nor test positives.
    A user with no eligible test positive, or with no such negative left (the train
    and test rows cover the whole catalogue), is left out.
Ties
    A (positive, negative) pair with equal scores counts one half in both AUCs.
Top-k metrics and MRR
    Rank the *candidates* — every item that is not a train positive of the user
    (``exclude_train=True``, protocol P2) or every item (``exclude_train=False``) —
    by score, descending; among equal scores the **lower item index ranks first**.
    The relevant items are the test positives among the candidates (with
    ``exclude_train=True`` a test positive that is also a train positive cannot be
    recommended and does not count, not even in recall's denominator); ``n_rel``
    is their number. Users with ``n_rel = 0`` are left out. When ``k`` exceeds the
    number of candidates, all candidates are ranked and the missing positions are
    misses (precision still divides by ``k``).

MRR is taken over the full ranking of the candidates (no cut-off).

The code: :mod:`._protocol` (``evaluate`` and the single-metric functions),
:mod:`._inputs` (checks of the matrices, ``k`` and the model), :mod:`._kernels`
(the numba kernels: AUC pair counts, top-k lists and hits per block of users),
:mod:`._numpy_block` (their NumPy twin, bitwise equal, for problems too small to repay
numba's compile) and :mod:`._baselines` (popularity and random scorers).
"""

from __future__ import annotations

from ._baselines import popularity_scorer, random_scorer
from ._inputs import BlockScorer
from ._protocol import (
    DEFAULT_BLOCK_BYTES,
    METRIC_NAMES,
    auc,
    auc_from_scores,
    coverage_at_k,
    evaluate,
    full_auc,
    hit_rate_at_k,
    map_at_k,
    mrr,
    ndcg_at_k,
    precision_at_k,
    recall_at_k,
)

__all__ = [
    "BlockScorer",
    "evaluate",
    "full_auc",
    "auc",
    "precision_at_k",
    "recall_at_k",
    "ndcg_at_k",
    "map_at_k",
    "hit_rate_at_k",
    "mrr",
    "coverage_at_k",
    "auc_from_scores",
    "popularity_scorer",
    "random_scorer",
    "METRIC_NAMES",
    "DEFAULT_BLOCK_BYTES",
]
