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

Several negatives per positive
-----------------------------
With ``n_negatives = k`` a positive ``(u, i)`` comes with ``k`` negatives and its objective is the
mean of its ``k`` triplets' objectives (``k = 1``: the objective above); the gradients and the
reference step are in :mod:`bpr_numpy.objective._negatives` (:func:`multi_negative_loss`,
:func:`multi_negative_gradients`, :func:`multi_negative_step`).

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

from ._hybrid import (
    HybridGradients,
    hybrid_representations,
    hybrid_sgd_step,
    hybrid_triplet_gradients,
    hybrid_triplet_loss,
)
from ._negatives import expand_negatives, multi_negative_gradients, multi_negative_loss, multi_negative_step
from ._optimizers import OptimizerState, apply_rows, sgd_step
from ._plain import (
    Gradients,
    Regularization,
    TripletTerms,
    fold_in_objective,
    pair_loss,
    pair_loss_derivative,
    triplet_gradients,
    triplet_loss,
    triplet_scores,
    triplet_terms,
    warp_weight,
)
from ._registry import (
    ADAGRAD_INITIAL,
    ADAM_BETA1,
    ADAM_BETA2,
    ADAM_EPSILON,
    LOSS_BPR,
    LOSS_REGISTRY,
    LOSS_SIGMOID,
    LOSS_SOFTMAX,
    LOSS_WARP,
    LOSSES,
    OPTIMIZER_ADAGRAD,
    OPTIMIZER_ADAM,
    OPTIMIZER_ADAM_DENSE,
    OPTIMIZER_REGISTRY,
    OPTIMIZER_SGD,
    OPTIMIZERS,
    Loss,
    Optimizer,
    loss_code,
    optimizer_code,
)

__all__ = [
    "LOSS_BPR",
    "LOSS_SIGMOID",
    "LOSS_WARP",
    "LOSS_SOFTMAX",
    "OPTIMIZER_SGD",
    "OPTIMIZER_ADAGRAD",
    "OPTIMIZER_ADAM",
    "OPTIMIZER_ADAM_DENSE",
    "ADAGRAD_INITIAL",
    "ADAM_BETA1",
    "ADAM_BETA2",
    "ADAM_EPSILON",
    "loss_code",
    "optimizer_code",
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
    "triplet_terms",
    "TripletTerms",
    "sgd_step",
    "apply_rows",
    "expand_negatives",
    "multi_negative_loss",
    "multi_negative_gradients",
    "multi_negative_step",
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
