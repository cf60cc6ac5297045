"""Several negatives per positive: the objective, its gradients and the reference step.

With ``n_negatives = k``, a sampled positive pair ``(u, i)`` comes with ``k`` negatives
``j_1 .. j_k`` and its objective is the **mean of its k triplets' objectives**::

    L(u, i, j_1..j_k) = (1/k) sum_m L(u, i, j_m)
                      = (1/k) sum_m [ell(x_uij_m) + (lambda_j / 2) |h_jm|^2 + (lambda_b / 2) b_jm^2]
                        + (lambda_u / 2) |w_u|^2 + (lambda_i / 2) |h_i|^2 + (lambda_b / 2) b_i^2

(``L(u, i, j)`` the plain triplet objective of :mod:`bpr_numpy.objective`). With ``k = 1`` it is
the plain objective. The mean, not the sum, keeps the step's scale, and so the learning rate's
meaning, whatever ``k`` (RecBole's and BARS's "several negatives" add the pair losses; their
sum is this objective with the learning rate multiplied by ``k`` and the penalties of ``w_u``
and ``h_i`` by ``k``). With ``s_m = ell'(x_uij_m)``::

    dL/dw_u  = (1/k) sum_m s_m (h_i - h_jm) + lambda_u w_u
    dL/dh_i  = ((1/k) sum_m s_m) w_u          + lambda_i h_i
    dL/dh_jm = (1/k) (-s_m w_u + lambda_j h_jm)   (summed over m where a negative repeats)
    dL/db_i  = (1/k) sum_m s_m                + lambda_b b_i
    dL/db_jm = (1/k) (-s_m + lambda_b b_jm)

**The sampled softmax** (``loss="softmax"``, a *joint* loss of the registry) replaces the mean
of the k pair losses by one function of the k scores together::

    L(u, i, j_1..j_k) = ln(1 + sum_m exp(-x_uij_m)) + the same penalties

the cross-entropy of the positive against its k negatives (``-ln`` of the positive's softmax
probability among the k + 1 items, since ``x_uij = x_ui - x_uj``). With ``k = 1`` it is
``-ln sigma(x_uij)``, BPR. Its slopes are ``s_m = -exp(-x_uij_m) / (1 + sum_m' exp(-x_uij_m'))``
(each in (-1, 0), their sum > -1), which take the place of ``(1/k) ell'(x_uij_m)`` in every
gradient above: a negative that scores close to (or above) the positive gets most of the step,
a soft version of DNS's hardest-of-k. The penalties are shared as for the mean.

The hardest-of-k (keep only the best-scored negative) is DNS, the ``"dns"`` sampler; the two
combine: with ``sampler="dns"`` each of the k negatives is the best of ``dns_candidates``.

A negative index of -1 means "none found" (a user who holds nearly every item): it is left
out and the mean is over the negatives found; a positive with none is skipped. The kernels
(:mod:`bpr_numpy._kernels._negatives`) apply :func:`multi_negative_step` and are tested
against it; :func:`bpr_numpy.gradcheck.check_gradients` checks :func:`multi_negative_gradients`
against finite differences of :func:`multi_negative_loss` when given 2-D negatives.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from ._optimizers import OptimizerState, _optimizer_rows
from ._plain import Gradients, Regularization, _check_batch, pair_loss, triplet_terms
from ._registry import LOSS_REGISTRY, OPTIMIZER_ADAM, OPTIMIZER_ADAM_DENSE, optimizer_code


def expand_negatives(
    users: np.ndarray, positives: np.ndarray, negatives: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The triplets of a batch with ``k`` negatives per positive, and each triplet's share ``1 / k_t``.

    Parameters
    ----------
    users, positives : ndarray of int, shape (batch,)
    negatives : ndarray of int, shape (batch, k)
        -1 marks a negative that was not found (left out of its positive's mean).

    Returns
    -------
    (users, positives, negatives, share) : tuple of ndarray
        One entry per negative found, in row order; ``share`` is ``1 / k_t``, ``k_t`` the number
        of negatives found for that positive.
    """
    return _triplets(users, positives, negatives)[:4]


def _triplets(users, positives, negatives):
    """:func:`expand_negatives`'s four arrays, checked, and the batch row each triplet comes from."""
    u = np.asarray(users)
    i = np.asarray(positives)
    j = np.asarray(negatives)
    if j.ndim != 2 or not np.issubdtype(j.dtype, np.integer):
        raise TypeError(f"negatives must be a 2-D integer array (batch, k), got dtype {j.dtype} and shape {j.shape}")
    if u.ndim != 1 or i.shape != u.shape or j.shape[0] != u.shape[0]:
        raise ValueError(
            f"users and positives must be 1-D of the length of negatives' first axis; got shapes "
            f"{u.shape}, {i.shape}, {j.shape}"
        )
    if j.size and j.min() < -1:
        raise ValueError("negatives holds an index below -1 (-1 marks a negative not found)")
    found = j >= 0
    per_row = found.sum(axis=1)
    share = np.zeros(j.shape, np.float64)
    np.divide(1.0, per_row[:, None], out=share, where=found & (per_row[:, None] > 0))
    rows, cols = np.nonzero(found)
    return u[rows], i[rows], j[rows, cols], share[rows, cols], rows


def _joint(loss: str) -> bool:
    if loss not in LOSS_REGISTRY:
        raise ValueError(f"loss must be one of {tuple(LOSS_REGISTRY)}, got {loss!r}")
    return LOSS_REGISTRY[loss].joint


def _softmax_terms(x: np.ndarray, rows: np.ndarray, n_rows: int) -> tuple[np.ndarray, np.ndarray]:
    """The sampled softmax's per-positive loss ``ln(1 + sum_m e^-x_m)`` and per-triplet slopes.

    ``x``: one score difference per triplet; ``rows``: the positive (row of the batch) each
    belongs to. Stable: shifted by each positive's ``max(0, max_m -x_m)``.
    """
    z = -x
    shift = np.zeros(n_rows)
    np.maximum.at(shift, rows, z)
    total = np.exp(-shift)  # the positive's own term, e^0, shifted
    np.add.at(total, rows, np.exp(z - shift[rows]))
    lse = shift + np.log(total)  # ln(1 + sum_m e^-x_m) per positive
    return lse, -np.exp(z - lse[rows])


def multi_negative_loss(
    user_factors: np.ndarray,
    item_factors: np.ndarray,
    item_bias: np.ndarray | None,
    users: np.ndarray,
    positives: np.ndarray,
    negatives: np.ndarray,
    *,
    loss: str = "bpr",
    regularization: float | Mapping[str, float] | Regularization = 0.0,
) -> float:
    """Summed objective of a batch of positives with ``k`` negatives each (the module's ``L``).

    Parameters
    ----------
    user_factors, item_factors, item_bias
        As in :func:`bpr_numpy.objective.triplet_loss`.
    users, positives : ndarray of int, shape (batch,)
    negatives : ndarray of int, shape (batch, k)
        -1: not found, left out.
    loss : {"bpr", "sigmoid", "softmax"}
        A pair loss (the mean of the k triplet objectives) or ``"softmax"`` (the sampled
        softmax, joint over the k negatives).
    regularization : float, mapping or Regularization

    Returns
    -------
    float
        ``sum_t L(u_t, i_t, j_t1..j_tk)``, float64.
    """
    reg = Regularization.coerce(regularization)
    u, i, j, share, rows = _triplets(users, positives, negatives)
    U, V, b, u, i, j = _check_batch(user_factors, item_factors, item_bias, u, i, j)
    x = np.einsum("bf,bf->b", U[u], V[i] - V[j]) + b[i] - b[j]
    if _joint(loss):
        lse, _ = _softmax_terms(x, rows, np.shape(negatives)[0])
        # Each triplet carries its share of its positive's softmax term, so the sum below counts it once.
        per_triplet = lse[rows]
    else:
        per_triplet = pair_loss(x, loss)
    per_triplet = per_triplet + 0.5 * reg.user * np.einsum("bf,bf->b", U[u], U[u])
    per_triplet = per_triplet + 0.5 * reg.positive * np.einsum("bf,bf->b", V[i], V[i])
    per_triplet = per_triplet + 0.5 * reg.negative * np.einsum("bf,bf->b", V[j], V[j])
    if item_bias is not None:
        per_triplet = per_triplet + 0.5 * reg.bias * (np.square(b[i]) + np.square(b[j]))
    return float((share * per_triplet).sum())


def multi_negative_gradients(
    user_factors: np.ndarray,
    item_factors: np.ndarray,
    item_bias: np.ndarray | None,
    users: np.ndarray,
    positives: np.ndarray,
    negatives: np.ndarray,
    *,
    loss: str = "bpr",
    regularization: float | Mapping[str, float] | Regularization = 0.0,
) -> Gradients:
    """:func:`multi_negative_loss` and its analytic gradient (the module's formulas), rows accumulated.

    Parameters and shapes as in :func:`multi_negative_loss`; returns
    :class:`~bpr_numpy.objective.Gradients` shaped like the parameters, float64.
    """
    reg = Regularization.coerce(regularization)
    u0, i0, j0, share, rows = _triplets(users, positives, negatives)
    U, V, b, u, i, j = _check_batch(user_factors, item_factors, item_bias, u0, i0, j0)
    gU = np.zeros_like(U)
    gV = np.zeros_like(V)
    gb = np.zeros_like(b)
    if _joint(loss):
        # The softmax's slopes replace share * ell'(x); the penalties are shared as for the mean.
        x = np.einsum("bf,bf->b", U[u], V[i] - V[j]) + b[i] - b[j]
        _, slope = _softmax_terms(x, rows, np.shape(negatives)[0])
        sl, sh = slope[:, None], share[:, None]
        np.add.at(gU, u, sl * (V[i] - V[j]) + sh * reg.user * U[u])
        np.add.at(gV, i, sl * U[u] + sh * reg.positive * V[i])
        np.add.at(gV, j, -sl * U[u] + sh * reg.negative * V[j])
        if item_bias is not None:
            np.add.at(gb, i, slope + share * reg.bias * b[i])
            np.add.at(gb, j, -slope + share * reg.bias * b[j])
    else:
        terms = triplet_terms(U[u], V[i], V[j], b[i], b[j], loss=loss, regularization=reg)
        s = share[:, None]
        np.add.at(gU, u, s * terms.user)
        np.add.at(gV, i, s * terms.positive)
        np.add.at(gV, j, s * terms.negative)
        if item_bias is not None:
            np.add.at(gb, i, share * terms.positive_bias)
            np.add.at(gb, j, share * terms.negative_bias)
    value = multi_negative_loss(
        U, V, None if item_bias is None else b, users, positives, negatives, loss=loss, regularization=reg
    )
    return Gradients(value, gU, gV, gb)


def multi_negative_step(
    user_factors: np.ndarray,
    item_factors: np.ndarray,
    item_bias: np.ndarray | None,
    user: int,
    positive: int,
    negatives: np.ndarray,
    *,
    learning_rate: float,
    loss: str = "bpr",
    regularization: float | Mapping[str, float] | Regularization = 0.0,
    optimizer: str = "sgd",
    state: OptimizerState | None = None,
) -> np.ndarray:
    """One step on a positive with several negatives, in place; the reference the kernels replay.

    The gradient of every touched row (``w_u``, ``h_i``, each distinct ``h_j``, their biases) is
    taken at the old values (:func:`multi_negative_gradients`), then each row moves once by the
    optimiser's rule (:func:`bpr_numpy.objective.apply_rows`): a negative drawn twice moves once,
    by its summed gradient, and lazy Adam advances each touched row's step count once.

    Parameters
    ----------
    user_factors, item_factors, item_bias
        Updated in place (``item_bias`` None: no bias).
    user, positive : int
    negatives : array of int, shape (k,)
        The positive's negatives, none equal to ``positive``; -1 entries are left out.
    learning_rate : float
    loss : {"bpr", "sigmoid", "softmax"}
    regularization : float, mapping or Regularization
    optimizer : {"sgd", "adagrad", "adam"}
    state : OptimizerState, optional
        Required for ``"adagrad"`` and ``"adam"``; updated in place.

    Returns
    -------
    numpy.ndarray, shape (k,)
        ``x_uij`` of each negative before the step (NaN where -1).
    """
    negs = np.asarray(negatives, dtype=np.int64).reshape(-1)
    if (negs == positive).any():
        raise ValueError("a negative equals the positive item")
    code = optimizer_code(optimizer)
    if code == OPTIMIZER_ADAM_DENSE:
        raise ValueError("optimizer='adam-dense' is the minibatch trainer's; the kernels' step is lazy")
    if code and (state is None or state.code != code):
        raise ValueError(f"optimizer {optimizer!r} needs an OptimizerState({optimizer!r}, ...)")
    found = negs[negs >= 0]
    xs = np.full(negs.shape, np.nan)
    if found.size == 0:
        return xs
    U64 = np.asarray(user_factors, dtype=np.float64)
    V64 = np.asarray(item_factors, dtype=np.float64)
    x = (V64[positive] - V64[found]) @ U64[user]
    if item_bias is not None:
        b64 = np.asarray(item_bias, dtype=np.float64)
        x = x + b64[positive] - b64[found]
    xs[negs >= 0] = x
    grads = multi_negative_gradients(
        user_factors,
        item_factors,
        item_bias,
        np.array([user]),
        np.array([positive]),
        negs[None, :],
        loss=loss,
        regularization=regularization,
    )
    items = np.concatenate(([positive], np.unique(found)))
    st = state if code and state is not None else OptimizerState("sgd", 0, 0, user_factors.shape[1])
    if code == OPTIMIZER_ADAM:
        st.user_steps[user] += 1
        st.item_steps[items] += 1
    _optimizer_rows(
        user_factors, grads.user_factors, st.user_first, st.user_second, st.user_steps, np.array([user]), code,
        learning_rate,
    )  # fmt: skip
    _optimizer_rows(
        item_factors, grads.item_factors, st.item_first, st.item_second, st.item_steps, items, code, learning_rate
    )
    if item_bias is not None:
        _optimizer_rows(
            item_bias, grads.item_bias, st.bias_first, st.bias_second, st.item_steps, items, code, learning_rate
        )
    return xs
