"""The vectorised NumPy trainer (``solver="minibatch"``) against the kernels and the reference.

With batch size 1 and the same triplets, its step is the kernels' per-sample step (SGD) and the
reference's (``objective.sgd_step``, every optimiser); with larger batches it follows the mean
of ``objective.triplet_gradients``; its negatives follow ``sampling.negative_distribution``.
"""

from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
from scipy import stats

from bpr_numpy import BPR, metrics, sampling
from bpr_numpy import _kernels as K
from bpr_numpy._kernel_args import Parameters, epoch_settings, training_data
from bpr_numpy._validation import as_user_items
from bpr_numpy.model._minibatch import apply_batch, draw_negatives
from bpr_numpy.objective import LOSSES, OPTIMIZERS, OptimizerState, Regularization, loss_code, sgd_step
from bpr_numpy.objective import triplet_gradients

REG = Regularization(user=0.01, positive=0.02, negative=0.03, bias=0.04)


def _csr(n_users=30, n_items=25, density=0.2, seed=0):
    return as_user_items(sp.random(n_users, n_items, density=density, format="csr",
                                   random_state=np.random.default_rng(seed)))


def _params(m, factors=6, seed=1):
    rng = np.random.default_rng(seed)
    return (rng.normal(0, 0.3, (m.shape[0], factors)), rng.normal(0, 0.3, (m.shape[1], factors)),
            rng.normal(0, 0.1, m.shape[1]))


def _triplets(m, n=400, seed=3):
    users, pos, neg = K._sample_stream(training_data(m.indptr, m.indices), m.shape[1], n, 1, seed, 0, False, None)
    keep = neg >= 0
    return users[keep], pos[keep], neg[keep]


@pytest.mark.parametrize("loss", [loss for loss in LOSSES if loss != "warp"])
@pytest.mark.parametrize("bias", [True, False])
def test_batch_of_one_with_sgd_is_the_kernels_step(loss, bias):
    m = _csr()
    users, pos, neg = _triplets(m)
    U, V, b = _params(m)
    kernel = [a.copy() for a in (U, V, b)]
    settings = epoch_settings(n_samples=0, user_run=1, seed=0, epoch=0, learning_rate=0.1, regularization=REG,
                              loss_code=loss_code(loss), use_bias=bias, skip_liked=False, dtype=np.float64,
                              prefetch_runs=False)
    xs = K._apply_triplets(Parameters(*kernel), (users, pos, neg, np.ones(len(users))), settings, None)
    state = OptimizerState("sgd", 0, 0, U.shape[1])
    for k in range(len(users)):
        result = apply_batch(U, V, b if bias else None, state, users[k:k + 1], pos[k:k + 1], neg[k:k + 1],
                             learning_rate=0.1, loss=loss, regularization=REG)
        assert result.ordered == int(xs[k] > 0)
    for mine, theirs in zip((U, V, b), kernel):
        np.testing.assert_allclose(mine, theirs, rtol=0, atol=1e-12)


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_batch_of_one_is_the_reference_step_for_every_optimiser(optimizer):
    m = _csr(seed=2)
    users, pos, neg = _triplets(m, seed=5)
    U, V, b = _params(m, seed=4)
    ref = [a.copy() for a in (U, V, b)]
    mine_state = OptimizerState(optimizer, *m.shape, U.shape[1])
    ref_state = OptimizerState(optimizer, *m.shape, U.shape[1])
    for k in range(len(users)):
        apply_batch(U, V, b, mine_state, users[k:k + 1], pos[k:k + 1], neg[k:k + 1], learning_rate=0.05,
                    loss="bpr", regularization=REG)
        sgd_step(*ref, int(users[k]), int(pos[k]), int(neg[k]), learning_rate=0.05, loss="bpr",
                 regularization=REG, optimizer=optimizer, state=ref_state)
    for mine, theirs in zip((U, V, b), ref):
        np.testing.assert_allclose(mine, theirs, rtol=0, atol=1e-12)


def test_a_batch_follows_the_mean_gradient_of_its_triplets():
    m = _csr(seed=6)
    users, pos, neg = _triplets(m, n=64, seed=7)  # rows repeat within the batch
    U, V, b = _params(m, seed=8)
    g = triplet_gradients(U, V, b, users, pos, neg, loss="sigmoid", regularization=REG)
    want = [a - 0.3 * ga / len(users) for a, ga in zip((U, V, b), (g.user_factors, g.item_factors, g.item_bias))]
    apply_batch(U, V, b, OptimizerState("sgd", 0, 0, U.shape[1]), users, pos, neg, learning_rate=0.3,
                loss="sigmoid", regularization=REG)
    for mine, theirs in zip((U, V, b), want):
        np.testing.assert_allclose(mine, theirs, rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("sampler,exponent", [("uniform", 1.0), ("uniform-skip", 1.0), ("popularity", 0.7),
                                              ("popularity-skip", 1.0)])
def test_negatives_follow_the_samplers_law(sampler, exponent):
    m = _csr(n_users=3, n_items=15, density=0.35, seed=4)
    weights = sampling.item_weights(sampler, m, {"popularity_exponent": exponent})
    alias = sampling.alias_table(weights) if weights is not None else (np.empty(0), np.empty(0, np.int64))
    user_of = np.repeat(np.arange(m.shape[0]), np.diff(m.indptr))
    keys = user_of.astype(np.int64) * m.shape[1] + m.indices
    rng = np.random.default_rng(0)
    skip = sampling.sampler_codes(sampler).skip_liked
    for u in range(m.shape[0]):
        drawn = draw_negatives(rng, np.full(60_000, u), keys, m.shape[1], skip, alias)
        p, p_skip = sampling.negative_distribution(sampler, m.indices[m.indptr[u]:m.indptr[u + 1]], m.shape[1],
                                                   weights=weights)
        counts = np.bincount(drawn[drawn >= 0], minlength=m.shape[1])
        assert counts[p == 0].sum() == 0
        keep = p > 0
        assert stats.chisquare(counts[keep], p[keep] / p[keep].sum() * counts.sum()).pvalue > 1e-4
        assert stats.binomtest(int((drawn < 0).sum()), len(drawn), min(max(p_skip, 0.0), 1.0)).pvalue > 1e-4


def _planted(seed=0, n_users=120, n_items=80):
    """A rank-3 taste matrix, each user's top 15% as positives, a fifth of them held out."""
    rng = np.random.default_rng(seed)
    taste = rng.normal(size=(n_users, 3)) @ rng.normal(size=(3, n_items))
    dense = taste > np.quantile(taste, 0.85, axis=1, keepdims=True)
    held = dense & (rng.random(dense.shape) < 0.2)
    return (as_user_items(sp.csr_matrix((dense & ~held).astype(np.float32))),
            as_user_items(sp.csr_matrix(held.astype(np.float32))))


@pytest.mark.parametrize("optimizer,lr", [("sgd", 5.0), ("adagrad", 3.0), ("adam", 0.02)])
def test_minibatch_fit_learns_and_is_reproducible(optimizer, lr):
    X, test = _planted()
    kw = dict(factors=8, epochs=15, solver="minibatch", batch_size=32, optimizer=optimizer, learning_rate=lr,
              regularization=0.001, random_state=0)
    model = BPR(**kw).fit(X)
    # Held-out AUC over seeds 0-4 (measured): SGD 0.961-0.974, AdaGrad 0.945-0.969, Adam 0.931-0.964;
    # popularity 0.719; the kernel (15 epochs, lr 0.05) 0.921.
    assert metrics.auc(model, X, test) > 0.88
    assert metrics.auc(model, X, test) > metrics.auc(metrics.popularity_scorer(X), X, test) + 0.1
    again = BPR(**kw).fit(X)
    np.testing.assert_array_equal(model.user_factors, again.user_factors)
    resumed = BPR(**kw).fit(X, epochs=9).partial_fit(X, epochs=6)
    np.testing.assert_array_equal(model.item_factors, resumed.item_factors)


def test_minibatch_model_saves_loads_and_recommends(tmp_path):
    X, _ = _planted(seed=1)
    model = BPR(factors=4, epochs=3, solver="minibatch", batch_size=16, dtype=np.float64, random_state=0).fit(X)
    model.save(tmp_path / "m.npz")
    loaded = BPR.load(tmp_path / "m.npz")
    assert loaded.solver == "minibatch" and loaded.batch_size == 16
    np.testing.assert_array_equal(loaded.recommend(np.arange(5), n=5)[0], model.recommend(np.arange(5), n=5)[0])
    assert loaded.user_factors.dtype == np.float64


def test_minibatch_refuses_what_it_cannot_train():
    X, _ = _planted()
    with pytest.raises(ValueError, match="warp"):
        BPR(solver="minibatch", loss="warp")
    with pytest.raises(ValueError, match="dns"):
        BPR(solver="minibatch", sampler="dns")
    with pytest.raises(ValueError, match="solver"):
        BPR(solver="numpy")


def test_dense_adam_is_keras_1s_update_on_the_dense_mean_gradient():
    """Keras 1 / Theano: m, v of every row decay each step; lr_t = lr sqrt(1 - b2^t) / (1 - b1^t)."""
    m = _csr(seed=9)
    U, V, b = _params(m, seed=10)
    ref = [a.copy() for a in (U, V, b)]
    moments = [[np.zeros_like(a), np.zeros_like(a)] for a in ref]
    state = OptimizerState("adam-dense", *m.shape, U.shape[1])
    for t in range(1, 6):
        users, pos, neg = _triplets(m, n=48, seed=t)
        apply_batch(U, V, b, state, users, pos, neg, learning_rate=0.01, loss="sigmoid", regularization=REG)
        g = triplet_gradients(*ref, users, pos, neg, loss="sigmoid", regularization=REG)
        rate = 0.01 * np.sqrt(1 - 0.999 ** t) / (1 - 0.9 ** t)
        for a, (first, second), grad in zip(ref, moments, (g.user_factors, g.item_factors, g.item_bias)):
            grad = grad / len(users)
            first[...] = 0.9 * first + 0.1 * grad
            second[...] = 0.999 * second + 0.001 * grad * grad
            a -= rate * first / (np.sqrt(second) + 1e-8)
    assert state.user_steps.min() == state.user_steps.max() == 5
    for mine, theirs in zip((U, V, b), ref):
        np.testing.assert_allclose(mine, theirs, rtol=1e-12, atol=1e-14)


def test_uniform_any_keeps_positives_and_needs_the_minibatch_solver():
    m = _csr(n_users=2, n_items=10, density=0.5, seed=12)
    user_of = np.repeat(np.arange(m.shape[0]), np.diff(m.indptr))
    keys = user_of.astype(np.int64) * m.shape[1] + m.indices
    drawn = draw_negatives(np.random.default_rng(0), np.zeros(50_000, np.int64), keys, m.shape[1], False,
                           (np.empty(0), np.empty(0, np.int64)), keeps_liked=True)
    p, skip = sampling.negative_distribution("uniform-any", m.indices[m.indptr[0]:m.indptr[1]], m.shape[1])
    np.testing.assert_allclose(p, 0.1)
    assert skip == 0.0
    assert stats.chisquare(np.bincount(drawn, minlength=10)).pvalue > 1e-4
    with pytest.raises(ValueError, match="minibatch"):
        BPR(sampler="uniform-any")
    with pytest.raises(ValueError, match="minibatch"):
        BPR(optimizer="adam-dense")
    X, _ = _planted()
    model = BPR(factors=4, epochs=2, solver="minibatch", sampler="uniform-any", optimizer="adam-dense",
                learning_rate=0.01, random_state=0).fit(X)
    assert model.history_[-1].skipped == 0 and np.isfinite(model.user_factors).all()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_uniform_initialisation_has_the_asked_spread(dtype):
    X, _ = _planted()
    model = BPR(factors=50, epochs=0, init="uniform", init_std=0.05 / np.sqrt(3), dtype=dtype, random_state=0).fit(X)
    values = np.concatenate([model.user_factors.ravel(), model.item_factors.ravel()])
    assert values.dtype == dtype and np.abs(values).max() <= 0.05
    assert abs(values.std() - 0.05 / np.sqrt(3)) < 0.001 and abs(values.mean()) < 0.001
    normal = BPR(factors=50, epochs=0, init_std=0.05 / np.sqrt(3), dtype=dtype, random_state=0).fit(X)
    assert np.abs(normal.user_factors).max() > 0.05  # a normal law reaches beyond sqrt(3) std


def test_the_keras_example_script_runs_one_epoch(ml100k_path, capsys):
    from _scripts import load_script

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "keras_example.py"
    for module in load_script(script, "bpr_numpy_bench_keras_example"):
        train, test = module.load(ml100k_path)
        assert train.shape == test.shape == (944, 1683) and train.nnz == 49_906  # raw 1-based ids, ratings >= 4
        assert module.main(["--data", str(ml100k_path), "--seeds", "1", "--epochs", "1", "--offset", "0"]) == 0
    table = capsys.readouterr().out
    assert "| 1 | 0.9059 |" in table and "largest |mean - published|" in table


def test_an_interrupted_minibatch_epoch_is_undone(monkeypatch):
    """Ctrl-C inside an epoch: the model keeps the last completed one and trains on from it."""
    from bpr_numpy.model import _minibatch

    X, _ = _planted(seed=2)
    kw = dict(factors=6, solver="minibatch", batch_size=32, optimizer="adam", learning_rate=0.01,
              random_state=0, dtype=np.float64)
    one = BPR(**kw, epochs=1).fit(X)
    two = BPR(**kw, epochs=2).fit(X)
    calls, real = [0], _minibatch.apply_batch
    per_epoch = -(-X.nnz // 32)

    def interrupted(*args, **kwargs):
        calls[0] += 1
        if calls[0] == per_epoch + 5:  # inside the second epoch
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(_minibatch, "apply_batch", interrupted)
    model = BPR(**kw, epochs=2)
    with pytest.raises(KeyboardInterrupt):
        model.fit(X)
    assert model.interrupted_ and len(model.history_) == 1
    np.testing.assert_array_equal(model.item_factors, one.item_factors)
    monkeypatch.setattr(_minibatch, "apply_batch", real)
    model.partial_fit(X, epochs=1)
    np.testing.assert_array_equal(model.item_factors, two.item_factors)


def test_minibatch_fit_validates_and_keeps_the_best_epoch():
    X, test = _planted(seed=3)
    model = BPR(factors=6, epochs=8, solver="minibatch", batch_size=32, learning_rate=5.0, random_state=0)
    model.fit(X, validation=(X, test), metric="auc", patience=3)
    assert model.best_epoch_ is not None and model.best_score_ == max(
        r.validation for r in model.history_ if r.validation is not None)
    assert abs(metrics.auc(model, X, test) - model.best_score_) < 1e-9


def test_a_refused_set_params_changes_nothing_and_save_refuses_broken_rules(tmp_path):
    X, _ = _planted(seed=5)
    model = BPR(factors=4, epochs=1, threads=1, random_state=0).fit(X)
    with pytest.raises(ValueError, match="minibatch"):
        model.set_params(optimizer="adam-dense")
    assert model.optimizer == "sgd"
    model.optimizer = "adam-dense"  # assigned directly: the file would not load, so it is not written
    with pytest.raises(ValueError, match="minibatch"):
        model.save(tmp_path / "m.npz")
    assert not (tmp_path / "m.npz").exists()


def test_distributed_training_refuses_the_minibatch_solver():
    from bpr_numpy import distributed

    X, _ = _planted(seed=6)
    with pytest.raises(ValueError, match="solver='kernel'"):
        distributed.fit(None, X, factors=4, epochs=1, solver="minibatch")


def test_a_new_fit_forgets_the_last_ones_interruption_and_best_epoch():
    X, test = _planted(seed=7)
    model = BPR(factors=4, epochs=3, solver="minibatch", learning_rate=5.0, random_state=0)
    model.fit(X, validation=(X, test), metric="auc")
    model.interrupted_ = True
    model.fit(X)
    assert not model.interrupted_ and model.best_epoch_ is None and model.best_score_ is None
