"""The finite-difference oracle for BPR gradients.

Five-point central differences in float64 on :func:`bpr_numpy.objective.triplet_loss`,
compared with an analytic gradient, :func:`bpr_numpy.objective.triplet_gradients`
by default, or your own: pass ``gradient=`` a function with the same signature
to check another BPR implementation against the oracle.

The error of a parameter block (user factors, item factors, item bias) is the
*block-relative* max error::

    max |analytic - numeric| / max(max |analytic|, max |numeric|, 1e7 * noise)

where ``noise`` is the round-off bound of the stencil (machine epsilon times
the loss values it combines, over the step). Elementwise relative error is
meaningless for entries whose true gradient is zero or tiny (rows the batch
does not touch, or ``sigma(-x) ~ 1e-22`` at ``x = 50``); normalising by the
block's scale keeps the measure strict where it matters: a factor-2 error in
the regularisation gradient, a wrong sign or a missing bias term all show up
as errors of order 1e-2 or more, far above the 1e-6 tolerance. The noise term
matters only for gradients that finite differences cannot resolve to 1e-6 of
themselves, such as the ``"sigmoid"`` loss far on its flat side (loss ~ 1,
gradient ~ 1e-8); those are checked to the resolution the differences have.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ._parameters import Integer, check_allocation, check_random_state
from .objective import (
    Gradients,
    Regularization,
    expand_negatives,
    hybrid_triplet_gradients,
    hybrid_triplet_loss,
    multi_negative_gradients,
    multi_negative_loss,
    triplet_gradients,
    triplet_loss,
)
from .objective._hybrid import _check_hybrid

__all__ = ["GradcheckResult", "check_gradients", "check_hybrid_gradients", "gradcheck", "DEFAULT_TOLERANCE"]

#: Max block-relative error accepted by :func:`gradcheck` and the CLI.
DEFAULT_TOLERANCE = 1e-6

GradientFunction = Callable[..., Gradients]


@dataclass(frozen=True)
class GradcheckResult:
    """Outcome of a finite-difference check.

    Attributes
    ----------
    errors : dict of str to float
        Max block-relative error per parameter block (``"user_factors"``,
        ``"item_factors"`` and, with a bias, ``"item_bias"``), plus
        ``"loss"``: the relative error of the reported loss value.
    tolerance : float
        The threshold :attr:`passed` compares against.
    details : dict
        Problem description (sizes, loss, scale of ``x_uij``).
    """

    errors: dict[str, float]
    tolerance: float = DEFAULT_TOLERANCE
    details: dict = field(default_factory=dict)

    @property
    def max_error(self) -> float:
        """The largest error over all blocks."""
        return max(self.errors.values())

    @property
    def passed(self) -> bool:
        """True when every block's error is at most :attr:`tolerance`."""
        return self.max_error <= self.tolerance

    def __str__(self) -> str:
        lines = [f"{name:>14s}  max relative error {err:.3e}" for name, err in self.errors.items()]
        verdict = "PASS" if self.passed else "FAIL"
        lines.append(f"{verdict}: max {self.max_error:.3e} (tolerance {self.tolerance:.0e})")
        return "\n".join(lines)


#: A block's error is measured against at least this many times the stencil's
#: round-off bound: finite differences cannot resolve a gradient to 1e-6 of
#: itself when it is smaller than ~1e6 times their own noise.
NOISE_HEADROOM = 1e7


def _block_error(analytic: np.ndarray, numeric: np.ndarray, noise: np.ndarray) -> float:
    scale = max(
        float(np.max(np.abs(analytic), initial=0.0)),
        float(np.max(np.abs(numeric), initial=0.0)),
        NOISE_HEADROOM * float(np.max(noise, initial=0.0)),
    )
    if scale < 1e-300:
        return 0.0
    return float(np.max(np.abs(analytic - numeric), initial=0.0) / scale)


def _numeric_gradient(
    loss_of: Callable[[np.ndarray], float],
    param: np.ndarray,
    touching: Callable[[int], np.ndarray],
    eps: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Five-point central differences of the loss for every entry of ``param``.

    The five-point stencil ``(f(-2h) - 8 f(-h) + 8 f(h) - f(2h)) / 12h`` has
    truncation error O(h^4), which allows a step (1e-4) large enough that
    round-off stays near 1e-10 even for parameters of order 1e-4.

    Only the triplets that touch a row can change when that row is perturbed,
    so each difference is taken over those triplets alone (``loss_of(mask)``,
    ``mask = touching(row)``):
    the result is the same derivative, without the round-off of the rest of
    the batch's loss. A row no triplet touches has an exactly zero gradient.

    Returns the gradient and, per entry, the round-off bound of the stencil,
    ``eps_mach (|f(-2h)| + 8|f(-h)| + 8|f(h)| + |f(2h)|) / 12h``.
    """
    grad = np.zeros(param.shape)
    noise = np.zeros(param.shape)
    flat_rows = param.reshape(param.shape[0], -1)  # a view: perturbations are seen by loss_of
    for r in range(param.shape[0]):
        mask = touching(r)
        if not mask.any():
            continue
        g = grad.reshape(param.shape[0], -1)
        z = noise.reshape(param.shape[0], -1)
        for c in range(flat_rows.shape[1]):
            old = flat_rows[r, c]
            h = eps * max(1.0, abs(old))
            values = []
            for k in (-2.0, -1.0, 1.0, 2.0):
                flat_rows[r, c] = old + k * h
                values.append(loss_of(mask))
            flat_rows[r, c] = old
            g[r, c] = (values[0] - 8.0 * values[1] + 8.0 * values[2] - values[3]) / (12.0 * h)
            z[r, c] = (
                np.finfo(np.float64).eps
                * (abs(values[0]) + 8.0 * abs(values[1]) + 8.0 * abs(values[2]) + abs(values[3]))
                / (12.0 * h)
            )
    return grad, noise


def check_gradients(
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
    gradient: GradientFunction | None = None,
    eps: float = 1e-4,
    tolerance: float = DEFAULT_TOLERANCE,
) -> GradcheckResult:
    """Compare an analytic gradient with central finite differences of the BPR loss.

    Every entry of every parameter block is perturbed, so use small problems
    (tens of rows). Untouched rows are included on purpose: a gradient that
    leaks into rows the batch does not use is an error too.

    Parameters
    ----------
    user_factors : ndarray, shape (n_users, factors)
    item_factors : ndarray, shape (n_items, factors)
    item_bias : ndarray, shape (n_items,), or None
    users, positives, negatives : ndarray of int, shape (batch,)
        The triplets; repeats are allowed and must accumulate. ``negatives`` may
        also have shape (batch, k): several negatives per positive, the objective
        :func:`bpr_numpy.objective.multi_negative_loss` and the default gradient
        :func:`bpr_numpy.objective.multi_negative_gradients` (-1 entries left out;
        no ``weights``).
    loss : {"bpr", "sigmoid", "warp"}
        The WARP hinge has a kink at ``x_uij = 1``: a triplet within a few
        steps of it makes the differences straddle the kink, which is not a
        gradient error (``details["kink_distance"]`` reports the closest).
    regularization : float, mapping or Regularization
    weights : array_like, shape (batch,), optional
        Per-triplet weights of the pair loss (WARP's rank weights); passed
        on to ``gradient`` as ``weights=`` when given.
    gradient : callable, optional
        The gradient under test, called as
        ``gradient(U, V, b, users, positives, negatives, loss=..., regularization=...)``
        and returning :class:`~bpr_numpy.objective.Gradients` (or any
        4-tuple ``(loss, dU, dV, db)``). Defaults to
        :func:`bpr_numpy.objective.triplet_gradients`.
    eps : float
        Step of the five-point central differences, scaled by ``max(1, |theta|)``.
    tolerance : float
        Threshold for :attr:`GradcheckResult.passed`.

    Returns
    -------
    GradcheckResult
    """
    reg = Regularization.coerce(regularization)
    U = np.array(user_factors, dtype=np.float64)
    V = np.array(item_factors, dtype=np.float64)
    b = None if item_bias is None else np.array(item_bias, dtype=np.float64)
    users, positives, negatives = (np.asarray(a) for a in (users, positives, negatives))
    several = negatives.ndim == 2
    if several and weights is not None:
        raise ValueError("weights apply to one negative per positive; negatives has shape (batch, k)")
    default = multi_negative_gradients if several else triplet_gradients
    gradient = default if gradient is None else gradient
    omega = np.ones(len(users)) if weights is None else np.asarray(weights, dtype=np.float64)
    extra = {} if weights is None else {"weights": omega.copy()}

    def loss_of(mask: np.ndarray | None = None) -> float:
        if several:
            keep = slice(None) if mask is None else mask
            return multi_negative_loss(
                U, V, b, users[keep], positives[keep], negatives[keep], loss=loss, regularization=reg
            )
        if mask is None:
            return triplet_loss(U, V, b, users, positives, negatives, loss=loss, regularization=reg, weights=omega)
        return triplet_loss(
            U, V, b, users[mask], positives[mask], negatives[mask], loss=loss, regularization=reg, weights=omega[mask]
        )

    reported = gradient(
        U.copy(),
        V.copy(),
        None if b is None else b.copy(),
        users,
        positives,
        negatives,
        loss=loss,
        regularization=reg,
        **extra,
    )
    parts: tuple[Any, ...] = tuple(reported)  # any sequence of four (a Gradients, a list...)
    value, gU, gV, gb = parts
    gU, gV = np.asarray(gU, dtype=np.float64), np.asarray(gV, dtype=np.float64)
    if gU.shape != U.shape or gV.shape != V.shape:
        raise ValueError(f"gradient returned shapes {gU.shape}, {gV.shape}; expected {U.shape}, {V.shape}")

    true_loss = loss_of()
    errors = {"loss": abs(float(value) - true_loss) / max(abs(true_loss), 1e-300) if true_loss else abs(float(value))}

    def of_user(r):
        return users == r

    def of_items(r):
        hit = negatives == r
        return (positives == r) | (hit.any(axis=1) if several else hit)

    errors["user_factors"] = _block_error(gU, *_numeric_gradient(loss_of, U, of_user, eps))
    errors["item_factors"] = _block_error(gV, *_numeric_gradient(loss_of, V, of_items, eps))
    if b is not None:
        gb = np.asarray(gb, dtype=np.float64).reshape(b.shape)
        errors["item_bias"] = _block_error(gb, *_numeric_gradient(loss_of, b, of_items, eps))

    xu, xi, xj = (users, positives, negatives) if not several else expand_negatives(users, positives, negatives)[:3]
    x = np.einsum("bf,bf->b", U[xu], V[xi] - V[xj])
    if b is not None:
        x = x + b[xi] - b[xj]
    details = {
        "n_users": U.shape[0],
        "n_items": V.shape[0],
        "factors": U.shape[1],
        "batch": len(users),
        "negatives_per_positive": negatives.shape[1] if several else 1,
        "loss": loss,
        "item_bias": b is not None,
        "regularization": reg.as_tuple(),
        "max_abs_x": float(np.max(np.abs(x), initial=0.0)),
    }
    if loss == "warp":
        details["kink_distance"] = float(np.min(np.abs(1.0 - x), initial=np.inf))
    return GradcheckResult(errors, tolerance, details)


def gradcheck(
    n_users: int = 7,
    n_items: int = 11,
    factors: int = 8,
    batch: int = 32,
    *,
    loss: str = "bpr",
    item_bias: bool = True,
    regularization: float | Mapping[str, float] | Regularization | None = None,
    scale: float = 1.0,
    random_state: int | None = 0,
    gradient: GradientFunction | None = None,
    tolerance: float = DEFAULT_TOLERANCE,
) -> GradcheckResult:
    """Run the finite-difference oracle on a random problem.

    Parameters
    ----------
    n_users, n_items, factors, batch : int
        Problem size. Triplets are drawn with replacement, so users and items
        repeat within the batch.
    loss : {"bpr", "sigmoid", "warp"}
        For ``"warp"`` each triplet gets a random weight in [0.5, 3) (WARP's
        rank weights are what make it WARP).
    item_bias : bool
        Include the item bias block.
    regularization : float, mapping, Regularization or None
        None draws four distinct strengths in [0.01, 0.1) so that a mix-up of
        roles is caught.
    scale : float
        Standard deviation of the factor entries; the typical ``|x_uij|``
        grows like ``scale**2 * factors``.
    random_state : int or None
    gradient : callable, optional
        The gradient under test (see :func:`check_gradients`).
    tolerance : float

    Returns
    -------
    GradcheckResult
    """
    for name, value in (("n_users", n_users), ("n_items", n_items), ("factors", factors), ("batch", batch)):
        Integer(1).check(name, value, None)
    if n_items < 2:
        raise ValueError("n_items must be at least 2 (a triplet needs two distinct items)")
    check_random_state("random_state", random_state)
    # The parameters, their gradients and the perturbed copies the oracle compares, and the batch's
    # per-triplet rows, in float64.
    check_allocation(
        8 * (4 * (int(n_users) + int(n_items) + 1) + 8 * int(batch)) * (int(factors) + 1),
        f"a gradient check of {n_users} users, {n_items} items, {factors} factors and batch {batch}",
    )
    rng = np.random.default_rng(random_state)
    U = rng.normal(0.0, scale, (n_users, factors))
    V = rng.normal(0.0, scale, (n_items, factors))
    b = rng.normal(0.0, scale, n_items) if item_bias else None
    users = rng.integers(0, n_users, batch)
    positives = rng.integers(0, n_items, batch)
    negatives = (positives + rng.integers(1, n_items, batch)) % n_items  # always != positive
    if regularization is None:
        regularization = Regularization(*rng.uniform(0.01, 0.1, 4))
    weights = rng.uniform(0.5, 3.0, batch) if loss == "warp" else None
    return check_gradients(
        U,
        V,
        b,
        users,
        positives,
        negatives,
        loss=loss,
        regularization=regularization,
        weights=weights,
        gradient=gradient,
        tolerance=tolerance,
    )


def check_hybrid_gradients(
    user_embeddings: np.ndarray,
    item_embeddings: np.ndarray,
    item_bias_embeddings: np.ndarray | None,
    user_features,
    item_features,
    users: np.ndarray,
    positives: np.ndarray,
    negatives: np.ndarray,
    *,
    loss: str = "bpr",
    regularization: float | Mapping[str, float] | Regularization = 0.0,
    eps: float = 1e-4,
    tolerance: float = DEFAULT_TOLERANCE,
) -> GradcheckResult:
    """The oracle for the hybrid model: finite differences of :func:`~bpr_numpy.objective.hybrid_triplet_loss`.

    Compares :func:`~bpr_numpy.objective.hybrid_triplet_gradients` with
    five-point central differences over every entry of the user, item and
    item-bias embeddings (the same stencil and block-relative error as
    :func:`check_gradients`). A triplet touches a feature row when the row
    is stored in its user's (or items') feature row.

    Parameters
    ----------
    user_embeddings, item_embeddings, item_bias_embeddings, user_features, item_features
        As in :func:`bpr_numpy.objective.hybrid_representations`.
    users, positives, negatives, loss, regularization, eps, tolerance
        As in :func:`check_gradients`.

    Returns
    -------
    GradcheckResult
        Blocks ``user_embeddings``, ``item_embeddings`` and (with biases)
        ``item_bias_embeddings``.
    """
    reg = Regularization.coerce(regularization)
    # Copies (np.array): the differences perturb them in place.
    E, F, c, X, Y = _check_hybrid(
        np.array(user_embeddings, dtype=np.float64),
        np.array(item_embeddings, dtype=np.float64),
        None if item_bias_embeddings is None else np.array(item_bias_embeddings, dtype=np.float64),
        user_features,
        item_features,
    )
    # Dense masks of the touched rows below: the oracle is for small problems.
    X, Y = (M.toarray() if hasattr(M, "toarray") else M for M in (X, Y))
    users, positives, negatives = (np.asarray(a) for a in (users, positives, negatives))

    def loss_of(mask: np.ndarray | None = None) -> float:
        m = slice(None) if mask is None else mask
        return hybrid_triplet_loss(E, F, c, X, Y, users[m], positives[m], negatives[m], loss=loss, regularization=reg)

    value, gE, gF, gc = hybrid_triplet_gradients(
        E.copy(),
        F.copy(),
        None if c is None else c.copy(),
        X,
        Y,
        users,
        positives,
        negatives,
        loss=loss,
        regularization=reg,
    )
    true_loss = loss_of()
    errors = {"loss": abs(value - true_loss) / max(abs(true_loss), 1e-300) if true_loss else abs(value)}
    touches_user = X[users] != 0
    touches_item = (Y[positives] != 0) | (Y[negatives] != 0)
    errors["user_embeddings"] = _block_error(gE, *_numeric_gradient(loss_of, E, lambda r: touches_user[:, r], eps))
    errors["item_embeddings"] = _block_error(gF, *_numeric_gradient(loss_of, F, lambda r: touches_item[:, r], eps))
    if c is not None:
        errors["item_bias_embeddings"] = _block_error(
            gc, *_numeric_gradient(loss_of, c, lambda r: touches_item[:, r], eps)
        )
    details = {
        "user_features": X.shape[1],
        "item_features": Y.shape[1],
        "factors": E.shape[1],
        "batch": len(users),
        "loss": loss,
        "regularization": reg.as_tuple(),
    }
    return GradcheckResult(errors, tolerance, details)
