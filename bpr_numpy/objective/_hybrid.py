"""The model with side features (LightFM-style representations): loss, gradients and a reference step."""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

import numpy as np

from ._optimizers import OptimizerState, _optimizer_rows, _step_code
from ._plain import Regularization, _check_batch, _check_weights, pair_loss, pair_loss_derivative
from ._registry import OPTIMIZER_ADAM, OPTIMIZER_ADAM_DENSE

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


def _feature_matrix(features, rows: int, columns: int, name: str):
    # A scipy sparse matrix stays sparse (CSR, float64): the minibatch trainer passes a batch's
    # rows of a large catalogue's features, which densified would cost rows x features. (Tested
    # by its method rather than scipy.sparse.issparse: importing scipy.sparse costs `import
    # bpr_numpy` a tenth of a second.)
    X = features.tocsr().astype(np.float64) if hasattr(features, "tocsr") else np.asarray(features, np.float64)
    if X.shape != (rows, columns):
        raise ValueError(f"{name} must have shape ({rows}, {columns}), got {X.shape}")
    return X


def _check_hybrid(user_embeddings, item_embeddings, item_bias_embeddings, user_features, item_features):
    E = np.asarray(user_embeddings, dtype=np.float64)
    F = np.asarray(item_embeddings, dtype=np.float64)
    if E.ndim != 2 or F.ndim != 2 or E.shape[1] != F.shape[1]:
        raise ValueError(
            "user_embeddings and item_embeddings must be 2-D with the same number of columns, "
            f"got shapes {E.shape} and {F.shape}"
        )
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
    E, F, c, X, Y = _check_hybrid(user_embeddings, item_embeddings, item_bias_embeddings, user_features, item_features)
    return X @ E, Y @ F, None if c is None else Y @ c


def _touches(rows) -> np.ndarray:
    """Per feature, the stored nonzero entries of ``rows`` (dense or sparse): the touches of a batch."""
    return np.asarray((rows != 0).sum(axis=0)).ravel()


def _hybrid_terms(
    user_embeddings,
    item_embeddings,
    item_bias_embeddings,
    user_features,
    item_features,
    users,
    positives,
    negatives,
    loss,
    regularization,
    weights,
):
    E, F, c, X, Y = _check_hybrid(user_embeddings, item_embeddings, item_bias_embeddings, user_features, item_features)
    U, V, b = X @ E, Y @ F, None if c is None else Y @ c
    U, V, b_full, u, i, j = _check_batch(U, V, b, users, positives, negatives)
    reg = Regularization.coerce(regularization)
    x = np.einsum("bf,bf->b", U[u], V[i] - V[j]) + b_full[i] - b_full[j]
    omega = _check_weights(weights, len(u))
    # Touches per feature row: a stored entry of the row counts, whatever its value.
    touch_u, touch_i, touch_j = _touches(X[u]), _touches(Y[i]), _touches(Y[j])
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
    regularization: float | Mapping[str, float] | Regularization = 0.0,
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
    return _hybrid_terms(
        user_embeddings,
        item_embeddings,
        item_bias_embeddings,
        user_features,
        item_features,
        users,
        positives,
        negatives,
        loss,
        regularization,
        weights,
    )[-1]


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
    regularization: float | Mapping[str, float] | Regularization = 0.0,
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
    return _hybrid_gradients(
        _hybrid_terms(
            user_embeddings,
            item_embeddings,
            item_bias_embeddings,
            user_features,
            item_features,
            users,
            positives,
            negatives,
            loss,
            regularization,
            weights,
        ),
        loss,
    )


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
    regularization: float | Mapping[str, float] | Regularization = 0.0,
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
    code = _step_code(positive, negative, optimizer, state)
    terms = _hybrid_terms(
        user_embeddings,
        item_embeddings,
        item_bias_embeddings,
        user_features,
        item_features,
        np.array([user]),
        np.array([positive]),
        np.array([negative]),
        loss,
        regularization,
        None,
    )
    grads = _hybrid_gradients(terms, loss)
    X, Y, x = terms[3], terms[4], float(terms[10][0])
    user_rows = np.flatnonzero(_touches(X[[user]]))
    item_rows = np.flatnonzero(_touches(Y[[positive]]) + _touches(Y[[negative]]))
    # _step_code: an adaptive optimiser (code != 0) comes with its state.
    st = state if code and state is not None else OptimizerState("sgd", 0, 0, user_embeddings.shape[1])
    if code == OPTIMIZER_ADAM:
        st.user_steps[user_rows] += 1
        st.item_steps[item_rows] += 1
    elif code == OPTIMIZER_ADAM_DENSE:  # every feature row takes part in every step
        st.user_steps += 1
        st.item_steps += 1
    _optimizer_rows(
        user_embeddings,
        grads.user_embeddings,
        st.user_first,
        st.user_second,
        st.user_steps,
        user_rows,
        code,
        learning_rate,
    )
    _optimizer_rows(
        item_embeddings,
        grads.item_embeddings,
        st.item_first,
        st.item_second,
        st.item_steps,
        item_rows,
        code,
        learning_rate,
    )
    if item_bias_embeddings is not None:
        _optimizer_rows(
            item_bias_embeddings,
            grads.item_bias_embeddings,
            st.bias_first,
            st.bias_second,
            st.item_steps,
            item_rows,
            code,
            learning_rate,
        )
    return x
