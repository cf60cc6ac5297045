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
  widely copied Keras triplet example, offered for reproduction);
* ``"warp"``: ``ell(x) = max(0, 1 - x)``, ``ell'(x) = -1`` for ``x < 1`` and 0
  above (the margin hinge of WARP, Weston et al., IJCAI 2011). WARP scales
  each triplet's term by a weight ``omega = warp_weight(n_items, n_draws)``
  that estimates the positive's rank from how many negatives had to be drawn
  before one violated the margin (:func:`warp_weight`); the weight is a
  constant of the step, not a function of the parameters.

Every pair loss may carry such a per-triplet weight ``omega`` (1 unless
given): the term is ``omega * ell(x_uij)`` and its slope ``omega * ell'(x_uij)``.

The regularisation is applied to the rows a triplet touches, each time they
are touched, with the ``lambda / 2`` convention so that the gradient of the
penalty is ``lambda * theta``. With ``s = ell'(x_uij)``::

    dL/dw_u = s (h_i - h_j) + lambda_u w_u
    dL/dh_i = s w_u         + lambda_i h_i
    dL/dh_j = -s w_u        + lambda_j h_j
    dL/db_i = s             + lambda_b b_i
    dL/db_j = -s            + lambda_b b_j

For ``"bpr"``, ``s = -g`` with ``g = sigma(-x_uij)``, which gives ``-g (h_i - h_j) + lambda_u w_u``
and so on, as written in docs/design.md, 'The mathematics'.

Optimisers
----------
A step on one triplet takes the gradient ``G = dL/dtheta`` of every touched
row at the *old* values of ``w_u, h_i, h_j`` (and ``b_i, b_j``), then updates
each element of those rows with learning rate ``eta`` (:func:`sgd_step`):

* ``"sgd"``: ``theta <- theta - eta G``.
* ``"adagrad"`` (Duchi et al., 2011; LightFM's default): a per-element
  accumulator ``A``, starting at 1 as in LightFM (so the first steps are no
  larger than SGD's), ``A <- A + G^2``, ``theta <- theta - eta G / sqrt(A)``.
* ``"adam"`` (Kingma & Ba, 2015), lazy: per-element moments ``m, v`` and a
  per-row step count ``t``, all advanced only when the row is touched;
  ``m <- beta1 m + (1 - beta1) G``, ``v <- beta2 v + (1 - beta2) G^2``,
  ``theta <- theta - eta (m / (1 - beta1^t)) / (sqrt(v / (1 - beta2^t)) + eps)``.
  The bias correction uses the row's own count, because its moments average
  only the steps that touched it. An item bias shares its item's count.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, NamedTuple

import numpy as np

from ._parameters import as_finite_float

__all__ = [
    "LOSSES",
    "LOSS_REGISTRY",
    "OPTIMIZER_REGISTRY",
    "Loss",
    "Optimizer",
    "Regularization",
    "Gradients",
    "pair_loss",
    "pair_loss_derivative",
    "triplet_scores",
    "triplet_loss",
    "triplet_gradients",
    "sgd_step",
    "fold_in_objective",
    "HybridGradients",
    "hybrid_representations",
    "hybrid_triplet_loss",
    "hybrid_triplet_gradients",
    "hybrid_sgd_step",
    "warp_weight",
    "OPTIMIZERS",
    "OptimizerState",
]

#: The losses' integer codes, as the kernels and the reference compare them.
LOSS_BPR, LOSS_SIGMOID, LOSS_WARP = 0, 1, 2
#: The optimisers' integer codes.
OPTIMIZER_SGD, OPTIMIZER_ADAGRAD, OPTIMIZER_ADAM = 0, 1, 2


class Loss(NamedTuple):
    """A pair loss, defined once (its math is :func:`pair_loss` and :func:`pair_loss_derivative`).

    ``draws_negatives``: the loss draws its own negatives at update time (WARP), from a sampler
    whose ``warp`` capability is set; ``hybrid``/``distributed``: supported with side features /
    by stratified training.
    """

    name: str
    code: int
    parameters: tuple[str, ...]
    draws_negatives: bool
    hybrid: bool
    distributed: bool


class Optimizer(NamedTuple):
    """An update rule, defined once (its math is :func:`_optimizer_rows`, its state :class:`OptimizerState`)."""

    name: str
    code: int
    hybrid: bool
    distributed: bool


#: Every loss, in code order (a name's code is its index in LOSSES; tests/test_registry.py checks it).
LOSS_REGISTRY: dict[str, Loss] = {spec.name: spec for spec in (
    Loss("bpr", LOSS_BPR, (), False, True, True),
    Loss("sigmoid", LOSS_SIGMOID, (), False, True, True),
    Loss("warp", LOSS_WARP, ("max_sampled",), True, False, False),
)}
#: Every optimiser, in code order.
OPTIMIZER_REGISTRY: dict[str, Optimizer] = {spec.name: spec for spec in (
    Optimizer("sgd", OPTIMIZER_SGD, True, True),
    Optimizer("adagrad", OPTIMIZER_ADAGRAD, True, False),
    Optimizer("adam", OPTIMIZER_ADAM, True, False),
)}

#: Names of the pair losses, in the order of their integer codes in the kernels.
LOSSES: tuple[str, ...] = tuple(LOSS_REGISTRY)

#: Names of the optimisers, in the order of their integer codes in the kernels.
OPTIMIZERS: tuple[str, ...] = tuple(OPTIMIZER_REGISTRY)

#: Initial value of AdaGrad's accumulators (LightFM's choice).
ADAGRAD_INITIAL = 1.0
#: Adam's moment decays and denominator offset (the paper's defaults).
ADAM_BETA1, ADAM_BETA2, ADAM_EPSILON = 0.9, 0.999, 1e-8


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


def optimizer_code(optimizer: str) -> int:
    """Integer code of an optimiser name (its index in :data:`OPTIMIZERS`)."""
    if not isinstance(optimizer, str) or optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {optimizer!r}")
    return OPTIMIZERS.index(optimizer)


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
    loss : {"bpr", "sigmoid", "warp"}
        ``"bpr"`` is ``-ln sigma(x)``; ``"sigmoid"`` is ``1 - sigma(x)``;
        ``"warp"`` is ``max(0, 1 - x)`` (unweighted).

    Returns
    -------
    numpy.ndarray
        ``ell(x)`` in float64; finite for every finite ``x``.
    """
    x = np.asarray(x, dtype=np.float64)
    code = loss_code(loss)
    if code == LOSS_BPR:
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
    loss : {"bpr", "sigmoid", "warp"}

    Returns
    -------
    numpy.ndarray
        ``-sigma(-x)`` for ``"bpr"``; ``-sigma(x) sigma(-x)`` for ``"sigmoid"``;
        for ``"warp"``, -1 where ``x < 1`` and 0 elsewhere (the hinge's kink
        at 1 takes the right derivative, as the kernels do). Always in ``[-1, 0]``.
    """
    x = np.asarray(x, dtype=np.float64)
    code = loss_code(loss)
    if code == LOSS_WARP:
        return np.where(x < 1.0, -1.0, 0.0)
    g = _sigmoid(-x)
    if code == LOSS_BPR:
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
    Wu, Hi, Hj = U[u], V[i], V[j]
    x = np.einsum("bf,bf->b", Wu, Hi - Hj) + b[i] - b[j]
    omega = _check_weights(weights, len(u))
    s = (omega * pair_loss_derivative(x, loss))[:, None]

    gU = np.zeros_like(U)
    gV = np.zeros_like(V)
    gb = np.zeros_like(b)
    np.add.at(gU, u, s * (Hi - Hj) + reg.user * Wu)
    np.add.at(gV, i, s * Wu + reg.positive * Hi)
    np.add.at(gV, j, -s * Wu + reg.negative * Hj)
    if item_bias is not None:
        np.add.at(gb, i, s[:, 0] + reg.bias * b[i])
        np.add.at(gb, j, -s[:, 0] + reg.bias * b[j])
    value = triplet_loss(U, V, None if item_bias is None else b, u, i, j, loss=loss, regularization=reg,
                         weights=omega)
    return Gradients(value, gU, gV, gb)


class OptimizerState:
    """Per-parameter memory of an adaptive optimiser, shaped like the parameters.

    ``first`` holds Adam's first moments; ``second`` AdaGrad's accumulators or
    Adam's second moments; ``user_steps``/``item_steps`` Adam's per-row step
    counts. Arrays an optimiser does not use have zero rows, so the kernels
    take the same argument types whatever the optimiser.

    Parameters
    ----------
    optimizer : {"sgd", "adagrad", "adam"}
    n_users, n_items, factors : int
    dtype : numpy dtype
        The parameters' dtype (moments are kept in the same precision).
    """

    def __init__(self, optimizer: str, n_users: int, n_items: int, factors: int, dtype=np.float64) -> None:
        self.optimizer = optimizer
        self.code = optimizer_code(optimizer)
        start = ADAGRAD_INITIAL if self.code == OPTIMIZER_ADAGRAD else 0.0
        shapes = self._shapes(self.code, n_users, n_items, factors)
        (self.user_first, self.item_first, self.bias_first, self.user_second, self.item_second,
         self.bias_second) = (np.full(shape, start if k >= 3 else 0.0, dtype) for k, shape in enumerate(shapes[:6]))
        self.user_steps, self.item_steps = (np.zeros(shape, np.int64) for shape in shapes[6:])

    @staticmethod
    def _shapes(code: int, n_users: int, n_items: int, factors: int) -> list[tuple[int, ...]]:
        """Shapes of the arrays of :meth:`kernel_args` (after the code), in that order."""
        adam = code == OPTIMIZER_ADAM
        rows_u, rows_i = (n_users, n_items) if code else (0, 0)
        adam_u, adam_i = (rows_u, rows_i) if adam else (0, 0)
        return [(adam_u, factors), (adam_i, factors), (adam_i,), (rows_u, factors), (rows_i, factors), (rows_i,),
                (adam_u,), (adam_i,)]

    def fits(self, optimizer: str, n_users: int, n_items: int, factors: int, dtype) -> bool:
        """Whether this state can go on training parameters of these sizes with ``optimizer``.

        Every array is compared with the shape a fresh state would give it: the kernels
        index the moments with the parameters' rows, so a mismatch would reach past them.
        """
        arrays = self.kernel_args()[1:]
        return (optimizer == self.optimizer
                and [a.shape for a in arrays] == self._shapes(self.code, n_users, n_items, factors)
                and all(a.dtype == np.dtype(dtype) for a in arrays[:6]))

    def kernel_args(self) -> tuple:
        """The state as the kernels take it: ``(code, first_u, first_i, first_b, second_u, ...)``."""
        return (self.code, self.user_first, self.item_first, self.bias_first, self.user_second,
                self.item_second, self.bias_second, self.user_steps, self.item_steps)


def _optimizer_rows(theta, grad, first, second, steps, rows, code: int, learning_rate: float) -> None:
    """Apply one optimiser step to ``theta[rows]`` given their gradients ``grad[rows]``."""
    g = grad[rows]
    if code == OPTIMIZER_SGD:
        theta[rows] -= learning_rate * g
        return
    if code == OPTIMIZER_ADAGRAD:
        second[rows] += g * g
        theta[rows] -= learning_rate * g / np.sqrt(second[rows])
        return
    t = steps[rows].astype(np.float64)
    if g.ndim == 2:
        t = t[:, None]
    first[rows] = ADAM_BETA1 * first[rows] + (1.0 - ADAM_BETA1) * g
    second[rows] = ADAM_BETA2 * second[rows] + (1.0 - ADAM_BETA2) * g * g
    m_hat = first[rows] / (1.0 - ADAM_BETA1 ** t)
    v_hat = second[rows] / (1.0 - ADAM_BETA2 ** t)
    theta[rows] -= learning_rate * m_hat / (np.sqrt(v_hat) + ADAM_EPSILON)


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
    weight: float = 1.0,
    optimizer: str = "sgd",
    state: OptimizerState | None = None,
) -> float:
    """Apply one stochastic step for a single triplet, in place; the reference update.

    The gradient of every touched row (``w_u, h_i, h_j``, and ``b_i, b_j``) is
    taken at the old values, then each row moves by the optimiser's rule (see
    the module's notes). This is what the numba kernels do for each sampled
    triplet; the kernel tests replay a triplet sequence through this function
    and compare.

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
    weight : float
        The triplet's weight ``omega`` (WARP's rank weight); 1 otherwise.
    optimizer : {"sgd", "adagrad", "adam"}
    state : OptimizerState, optional
        Required for ``"adagrad"`` and ``"adam"``; updated in place.

    Returns
    -------
    float
        ``x_uij`` before the step.
    """
    if positive == negative:
        raise ValueError("positive and negative item must differ")
    code = optimizer_code(optimizer)
    if code and (state is None or state.code != code):
        raise ValueError(f"optimizer {optimizer!r} needs an OptimizerState({optimizer!r}, ...)")
    u = np.array([user])
    i = np.array([positive])
    j = np.array([negative])
    grads = triplet_gradients(user_factors, item_factors, item_bias, u, i, j,
                              loss=loss, regularization=regularization, weights=np.array([weight]))
    x = triplet_scores(user_factors, item_factors, item_bias, u, i, j)[0]
    items = np.array([positive, negative])
    if code == OPTIMIZER_ADAM:
        state.user_steps[user] += 1
        state.item_steps[items] += 1
    st = state if code else OptimizerState("sgd", 0, 0, user_factors.shape[1])
    # Gradients are dense but zero outside the touched rows: update only those.
    _optimizer_rows(user_factors, grads.user_factors, st.user_first, st.user_second, st.user_steps,
                    np.array([user]), code, learning_rate)
    _optimizer_rows(item_factors, grads.item_factors, st.item_first, st.item_second, st.item_steps,
                    items, code, learning_rate)
    if item_bias is not None:
        _optimizer_rows(item_bias, grads.item_bias, st.bias_first, st.bias_second, st.item_steps,
                        items, code, learning_rate)
    return float(x)


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


# ----------------------------------------------------------------------------- hybrid (side features)
#
# LightFM-style representations: a user is the weighted sum of its features'
# embeddings, an item likewise (and its bias the same sum of per-feature
# biases)::
#
#     w_u = sum_f X[u, f] e_f,    h_i = sum_g Y[i, g] f_g,    b_i = sum_g Y[i, g] c_g
#
# with X (users x user features) and Y (items x item features). One identity
# feature per user and per item (X = I, Y = I) gives back the plain model, and
# the penalties below are then exactly those of :func:`triplet_loss`: each
# *feature* row a triplet touches (a stored entry of X[u], Y[i] or Y[j],
# whatever its value) is penalised once per touch::
#
#     L = omega ell(x_uij) + (lambda_u / 2) sum_{f in X[u]} |e_f|^2
#         + (lambda_i / 2) sum_{g in Y[i]} |f_g|^2 + (lambda_j / 2) sum_{g in Y[j]} |f_g|^2
#         + (lambda_b / 2) (sum_{g in Y[i]} c_g^2 + sum_{g in Y[j]} c_g^2)
#
# By the chain rule, with s = omega ell'(x_uij)::
#
#     dL/de_f = X[u, f] s (h_i - h_j)            + lambda_u e_f                      (f in X[u])
#     dL/df_g = (Y[i, g] - Y[j, g]) s w_u        + (lambda_i [g in i] + lambda_j [g in j]) f_g
#     dL/dc_g = (Y[i, g] - Y[j, g]) s            + lambda_b ([g in i] + [g in j]) c_g
#
# A feature shared by i and j (a genre) gets both terms in one step.


class HybridGradients(NamedTuple):
    """Summed loss and gradients of a batch, shaped like the feature embeddings."""

    loss: float
    user_embeddings: np.ndarray
    item_embeddings: np.ndarray
    item_bias_embeddings: np.ndarray


def _feature_matrix(features, rows: int, columns: int, name: str) -> np.ndarray:
    dense = features.toarray() if hasattr(features, "toarray") else features
    X = np.asarray(dense, dtype=np.float64)
    if X.shape != (rows, columns):
        raise ValueError(f"{name} must have shape ({rows}, {columns}), got {X.shape}")
    return X


def _check_hybrid(user_embeddings, item_embeddings, item_bias_embeddings, user_features, item_features):
    E = np.asarray(user_embeddings, dtype=np.float64)
    F = np.asarray(item_embeddings, dtype=np.float64)
    if E.ndim != 2 or F.ndim != 2 or E.shape[1] != F.shape[1]:
        raise ValueError("user_embeddings and item_embeddings must be 2-D with the same number of columns, "
                         f"got shapes {E.shape} and {F.shape}")
    c = None if item_bias_embeddings is None else np.asarray(item_bias_embeddings, dtype=np.float64)
    if c is not None and c.shape != (F.shape[0],):
        raise ValueError(f"item_bias_embeddings must have shape ({F.shape[0]},), got {c.shape}")
    X = _feature_matrix(user_features, np.shape(user_features)[0], E.shape[0], "user_features")
    Y = _feature_matrix(item_features, np.shape(item_features)[0], F.shape[0], "item_features")
    return E, F, c, X, Y


def hybrid_representations(
    user_embeddings: np.ndarray,
    item_embeddings: np.ndarray,
    item_bias_embeddings: np.ndarray | None,
    user_features,
    item_features,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """User factors ``X E``, item factors ``Y F`` and item biases ``Y c``.

    Parameters
    ----------
    user_embeddings : ndarray, shape (n_user_features, factors)
    item_embeddings : ndarray, shape (n_item_features, factors)
    item_bias_embeddings : ndarray, shape (n_item_features,), or None
    user_features : array or sparse matrix, shape (n_users, n_user_features)
    item_features : array or sparse matrix, shape (n_items, n_item_features)

    Returns
    -------
    user_factors, item_factors, item_bias
        float64; ``item_bias`` is None when ``item_bias_embeddings`` is.
    """
    E, F, c, X, Y = _check_hybrid(user_embeddings, item_embeddings, item_bias_embeddings, user_features,
                                  item_features)
    return X @ E, Y @ F, None if c is None else Y @ c


def _hybrid_terms(user_embeddings, item_embeddings, item_bias_embeddings, user_features, item_features,
                  users, positives, negatives, loss, regularization, weights):
    E, F, c, X, Y = _check_hybrid(user_embeddings, item_embeddings, item_bias_embeddings, user_features,
                                  item_features)
    U, V, b = X @ E, Y @ F, None if c is None else Y @ c
    U, V, b_full, u, i, j = _check_batch(U, V, b, users, positives, negatives)
    reg = Regularization.coerce(regularization)
    x = np.einsum("bf,bf->b", U[u], V[i] - V[j]) + b_full[i] - b_full[j]
    omega = _check_weights(weights, len(u))
    # Touches per feature row: a stored entry of the row counts, whatever its value.
    touch_u = (X[u] != 0).sum(axis=0)
    touch_i = (Y[i] != 0).sum(axis=0)
    touch_j = (Y[j] != 0).sum(axis=0)
    value = (omega * pair_loss(x, loss)).sum()
    value += 0.5 * reg.user * touch_u @ np.einsum("rf,rf->r", E, E)
    value += 0.5 * (reg.positive * touch_i + reg.negative * touch_j) @ np.einsum("rf,rf->r", F, F)
    if c is not None:
        value += 0.5 * reg.bias * (touch_i + touch_j) @ (c * c)
    return E, F, c, X, Y, U, V, u, i, j, x, omega, reg, (touch_u, touch_i, touch_j), float(value)


def hybrid_triplet_loss(
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
    regularization: "float | Mapping[str, float] | Regularization" = 0.0,
    weights: np.ndarray | None = None,
) -> float:
    """Summed objective of a batch of triplets for the hybrid (side-feature) model.

    Parameters
    ----------
    user_embeddings, item_embeddings, item_bias_embeddings, user_features, item_features
        As in :func:`hybrid_representations`.
    users, positives, negatives, loss, regularization, weights
        As in :func:`triplet_loss`; the penalties apply to the feature rows
        each triplet touches (see the notes above this function).

    Returns
    -------
    float
    """
    return _hybrid_terms(user_embeddings, item_embeddings, item_bias_embeddings, user_features, item_features,
                         users, positives, negatives, loss, regularization, weights)[-1]


def hybrid_triplet_gradients(
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
    regularization: "float | Mapping[str, float] | Regularization" = 0.0,
    weights: np.ndarray | None = None,
) -> HybridGradients:
    """Summed loss and its analytic gradient with respect to the feature embeddings.

    Parameters
    ----------
    As in :func:`hybrid_triplet_loss`.

    Returns
    -------
    HybridGradients
        Gradients shaped like the embeddings (``item_bias_embeddings``
        zeros when it is None), float64.
    """
    return _hybrid_gradients(_hybrid_terms(user_embeddings, item_embeddings, item_bias_embeddings, user_features,
                                           item_features, users, positives, negatives, loss, regularization,
                                           weights), loss)


def _hybrid_gradients(terms, loss: str) -> HybridGradients:
    E, F, c, X, Y, U, V, u, i, j, x, omega, reg, touches, value = terms
    touch_u, touch_i, touch_j = touches
    s = omega * pair_loss_derivative(x, loss)
    dY = Y[i] - Y[j]
    gE = X[u].T @ (s[:, None] * (V[i] - V[j])) + reg.user * touch_u[:, None] * E
    gF = dY.T @ (s[:, None] * U[u]) + (reg.positive * touch_i + reg.negative * touch_j)[:, None] * F
    gc = np.zeros(F.shape[0])
    if c is not None:
        gc = dY.T @ s + reg.bias * (touch_i + touch_j) * c
    return HybridGradients(value, gE, gF, gc)


def hybrid_sgd_step(
    user_embeddings: np.ndarray,
    item_embeddings: np.ndarray,
    item_bias_embeddings: np.ndarray | None,
    user_features,
    item_features,
    user: int,
    positive: int,
    negative: int,
    *,
    learning_rate: float,
    loss: str = "bpr",
    regularization: "float | Mapping[str, float] | Regularization" = 0.0,
    optimizer: str = "sgd",
    state: OptimizerState | None = None,
) -> float:
    """One step of the hybrid model on a single triplet, in place; the kernels' reference.

    The gradient of every touched feature row is taken at the old values
    (a feature of both items gets both terms), then each row moves by the
    optimiser's rule, as :func:`sgd_step` does for the plain model. With
    Adam, a touched row's step count advances once per step.

    Parameters
    ----------
    user_embeddings, item_embeddings, item_bias_embeddings
        Updated in place (``item_bias_embeddings`` may be None).
    user_features, item_features
        The feature matrices.
    user, positive, negative : int
    learning_rate, loss, regularization, optimizer
        As in :func:`sgd_step`.
    state : OptimizerState, optional
        Sized by feature rows: ``OptimizerState(optimizer, n_user_features,
        n_item_features, factors)``.

    Returns
    -------
    float
        ``x_uij`` before the step.
    """
    if positive == negative:
        raise ValueError("positive and negative item must differ")
    code = optimizer_code(optimizer)
    if code and (state is None or state.code != code):
        raise ValueError(f"optimizer {optimizer!r} needs an OptimizerState({optimizer!r}, ...)")
    terms = _hybrid_terms(user_embeddings, item_embeddings, item_bias_embeddings, user_features, item_features,
                          np.array([user]), np.array([positive]), np.array([negative]), loss, regularization, None)
    grads = _hybrid_gradients(terms, loss)
    X, Y, x = terms[3], terms[4], float(terms[10][0])
    user_rows = np.flatnonzero(X[user])
    item_rows = np.flatnonzero((Y[positive] != 0) | (Y[negative] != 0))
    if code == OPTIMIZER_ADAM:
        state.user_steps[user_rows] += 1
        state.item_steps[item_rows] += 1
    st = state if code else OptimizerState("sgd", 0, 0, user_embeddings.shape[1])
    _optimizer_rows(user_embeddings, grads.user_embeddings, st.user_first, st.user_second, st.user_steps,
                    user_rows, code, learning_rate)
    _optimizer_rows(item_embeddings, grads.item_embeddings, st.item_first, st.item_second, st.item_steps,
                    item_rows, code, learning_rate)
    if item_bias_embeddings is not None:
        _optimizer_rows(item_bias_embeddings, grads.item_bias_embeddings, st.bias_first, st.bias_second,
                        st.item_steps, item_rows, code, learning_rate)
    return x
