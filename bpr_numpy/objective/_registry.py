"""Every loss and optimiser, defined once: name, integer code (as the kernels compare it), capabilities.

The samplers' registry is :data:`bpr_numpy.sampling.REGISTRY`; see ``docs/architecture.md``,
"where to add a sampler / an optimiser".
"""

from __future__ import annotations

from typing import NamedTuple

#: The losses' integer codes, as the kernels and the reference compare them.
LOSS_BPR, LOSS_SIGMOID, LOSS_WARP, LOSS_SOFTMAX = 0, 1, 2, 3
#: The optimisers' integer codes.
OPTIMIZER_SGD, OPTIMIZER_ADAGRAD, OPTIMIZER_ADAM, OPTIMIZER_ADAM_DENSE = 0, 1, 2, 3


class Loss(NamedTuple):
    """A pair loss, defined once (its math is :func:`pair_loss` and :func:`pair_loss_derivative`).

    ``draws_negatives``: the loss draws its own negatives at update time (WARP), from a sampler
    whose ``warp`` capability is set; ``hybrid``/``distributed``: supported with side features /
    by stratified training; ``joint``: the loss is one function of a positive's ``n_negatives``
    scores together, not a mean of pair losses (the sampled softmax, whose math is in
    :mod:`bpr_numpy.objective._negatives`; with one negative it is ``"bpr"``), trained by the
    several-negatives kernel.
    """

    name: str
    code: int
    parameters: tuple[str, ...]
    draws_negatives: bool
    hybrid: bool
    distributed: bool
    joint: bool = False


class Optimizer(NamedTuple):
    """An update rule, defined once (its math is :func:`apply_rows`, its state :class:`OptimizerState`).

    ``kernel``: the numba kernels apply it (else only ``solver="minibatch"`` does).
    """

    name: str
    code: int
    hybrid: bool
    distributed: bool
    kernel: bool = True


#: Every loss, in code order (a name's code is its index in LOSSES; tests/test_registry.py checks it).
LOSS_REGISTRY: dict[str, Loss] = {
    spec.name: spec
    for spec in (
        Loss("bpr", LOSS_BPR, (), False, True, True),
        Loss("sigmoid", LOSS_SIGMOID, (), False, True, True),
        Loss("warp", LOSS_WARP, ("max_sampled",), True, False, False),
        Loss("softmax", LOSS_SOFTMAX, (), False, False, False, joint=True),
    )
}
#: Every optimiser, in code order.
OPTIMIZER_REGISTRY: dict[str, Optimizer] = {
    spec.name: spec
    for spec in (
        Optimizer("sgd", OPTIMIZER_SGD, True, True),
        Optimizer("adagrad", OPTIMIZER_ADAGRAD, True, False),
        Optimizer("adam", OPTIMIZER_ADAM, True, False),
        Optimizer("adam-dense", OPTIMIZER_ADAM_DENSE, False, False, kernel=False),
    )
}

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
