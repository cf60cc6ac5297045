"""The evaluation protocol: ``evaluate`` and the single-metric functions (conventions: :mod:`bpr_numpy.metrics`)."""

from __future__ import annotations

import numbers
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
import scipy.sparse as sp

from .._twins import KernelOrTwin
from ._inputs import _as_block_scorer, _check_k, _check_matrix, _score
from ._kernels import _block_kernel
from ._numpy_block import _numpy_block

#: Names accepted by ``evaluate(metrics=...)``. Top-k metrics get ``@k`` appended in
#: the result keys.
METRIC_NAMES: tuple[str, ...] = (
    "full_auc",
    "auc",
    "precision",
    "recall",
    "ndcg",
    "map",
    "hit_rate",
    "mrr",
    "coverage",
)
_TOPK_METRICS = frozenset({"precision", "recall", "ndcg", "map", "hit_rate", "coverage"})

#: Memory budget of one block of float64 scores when ``block_size`` is not given.
#: Throughput is flat from about 2 to 30 MiB (10k-item rows) and 12% lower at 64 MiB,
#: where the block no longer stays in cache between the product and the kernel.
DEFAULT_BLOCK_BYTES: int = 16 * 2**20

#: Largest problem (evaluated users × items) that ``evaluate`` and ``auc_from_scores`` may score
#: with the NumPy twin of the kernel (:mod:`._numpy_block`, whose docstring gives the compile it
#: saves). Warm, the twin costs about 50 ns a score more than the kernel (MovieLens 100k: 0.13
#: against 0.03 s a call): at 3 million scores about 0.15 s, a few percent of that compile.
#: Larger problems (Gowalla: 29,858 × 40,981) use the kernel, whose speed repays its compile.
SMALL_PROBLEM_SCORES: int = 3_000_000

#: The block function ``evaluate`` and ``auc_from_scores`` call: the numba kernel, or for
#: problems of at most :data:`SMALL_PROBLEM_SCORES` scores its twin, by the rent-or-buy rule
#: of :mod:`bpr_numpy._twins` (the same outputs either way, bitwise).
_BLOCK = KernelOrTwin(_block_kernel, _numpy_block)


def _block_function(n_scores: int) -> Callable[..., tuple[np.ndarray, ...]]:
    """The block function for a problem of ``n_scores`` scores."""
    return _BLOCK.choose(n_scores <= SMALL_PROBLEM_SCORES)


def _resolve_metrics(metrics: Iterable[str] | None) -> list[str]:
    if metrics is None:
        return list(METRIC_NAMES)
    if isinstance(metrics, str):
        metrics = [metrics]
    out = []
    for m in metrics:
        if not isinstance(m, str):
            raise TypeError(f"metric names must be strings, got {m!r}")
        if m not in METRIC_NAMES:
            hint = "; the cut-off is given by k" if "@" in m else ""
            raise ValueError(f"unknown metric {m!r}; expected some of {', '.join(METRIC_NAMES)}{hint}")
        if m not in out:
            out.append(m)
    if not out:
        raise ValueError("metrics must name at least one metric")
    return out


def _nanmean(x: np.ndarray) -> float:
    ok = ~np.isnan(x)
    return float(x[ok].mean()) if ok.any() else float("nan")


def evaluate(
    model: Any,
    train: Any,
    test: Any,
    k: int | Sequence[int] = 10,
    *,
    metrics: Iterable[str] | None = None,
    per_user: bool = False,
    exclude_train: bool = True,
    block_size: int | None = None,
    as_frame: bool = False,
) -> dict[str, Any]:
    """Evaluate a model on held-out positives, all metrics in one pass over user blocks.

    Parameters
    ----------
    model : object or callable
        Either an object with ``user_factors`` (n_users × f), ``item_factors``
        (n_items × f) and optionally ``item_bias`` (n_items,) — scores are
        ``user_factors[u] @ item_factors.T + item_bias`` — or a callable
        ``score_block(users) -> array of shape (len(users), n_items)`` (baselines:
        :func:`popularity_scorer`, :func:`random_scorer`). Scores must not be NaN;
        ±inf is allowed.
    train, test : scipy.sparse matrix/array, 2-D array-like or Interactions, shape (n_users, n_items)
        Stored values ``> 0`` are positives. Must have the same shape, be finite,
        and match the model's ``n_users``/``n_items`` when the model has factors. An
        :class:`~bpr_numpy.datasets.Interactions` is read as its ``matrix``; its ids must be
        the model's when the model was fitted on ids.
    k : int or sequence of int, default 10
        Cut-off(s) of the top-k metrics; every ``k`` gets its own keys.
    metrics : iterable of str, optional
        Subset of :data:`METRIC_NAMES` (``"full_auc", "auc", "precision", "recall",
        "ndcg", "map", "hit_rate", "mrr", "coverage"``); all by default. Work not
        needed by the chosen metrics is skipped.
    per_user : bool, default False
        Also return per-user values (for paired significance tests).
    exclude_train : bool, default True
        Remove each user's train positives from the ranking of the top-k metrics and
        MRR (protocol P2). ``full_auc`` (P1) and ``auc`` (P2) follow their protocol
        whatever this says.
    block_size : int, optional
        Users scored at a time. By default chosen so one block of float64 scores
        takes about :data:`DEFAULT_BLOCK_BYTES` (16 MiB).
    as_frame : bool, default False
        With ``per_user=True``: ``"per_user"`` is a pandas DataFrame (pandas needed)
        indexed by ``user``, one column per metric key, instead of a dict of arrays.

    Returns
    -------
    dict
        ``"full_auc"``, ``"auc"``, ``f"precision@{k}"``, ``f"recall@{k}"``,
        ``f"ndcg@{k}"``, ``f"map@{k}"``, ``f"hit_rate@{k}"``, ``"mrr"``,
        ``f"coverage@{k}"`` (those requested) as floats — means over the users for
        which each metric is defined, NaN if there are none — and ``"n_users"``, the
        number of users with at least one test positive (the users evaluated). With
        ``per_user=True`` also ``"users"`` (int64 indices of those users, ascending)
        and ``"per_user"``, a dict from the same metric keys (coverage excepted) to
        float arrays aligned with ``"users"``, NaN where the metric is undefined.

    Notes
    -----
    Definitions, for one user with candidates ranked as in the :mod:`bpr_numpy.metrics` docstring,
    ``rel(r) = 1`` if the item at rank ``r`` (1-based) is relevant, ``n_rel`` the
    number of relevant items:

    - ``full_auc`` (P1): ``(#{(p, n): s_p > s_n} + ½ #{(p, n): s_p = s_n}) / (n_pos n_neg)``
      with p over test positives and n over all other items.
    - ``auc`` (P2): the same with p over test positives that are not train positives
      and n over items that are neither.
    - ``precision@k = hits@k / k`` (k fixed, as LightFM), ``hits@k = Σ_{r≤k} rel(r)``.
    - ``recall@k = hits@k / n_rel``.
    - ``ndcg@k = DCG / IDCG``, ``DCG = Σ_{r≤k} rel(r) / log2(r + 1)``,
      ``IDCG = Σ_{r ≤ min(k, n_rel)} 1 / log2(r + 1)``.
    - ``map@k = Σ_{r≤k} rel(r) · precision@r / min(k, n_rel)``.
    - ``hit_rate@k = 1`` if ``hits@k > 0`` else 0.
    - ``mrr = 1 / r*`` with ``r*`` the rank of the best relevant item in the *full*
      ranking of the candidates (no cut-off).
    - ``coverage@k``: number of distinct items in the top-k lists of the users with
      ``n_rel > 0``, divided by ``n_items`` (NaN when there are no such users).
    """
    wanted = _resolve_metrics(metrics)
    ks = _check_k(k)
    if as_frame and not per_user:
        raise ValueError("as_frame=True shapes the per-user values: it goes with per_user=True")
    train_csr = _check_matrix(_matrix_of(train, model, "train"), "train")
    test_csr = _check_matrix(_matrix_of(test, model, "test"), "test")
    if train_csr.shape != test_csr.shape:
        raise ValueError(f"train has shape {train_csr.shape} but test has shape {test_csr.shape}")
    n_users, n_items = train_csr.shape
    scorer, m_users, m_items = _as_block_scorer(model)
    if m_users is not None and (m_users, m_items) != (n_users, n_items):
        raise ValueError(f"model has {m_users} users and {m_items} items but train/test have shape {train_csr.shape}")
    if block_size is None:
        block_size = max(1, DEFAULT_BLOCK_BYTES // (8 * max(n_items, 1)))
    elif isinstance(block_size, bool) or not isinstance(block_size, (numbers.Integral, np.integer)):
        raise TypeError(f"block_size must be an int, got {block_size!r}")
    elif block_size < 1:
        raise ValueError(f"block_size must be >= 1, got {block_size}")
    block_size = int(block_size)

    tr_pos = train_csr.data > 0
    te_pos = test_csr.data > 0
    # Users with a test positive, without a Python loop over users.
    te_rows = np.repeat(np.arange(n_users), np.diff(test_csr.indptr))
    users = np.flatnonzero(np.bincount(te_rows[te_pos], minlength=n_users) > 0).astype(np.int64)
    n_eval = len(users)

    want_topk = any(m in _TOPK_METRICS for m in wanted)
    # No ranking is longer than the catalogue: ranks beyond it are misses, never stored
    # (a k of 10**12 must not allocate 10**12 slots).
    kmax = min(max(ks), n_items) if want_topk else 0
    do_auc = "full_auc" in wanted or "auc" in wanted
    do_mrr = "mrr" in wanted
    # index arrays in one dtype each so the kernel compiles once
    tr_indptr = train_csr.indptr.astype(np.int64)
    te_indptr = test_csr.indptr.astype(np.int64)
    tr_indices = train_csr.indices.astype(np.int32, copy=False)
    te_indices = test_csr.indices.astype(np.int32, copy=False)

    per: dict[str, np.ndarray] = {}
    keys_user: list[str] = []
    if "full_auc" in wanted:
        keys_user.append("full_auc")
    if "auc" in wanted:
        keys_user.append("auc")
    for kk in ks:
        keys_user.extend(f"{m}@{kk}" for m in ("precision", "recall", "ndcg", "map", "hit_rate") if m in wanted)
    if do_mrr:
        keys_user.append("mrr")
    for key in keys_user:
        per[key] = np.full(n_eval, np.nan)
    # Smallest rank at which each item appears in any top list: coverage@k for every k.
    min_rank = np.full(n_items, np.iinfo(np.int64).max, np.int64) if "coverage" in wanted else None
    # 1 / log2(r + 1) for r = 1..kmax, and the cumulative ideal DCG.
    discount = 1.0 / np.log2(np.arange(2, kmax + 2, dtype=np.float64))
    ideal = np.concatenate(([0.0], np.cumsum(discount)))

    # Same outputs either way (bitwise): numba pays a compile of seconds in a fresh cache.
    block_function = _block_function(n_eval * n_items)
    n_topk_users = 0
    for start in range(0, n_eval, block_size):
        ub = users[start : start + block_size]
        sl = slice(start, start + len(ub))
        scores = _score(scorer, ub, n_items)
        fa, a2, top, hits, n_rel, first_rank, nan_rows = block_function(
            scores, ub, tr_indptr, tr_indices, tr_pos, te_indptr, te_indices, te_pos,
            kmax, bool(exclude_train), do_auc, do_mrr,
        )  # fmt: skip
        if nan_rows.any():
            raise ValueError(f"the scorer returned NaN scores (user {ub[nan_rows][0]})")
        if "full_auc" in per:
            per["full_auc"][sl] = fa
        if "auc" in per:
            per["auc"][sl] = a2
        if do_mrr:
            per["mrr"][sl] = np.where(first_rank > 0, 1.0 / np.maximum(first_rank, 1), np.nan)
        if kmax == 0:
            continue
        has = n_rel > 0
        n_topk_users += int(np.count_nonzero(has))
        cum = np.cumsum(hits, axis=1)
        ranks = np.arange(1, kmax + 1)
        prec_at_r = cum / ranks
        for kk in ks:
            kc = min(kk, kmax)  # the columns that can hold a hit
            nh = cum[:, kc - 1].astype(np.float64)
            if f"precision@{kk}" in per:
                per[f"precision@{kk}"][sl] = np.where(has, nh / kk, np.nan)
            if f"recall@{kk}" in per:
                per[f"recall@{kk}"][sl] = np.where(has, nh / np.maximum(n_rel, 1), np.nan)
            if f"hit_rate@{kk}" in per:
                per[f"hit_rate@{kk}"][sl] = np.where(has, (nh > 0).astype(np.float64), np.nan)
            denom_n = np.minimum(n_rel, kk)
            if f"ndcg@{kk}" in per:
                dcg = hits[:, :kc] @ discount[:kc]
                idcg = np.maximum(ideal[denom_n], 1e-300)  # users with n_rel = 0 become NaN
                per[f"ndcg@{kk}"][sl] = np.where(has, dcg / idcg, np.nan)
            if f"map@{kk}" in per:
                ap = (prec_at_r[:, :kc] * hits[:, :kc]).sum(axis=1)
                per[f"map@{kk}"][sl] = np.where(has, ap / np.maximum(denom_n, 1), np.nan)
        if min_rank is not None:
            top_has = top[has]
            for r in range(kmax):
                col = top_has[:, r]
                col = col[col >= 0]
                # duplicates in col all write the same value, so fancy assignment is safe
                min_rank[col] = np.minimum(min_rank[col], r)

    result: dict[str, Any] = {}
    for key in keys_user:
        result[key] = _nanmean(per[key])
    if min_rank is not None:
        for kk in ks:
            result[f"coverage@{kk}"] = (
                float(np.count_nonzero(min_rank < kk)) / n_items if n_topk_users else float("nan")
            )
    # Present keys in the documented order.
    order = ["full_auc", "auc"]
    for kk in ks:
        order += [f"{m}@{kk}" for m in ("precision", "recall", "ndcg", "map", "hit_rate")]
    order += ["mrr"] + [f"coverage@{kk}" for kk in ks]
    result = {key: result[key] for key in order if key in result}
    result["n_users"] = n_eval
    if per_user:
        result["users"] = users
        if as_frame:
            from .._frames import per_user_frame

            per = per_user_frame(users, per)
        result["per_user"] = per
    return result


# --------------------------------------------------------------------------- single metrics


def full_auc(model: Any, train: Any, test: Any, *, block_size: int | None = None) -> float:
    """Mean per-user ROC AUC over all items, train positives as negatives (protocol P1).

    Per user: ``(#{(p, n): s_p > s_n} + ½ #{(p, n): s_p = s_n}) / (n_pos n_neg)`` with
    p over the test positives and n over every other item (train positives
    included). Averaged over users with at least one test positive and one other
    item. See :func:`evaluate` for the parameters.

    Returns
    -------
    float
        The mean, NaN when no user qualifies.
    """
    return evaluate(model, train, test, metrics=["full_auc"], block_size=block_size)["full_auc"]


def auc(model: Any, train: Any, test: Any, *, block_size: int | None = None) -> float:
    """Mean per-user AUC with train positives removed (protocol P2).

    Per user: the pair count of :func:`full_auc` with p over the test positives that
    are not train positives and n over the items that are neither. Users with no
    such positive or no such negative are left out. See :func:`evaluate`.

    Returns
    -------
    float
        The mean, NaN when no user qualifies.
    """
    return evaluate(model, train, test, metrics=["auc"], block_size=block_size)["auc"]


def _topk_metric(name: str, model: Any, train: Any, test: Any, k: int, exclude_train: bool,
                 block_size: int | None) -> float:  # fmt: skip
    if isinstance(k, bool) or not isinstance(k, (numbers.Integral, np.integer)):
        raise TypeError(f"k must be an int, got {k!r}")
    res = evaluate(model, train, test, k, metrics=[name], exclude_train=exclude_train,
                   block_size=block_size)  # fmt: skip
    return res[f"{name}@{int(k)}"]


def precision_at_k(model: Any, train: Any, test: Any, k: int = 10, *, exclude_train: bool = True,
                   block_size: int | None = None) -> float:  # fmt: skip
    """Mean precision@k: hits in the top k divided by k (k fixed, as in LightFM).

    The top k are taken among the non-train items (``exclude_train=True``, P2),
    ties broken by lower item index; if fewer than k candidates exist all are
    ranked and the rest count as misses. Averaged over users with at least one
    relevant item. See :func:`evaluate`.

    Returns
    -------
    float
    """
    return _topk_metric("precision", model, train, test, k, exclude_train, block_size)


def recall_at_k(model: Any, train: Any, test: Any, k: int = 10, *, exclude_train: bool = True,
                block_size: int | None = None) -> float:  # fmt: skip
    """Mean recall@k: hits in the top k divided by the user's number of relevant items.

    Relevant items are the test positives among the candidates (with
    ``exclude_train=True``, test positives that are not train positives). See
    :func:`evaluate`.

    Returns
    -------
    float
    """
    return _topk_metric("recall", model, train, test, k, exclude_train, block_size)


def ndcg_at_k(model: Any, train: Any, test: Any, k: int = 10, *, exclude_train: bool = True,
              block_size: int | None = None) -> float:  # fmt: skip
    """Mean NDCG@k with binary relevance.

    ``DCG = Σ_{hit at rank r ≤ k} 1 / log2(r + 1)``; ``IDCG`` is the DCG of
    ``min(k, n_rel)`` hits at ranks 1, 2, .... See :func:`evaluate`.

    Returns
    -------
    float
    """
    return _topk_metric("ndcg", model, train, test, k, exclude_train, block_size)


def map_at_k(model: Any, train: Any, test: Any, k: int = 10, *, exclude_train: bool = True,
             block_size: int | None = None) -> float:  # fmt: skip
    """Mean average precision@k: ``Σ_{hit at rank r ≤ k} precision@r / min(k, n_rel)``.

    See :func:`evaluate`.

    Returns
    -------
    float
    """
    return _topk_metric("map", model, train, test, k, exclude_train, block_size)


def hit_rate_at_k(model: Any, train: Any, test: Any, k: int = 10, *, exclude_train: bool = True,
                  block_size: int | None = None) -> float:  # fmt: skip
    """Fraction of users with at least one relevant item in their top k.

    See :func:`evaluate`.

    Returns
    -------
    float
    """
    return _topk_metric("hit_rate", model, train, test, k, exclude_train, block_size)


def coverage_at_k(model: Any, train: Any, test: Any, k: int = 10, *, exclude_train: bool = True,
                  block_size: int | None = None) -> float:  # fmt: skip
    """Fraction of the catalogue that appears in at least one evaluated user's top k.

    The users are those with at least one relevant item (as for the other top-k
    metrics); the denominator is ``n_items``. See :func:`evaluate`.

    Returns
    -------
    float
    """
    return _topk_metric("coverage", model, train, test, k, exclude_train, block_size)


def mrr(model: Any, train: Any, test: Any, *, exclude_train: bool = True,
        block_size: int | None = None) -> float:  # fmt: skip
    """Mean reciprocal rank of the first relevant item in the full ranking (no cut-off).

    The rank is taken among the candidates (non-train items with
    ``exclude_train=True``), ties broken by lower item index. See :func:`evaluate`.

    Returns
    -------
    float
    """
    return evaluate(model, train, test, metrics=["mrr"], exclude_train=exclude_train,
                    block_size=block_size)["mrr"]  # fmt: skip


def auc_from_scores(scores: np.ndarray, positives: np.ndarray, candidates: np.ndarray | None = None) -> np.ndarray:
    """Per-row AUC of a dense score matrix (Mann-Whitney U, ties one half).

    Parameters
    ----------
    scores : array of shape (n_rows, n_items) or (n_items,)
        Scores, not NaN.
    positives : bool array of the same shape
        Items labelled 1. Positives outside ``candidates`` are ignored.
    candidates : bool array of the same shape, optional
        Items taking part (default: all). Negatives are the candidates that are
        not positives.

    Returns
    -------
    ndarray of float64, shape (n_rows,) (a 0-d array for 1-D input)
        ``(#{(p, n): s_p > s_n} + ½ #{(p, n): s_p = s_n}) / (n_pos n_neg)``; NaN for
        rows without a positive or without a negative.
    """
    s = np.asarray(scores, dtype=np.float64)
    one_d = s.ndim == 1
    s = np.atleast_2d(s)
    if s.ndim != 2:
        raise ValueError(f"scores must be 1-D or 2-D, got {s.ndim}-D")
    pos = np.atleast_2d(np.asarray(positives, dtype=bool))
    if pos.shape != s.shape:
        raise ValueError(f"positives has shape {pos.shape} but scores has shape {s.shape}")
    if candidates is None:
        cand = np.ones_like(pos)
    else:
        cand = np.atleast_2d(np.asarray(candidates, dtype=bool))
        if cand.shape != s.shape:
            raise ValueError(f"candidates has shape {cand.shape} but scores has shape {s.shape}")
    if np.isnan(s).any():
        raise ValueError("scores contain NaN")
    # Non-candidates play the part of train positives, so P2 of the kernel is this AUC.
    excl = sp.csr_array(~cand)
    tst = sp.csr_array(pos & cand)
    n = s.shape[0]
    _, a2, *_ = _block_function(s.size)(
        np.ascontiguousarray(s), np.arange(n, dtype=np.int64),
        excl.indptr.astype(np.int64), excl.indices.astype(np.int32), excl.data.astype(bool),
        tst.indptr.astype(np.int64), tst.indices.astype(np.int32), tst.data.astype(bool),
        0, True, True, False,
    )  # fmt: skip
    return a2[0] if one_d else a2


def _matrix_of(x: Any, model: Any, name: str) -> Any:
    """``x``, or the matrix of an Interactions (its ids checked against a model fitted on ids)."""
    from ..datasets import Interactions

    if not isinstance(x, Interactions):
        return x
    for ids, mine, theirs in (
        ("user_ids", getattr(model, "user_ids", None), x.user_ids),
        ("item_ids", getattr(model, "item_ids", None), x.item_ids),
    ):
        if mine is not None and (len(mine) != len(theirs) or not np.array_equal(mine, theirs)):
            raise ValueError(
                f"{name}'s {ids} differ from the model's: its rows and columns would mean other users or "
                "items (align them first: Interactions.with_id_space_of)"
            )
    return x.matrix
