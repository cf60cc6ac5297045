"""Samplers, losses and optimisers are defined once (their registries); the rest of the package reads them."""

import inspect

import numpy as np
import pytest

from bpr_numpy import BPR, cli, distributed, sampling
from bpr_numpy._parameters import CONSTRAINTS, _several_negatives
from bpr_numpy.objective import (LOSS_REGISTRY, LOSSES, OPTIMIZER_REGISTRY, OPTIMIZERS, loss_code,
                                 optimizer_code)

REGISTRIES = {"sampler": sampling.REGISTRY, "loss": LOSS_REGISTRY, "optimizer": OPTIMIZER_REGISTRY}


def test_names_and_codes_come_from_the_registries():
    assert sampling.SAMPLERS == tuple(sampling.REGISTRY)
    assert LOSSES == tuple(LOSS_REGISTRY) and OPTIMIZERS == tuple(OPTIMIZER_REGISTRY)
    for k, spec in enumerate(LOSS_REGISTRY.values()):  # the kernels' codes are the registry's order
        assert spec.code == k == loss_code(spec.name)
    for k, spec in enumerate(OPTIMIZER_REGISTRY.values()):
        assert spec.code == k == optimizer_code(spec.name)
    for name, spec in sampling.REGISTRY.items():
        assert sampling.sampler_codes(name) == spec.codes


def test_the_parameters_a_registry_names_are_the_estimators():
    arguments = set(inspect.signature(BPR.__init__).parameters) - {"self"}
    for registry in (sampling.REGISTRY, LOSS_REGISTRY):
        for spec in registry.values():
            assert set(spec.parameters) <= arguments & set(CONSTRAINTS), spec


def test_distributed_support_is_read_from_the_registries():
    for kind, registry in REGISTRIES.items():
        assert distributed.SUPPORTED[kind] == tuple(n for n, spec in registry.items() if spec.distributed)


def test_the_command_line_offers_every_registered_name():
    parser = cli.build_parser()
    train = next(a for a in parser._actions if getattr(a, "choices", None) and "train" in a.choices).choices["train"]
    for option, registry in (("--sampler", sampling.REGISTRY), ("--loss", LOSS_REGISTRY),
                             ("--optimizer", OPTIMIZER_REGISTRY)):
        action = next(a for a in train._actions if option in a.option_strings)
        assert tuple(action.choices) == tuple(registry)


@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("sampler", sampling.SAMPLERS)
def test_the_estimator_refuses_exactly_what_the_capabilities_rule_out(loss, sampler):
    allowed = not LOSS_REGISTRY[loss].draws_negatives or sampling.REGISTRY[sampler].warp
    if sampling.REGISTRY[sampler].keeps_liked:  # the kernels never keep a positive as negative
        with pytest.raises(ValueError, match="solver='minibatch'"):
            BPR(loss=loss, sampler=sampler)
        return
    if not allowed:
        with pytest.raises(ValueError, match="draws its own negatives"):
            BPR(loss=loss, sampler=sampler)
        return
    if LOSS_REGISTRY[loss].joint and not _several_negatives(sampling.REGISTRY[sampler]):
        # a loss over several negatives takes the samplers that can draw them
        with pytest.raises(ValueError, match="takes the samplers"):
            BPR(loss=loss, sampler=sampler)
        return
    model = BPR(loss=loss, sampler=sampler, factors=2, epochs=1, threads=1, random_state=0)
    hybrid = LOSS_REGISTRY[loss].hybrid and sampling.REGISTRY[sampler].hybrid
    X = np.eye(4) + np.eye(4, k=1)
    if hybrid:
        model.fit(X, item_features=np.eye(4)[:, :2])
    else:
        with pytest.raises(ValueError, match="side features"):
            model.fit(X, item_features=np.eye(4)[:, :2])
