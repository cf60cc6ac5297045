"""Negative samplers: their names, their exact definitions, and the tables the kernels draw from.

The numba kernels (:mod:`bpr_numpy._kernels`) do the drawing; this module
says what each sampler *is*, in plain NumPy: the exact probability of every
item being drawn as the negative of a user (:func:`negative_distribution`),
which the tests compare with the kernels' empirical draws (chi-square), and
the precomputed tables the kernels read (alias table, AOBPR rankings).
About 500 lines on purpose: the registry entry of each sampler sits beside its exact law, which
the chi-square tests read; split, an entry would live apart from the law it names.

Samplers (``BPR(sampler=...)``)
-------------------------------
Every sampler draws the positive the same way (a uniform observed pair,
Rendle's bootstrap); they differ in the negative ``j``:

``"uniform"``
    ``j`` uniform over items, redrawn while it is a known positive of ``u``
    (the paper's definition): uniform over ``u``'s non-positives.
``"uniform-skip"``
    ``j`` uniform over items; a known positive skips the step (counted as
    skipped). cornac's convention.
``"uniform-any"``
    ``j`` uniform over all items, a known positive (even ``i`` itself) kept as
    drawn: what a Keras triplet model fed ``randint`` negatives does (the
    notebook this project started from). ``solver="minibatch"`` only.
``"popularity"``
    ``j`` drawn with probability proportional to ``count(j) ** exponent``
    (``count`` = the item's positives in the training data), redrawn while it
    is a known positive of ``u``. ``exponent=0`` is ``"uniform"``.
``"popularity-skip"``
    The same draw; a known positive skips the step. With ``exponent=1`` this
    is implicit's convention (``j`` is the item of a random observed pair).
``"dns"``
    Dynamic negative sampling (Zhang et al., SIGIR 2013): draw
    ``dns_candidates`` negatives as ``"uniform"`` does and keep the one the
    current model scores highest. A harder negative is more informative, but
    also more often an unobserved positive (a false negative): with many
    candidates the model is pushed to demote items the user would like.
``"aobpr"``
    Adaptive oversampling (Rendle & Freudenthaler, WSDM 2014): draw a rank
    ``r`` from the truncated geometric law ``p(r) ~ exp(-r / lambda)``,
    ``r = 0 .. n_items - 1``, and a factor ``f`` with ``p(f | u) ~ |w_uf| sigma_f``
    (``sigma_f`` the standard deviation of factor ``f`` over items); ``j`` is
    the item at rank ``r`` of factor ``f``'s ranking, descending if
    ``w_uf > 0`` and ascending otherwise. The item bias, when learned, is one
    more factor with ``w_u = 1``. Known positives are redrawn. The rankings
    are refreshed every ``n_items * ln(n_items)`` samples (rounded up to whole
    chunks), as in the paper. ``lambda = aobpr_lambda * n_items``.

A user who holds every item has no negative: the sample is skipped and
counted, never looped on. A negative gets a first draw and at most :data:`MAX_NEGATIVE_TRIES`
redraws, DNS's extra candidates and extra negatives that many draws (then the sample is skipped).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple, cast

import numpy as np

__all__ = [
    "SAMPLERS",
    "REGISTRY",
    "Sampler",
    "SamplerCodes",
    "register_sampler",
    "unregister_sampler",
    "alias_table",
    "popularity_weights",
    "geometric_rank_probabilities",
    "aobpr_rankings",
    "aobpr_refresh_chunks",
    "negative_distribution",
]

# Codes shared with the kernels: how the first candidate is drawn, and which
# factor-dependent choice (if any) replaces or refines it. CANDIDATE_TABLE draws from an alias
# table over items, built from the sampler's ``item_weights`` (the popularity samplers' law).
CANDIDATE_UNIFORM, CANDIDATE_TABLE = 0, 1
CANDIDATE_POPULARITY = CANDIDATE_TABLE  # the name the kernels and tests have always used

#: Redraws before a negative is given up (module docstring; the minibatch trainer: draws in all).
MAX_NEGATIVE_TRIES = 64
ADAPTIVE_NONE, ADAPTIVE_DNS, ADAPTIVE_AOBPR = 0, 1, 2


class SamplerCodes(NamedTuple):
    """How a sampler name maps onto the kernels' switches."""

    candidate: int
    skip_liked: bool
    adaptive: int


class Sampler(NamedTuple):
    """A negative sampler, defined once: everything else (checks, CLI, distributed, docs) reads this.

    Attributes
    ----------
    name : str
        The value of ``BPR(sampler=...)``.
    codes : SamplerCodes
        The kernels' switches.
    parameters : tuple of str
        The ``BPR`` hyperparameters it reads besides ``sampler``.
    warp : bool
        WARP (``loss="warp"``) can draw its candidates from it.
    hybrid : bool
        Supported with side features (the hybrid kernels draw factor-free negatives only).
    distributed : bool
        Supported by stratified training (:mod:`bpr_numpy.distributed`).
    item_weights : callable or None
        For ``codes.candidate == CANDIDATE_TABLE``: ``item_weights(user_items, params)``, the
        candidate law's weight per item (finite, >= 0, not normalised) from the training CSR and
        a dict of the hyperparameters named in ``parameters``. The kernels draw from its alias
        table, and :func:`negative_distribution` takes the same weights.
    keeps_liked : bool
        A known positive drawn as the negative is kept: the triplet trains as drawn (the
        Keras example's negatives). Only ``solver="minibatch"`` draws such a sampler.
    draw : callable or None
        A draw the kernels cannot make, for ``solver="minibatch"`` only:
        ``draw(users, positives, user_items, rng)`` gets a batch's triplets (int arrays), the
        training CSR and the epoch's ``numpy.random.Generator``, and returns one negative item per
        triplet (an int array, ``-1`` to skip the triplet). It replaces the candidate law and the
        redraws: what it returns trains (a known positive included). For example, a "hard"
        negative per training pair chosen from metadata (``benchmarks/stackexchange.py``).
    """

    name: str
    codes: SamplerCodes
    parameters: tuple[str, ...]
    warp: bool
    hybrid: bool
    distributed: bool
    item_weights: Callable[[Any, Mapping[str, Any]], np.ndarray] | None = None
    keeps_liked: bool = False
    draw: Callable[[np.ndarray, np.ndarray, Any, np.random.Generator], np.ndarray] | None = None


def _popularity_item_weights(user_items, params: Mapping[str, Any]) -> np.ndarray:
    """The popularity samplers' law: :func:`popularity_weights` with ``popularity_exponent``."""
    return popularity_weights(user_items, float(params["popularity_exponent"]))


#: Every sampler, in the order of ``SAMPLERS``; the exact law of each is :func:`negative_distribution`.
REGISTRY: dict[str, Sampler] = {
    spec.name: spec
    for spec in (
        Sampler("uniform", SamplerCodes(CANDIDATE_UNIFORM, False, ADAPTIVE_NONE), (), True, True, True),
        Sampler("uniform-skip", SamplerCodes(CANDIDATE_UNIFORM, True, ADAPTIVE_NONE), (), False, True, True),
        Sampler(
            "popularity",
            SamplerCodes(CANDIDATE_TABLE, False, ADAPTIVE_NONE),
            ("popularity_exponent",),
            True,
            True,
            False,
            _popularity_item_weights,
        ),
        Sampler(
            "popularity-skip",
            SamplerCodes(CANDIDATE_TABLE, True, ADAPTIVE_NONE),
            ("popularity_exponent",),
            False,
            True,
            False,
            _popularity_item_weights,
        ),
        Sampler(
            "uniform-any",
            SamplerCodes(CANDIDATE_UNIFORM, False, ADAPTIVE_NONE),
            (),
            False,
            False,
            False,
            keeps_liked=True,
        ),
        Sampler("dns", SamplerCodes(CANDIDATE_UNIFORM, False, ADAPTIVE_DNS), ("dns_candidates",), False, False, False),
        Sampler(
            "aobpr", SamplerCodes(CANDIDATE_UNIFORM, False, ADAPTIVE_AOBPR), ("aobpr_lambda",), False, False, False
        ),
    )
}

#: The sampler names ``BPR(sampler=...)`` accepts (kept up to date by :func:`register_sampler`).
SAMPLERS: tuple[str, ...] = tuple(REGISTRY)
_BUILT_IN = frozenset(REGISTRY)


def register_sampler(spec: Sampler) -> Sampler:
    """Add a negative sampler with a fixed law over items, without touching a kernel.

    From then on ``BPR(sampler=spec.name)``, the command line's ``--sampler``, the
    hyperparameter checks and :func:`negative_distribution` know it. The kernels already draw
    any fixed law given as per-item weights (through an alias table, O(1) a draw) and redraw or
    skip a known positive, so such a sampler is this one definition::

        from bpr_numpy import sampling

        def seen_items(user_items, params):  # uniform over the items anyone interacted with
            return (np.bincount(user_items.indices, minlength=user_items.shape[1]) > 0).astype(float)

        sampling.register_sampler(sampling.Sampler(
            "uniform-seen", sampling.SamplerCodes(sampling.CANDIDATE_TABLE, False, sampling.ADAPTIVE_NONE),
            parameters=(), warp=True, hybrid=True, distributed=False, item_weights=seen_items))

    A draw that depends on the factors (as ``"dns"``, ``"aobpr"``) needs kernel work; see
    ``docs/architecture.md``, "Where to add a sampler". Any other draw, written in NumPy, can
    train with ``solver="minibatch"``: give it as ``draw`` (see :class:`Sampler`).

    Parameters
    ----------
    spec : Sampler
        With ``codes.adaptive == ADAPTIVE_NONE``; ``codes.candidate == CANDIDATE_TABLE`` with an
        ``item_weights`` function, or ``CANDIDATE_UNIFORM`` without one. ``parameters`` are
        existing ``BPR`` hyperparameters that ``item_weights`` reads. ``warp`` needs
        ``skip_liked=False`` (WARP redraws); ``distributed`` must be False (stratified training
        draws the built-in uniform samplers only). With ``draw``: uniform codes, no
        ``item_weights``, ``warp`` and ``keeps_liked`` False.

    Returns
    -------
    Sampler
        ``spec``.
    """
    global SAMPLERS
    if not isinstance(spec, Sampler):
        raise TypeError(f"spec must be a sampling.Sampler, got {type(spec).__name__}")
    if not isinstance(spec.name, str) or not spec.name or spec.name in REGISTRY:
        raise ValueError(f"sampler name {spec.name!r} is empty or taken; taken: {', '.join(REGISTRY)}")
    codes = spec.codes
    if not isinstance(codes, SamplerCodes) or codes.adaptive != ADAPTIVE_NONE:
        raise ValueError("a registered sampler draws a fixed law: codes.adaptive must be ADAPTIVE_NONE")
    if codes.candidate not in (CANDIDATE_UNIFORM, CANDIDATE_TABLE):
        raise ValueError(f"codes.candidate must be CANDIDATE_UNIFORM or CANDIDATE_TABLE, got {codes.candidate!r}")
    if (codes.candidate == CANDIDATE_TABLE) != callable(spec.item_weights):
        raise ValueError("CANDIDATE_TABLE goes with an item_weights function, CANDIDATE_UNIFORM without one")
    if spec.warp and (codes.skip_liked or spec.keeps_liked):
        raise ValueError("warp=True needs skip_liked=False and keeps_liked=False: WARP redraws known positives")
    if spec.keeps_liked and codes.skip_liked:
        raise ValueError("keeps_liked=True and skip_liked=True contradict each other")
    if spec.distributed:
        raise ValueError("distributed=False: stratified training draws the built-in uniform samplers only")
    if spec.draw is not None:
        if not callable(spec.draw):
            raise TypeError(f"draw must be callable, got {type(spec.draw).__name__}")
        if codes != SamplerCodes(CANDIDATE_UNIFORM, False, ADAPTIVE_NONE) or spec.warp or spec.keeps_liked:
            raise ValueError(
                "a sampler with a draw function makes its own draw: codes must be "
                "SamplerCodes(CANDIDATE_UNIFORM, False, ADAPTIVE_NONE), warp and keeps_liked False"
            )
    from .model import BPR  # here, not at import: the model imports this module

    known = BPR._get_param_names()
    unknown = [name for name in spec.parameters if name not in known]
    if unknown:
        raise ValueError(f"parameters {unknown} are not BPR hyperparameters ({', '.join(known)})")
    REGISTRY[spec.name] = spec
    SAMPLERS = tuple(REGISTRY)
    return spec


def unregister_sampler(name: str) -> None:
    """Remove a sampler added by :func:`register_sampler` (the built-in ones stay)."""
    global SAMPLERS
    if name in _BUILT_IN:
        raise ValueError(f"{name!r} is a built-in sampler")
    if name not in REGISTRY:
        raise ValueError(f"no registered sampler {name!r}")
    del REGISTRY[name]
    SAMPLERS = tuple(REGISTRY)


def item_weights(sampler: str, user_items, params: Mapping[str, Any]) -> np.ndarray | None:
    """The candidate weights of ``sampler`` over ``user_items``' items (None for a uniform candidate).

    Checked: one finite, non-negative weight per item. All zeros (no positives at all) gives
    equal weights: nothing is drawn in that case anyway.
    """
    spec = REGISTRY[sampler]
    if spec.item_weights is None:
        return None
    weights = np.asarray(
        spec.item_weights(user_items, {name: params[name] for name in spec.parameters}), dtype=np.float64
    )
    if weights.shape != (user_items.shape[1],) or not np.isfinite(weights).all() or (weights < 0).any():
        raise ValueError(
            f"sampler {sampler!r}: item_weights must give {user_items.shape[1]} finite weights "
            f">= 0, one per item; got shape {weights.shape}"
        )
    if not weights.sum() > 0:
        weights = np.ones_like(weights)
    return weights


def sampler_codes(sampler: str) -> SamplerCodes:
    """The kernel switches of a sampler name; ``ValueError`` for an unknown name."""
    if not isinstance(sampler, str) or sampler not in REGISTRY:
        raise ValueError(f"sampler must be one of {SAMPLERS}, got {sampler!r}")
    return REGISTRY[sampler].codes


def alias_table(weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Walker's alias table (Vose's construction) for drawing ``k`` with probability ``w_k / sum(w)``.

    A draw picks a column ``k`` uniformly and keeps it with probability
    ``prob[k]``, else takes ``alias[k]``: O(1) per draw.

    Parameters
    ----------
    weights : array_like, shape (n,)
        Non-negative, finite, with a positive sum.

    Returns
    -------
    prob : ndarray of float64, shape (n,)
    alias : ndarray of int64, shape (n,)
    """
    w = np.asarray(weights, dtype=np.float64)
    if w.ndim != 1 or w.size == 0:
        raise ValueError(f"weights must be a non-empty 1-D array, got shape {w.shape}")
    if not np.isfinite(w).all() or (w < 0).any():
        raise ValueError("weights must be finite and >= 0")
    total = w.sum()
    if total <= 0:
        raise ValueError("weights must have a positive sum")
    n = w.size
    scaled = (w / total) * n  # normalise first: n / total overflows for subnormal totals
    prob = np.ones(n)
    alias = np.arange(n, dtype=np.int64)
    small = [k for k in range(n) if scaled[k] < 1.0]
    large = [k for k in range(n) if scaled[k] >= 1.0]
    while small and large:
        s = small.pop()
        g = large[-1]
        prob[s] = scaled[s]
        alias[s] = g
        scaled[g] -= 1.0 - scaled[s]
        if scaled[g] < 1.0:
            large.pop()
            small.append(g)
    # Whatever is left is 1 up to round-off: keep it.
    return prob, alias


def alias_probabilities(prob: np.ndarray, alias: np.ndarray) -> np.ndarray:
    """The distribution an alias table draws from (the inverse of :func:`alias_table`)."""
    n = prob.size
    p = prob / n
    np.add.at(p, alias, (1.0 - prob) / n)
    return p


def popularity_weights(user_items, exponent: float) -> np.ndarray:
    """``count(j) ** exponent`` per item; items never seen get 0 (for ``exponent > 0``).

    Parameters
    ----------
    user_items : sparse matrix, shape (n_users, n_items)
        Canonical CSR of positives (as :func:`bpr_numpy._validation.as_user_items` returns).
    exponent : float
        ``>= 0``; 0 gives equal weights.
    """
    counts = np.bincount(user_items.indices, minlength=user_items.shape[1]).astype(np.float64)
    if exponent == 0:
        return np.ones_like(counts)
    top = counts.max(initial=0.0)
    if top > 1 and float(exponent) * math.log(top) > 700:
        # count ** exponent would overflow float64: the same law relative to the most popular item
        # (kept for the overflowing case only, so every other table stays bit for bit as it was).
        return (counts / top) ** float(exponent)
    return counts ** float(exponent)


def geometric_rank_probabilities(n_items: int, lam: float) -> np.ndarray:
    """AOBPR's rank law: ``p(r) ~ exp(-r / lam)`` for ``r = 0, 1, ..., n_items - 1``."""
    r = np.arange(n_items, dtype=np.float64)
    logp = -r / lam
    p = np.exp(logp - logp.max())
    return p / p.sum()


def aobpr_rankings(item_factors: np.ndarray, item_bias: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """AOBPR's per-factor item rankings and factor spreads.

    Parameters
    ----------
    item_factors : ndarray, shape (n_items, factors)
    item_bias : ndarray, shape (n_items,), or None
        When given, the bias is one more factor (whose user weight is 1).

    Returns
    -------
    ranks : ndarray of int32, shape (factors (+1), n_items)
        ``ranks[f, r]`` is the item with the ``r``-th largest value of factor
        ``f`` (ties by lower item index).
    spread : ndarray of float64, shape (factors (+1),)
        The standard deviation of each factor over items.
    """
    V = np.asarray(item_factors, dtype=np.float64)
    if item_bias is not None:
        V = np.column_stack([V, np.asarray(item_bias, dtype=np.float64)])
    ranks = np.argsort(-V, axis=0, kind="stable").T.astype(np.int32)
    return np.ascontiguousarray(ranks), V.std(axis=0)


def aobpr_refresh_chunks(n_items: int, chunk_size: int) -> int:
    """Chunks between two AOBPR refreshes: ``n_items * ln(n_items)`` samples, rounded up to whole chunks."""
    return max(1, math.ceil(n_items * math.log(max(n_items, 2)) / chunk_size))


def _user_factor_weights(w_u: np.ndarray, spread: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """AOBPR's ``p(f | u)`` and the sign of each factor, bias pseudo-factor included."""
    w = np.asarray(w_u, dtype=np.float64)
    if spread.size == w.size + 1:
        w = np.append(w, 1.0)
    weights = np.abs(w) * spread
    total = weights.sum()
    if not total > 0:  # a user with all-zero factors: every factor equally likely
        weights = np.ones_like(weights)
        total = weights.size
    return weights / total, w >= 0


def negative_distribution(
    sampler: str,
    positives: np.ndarray,
    n_items: int,
    *,
    weights: np.ndarray | None = None,
    scores: np.ndarray | None = None,
    dns_candidates: int = 1,
    user_factors_row: np.ndarray | None = None,
    ranks: np.ndarray | None = None,
    spread: np.ndarray | None = None,
    lam: float | None = None,
) -> tuple[np.ndarray, float]:
    """The exact law of one user's negative draw: the reference the kernels are tested against.

    Parameters
    ----------
    sampler : str
        One of :data:`SAMPLERS`.
    positives : array_like of int
        The user's known positives.
    n_items : int
    weights : ndarray, optional
        Candidate weights for the popularity samplers (:func:`popularity_weights`).
    scores : ndarray, optional
        ``x_uj`` for every item (``"dns"``); ties go to the earlier candidate,
        so the law given here assumes distinct scores.
    dns_candidates : int
    user_factors_row, ranks, spread, lam
        AOBPR: ``w_u``, :func:`aobpr_rankings`' output and ``lambda`` in ranks.

    Returns
    -------
    probabilities : ndarray, shape (n_items,)
        ``P(j = item)``; zero on known positives (unless the sampler keeps them).
    skip : float
        Probability that the step is skipped (a known positive was drawn by a
        skip variant, or the user holds every item). Redraw limits are
        ignored (their effect is below ``(share of positives) ** 64``).
    """
    codes = sampler_codes(sampler)
    if REGISTRY[sampler].draw is not None:
        raise ValueError(f"sampler {sampler!r} draws with its own function: its law is that function's")
    liked = np.zeros(n_items, bool)
    if not REGISTRY[sampler].keeps_liked:  # a sampler that keeps positives treats none as liked
        liked[np.asarray(positives, dtype=np.int64)] = True
    if liked.all():
        return np.zeros(n_items), 1.0
    if codes.adaptive == ADAPTIVE_AOBPR:
        # AOBPR's law needs user_factors_row, ranks, spread and lam (see above).
        ranks = cast(np.ndarray, ranks)
        pf, sign = _user_factor_weights(cast(np.ndarray, user_factors_row), cast(np.ndarray, spread))
        pr = geometric_rank_probabilities(n_items, cast(float, lam))
        p = np.zeros(n_items)
        for f in range(pf.size):
            order = ranks[f] if sign[f] else ranks[f][::-1]
            p[order] += pf[f] * pr
    elif codes.candidate == CANDIDATE_POPULARITY:
        p = np.asarray(weights, dtype=np.float64) / np.sum(cast(np.ndarray, weights))  # given for popularity
    else:
        p = np.full(n_items, 1.0 / n_items)
    p = np.where(liked, 0.0, p)
    mass = p.sum()
    if codes.skip_liked:
        return p, 1.0 - mass
    if mass <= 0:
        return np.zeros(n_items), 1.0
    p = p / mass
    if codes.adaptive == ADAPTIVE_DNS and dns_candidates > 1:
        # The best of k independent draws: P(best = j) = F(j)^k - F(j-)^k over the score order.
        order = np.argsort(np.asarray(scores, dtype=np.float64), kind="stable")
        cdf = np.cumsum(p[order])
        below_ = np.concatenate([[0.0], cdf[:-1]])
        best = np.zeros(n_items)
        best[order] = cdf**dns_candidates - below_**dns_candidates
        p = np.where(liked, 0.0, best)
    return p, 0.0
