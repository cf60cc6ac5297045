"""The BPR objective and its analytic gradients: the single source of truth for the math.

Everything here is plain, vectorised NumPy in float64. The numba kernels in
:mod:`bpr_numpy._kernels` implement the same SGD update and are tested against
:func:`triplet_gradients`; :mod:`bpr_numpy.gradcheck` checks
:func:`triplet_gradients` against central finite differences of
:func:`triplet_loss`.

Model
-----
Scores are ``x_ui = w_u . h_i + b_i`` (the item bias is optional; a user bias
cancels in ``x_uij = x_ui - x_uj`` and is not a parameter).

Per-triplet objective to *minimise* (BPR-Opt, negated)::

    L(u, i, j) = ell(x_uij)
               + (lambda_u / 2) |w_u|^2 + (lambda_i / 2) |h_i|^2
               + (lambda_j / 2) |h_j|^2 + (lambda_b / 2) (b_i^2 + b_j^2)

with the pair loss ``ell``:

* ``"bpr"``: ``ell(x) = -ln sigma(x) = softplus(-x)``, ``ell'(x) = -sigma(-x)``
  (BPR-Opt of Rendle et al., UAI 2009);
* ``"sigmoid"``: ``ell(x) = 1 - sigma(x) = sigma(-x)``,
  ``ell'(x) = -sigma(x) sigma(-x)`` (a smoothed 0-1 loss; the loss of the
  widely copied Keras triplet example, offered for reproduction).

The regularisation is applied to the rows a triplet touches, each time they
are touched, with the ``lambda / 2`` convention so that the gradient of the
penalty is ``lambda * theta``. With ``s = ell'(x_uij)``::

    dL/dw_u = s (h_i - h_j) + lambda_u w_u
    dL/dh_i = s w_u         + lambda_i h_i
    dL/dh_j = -s w_u        + lambda_j h_j
    dL/db_i = s             + lambda_b b_i
    dL/db_j = -s            + lambda_b b_j

For ``"bpr"``, ``s = -g`` with ``g = sigma(-x_uij)``, which is DESIGN.md's
``-g (h_i - h_j) + lambda_u w_u`` and so on.

An SGD step with learning rate ``eta`` is ``theta <- theta - eta dL/dtheta``,
all three rows computed from the *old* values of ``w_u, h_i, h_j``
(:func:`sgd_step`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, NamedTuple

import numpy as np

__all__ = [
    "LOSSES",
    "Regularization",
    "Gradients",
    "pair_loss",
    "pair_loss_derivative",
    "triplet_scores",
    "triplet_loss",
    "triplet_gradients",
    "sgd_step",
]

#: Names of the pair losses, in the order of their integer codes in the kernels.
LOSSES: tuple[str, ...] = ("bpr", "sigmoid")


def loss_code(loss: str) -> int:
    """Integer code of a loss name, as the numba kernels take it.

    Parameters
    ----------
    loss : str
        One of :data:`LOSSES`.

    Returns
    -------
    int
        The index of ``loss`` in :data:`LOSSES`.
    """
    if not isinstance(loss, str) or loss not in LOSSES:
        raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
    return LOSSES.index(loss)


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
            if not np.isfinite(value) or value < 0:
                raise ValueError(f"regularization.{name} must be finite and >= 0, got {value!r}")
            object.__setattr__(self, name, float(value))

    @classmethod
    def coerce(cls, value: "float | Mapping[str, float] | Regularization") -> "Regularization":
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
                    f"unknown regularization role(s) {sorted(unknown)}; "
                    "expected user, positive, negative, bias"
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
    # max(x, 0) + log1p(exp(-|x|)) never overflows and keeps full relative
    # precision for large |x| (no 1 - tiny cancellation).
    return np.maximum(x, 0.0) + np.log1p(np.exp(-np.abs(x)))


def _sigmoid(x: np.ndarray) -> np.ndarray:
    # exp(-|x|) <= 1, so both branches are overflow-free.
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def pair_loss(x: np.ndarray, loss: str = "bpr") -> np.ndarray:
    """The pair loss ``ell(x_uij)``, elementwise, without regularisation.

    Parameters
    ----------
    x : array_like
        Score differences ``x_uij``.
    loss : {"bpr", "sigmoid"}
        ``"bpr"`` is ``-ln sigma(x)``; ``"sigmoid"`` is ``1 - sigma(x)``.

    Returns
    -------
    numpy.ndarray
        ``ell(x)`` in float64; finite for every finite ``x``.
    """
    x = np.asarray(x, dtype=np.float64)
    if loss_code(loss) == 0:
        return _softplus(-x)
    return _sigmoid(-x)


def pair_loss_derivative(x: np.ndarray, loss: str = "bpr") -> np.ndarray:
    """The derivative ``ell'(x_uij)``, elementwise.

    Parameters
    ----------
    x : array_like
        Score differences ``x_uij``.
    loss : {"bpr", "sigmoid"}

    Returns
    -------
    numpy.ndarray
        ``-sigma(-x)`` for ``"bpr"``; ``-sigma(x) sigma(-x)`` for ``"sigmoid"``.
        Always in ``[-1, 0]``.
    """
    x = np.asarray(x, dtype=np.float64)
    g = _sigmoid(-x)
    if loss_code(loss) == 0:
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
    for name, arr, bound in (("users", users, U.shape[0]), ("positives", positives, V.shape[0]),
                             ("negatives", negatives, V.shape[0])):
        a = np.asarray(arr)
        if a.ndim != 1 or not np.issubdtype(a.dtype, np.integer):
            raise TypeError(f"{name} must be a 1-D integer array, got dtype {a.dtype} and shape {a.shape}")
        if a.size and (a.min() < 0 or a.max() >= bound):
            raise ValueError(f"{name} holds an index outside [0, {bound})")
        idx.append(a.astype(np.intp))
    if not (len(idx[0]) == len(idx[1]) == len(idx[2])):
        raise ValueError("users, positives and negatives must have the same length")
    return U, V, b, idx[0], idx[1], idx[2]


def triplet_scores(
    user_factors: np.ndarray,
    item_factors: np.ndarray,
    item_bias: np.ndarray | None,
    users: np.ndarray,
    positives: np.ndarray,
    negatives: np.ndarray,
) -> np.ndarray:
    """Score differences ``x_uij = w_u . (h_i - h_j) + b_i - b_j`` of a batch.

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
    regularization: "float | Mapping[str, float] | Regularization" = 0.0,
) -> float:
    """Summed objective ``sum_t L(u_t, i_t, j_t)`` of a batch of triplets.

    Parameters
    ----------
    user_factors, item_factors, item_bias, users, positives, negatives
        As in :func:`triplet_scores`. With ``item_bias=None`` the bias terms
        (score and penalty) are absent.
    loss : {"bpr", "sigmoid"}
    regularization : float, mapping or Regularization
        See :meth:`Regularization.coerce`.

    Returns
    -------
    float
        The loss, float64, including every regularisation term once per
        occurrence of a row in the batch.
    """
    reg = Regularization.coerce(regularization)
    U, V, b, u, i, j = _check_batch(user_factors, item_factors, item_bias, users, positives, negatives)
    x = np.einsum("bf,bf->b", U[u], V[i] - V[j]) + b[i] - b[j]
    total = pair_loss(x, loss).sum()
    total += 0.5 * reg.user * np.einsum("bf,bf->", U[u], U[u])
    total += 0.5 * reg.positive * np.einsum("bf,bf->", V[i], V[i])
    total += 0.5 * reg.negative * np.einsum("bf,bf->", V[j], V[j])
    if item_bias is not None:
        total += 0.5 * reg.bias * (np.square(b[i]).sum() + np.square(b[j]).sum())
    return float(total)


def triplet_gradients(
    user_factors: np.ndarray,
    item_factors: np.ndarray,
    item_bias: np.ndarray | None,
    users: np.ndarray,
    positives: np.ndarray,
    negatives: np.ndarray,
    *,
    loss: str = "bpr",
    regularization: "float | Mapping[str, float] | Regularization" = 0.0,
) -> Gradients:
    """Summed loss and its analytic gradient for a batch of triplets.

    Rows repeated in the batch accumulate (``np.add.at``), so the result is the
    exact gradient of :func:`triplet_loss` with respect to every parameter.

    Parameters
    ----------
    user_factors, item_factors, item_bias, users, positives, negatives, loss, regularization
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
    Wu, Hi, Hj = U[u], V[i], V[j]
    x = np.einsum("bf,bf->b", Wu, Hi - Hj) + b[i] - b[j]
    s = pair_loss_derivative(x, loss)[:, None]

    gU = np.zeros_like(U)
    gV = np.zeros_like(V)
    gb = np.zeros_like(b)
    np.add.at(gU, u, s * (Hi - Hj) + reg.user * Wu)
    np.add.at(gV, i, s * Wu + reg.positive * Hi)
    np.add.at(gV, j, -s * Wu + reg.negative * Hj)
    if item_bias is not None:
        np.add.at(gb, i, s[:, 0] + reg.bias * b[i])
        np.add.at(gb, j, -s[:, 0] + reg.bias * b[j])
    value = triplet_loss(U, V, None if item_bias is None else b, u, i, j, loss=loss, regularization=reg)
    return Gradients(value, gU, gV, gb)


def sgd_step(
    user_factors: np.ndarray,
    item_factors: np.ndarray,
    item_bias: np.ndarray | None,
    user: int,
    positive: int,
    negative: int,
    *,
    learning_rate: float,
    loss: str = "bpr",
    regularization: "float | Mapping[str, float] | Regularization" = 0.0,
) -> float:
    """Apply one SGD step for a single triplet, in place; the reference update.

    ``theta <- theta - learning_rate * dL/dtheta`` for ``w_u, h_i, h_j`` (and
    ``b_i, b_j``), every gradient taken at the old values. This is what the
    numba kernels do for each sampled triplet; the kernel tests replay a
    triplet sequence through this function and compare.

    Parameters
    ----------
    user_factors, item_factors : ndarray
        Updated in place.
    item_bias : ndarray or None
        Updated in place; None for a model without item bias.
    user, positive, negative : int
        The triplet; ``positive != negative``.
    learning_rate : float
    loss, regularization
        As in :func:`triplet_loss`.

    Returns
    -------
    float
        ``x_uij`` before the step.
    """
    if positive == negative:
        raise ValueError("positive and negative item must differ")
    u = np.array([user])
    i = np.array([positive])
    j = np.array([negative])
    grads = triplet_gradients(user_factors, item_factors, item_bias, u, i, j,
                              loss=loss, regularization=regularization)
    x = triplet_scores(user_factors, item_factors, item_bias, u, i, j)[0]
    # Gradients are dense but zero outside the touched rows: update only those.
    user_factors[user] -= learning_rate * grads.user_factors[user]
    item_factors[[positive, negative]] -= learning_rate * grads.item_factors[[positive, negative]]
    if item_bias is not None:
        item_bias[[positive, negative]] -= learning_rate * grads.item_bias[[positive, negative]]
    return float(x)
