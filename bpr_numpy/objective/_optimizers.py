"""The update rules: an optimiser's state and one reference step on a batch of triplets.

The rules are written out in the package docstring (:mod:`bpr_numpy.objective`); the numba kernels
apply the same, and are tested against :func:`sgd_step`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import cast

import numpy as np

from ._plain import Regularization, triplet_gradients, triplet_scores
from ._registry import (
    ADAGRAD_INITIAL,
    ADAM_BETA1,
    ADAM_BETA2,
    ADAM_EPSILON,
    OPTIMIZER_ADAGRAD,
    OPTIMIZER_ADAM,
    OPTIMIZER_ADAM_DENSE,
    OPTIMIZER_SGD,
    optimizer_code,
)


class OptimizerState:
    """Per-parameter memory of an adaptive optimiser, shaped like the parameters.

    ``first`` holds Adam's first moments; ``second`` AdaGrad's accumulators or
    Adam's second moments; ``user_steps``/``item_steps`` Adam's per-row step
    counts. Arrays an optimiser does not use have zero rows, so the kernels
    take the same argument types whatever the optimiser.

    Parameters
    ----------
    optimizer : {"sgd", "adagrad", "adam", "adam-dense"}
    n_users, n_items, factors : int
    dtype : numpy dtype
        The parameters' dtype (moments are kept in the same precision).
    """

    def __init__(self, optimizer: str, n_users: int, n_items: int, factors: int, dtype=np.float64) -> None:
        self.optimizer = optimizer
        self.code = optimizer_code(optimizer)
        start = ADAGRAD_INITIAL if self.code == OPTIMIZER_ADAGRAD else 0.0
        shapes = self._shapes(self.code, n_users, n_items, factors)
        (self.user_first, self.item_first, self.bias_first, self.user_second, self.item_second, self.bias_second) = (
            np.full(shape, start if k >= 3 else 0.0, dtype) for k, shape in enumerate(shapes[:6])
        )
        self.user_steps, self.item_steps = (np.zeros(shape, np.int64) for shape in shapes[6:])

    @staticmethod
    def _shapes(code: int, n_users: int, n_items: int, factors: int) -> list[tuple[int, ...]]:
        """Shapes of the arrays of :meth:`arrays`, in that order."""
        adam = code in (OPTIMIZER_ADAM, OPTIMIZER_ADAM_DENSE)
        rows_u, rows_i = (n_users, n_items) if code else (0, 0)
        adam_u, adam_i = (rows_u, rows_i) if adam else (0, 0)
        return [
            (adam_u, factors),
            (adam_i, factors),
            (adam_i,),
            (rows_u, factors),
            (rows_i, factors),
            (rows_i,),
            (adam_u,),
            (adam_i,),
        ]

    def fits(self, optimizer: str, n_users: int, n_items: int, factors: int, dtype) -> bool:
        """Whether this state can go on training parameters of these sizes with ``optimizer``.

        Every array is compared with the shape a fresh state would give it: the kernels
        index the moments with the parameters' rows, so a mismatch would reach past them.
        """
        arrays = self.arrays()
        return (
            optimizer == self.optimizer
            and [a.shape for a in arrays] == self._shapes(self.code, n_users, n_items, factors)
            and all(a.dtype == np.dtype(dtype) for a in arrays[:6])
        )

    def arrays(self) -> tuple[np.ndarray, ...]:
        """The state's arrays, in the order of :meth:`_shapes`: ``(first_u, first_i, first_b, second_u, ...)``."""
        return (
            self.user_first,
            self.item_first,
            self.bias_first,
            self.user_second,
            self.item_second,
            self.bias_second,
            self.user_steps,
            self.item_steps,
        )

    def kernel_args(self) -> tuple:
        """The state as the kernels take it: ``(code, *arrays(), factors)``.

        ``factors`` is Adam's table of bias corrections by step count (the kernels look them up:
        :func:`bpr_numpy._kernels.adam_factor_table`, shared and read-only), an empty one for the
        other optimisers.
        """
        if self.code == OPTIMIZER_ADAM:
            from .._kernels import adam_factor_table  # the kernels' own values: numba's expm1

            factors = adam_factor_table()
        else:
            factors = _NO_FACTORS
        return (self.code, *self.arrays(), factors)


_NO_FACTORS = np.empty((0, 2))
_NO_FACTORS.flags.writeable = False


def _optimizer_rows(theta, grad, first, second, steps, rows, code: int, learning_rate: float) -> None:
    """Apply one optimiser step to ``theta[rows]`` given their gradients ``grad[rows]``."""
    apply_rows(
        theta, rows, grad[rows], first, second, steps[rows] if code >= OPTIMIZER_ADAM else None, code, learning_rate
    )


def apply_rows(
    theta: np.ndarray,
    rows: np.ndarray,
    g: np.ndarray,
    first: np.ndarray,
    second: np.ndarray,
    t: np.ndarray | None,
    code: int,
    learning_rate: float,
) -> None:
    """The update rules, on the rows ``rows`` of ``theta`` with their gradients ``g``, in place.

    SGD ``theta -= eta g``; AdaGrad ``second += g^2, theta -= eta g / sqrt(second)``; lazy Adam
    with each row's own step count ``t`` (already advanced for this step) in its bias
    corrections; dense Adam (Keras 1's) on every row of ``theta``, the gradient zero outside
    ``rows``, with the one step count of every row. ``first`` and ``second`` are indexed by
    ``rows`` as ``theta`` is; ``rows`` must not repeat (sum a batch's gradients per row first).
    The reference step (:func:`sgd_step`), the hybrid one and the minibatch trainer all update
    through this function.
    """
    if code == OPTIMIZER_SGD:
        theta[rows] -= learning_rate * g
        return
    if code == OPTIMIZER_ADAGRAD:
        second[rows] += g * g
        theta[rows] -= learning_rate * g / np.sqrt(second[rows])
        return
    t = cast(np.ndarray, t)  # the Adam rules are given the rows' step counts (not None)
    if code == OPTIMIZER_ADAM_DENSE:
        # Keras 1's Adam on a dense gradient (zero outside ``rows``), as Theano applied it to
        # embeddings: every row's moments decay and every row moves at every step, one step
        # count for all (``t``: the rows' counts, all equal), epsilon outside the correction.
        step = float(t.reshape(-1)[0]) if t.size else 1.0
        first *= ADAM_BETA1
        first[rows] += (1.0 - ADAM_BETA1) * g
        second *= ADAM_BETA2
        second[rows] += (1.0 - ADAM_BETA2) * g * g
        rate = learning_rate * np.sqrt(1.0 - ADAM_BETA2**step) / (1.0 - ADAM_BETA1**step)
        theta -= rate * first / (np.sqrt(second) + ADAM_EPSILON)
        return
    t = t.astype(np.float64)
    if g.ndim == 2:
        t = t[:, None]
    first[rows] = ADAM_BETA1 * first[rows] + (1.0 - ADAM_BETA1) * g
    second[rows] = ADAM_BETA2 * second[rows] + (1.0 - ADAM_BETA2) * g * g
    m_hat = first[rows] / (1.0 - ADAM_BETA1**t)
    v_hat = second[rows] / (1.0 - ADAM_BETA2**t)
    theta[rows] -= learning_rate * m_hat / (np.sqrt(v_hat) + ADAM_EPSILON)


def _step_code(positive: int, negative: int, optimizer: str, state: OptimizerState | None) -> int:
    """The optimiser's code for one reference step, after checking the triplet and the state it needs."""
    if positive == negative:
        raise ValueError("positive and negative item must differ")
    code = optimizer_code(optimizer)
    if code and (state is None or state.code != code):
        raise ValueError(f"optimizer {optimizer!r} needs an OptimizerState({optimizer!r}, ...)")
    return code


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
    regularization: float | Mapping[str, float] | Regularization = 0.0,
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
    optimizer : {"sgd", "adagrad", "adam", "adam-dense"}
    state : OptimizerState, optional
        Required for ``"adagrad"`` and ``"adam"``; updated in place.

    Returns
    -------
    float
        ``x_uij`` before the step.
    """
    code = _step_code(positive, negative, optimizer, state)
    u = np.array([user])
    i = np.array([positive])
    j = np.array([negative])
    grads = triplet_gradients(
        user_factors,
        item_factors,
        item_bias,
        u,
        i,
        j,
        loss=loss,
        regularization=regularization,
        weights=np.array([weight]),
    )
    x = triplet_scores(user_factors, item_factors, item_bias, u, i, j)[0]
    items = np.array([positive, negative])
    # _step_code: an adaptive optimiser (code != 0) comes with its state.
    st = state if code and state is not None else OptimizerState("sgd", 0, 0, user_factors.shape[1])
    if code == OPTIMIZER_ADAM:
        st.user_steps[user] += 1
        st.item_steps[items] += 1
    elif code == OPTIMIZER_ADAM_DENSE:  # every row takes part in every step
        st.user_steps += 1
        st.item_steps += 1
    # Gradients are dense but zero outside the touched rows: update only those.
    _optimizer_rows(
        user_factors,
        grads.user_factors,
        st.user_first,
        st.user_second,
        st.user_steps,
        np.array([user]),
        code,
        learning_rate,
    )
    _optimizer_rows(
        item_factors, grads.item_factors, st.item_first, st.item_second, st.item_steps, items, code, learning_rate
    )
    if item_bias is not None:
        _optimizer_rows(
            item_bias, grads.item_bias, st.bias_first, st.bias_second, st.item_steps, items, code, learning_rate
        )
    return float(x)
