"""Adding a sampler is one definition: a test-only sampler registered here and used everywhere.

``"uniform-seen"`` draws negatives uniformly over the items that someone interacted with (an
item nobody has seen is never a candidate), with known positives redrawn. It is defined once,
below; the estimator's checks, ``fit`` (plain and with side features), WARP, the command line and
the exact law of :func:`bpr_numpy.sampling.negative_distribution` take it from the registry, and
the kernels draw it through the alias table they already have.
"""

import numpy as np
import pytest
import scipy.sparse as sp
from scipy import stats

from bpr_numpy import BPR, sampling
from bpr_numpy import _kernels as K
from bpr_numpy._kernel_args import training_data
from bpr_numpy._validation import as_user_items


def _seen_items(user_items, params):
    return (np.bincount(user_items.indices, minlength=user_items.shape[1]) > 0).astype(np.float64)


SEEN = sampling.Sampler("uniform-seen", sampling.SamplerCodes(sampling.CANDIDATE_TABLE, False, sampling.ADAPTIVE_NONE),
                        parameters=(), warp=True, hybrid=True, distributed=False, item_weights=_seen_items)


@pytest.fixture
def seen():
    sampling.register_sampler(SEEN)
    yield SEEN
    sampling.unregister_sampler(SEEN.name)


def _matrix(seed=3, n_users=6, n_items=14, unseen=(11, 12, 13)):
    rng = np.random.default_rng(seed)
    dense = rng.random((n_users, n_items)) < 0.35
    dense[np.arange(n_users), rng.integers(0, n_items - len(unseen), n_users)] = True
    dense[:, list(unseen)] = False  # items nobody interacted with
    return as_user_items(sp.csr_matrix(dense.astype(np.float32)))


def test_the_kernels_draw_its_exact_law(seen):
    m = _matrix()
    weights = sampling.item_weights(seen.name, m, {})
    users, _, neg = K._sample_stream(training_data(m.indptr, m.indices), m.shape[1], 120_000, 1, 5, 0,
                                     seen.codes.skip_liked, sampling.alias_table(weights))
    for u in range(m.shape[0]):
        p, skip = sampling.negative_distribution(seen.name, m.indices[m.indptr[u]:m.indptr[u + 1]], m.shape[1],
                                                 weights=weights)
        assert skip == 0.0 and p[[11, 12, 13]].sum() == 0.0
        drawn = neg[users == u]
        counts = np.bincount(drawn[drawn >= 0], minlength=m.shape[1])
        assert counts[p == 0].sum() == 0, "drew a positive or an unseen item"
        keep = p > 0
        assert stats.chisquare(counts[keep], p[keep] * counts.sum()).pvalue > 1e-4, u


def test_fit_plain_with_side_features_and_warp(seen):
    m = _matrix(seed=4, n_users=30, n_items=20, unseen=(18, 19))
    for kwargs, fit in (({}, {}), ({"loss": "warp"}, {}),
                        ({}, {"item_features": sp.random(20, 4, density=0.5, format="csr", random_state=0)})):
        model = BPR(factors=4, epochs=3, sampler="uniform-seen", threads=1, random_state=0, **kwargs).fit(m, **fit)
        assert np.isfinite(model.user_factors).all() and len(model.history_) == 3
        assert model.history_[-1].skipped == 0
    # Never drawn as negatives: the unseen items' factors move only through regularisation-free
    # paths, i.e. not at all in plain SGD (they are never a positive either).
    plain = BPR(factors=4, epochs=3, sampler="uniform-seen", threads=1, random_state=0)
    initial = BPR(factors=4, epochs=0, sampler="uniform-seen", threads=1, random_state=0).fit(m).item_factors
    np.testing.assert_array_equal(plain.fit(m).item_factors[18:], initial[18:])


def test_it_is_saved_and_refused_once_unregistered(seen, tmp_path):
    m = _matrix()
    model = BPR(factors=4, epochs=1, sampler="uniform-seen", threads=1, random_state=0).fit(m)
    model.save(tmp_path / "m.npz")
    assert BPR.load(tmp_path / "m.npz").sampler == "uniform-seen"
    sampling.unregister_sampler("uniform-seen")
    try:
        with pytest.raises(ValueError, match="uniform-seen"):
            BPR(sampler="uniform-seen")
    finally:
        sampling.register_sampler(SEEN)


def test_the_command_line_offers_it(seen):
    from bpr_numpy.cli import build_parser

    args = build_parser().parse_args(["train", "--sampler", "uniform-seen"])
    assert args.sampler == "uniform-seen"


def test_registration_is_checked():
    base = dict(parameters=(), warp=False, hybrid=True, distributed=False)
    table = sampling.SamplerCodes(sampling.CANDIDATE_TABLE, False, sampling.ADAPTIVE_NONE)
    bad = [
        (sampling.Sampler("uniform", table, item_weights=_seen_items, **base), "taken"),
        (sampling.Sampler("x", table, **base), "item_weights"),
        (sampling.Sampler("x", table._replace(adaptive=sampling.ADAPTIVE_DNS), item_weights=_seen_items, **base),
         "fixed law"),
        (sampling.Sampler("x", table._replace(skip_liked=True), item_weights=_seen_items,
                          **{**base, "warp": True}), "warp"),
        (sampling.Sampler("x", table, item_weights=_seen_items, **{**base, "distributed": True}), "distributed"),
        (sampling.Sampler("x", table, item_weights=_seen_items, **{**base, "parameters": ("alpha",)}), "alpha"),
    ]
    for spec, message in bad:
        with pytest.raises(ValueError, match=message):
            sampling.register_sampler(spec)
    with pytest.raises(ValueError, match="built-in"):
        sampling.unregister_sampler("uniform")


def test_item_weights_are_checked(seen):
    broken = SEEN._replace(name="broken", item_weights=lambda m, p: -np.ones(m.shape[1]))
    sampling.register_sampler(broken)
    try:
        with pytest.raises(ValueError, match="broken"):
            BPR(factors=2, epochs=1, sampler="broken", threads=1).fit(_matrix())
    finally:
        sampling.unregister_sampler("broken")
