"""scikit-learn's estimator conventions: parameters stored under their own names, ``clone``.

scikit-learn is a test-only dependency: ``clone``, ``get_params`` and ``set_params`` are checked
with the real thing, so the convention cannot drift from what scikit-learn expects.
"""

import inspect

import numpy as np
import pytest
import scipy.sparse as sp

from bpr_numpy import BPR

sklearn_base = pytest.importorskip("sklearn.base")

NON_DEFAULT = dict(factors=8, learning_rate=0.05, regularization={"user": 0.01, "bias": 0.0}, epochs=3,
                   loss="sigmoid", sampler="popularity", user_run=4, popularity_exponent=0.5,
                   dns_candidates=7, aobpr_lambda=0.1, max_sampled=20, optimizer="adagrad",
                   learning_rate_decay=0.9, item_bias=False, init_std=0.05, dtype=np.float64, threads=1,
                   random_state=3, identity="users", normalize_features=True, solver="minibatch",
                   batch_size=16, init="uniform")
# Arguments whose non-default value the minibatch solver above refuses, checked on their own.
KERNEL_NON_DEFAULT = dict(n_negatives=3, sampler="dns", optimizer="adam")
# get_params of a BPR(**NON_DEFAULT): the kernel-only arguments at their defaults.
NON_DEFAULT_PARAMS = {**NON_DEFAULT, "n_negatives": 1}


def test_every_init_argument_is_covered_here():
    names = [n for n in inspect.signature(BPR.__init__).parameters if n != "self"]
    assert sorted(names) == sorted(set(NON_DEFAULT) | set(KERNEL_NON_DEFAULT))


def test_each_init_argument_is_stored_unchanged_under_its_own_name():
    model = BPR(**NON_DEFAULT)
    for name, value in NON_DEFAULT.items():
        assert getattr(model, name) is value, name
    assert model.get_params() == NON_DEFAULT_PARAMS
    model = BPR(**KERNEL_NON_DEFAULT)
    for name, value in KERNEL_NON_DEFAULT.items():
        assert getattr(model, name) is value, name
    assert {k: model.get_params()[k] for k in KERNEL_NON_DEFAULT} == KERNEL_NON_DEFAULT


def test_clone_gives_an_unfitted_estimator_with_equal_parameters():
    X = sp.random(30, 20, density=0.2, format="csr", random_state=0)
    X.data[:] = 1
    model = BPR(**{**NON_DEFAULT, "sampler": "uniform", "identity": True}).fit(X)
    copy = sklearn_base.clone(model)
    assert type(copy) is BPR and not copy.is_fitted
    assert copy.get_params() == model.get_params()
    assert copy.item_biases is None and copy.history_ == []


def test_set_params_round_trips_every_argument():
    model = BPR()
    model.set_params(**NON_DEFAULT)
    assert model.get_params() == NON_DEFAULT_PARAMS
    with pytest.raises(ValueError, match="unknown parameter 'use_item_bias'"):
        model.set_params(use_item_bias=False)


def test_repr_shows_the_arguments_that_differ_from_their_defaults():
    assert repr(BPR()) == "BPR()"
    assert repr(BPR(item_bias=False, dtype=np.float64)) == "BPR(item_bias=False, dtype=float64)"


def test_the_bias_flag_and_the_learned_biases_have_different_names():
    X = sp.random(30, 20, density=0.2, format="csr", random_state=1)
    X.data[:] = 1
    model = BPR(factors=4, epochs=2, threads=1, random_state=0).fit(X)
    assert model.item_bias is True and model.item_biases.shape == (20,)
    model.item_bias = np.zeros(20, np.float32)  # the old name of the array: told where it went
    with pytest.raises(TypeError, match="model.item_biases"):
        model.fit(X)
