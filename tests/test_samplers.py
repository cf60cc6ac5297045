"""Negative samplers, WARP and the adaptive optimisers in the kernels, against their definitions.

Each sampler's empirical draws are compared (chi-square) with the exact law of
:func:`bpr_numpy.sampling.negative_distribution`; each training path (sampler x
loss x optimiser) is replayed triplet by triplet through
:func:`bpr_numpy.objective.sgd_step` from the kernel's own trace.
"""

import numpy as np
import pytest
import scipy.sparse as sp
from _budget import examples
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from bpr_numpy import BPR, sampling
from bpr_numpy import _kernels as K
from bpr_numpy._kernel_args import Parameters, Sampling, epoch_outputs, epoch_settings, training_data
from bpr_numpy._validation import as_user_items
from bpr_numpy.objective import (OPTIMIZER_REGISTRY, OPTIMIZERS, OptimizerState, Regularization, loss_code, sgd_step,
                                 warp_weight)

REG = Regularization(user=0.01, positive=0.02, negative=0.03, bias=0.04)
# What the kernels draw and apply (the minibatch-only ones are tests/test_minibatch.py's).
KERNEL_SAMPLERS = [s for s in sampling.SAMPLERS if not sampling.REGISTRY[s].keeps_liked]
KERNEL_OPTIMIZERS = [o for o in OPTIMIZERS if OPTIMIZER_REGISTRY[o].kernel]



def _matrix(n_users=6, n_items=12, density=0.3, seed=0):
    rng = np.random.default_rng(seed)
    dense = rng.random((n_users, n_items)) < density
    dense[np.arange(n_users), rng.integers(0, n_items, n_users)] = True  # no empty user
    return as_user_items(sp.csr_matrix(dense.astype(np.float32)))


def _chi_square(counts, probabilities, n):
    """p-value of observed counts against exact probabilities (cells with p > 0)."""
    keep = probabilities > 0
    assert counts[~keep].sum() == 0, "drew an item of probability zero"
    expected = probabilities[keep] * n
    return stats.chisquare(counts[keep], expected * counts[keep].sum() / expected.sum()).pvalue


# ---------------------------------------------------------------- alias table
@settings(max_examples=examples(100), deadline=None)
@given(st.lists(st.floats(0.0, 1e6, allow_nan=False), min_size=1, max_size=50).filter(lambda w: sum(w) > 0))
def test_alias_table_encodes_exactly_the_weights(weights):
    w = np.array(weights)
    prob, alias = sampling.alias_table(w)
    assert ((prob >= 0) & (prob <= 1 + 1e-12)).all() and ((alias >= 0) & (alias < len(w))).all()
    np.testing.assert_allclose(sampling.alias_probabilities(prob, alias), w / w.sum(), atol=1e-12)


def test_alias_table_rejects_bad_weights():
    for bad in ([], [-1.0, 2.0], [np.nan], [0.0, 0.0]):
        with pytest.raises(ValueError):
            sampling.alias_table(bad)


# ---------------------------------------------------------------- factor-free samplers
@pytest.mark.parametrize("sampler,exponent", [("uniform", 1.0), ("uniform-skip", 1.0), ("popularity", 0.5),
                                              ("popularity", 1.0), ("popularity-skip", 1.0),
                                              ("popularity-skip", 0.0)])
def test_factor_free_samplers_draw_their_exact_law(sampler, exponent):
    m = _matrix(n_users=3, n_items=15, density=0.35, seed=4)
    codes = sampling.sampler_codes(sampler)
    popularity = None
    weights = sampling.popularity_weights(m, exponent)
    if codes.candidate == sampling.CANDIDATE_POPULARITY:
        popularity = sampling.alias_table(weights)
    n = 240_000
    users, pos, neg = K._sample_stream(training_data(m.indptr, m.indices), m.shape[1], n, 1, 7, 0,
                                       codes.skip_liked, popularity)
    dense = m.toarray() > 0
    for u in range(m.shape[0]):
        mine = users == u
        p, skip = sampling.negative_distribution(sampler, m.indices[m.indptr[u]:m.indptr[u + 1]], m.shape[1],
                                                 weights=weights)
        drawn = neg[mine]
        assert not dense[u, drawn[drawn >= 0]].any()  # never a known positive
        counts = np.bincount(drawn[drawn >= 0], minlength=m.shape[1])
        assert _chi_square(counts, p, mine.sum()) > 1e-4, (sampler, u)
        skipped = (drawn < 0).sum()
        # Skips: binomial with the positives' share of the candidate law.
        assert stats.binomtest(int(skipped), int(mine.sum()), max(min(skip, 1.0), 0.0)).pvalue > 1e-4


def test_popularity_skip_with_exponent_one_is_implicits_convention():
    # implicit: j is the item of a random observed pair, skipped if u likes it.
    m = _matrix(n_users=20, n_items=10, density=0.3, seed=8)
    weights = sampling.popularity_weights(m, 1.0)
    np.testing.assert_array_equal(weights, np.bincount(m.indices, minlength=10))
    p, _ = sampling.negative_distribution("popularity-skip", [], 10, weights=weights)
    np.testing.assert_allclose(p, np.bincount(m.indices, minlength=10) / m.nnz)


# ---------------------------------------------------------------- factor-dependent samplers
def _adaptive(kind, dns=1, lam=1.0, ranks=None, spread=None, warp=0):
    if ranks is None:
        ranks, spread = np.zeros((0, 0), np.int32), np.zeros(0)
    return (kind, warp, dns, float(lam), ranks, spread)


def _assert_adaptive_law(sampler, m, U, V, b, bias, adaptive, per_user, seed, **law):
    """Draw ``per_user`` negatives for every user with frozen factors; chi-square against the exact law."""
    users = np.repeat(np.arange(m.shape[0]), per_user)
    neg = K._draw_adaptive_negatives(U, V, b, bias, m.indptr, m.indices, users, adaptive, seed)
    _assert_draws_follow_the_law(sampler, m, U, V, b, users, neg, **law)


def _assert_draws_follow_the_law(sampler, m, U, V, b, users, neg, **law):
    """Per user of ``users``: its negatives ``neg`` against the exact law of ``sampler`` (chi-square)."""
    n_items = m.shape[1]
    for u in np.unique(users):
        p, _ = sampling.negative_distribution(sampler, m.indices[m.indptr[u]:m.indptr[u + 1]], n_items,
                                              scores=U[u] @ V.T + b, user_factors_row=U[u], **law)
        mine = neg[users == u]
        assert _chi_square(np.bincount(mine, minlength=n_items), p, mine.size) > 1e-4, (sampler, u)


def _dns_problem(bias):
    """Two users, 14 items, random factors (and biases): the DNS law tests' problem."""
    m = _matrix(n_users=2, n_items=14, density=0.3, seed=1)
    rng = np.random.default_rng(2)
    U, V = rng.normal(size=(2, 4)), rng.normal(size=(14, 4))
    return m, U, V, (rng.normal(size=14) if bias else np.zeros(14))


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("candidates", [2, 5])
def test_dns_keeps_the_best_of_k_uniform_negatives(bias, candidates):
    m, U, V, b = _dns_problem(bias)
    _assert_adaptive_law("dns", m, U, V, b, bias, _adaptive(sampling.ADAPTIVE_DNS, dns=candidates), 50_000, 3,
                         dns_candidates=candidates)


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("lam", [1.5, 6.0])
def test_aobpr_draws_ranks_geometrically_by_factor(bias, lam):
    m = _matrix(n_users=3, n_items=25, density=0.2, seed=6)
    rng = np.random.default_rng(9)
    U, V = rng.normal(size=(3, 3)), rng.normal(size=(25, 3))
    b = rng.normal(size=25)
    ranks, spread = sampling.aobpr_rankings(V, b if bias else None)
    _assert_adaptive_law("aobpr", m, U, V, b, bias,
                         _adaptive(sampling.ADAPTIVE_AOBPR, lam=lam, ranks=ranks, spread=spread), 50_000, 5,
                         ranks=ranks, spread=spread, lam=lam)


def test_aobpr_rank_law_is_geometric_not_uniform():
    # One factor, a positive user weight, no positives: j = the item at rank r,
    # so the draws expose the rank law itself (the integer-division bug of one
    # public implementation would make it uniform).
    n_items, lam = 40, 4.0
    m = sp.csr_matrix((np.zeros(0, np.float32), np.zeros(0, np.int32), np.zeros(2, np.int64)), (1, n_items))
    V = np.arange(n_items, 0, -1, dtype=np.float64)[:, None]  # item k has rank k
    ranks, spread = sampling.aobpr_rankings(V, None)
    np.testing.assert_array_equal(ranks[0], np.arange(n_items))
    users = np.zeros(200_000, np.int64)
    neg = K._draw_adaptive_negatives(np.ones((1, 1)), V, np.zeros(n_items), False, m.indptr, m.indices, users,
                                     _adaptive(sampling.ADAPTIVE_AOBPR, lam=lam, ranks=ranks, spread=spread), 1)
    counts = np.bincount(neg, minlength=n_items)
    expected = sampling.geometric_rank_probabilities(n_items, lam)
    assert _chi_square(counts, expected, len(users)) > 1e-4
    assert counts[0] / counts[4] == pytest.approx(np.exp(4 / lam), rel=0.1)


# ---------------------------------------------------------------- training paths, replayed
def _replay(U, V, b, trace, lr, loss, bias, optimizer):
    """Apply objective.sgd_step to every traced triplet, in float64."""
    state = OptimizerState(optimizer, U.shape[0], V.shape[0], U.shape[1]) if optimizer != "sgd" else None
    for u, i, j, w in trace:
        if j >= 0:
            sgd_step(U, V, b if bias else None, int(u), int(i), int(j), learning_rate=lr, loss=loss,
                     regularization=REG, weight=w, optimizer=optimizer, state=state)


COMBINATIONS = [(s, "bpr", "sgd") for s in KERNEL_SAMPLERS] + [
    ("uniform", "warp", "sgd"), ("popularity", "warp", "adagrad"), ("uniform", "sigmoid", "adam"),
    ("uniform", "bpr", "adagrad"), ("dns", "bpr", "adam"), ("aobpr", "warp", "sgd")]


@pytest.mark.parametrize("sampler,loss,optimizer", COMBINATIONS)
@pytest.mark.parametrize("bias", [True, False])
def test_every_training_path_is_the_reference_step_on_its_trace(sampler, loss, optimizer, bias):
    if loss == "warp" and sampler not in ("uniform", "popularity"):
        sampler = "uniform"
    m = _matrix(n_users=15, n_items=20, density=0.25, seed=11)
    rng = np.random.default_rng(12)
    U, V = rng.normal(0, 0.3, (15, 6)), rng.normal(0, 0.3, (20, 6))
    b = rng.normal(0, 0.1, 20) if bias else np.zeros(20)
    U0, V0, b0 = U.copy(), V.copy(), b.copy()
    codes = sampling.sampler_codes(sampler)
    popularity = sampling.alias_table(sampling.popularity_weights(m, 0.7)) if codes.candidate else None
    ranks, spread = sampling.aobpr_rankings(V, b if bias else None)
    adaptive = None
    if codes.adaptive or loss == "warp":
        adaptive = (int(codes.adaptive), 10 if loss == "warp" else 0, 3, 4.0, ranks, spread)
    opt = OptimizerState(optimizer, 15, 20, 6).kernel_args() if optimizer != "sgd" else None
    n = K.CHUNK_SIZE + 300  # several chunks, their batches partial
    trace = np.full((n, 4), np.nan)
    chunks = K.n_chunks(n)
    out = epoch_outputs(chunks)
    epoch = epoch_settings(n_samples=n, user_run=4, seed=21, epoch=2, learning_rate=0.05, regularization=REG,
                              loss_code=loss_code(loss), use_bias=bias, skip_liked=codes.skip_liked, dtype=U.dtype)
    K._train_chunks(Parameters(U, V, b), training_data(m.indptr, m.indices), epoch, Sampling(popularity, adaptive),
                    opt, trace, out, 0, chunks)
    assert not np.isnan(trace).any()
    dense = m.toarray() > 0
    u, i, j, w = trace.T
    u, i, j = u.astype(int), i.astype(int), j.astype(int)
    assert dense[u, i].all() and not dense[u[j >= 0], j[j >= 0]].any()
    assert out[2].sum() == (j == -1).sum()
    if loss == "warp":
        applied = w[j >= 0]
        possible = [warp_weight(20, k) for k in range(1, 11)]
        assert np.isin(np.round(applied, 12), np.round(possible, 12)).all()
    else:
        assert (w == 1).all() and (j != -2).all()
    _replay(U0, V0, b0, trace, 0.05, loss, bias, optimizer)
    np.testing.assert_allclose(U, U0, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(V, V0, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(b, b0, rtol=1e-9, atol=1e-12)


def test_warp_finds_uniform_violators_and_gives_up_at_max_sampled():
    # Frozen factors (learning rate 0): the first violating non-positive of
    # uniform draws is uniform over the violators; no violation in max_sampled
    # draws happens with probability (1 - share of violators) ** max_sampled.
    m = _matrix(n_users=1, n_items=30, density=0.2, seed=3)
    rng = np.random.default_rng(4)
    U, V, b = rng.normal(size=(1, 3)), rng.normal(size=(30, 3)), np.zeros(30)
    n = 60_000
    trace = np.full((n, 4), np.nan)
    chunks = K.n_chunks(n)
    out = epoch_outputs(chunks)
    epoch = epoch_settings(n_samples=n, user_run=1, seed=1, epoch=0, learning_rate=0.0,
                              regularization=Regularization(), loss_code=loss_code("warp"), use_bias=False,
                              skip_liked=False, dtype=U.dtype)
    K._train_chunks(Parameters(U, V, b), training_data(m.indptr, m.indices), epoch,
                    Sampling(None, (0, 3, 1, 1.0, np.zeros((0, 0), np.int32), np.zeros(0))), None, trace, out, 0,
                    chunks)
    scores = U[0] @ V.T
    liked = m.toarray()[0] > 0
    i, j = trace[:, 1].astype(int), trace[:, 2].astype(int)
    for item in np.unique(i):
        mine = i == item
        violators = (~liked) & (scores > scores[item] - 1)
        share = violators.sum() / 30
        gave_up = (j[mine] == -2).sum()
        assert stats.binomtest(int(gave_up), int(mine.sum()), (1 - share) ** 3).pvalue > 1e-4
        got = j[mine & (j >= 0)]
        assert violators[got].all()
        if violators.sum() > 1 and got.size:
            counts = np.bincount(got, minlength=30)
            assert _chi_square(counts, violators / violators.sum(), got.size) > 1e-4


def _frozen_dns_epoch(m, U, V, b, bias, negatives, candidates, n, seed):
    """One epoch of ``n`` samples with DNS and learning rate 0 (the factors frozen), one negative per
    positive (the batch loop's own choice) or ``negatives`` (each slot's); returns the trace."""
    trace = np.full((n, 2 + negatives if negatives > 1 else 4), np.nan)
    chunks = K.n_chunks(n)
    epoch = epoch_settings(n_samples=n, user_run=1, seed=seed, epoch=0, learning_rate=0.0,
                           regularization=Regularization(), loss_code=loss_code("bpr"), use_bias=bias,
                           skip_liked=False, dtype=U.dtype)
    if negatives > 1:
        plan = Sampling(None, None, (np.int64(negatives), np.int64(candidates)))
    else:
        plan = Sampling(None, (sampling.ADAPTIVE_DNS, 0, candidates, 1.0, np.zeros((0, 0), np.int32), np.zeros(0)))
    K._train_chunks(Parameters(U, V, b), training_data(m.indptr, m.indices), epoch, plan, None, trace,
                    epoch_outputs(chunks), 0, chunks)
    return trace


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("negatives", [1, 3])
def test_training_picks_dns_negatives_by_the_exact_law(negatives, bias):
    # Frozen factors (learning rate 0): every negative a training epoch picks, with one negative
    # per positive (the batch loop's own DNS choice) or several (each slot's), is a draw from
    # DNS's exact law, as the reference sampler's draws are (test_dns_keeps_the_best_of_k...).
    m, U, V, b = _dns_problem(bias)
    candidates = 3
    trace = _frozen_dns_epoch(m, U, V, b, bias, negatives, candidates, n=40_000, seed=5)
    users = trace[:, 0].astype(int)
    picked = trace[:, 2:2 + negatives].astype(int)
    assert (picked >= 0).all() and set(users) == {0, 1}
    for slot in range(negatives):
        _assert_draws_follow_the_law("dns", m, U, V, b, users, picked[:, slot], dns_candidates=candidates)


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("negatives", [1, 3])
def test_dns_keeps_the_drawn_negative_when_no_extra_candidate_is_found(negatives, bias):
    # One user holding 98 of 100 items: a uniform draw misses both non-positives (7, scored
    # above 42) 64 times in a row with probability 0.98**64 = 0.27, so negatives and DNS's extra
    # candidates are often missing. A missing candidate must leave the slot's own negative in
    # place (the kernels store that negative in its place, so that the choice is a branch-free
    # maximum), which gives the law below, misses included. The positives score above both, so
    # a missing candidate read as a positive, as -1 or as item 7 would change it.
    n_items, tries, candidates = 100, sampling.MAX_NEGATIVE_TRIES, 3
    others = np.setdiff1d(np.arange(n_items), [7, 42])
    m = as_user_items(sp.csr_matrix((np.ones(others.size), (np.zeros(others.size, int), others)),
                                    shape=(1, n_items)))
    level = np.ones(n_items)
    level[7], level[42] = 0.0, -1.0
    U, V = np.ones((1, 4)), np.outer(level, np.ones(4))
    b = level if bias else np.zeros(n_items)
    n = 8_000
    trace = _frozen_dns_epoch(m, U, V, b, bias, negatives, candidates, n=n, seed=3)
    picked = trace[:, 2:2 + negatives].astype(int)
    assert set(np.unique(picked)) == {-1, 7, 42}
    miss = (1 - 2 / n_items) ** tries  # a candidate's draws (and an extra negative's first) all miss
    miss_first = miss * (1 - 2 / n_items)  # the batch's negative: a first draw and `tries` redraws
    # 42 is picked when the slot's negative is 42 and no extra candidate is 7 (missing or 42)
    p_42 = 0.5 * (miss + (1 - miss) / 2) ** (candidates - 1)

    def close(count, total, p):
        return abs(count / total - p) < 5 * np.sqrt(p * (1 - p) / total)

    for slot in range(negatives):
        # a later slot is -1 when its own negative or the batch's (slot 0) is missing
        p_skip = miss_first if slot == 0 else 1 - (1 - miss_first) * (1 - miss)
        found = picked[:, slot] >= 0
        assert close(n - found.sum(), n, p_skip), (slot, 1 - found.mean(), p_skip)
        assert close((picked[found, slot] == 42).sum(), found.sum(), p_42), (slot, p_42)


@pytest.mark.parametrize("optimizer", KERNEL_OPTIMIZERS)
def test_optimizer_kernels_track_the_reference_in_float32(optimizer):
    m = _matrix(n_users=10, n_items=15, density=0.3, seed=2)
    users, pos, neg = K._sample_stream(training_data(m.indptr, m.indices), 15, 400, 4, 3, 0, False, None)
    rng = np.random.default_rng(0)
    U, V, b = rng.normal(0, 0.3, (10, 8)), rng.normal(0, 0.3, (15, 8)), rng.normal(0, 0.1, 15)
    U32, V32, b32 = U.astype(np.float32), V.astype(np.float32), b.astype(np.float32)
    opt = OptimizerState(optimizer, 10, 15, 8, np.float32).kernel_args() if optimizer != "sgd" else None
    epoch = epoch_settings(n_samples=0, user_run=1, seed=0, epoch=0, learning_rate=0.05, regularization=REG,
                              loss_code=0, use_bias=True, skip_liked=False, dtype=np.float32)
    K._apply_triplets(Parameters(U32, V32, b32), (users, pos, neg, np.ones(400)), epoch, opt)
    _replay(U, V, b, np.column_stack([users, pos, neg, np.ones(400)]), 0.05, "bpr", True, optimizer)
    np.testing.assert_allclose(U32, U, rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(V32, V, rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(b32, b, rtol=1e-3, atol=1e-4)


# ---------------------------------------------------------------- through the estimator
@pytest.mark.parametrize("sampler", KERNEL_SAMPLERS)
def test_every_sampler_trains_reproducibly_through_the_estimator(sampler):
    m = _matrix(n_users=40, n_items=30, density=0.2, seed=5)
    a = BPR(factors=4, epochs=3, sampler=sampler, threads=1, random_state=3).fit(m)
    b = BPR(factors=4, epochs=3, sampler=sampler, threads=1, random_state=3).fit(m)
    np.testing.assert_array_equal(a.user_factors, b.user_factors)
    assert len(a.history_) == 3 and np.isfinite(a.history_[-1].loss)
    skips = a.history_[-1].skipped
    assert (skips > 0) == sampler.endswith("-skip") or skips == 0


@pytest.mark.parametrize("optimizer", KERNEL_OPTIMIZERS)
def test_optimizers_continue_across_partial_fit(optimizer):
    m = _matrix(n_users=30, n_items=20, density=0.2, seed=7)
    whole = BPR(factors=4, epochs=4, optimizer=optimizer, threads=1, random_state=1).fit(m)
    split = BPR(factors=4, epochs=2, optimizer=optimizer, threads=1, random_state=1).fit(m)
    split.partial_fit(m, epochs=2)
    np.testing.assert_array_equal(whole.user_factors, split.user_factors)
    np.testing.assert_array_equal(whole.item_biases, split.item_biases)


def test_learning_rate_decay_shrinks_steps_per_epoch():
    m = _matrix(n_users=30, n_items=20, density=0.2, seed=7)
    plain = BPR(factors=4, epochs=2, threads=1, random_state=1).fit(m)
    decayed = BPR(factors=4, epochs=2, threads=1, random_state=1, learning_rate_decay=0.5).fit(m)
    one = BPR(factors=4, epochs=1, threads=1, random_state=1).fit(m)
    one_decayed = BPR(factors=4, epochs=1, threads=1, random_state=1, learning_rate_decay=0.5).fit(m)
    np.testing.assert_array_equal(one.user_factors, one_decayed.user_factors)  # epoch 0 uses the full rate
    assert not np.array_equal(plain.user_factors, decayed.user_factors)


def test_sampler_and_loss_combinations_are_checked():
    with pytest.raises(ValueError, match="sampler must be one of"):
        BPR(sampler="hard")
    with pytest.raises(ValueError, match="loss='warp'"):
        BPR(loss="warp", sampler="dns")
    with pytest.raises(ValueError, match="optimizer must be one of"):
        BPR(optimizer="rmsprop")
    with pytest.raises(ValueError, match="dns_candidates"):
        BPR(dns_candidates=0)
    with pytest.raises(ValueError, match="aobpr_lambda"):
        BPR(aobpr_lambda=0)
