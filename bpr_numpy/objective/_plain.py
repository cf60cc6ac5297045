"""The plain model's math: pair losses, the triplet objective, its gradients, WARP's weight, fold-in.

Derivation in the package docstring (:mod:`bpr_numpy.objective`) and ``docs/design.md``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from .._parameters import as_finite_float
from ._registry import LOSS_BPR, LOSS_SIGMOID, LOSS_SOFTMAX, LOSS_WARP, loss_code


def warp_weight(n_items: int, n_draws: int) -> float:
    """WARP's rank weight ``log(max(1, floor((n_items - 1) / n_draws)))``, as LightFM computes it.

    ``n_draws`` negatives were drawn (uniformly) until one violated the
    margin, so about ``(n_items - 1) / n_draws`` items outrank the positive;
    the log turns that rank estimate into the weight of the step (Weston et
    al.'s ``L(rank)`` with harmonic-like growth).

    Parameters
    ----------
    n_items : int
        Items in the catalogue.
    n_draws : int
        Draws made, the violating one included (``>= 1``).
    """
    if n_draws < 1:
        raise ValueError(f"n_draws must be >= 1, got {n_draws}")
    return math.log(max(1.0, math.floor((n_items - 1) / n_draws)))


@dataclass(frozen=True)
class Regularization:
    """L2 regularisation strengths, one per parameter role.

    Parameters
    ----------
    user : float
        ``lambda_u``, applied to ``w_u``.
    positive : float
        ``lambda_i``, applied to the positive item's factors ``h_i``.
    negative : float
        ``lambda_j``, applied to the negative item's factors ``h_j``. The best
        BPR configurations in the literature often use a different value here
        than for ``positive``.
    bias : float
        ``lambda_b``, applied to ``b_i`` and ``b_j``.
    """

    user: float = 0.0
    positive: float = 0.0
    negative: float = 0.0
    bias: float = 0.0

    def __post_init__(self) -> None:
        for name in ("user", "positive", "negative", "bias"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
                raise TypeError(f"regularization.{name} must be a real number, got {type(value).__name__}")
            if as_finite_float(value) is None or value < 0:
                raise ValueError(f"regularization.{name} must be finite and >= 0, got {value!r}")
            object.__setattr__(self, name, float(value))

    @classmethod
    def coerce(cls, value: float | Mapping[str, float] | Regularization) -> Regularization:
        """Build from a single float (same for every role) or a mapping of roles.

        Parameters
        ----------
        value : float, mapping or Regularization
            A float sets all four strengths. A mapping may name any of
            ``user``, ``positive``, ``negative``, ``bias``; missing roles are 0.

        Returns
        -------
        Regularization
        """
        if isinstance(value, Regularization):
            return value
        if isinstance(value, Mapping):
            unknown = set(value) - {"user", "positive", "negative", "bias"}
            if unknown:
                raise ValueError(
                    f"unknown regularization role(s) {sorted(unknown)}; expected user, positive, negative, bias"
                )
            return cls(**{k: value[k] for k in value})
        if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
            raise TypeError(
                "regularization must be a float or a mapping with keys user/positive/negative/bias, "
                f"got {type(value).__name__}"
            )
        return cls(value, value, value, value)

    def as_tuple(self) -> tuple[float, float, float, float]:
        """The strengths as ``(user, positive, negative, bias)``."""
        return (self.user, self.positive, self.negative, self.bias)


class Gradients(NamedTuple):
    """Summed loss and gradients of a batch, shaped like the parameters."""

    loss: float
    user_factors: np.ndarray
    item_factors: np.ndarray
    item_bias: np.ndarray


def _softplus(x: np.ndarray) -> np.ndarray:
    # softplus(x) = -ln sigma(-x); SciPy's log_expit never overflows, keeps full
    # relative precision for large |x|, and is twice as fast as the textbook
    # max(x, 0) + log1p(exp(-|x|)). Imported here: ``import bpr_numpy`` loads
    # this module eagerly and scipy.special is not cheap to import.
    from scipy.special import log_expit

    return -log_expit(-x)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    from scipy.special import expit

    return expit(x)


def pair_loss(x: np.ndarray, loss: str = "bpr") -> np.ndarray:
    """The pair loss ``ell(x_uij)``, elementwise, without regularisation.

    Parameters
    ----------
    x : array_like
        Score differences ``x_uij``.
    loss : {"bpr", "sigmoid", "warp", "softmax"}
        ``"bpr"`` is ``-ln sigma(x)``; ``"sigmoid"`` is ``1 - sigma(x)``;
        ``"warp"`` is ``max(0, 1 - x)`` (unweighted); ``"softmax"`` with one negative is
        ``ln(1 + e^-x)``, the same as ``"bpr"`` (with several, it is joint:
        :func:`multi_negative_loss`).

    Returns
    -------
    numpy.ndarray
        ``ell(x)`` in float64; finite for every finite ``x``.
    """
    x = np.asarray(x, dtype=np.float64)
    code = loss_code(loss)
    if code in (LOSS_BPR, LOSS_SOFTMAX):
        return _softplus(-x)
    if code == LOSS_SIGMOID:
        return _sigmoid(-x)
    return np.maximum(1.0 - x, 0.0)


def pair_loss_derivative(x: np.ndarray, loss: str = "bpr") -> np.ndarray:
    """The derivative ``ell'(x_uij)``, elementwise.

    Parameters
    ----------
    x : array_like
        Score differences ``x_uij``.
    loss : {"bpr", "sigmoid", "warp", "softmax"}

    Returns
    -------
    numpy.ndarray
        ``-sigma(-x)`` for ``"bpr"`` (and ``"softmax"``, one negative); ``-sigma(x) sigma(-x)`` for ``"sigmoid"``;
        for ``"warp"``, -1 where ``x < 1`` and 0 elsewhere (the hinge's kink
        at 1 takes the right derivative, as the kernels do). Always in ``[-1, 0]``.
    """
    x = np.asarray(x, dtype=np.float64)
    code = loss_code(loss)
    if code == LOSS_WARP:
        return np.where(x < 1.0, -1.0, 0.0)
    g = _sigmoid(-x)
    if code in (LOSS_BPR, LOSS_SOFTMAX):
        return -g
    return -g * _sigmoid(x)


def _check_batch(
    user_factors: np.ndarray,
    item_factors: np.ndarray,
    item_bias: np.ndarray | None,
    users: np.ndarray,
    positives: np.ndarray,
    negatives: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    U = np.asarray(user_factors, dtype=np.float64)
    V = np.asarray(item_factors, dtype=np.float64)
    if U.ndim != 2 or V.ndim != 2 or U.shape[1] != V.shape[1]:
        raise ValueError(
            "user_factors and item_factors must be 2-D with the same number of columns, "
            f"got shapes {U.shape} and {V.shape}"
        )
    b = np.zeros(V.shape[0]) if item_bias is None else np.asarray(item_bias, dtype=np.float64)
    if b.shape != (V.shape[0],):
        raise ValueError(f"item_bias must have shape ({V.shape[0]},), got {b.shape}")
    idx = []
    for name, arr, bound in (
        ("users", users, U.shape[0]),
        ("positives", positives, V.shape[0]),
        ("negatives", negatives, V.shape[0]),
    ):
        a = np.asarray(arr)
        if a.ndim != 1 or not np.issubdtype(a.dtype, np.integer):
            raise TypeError(f"{name} must be a 1-D integer array, got dtype {a.dtype} and shape {a.shape}")
        if a.size and (a.min() < 0 or a.max() >= bound):
            raise ValueError(f"{name} holds an index outside [0, {bound})")
        idx.append(a.astype(np.intp))
    if not (len(idx[0]) == len(idx[1]) == len(idx[2])):
        raise ValueError("users, positives and negatives must have the same length")
    return U, V, b, idx[0], idx[1], idx[2]


def _check_weights(weights, n: int) -> np.ndarray:
    if weights is None:
        return np.ones(n)
    w = np.asarray(weights, dtype=np.float64)
    if w.shape != (n,):
        raise ValueError(f"weights must have shape ({n},), got {w.shape}")
    if not np.isfinite(w).all() or (w < 0).any():
        raise ValueError("weights must be finite and >= 0")
    return w


def triplet_scores(
    user_factors: np.ndarray,
    item_factors: np.ndarray,
    item_bias: np.ndarray | None,
    users: np.ndarray,
    positives: np.ndarray,
    negatives: np.ndarray,
) -> np.ndarray:
    """Score differences ``x_uij = dot(w_u, h_i - h_j) + b_i - b_j`` of a batch.

    Parameters
    ----------
    user_factors : ndarray, shape (n_users, factors)
    item_factors : ndarray, shape (n_items, factors)
    item_bias : ndarray, shape (n_items,), or None
        ``None`` means no item bias.
    users, positives, negatives : ndarray of int, shape (batch,)
        The triplets ``(u, i, j)``.

    Returns
    -------
    numpy.ndarray, shape (batch,)
        ``x_uij`` in float64.
    """
    U, V, b, u, i, j = _check_batch(user_factors, item_factors, item_bias, users, positives, negatives)
    return np.einsum("bf,bf->b", U[u], V[i] - V[j]) + b[i] - b[j]


def triplet_loss(
    user_factors: np.ndarray,
    item_factors: np.ndarray,
    item_bias: np.ndarray | None,
    users: np.ndarray,
    positives: np.ndarray,
    negatives: np.ndarray,
    *,
    loss: str = "bpr",
    regularization: float | Mapping[str, float] | Regularization = 0.0,
    weights: np.ndarray | None = None,
) -> float:
    """Summed objective ``sum_t L(u_t, i_t, j_t)`` of a batch of triplets.

    Parameters
    ----------
    user_factors, item_factors, item_bias, users, positives, negatives
        As in :func:`triplet_scores`. With ``item_bias=None`` the bias terms
        (score and penalty) are absent.
    loss : {"bpr", "sigmoid", "warp"}
    regularization : float, mapping or Regularization
        See :meth:`Regularization.coerce`.
    weights : array_like, shape (batch,), optional
        Per-triplet weights ``omega`` of the pair loss (WARP's rank weights);
        1 when omitted. The penalties are not weighted.

    Returns
    -------
    float
        The loss, float64, including every regularisation term once per
        occurrence of a row in the batch.
    """
    reg = Regularization.coerce(regularization)
    U, V, b, u, i, j = _check_batch(user_factors, item_factors, item_bias, users, positives, negatives)
    x = np.einsum("bf,bf->b", U[u], V[i] - V[j]) + b[i] - b[j]
    total = (_check_weights(weights, len(u)) * pair_loss(x, loss)).sum()
    total += 0.5 * reg.user * np.einsum("bf,bf->", U[u], U[u])
    total += 0.5 * reg.positive * np.einsum("bf,bf->", V[i], V[i])
    total += 0.5 * reg.negative * np.einsum("bf,bf->", V[j], V[j])
    if item_bias is not None:
        total += 0.5 * reg.bias * (np.square(b[i]).sum() + np.square(b[j]).sum())
    return float(total)


class TripletTerms(NamedTuple):
    """Each triplet's score and its gradient terms, before rows repeated in a batch are summed.

    ``user``, ``positive``, ``negative``: ``dL/dw_u``, ``dL/dh_i``, ``dL/dh_j`` of each triplet
    (regularisation included), shape (batch, factors); ``positive_bias``, ``negative_bias``:
    ``dL/db_i`` and ``dL/db_j``, shape (batch,); ``scores``: ``x_uij``; ``slopes``:
    ``omega ell'(x_uij)``.
    """

    scores: np.ndarray
    slopes: np.ndarray
    user: np.ndarray
    positive: np.ndarray
    negative: np.ndarray
    positive_bias: np.ndarray
    negative_bias: np.ndarray


def triplet_terms(
    Wu: np.ndarray,
    Hi: np.ndarray,
    Hj: np.ndarray,
    bi: np.ndarray,
    bj: np.ndarray,
    *,
    loss: str = "bpr",
    regularization: float | Mapping[str, float] | Regularization = 0.0,
    weights: np.ndarray | None = None,
) -> TripletTerms:
    """The gradient of each triplet's objective ``L`` at the rows it reads (see the module's notes).

    :func:`triplet_gradients` sums these into parameter-shaped arrays; the minibatch trainer
    (:mod:`bpr_numpy.model._minibatch`) sums them over the rows a batch touches. No checks: the
    callers have checked the batch.

    Parameters
    ----------
    Wu, Hi, Hj : ndarray, shape (batch, factors)
        ``w_u``, ``h_i``, ``h_j`` of each triplet.
    bi, bj : ndarray, shape (batch,)
        ``b_i``, ``b_j`` (zeros for a model without item bias).
    loss, regularization, weights
        As in :func:`triplet_loss`.
    """
    reg = Regularization.coerce(regularization)
    x = np.einsum("bf,bf->b", Wu, Hi - Hj) + bi - bj
    omega = np.ones(len(x)) if weights is None else weights
    slopes = omega * pair_loss_derivative(x, loss)
    s = slopes[:, None]
    return TripletTerms(
        x,
        slopes,
        s * (Hi - Hj) + reg.user * Wu,
        s * Wu + reg.positive * Hi,
        -s * Wu + reg.negative * Hj,
        slopes + reg.bias * bi,
        -slopes + reg.bias * bj,
    )


def triplet_gradients(
    user_factors: np.ndarray,
    item_factors: np.ndarray,
    item_bias: np.ndarray | None,
    users: np.ndarray,
    positives: np.ndarray,
    negatives: np.ndarray,
    *,
    loss: str = "bpr",
    regularization: float | Mapping[str, float] | Regularization = 0.0,
    weights: np.ndarray | None = None,
) -> Gradients:
    """Summed loss and its analytic gradient for a batch of triplets.

    Rows repeated in the batch accumulate (``np.add.at``), so the result is the
    exact gradient of :func:`triplet_loss` with respect to every parameter.

    Parameters
    ----------
    user_factors, item_factors, item_bias, users, positives, negatives, loss, regularization, weights
        As in :func:`triplet_loss`.

    Returns
    -------
    Gradients
        ``loss`` (float) and gradients shaped like ``user_factors``,
        ``item_factors`` and ``item_bias`` (zeros when ``item_bias`` is None),
        all float64.
    """
    reg = Regularization.coerce(regularization)
    U, V, b, u, i, j = _check_batch(user_factors, item_factors, item_bias, users, positives, negatives)
    omega = _check_weights(weights, len(u))
    terms = triplet_terms(U[u], V[i], V[j], b[i], b[j], loss=loss, regularization=reg, weights=omega)
    gU = np.zeros_like(U)
    gV = np.zeros_like(V)
    gb = np.zeros_like(b)
    np.add.at(gU, u, terms.user)
    np.add.at(gV, i, terms.positive)
    np.add.at(gV, j, terms.negative)
    if item_bias is not None:
        np.add.at(gb, i, terms.positive_bias)
        np.add.at(gb, j, terms.negative_bias)
    value = triplet_loss(U, V, None if item_bias is None else b, u, i, j, loss=loss, regularization=reg, weights=omega)
    return Gradients(value, gU, gV, gb)


def fold_in_objective(
    user_vector: np.ndarray,
    item_factors: np.ndarray,
    item_bias: np.ndarray | None,
    positives: np.ndarray,
    negatives: np.ndarray,
    loss: str = "bpr",
    user_regularization: float = 0.0,
) -> tuple[float, np.ndarray]:
    """Mean objective of one user over all its (positive, negative) pairs, items frozen.

    Folding in a user learns ``w`` against fixed item factors and biases. With
    negatives drawn uniformly from the non-positives (the default sampler),
    the expected per-sample training objective of the user's triplets is, up
    to terms constant in ``w``::

        J(w) = mean_{i in P, j in N} ell(x_ij) + (lambda_u / 2) |w|^2,
        x_ij = w . (h_i - h_j) + b_i - b_j

    which is :func:`triplet_loss` of the ``|P| |N|`` triplets ``(0, i, j)``
    with only ``lambda_u`` set, divided by ``|P| |N|`` (the tests hold it to
    that). It is evaluated in factored form: the scores ``s = V w + b`` once,
    then a ``|P| x |N|`` matrix of differences, never ``|P| |N|`` gathered rows.
    For ``"bpr"`` it is strictly convex when ``lambda_u > 0``.

    Parameters
    ----------
    user_vector : ndarray, shape (factors,)
        ``w``.
    item_factors : ndarray, shape (n_items, factors)
    item_bias : ndarray, shape (n_items,), or None
    positives, negatives : ndarray of int
        Item indices ``P`` and ``N``; both non-empty.
    loss : {"bpr", "sigmoid", "warp"}
        The pair loss, unweighted (``"warp"`` is the plain margin hinge:
        WARP's rank weights come from its sampling process, not from ``w``).
    user_regularization : float
        ``lambda_u``.

    Returns
    -------
    value : float
        ``J(w)``.
    gradient : ndarray, shape (factors,)
        ``dJ/dw``, float64.
    """
    w = np.asarray(user_vector, dtype=np.float64)
    V = np.asarray(item_factors)
    scores = V @ w if item_bias is None else V @ w + item_bias
    Vp, Vn = V[positives], V[negatives]
    x = scores[positives, None] - scores[None, negatives]
    slope = pair_loss_derivative(x, loss)
    pairs = x.size
    value = pair_loss(x, loss).sum() / pairs + 0.5 * user_regularization * (w @ w)
    # d x_ij / d w = h_i - h_j: sum the slopes over j for each i, over i for each j.
    gradient = (slope.sum(axis=1) @ Vp - slope.sum(axis=0) @ Vn) / pairs + user_regularization * w
    return float(value), gradient.astype(np.float64, copy=False)
