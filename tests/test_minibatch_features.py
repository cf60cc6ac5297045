"""The minibatch trainer with side features, and samplers that bring their own NumPy draw.

With side features a batch moves the feature embeddings through
``objective.hybrid_triplet_gradients`` on the rows it touches: with batch size 1 that is the
reference step ``objective.hybrid_sgd_step`` (every optimiser), with larger batches the mean of
the full-matrix gradient, and with identity features only it is the plain trainer.
"""

import numpy as np
import pytest
import scipy.sparse as sp

from bpr_numpy import BPR, metrics, sampling
from bpr_numpy.hybrid import Features
from bpr_numpy.model._minibatch import apply_hybrid_batch
from bpr_numpy.objective import (OPTIMIZERS, OptimizerState, Regularization, hybrid_sgd_step,
                                 hybrid_triplet_gradients)

from test_minibatch import _planted

REG = Regularization(user=0.01, positive=0.02, negative=0.03, bias=0.04)


def _features(n_users=12, n_items=10, seed=0, identity=True):
    """Features with shared metadata columns, values other than 1, and rows of several entries."""
    rng = np.random.default_rng(seed)
    users = sp.csr_matrix(np.where(rng.random((n_users, 3)) < 0.5, rng.choice([1.0, 0.5, 2.0], (n_users, 3)), 0))
    items = sp.csr_matrix(np.where(rng.random((n_items, 4)) < 0.5, rng.choice([1.0, -1.0, 0.25], (n_items, 4)), 0))
    features = Features.build((n_users, n_items), users, items, identity=identity, normalize=False)
    features.init_embeddings(lambda rows: rng.normal(0, 0.3, (rows, 5)))
    features.item_bias_embeddings[:] = rng.normal(0, 0.1, features.items.n_features)
    return features


def _triplets(n_users=12, n_items=10, n=300, seed=1):
    rng = np.random.default_rng(seed)
    users, positives = rng.integers(0, n_users, n), rng.integers(0, n_items, n)
    negatives = (positives + rng.integers(1, n_items, n)) % n_items  # never the positive
    return users, positives, negatives


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
@pytest.mark.parametrize("identity", [True, False])
def test_a_batch_of_one_is_the_hybrid_reference_step(optimizer, identity):
    mine = _features(identity=identity)
    ref = [a.copy() for a in mine.embeddings()]
    X, Y = mine.users.matrix, mine.items.matrix
    mine_state = OptimizerState(optimizer, X.shape[1], Y.shape[1], 5)
    ref_state = OptimizerState(optimizer, X.shape[1], Y.shape[1], 5)
    users, positives, negatives = _triplets()
    for k in range(len(users)):
        result = apply_hybrid_batch(mine, True, mine_state, users[k:k + 1], positives[k:k + 1], negatives[k:k + 1],
                                    learning_rate=0.05, loss="bpr", regularization=REG)
        x = hybrid_sgd_step(*ref, X, Y, int(users[k]), int(positives[k]), int(negatives[k]), learning_rate=0.05,
                            loss="bpr", regularization=REG, optimizer=optimizer, state=ref_state)
        assert result.ordered == int(x > 0)
    for got, want in zip(mine.embeddings(), ref):
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)


@pytest.mark.parametrize("use_bias", [True, False])
def test_a_batch_follows_the_mean_of_the_full_matrix_gradient(use_bias):
    features = _features(seed=2)
    before = [a.copy() for a in features.embeddings()]
    users, positives, negatives = _triplets(n=40, seed=3)  # rows repeat within the batch
    X, Y = features.users.matrix, features.items.matrix
    state = OptimizerState("sgd", 0, 0, 5)
    apply_hybrid_batch(features, use_bias, state, users, positives, negatives, learning_rate=0.3, loss="sigmoid",
                       regularization=REG)
    full = hybrid_triplet_gradients(*before[:2], before[2] if use_bias else None, X.toarray(), Y.toarray(), users,
                                    positives, negatives, loss="sigmoid", regularization=REG)
    np.testing.assert_allclose(features.user_embeddings, before[0] - 0.3 * full.user_embeddings / 40, atol=1e-12)
    np.testing.assert_allclose(features.item_embeddings, before[1] - 0.3 * full.item_embeddings / 40, atol=1e-12)
    want_bias = before[2] - 0.3 * full.item_bias_embeddings / 40 if use_bias else before[2]
    np.testing.assert_allclose(features.item_bias_embeddings, want_bias, atol=1e-12)


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_identity_features_alone_train_the_plain_model(optimizer):
    X, _ = _planted(seed=8, n_users=40, n_items=30)
    kw = dict(factors=5, epochs=3, solver="minibatch", batch_size=16, dtype=np.float64, random_state=1,
              optimizer=optimizer, learning_rate=0.05, regularization=0.01)
    plain = BPR(**kw).fit(X)
    # Metadata without a column: both sides are represented by their identities alone.
    hybrid = BPR(**kw).fit(X, user_features=np.zeros((40, 0)), item_features=np.zeros((30, 0)))
    assert hybrid._features is not None
    for a, b in zip(plain._parameters(), hybrid._parameters()):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-12)


def test_metadata_only_items_learn_and_the_model_saves_loads_and_scores_new_items(tmp_path):
    X, test = _planted(seed=1)
    # Item metadata that carries the taste: the signs of the first three singular vectors.
    _, _, vt = np.linalg.svd(X.toarray(), full_matrices=False)
    genres = np.hstack([vt[:3].T > 0.05, vt[:3].T < -0.05]).astype(float)
    model = BPR(factors=6, epochs=10, solver="minibatch", batch_size=32, learning_rate=3.0, regularization=0.001,
                random_state=0, identity="users").fit(X, item_features=genres)
    # Held-out AUC on data seeds 0-4 (measured): 0.875-0.889; popularity 0.719-0.768.
    assert metrics.auc(model, X, test) > max(0.84, metrics.auc(metrics.popularity_scorer(X), X, test) + 0.05)
    model.save(tmp_path / "m.npz")
    loaded = BPR.load(tmp_path / "m.npz")
    for a, b in zip(model._parameters(), loaded._parameters()):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(loaded.recommend(0, 5)[0], model.recommend(0, 5)[0])
    factors, biases = loaded.item_representations(genres[:3])  # metadata only: the items' own representations
    np.testing.assert_allclose(factors, model.item_factors[:3], rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(biases, model.item_biases[:3], rtol=1e-5, atol=1e-7)
    again = BPR(factors=6, epochs=10, solver="minibatch", batch_size=32, learning_rate=3.0, regularization=0.001,
                random_state=0, identity="users").fit(X, epochs=4, item_features=genres).partial_fit(X, epochs=6)
    np.testing.assert_array_equal(again.item_embeddings, model.item_embeddings)


def test_a_model_fitted_with_features_by_the_kernels_goes_on_with_the_minibatch_solver():
    X, _ = _planted(seed=4)
    genres = np.eye(X.shape[1])[:, :5]
    model = BPR(factors=4, epochs=1, threads=1, random_state=0).fit(X, item_features=genres)
    before = model.item_embeddings.copy()
    model.set_params(solver="minibatch", optimizer="adagrad", learning_rate=0.5).partial_fit(X, epochs=1)
    assert not np.array_equal(model.item_embeddings, before)
    np.testing.assert_allclose(model.item_factors, model._features.items.matrix @ model.item_embeddings, rtol=1e-5)
    model.set_params(sampler="uniform-any").partial_fit(X, epochs=1)  # a sampler the hybrid kernels cannot draw
    with pytest.raises(ValueError, match="side features with solver='kernel' support the samplers"):
        model.set_params(solver="kernel", sampler="dns").partial_fit(X, epochs=1)


# ----------------------------------------------------------------------------- samplers with a draw


@pytest.fixture
def next_item_sampler():
    """A test-only sampler: the negative of (u, i) is i + 1 (mod n_items), or -1 (skip) for item 0."""
    calls = []

    def draw(users, positives, user_items, rng):
        calls.append((users.copy(), positives.copy()))
        negatives = (positives + 1) % user_items.shape[1]
        return np.where(positives == 0, -1, negatives)

    spec = sampling.register_sampler(sampling.Sampler(
        "next-item", sampling.SamplerCodes(sampling.CANDIDATE_UNIFORM, False, sampling.ADAPTIVE_NONE), (),
        warp=False, hybrid=True, distributed=False, draw=draw))
    yield spec, calls
    sampling.unregister_sampler("next-item")


@pytest.mark.parametrize("with_features", [False, True])
def test_a_samplers_draw_gives_the_negatives_of_the_minibatch_trainer(next_item_sampler, with_features):
    _, calls = next_item_sampler
    X, _ = _planted(seed=10, n_users=30, n_items=20)
    kw = dict(factors=4, epochs=1, solver="minibatch", batch_size=16, dtype=np.float64, random_state=2,
              learning_rate=0.1, regularization=0.01)
    extra = dict(item_features=np.zeros((20, 0))) if with_features else {}
    model = BPR(sampler="next-item", **kw).fit(X, **extra)
    users = np.concatenate([c[0] for c in calls])
    positives = np.concatenate([c[1] for c in calls])
    assert len(users) == X.nnz and (np.sort(users * 20 + positives) == np.sort(
        np.repeat(np.arange(30), np.diff(X.indptr)) * 20 + X.indices)).all()
    assert model.history_[-1].skipped == int((X.indices == 0).sum())
    # Replayed by hand through the plain trainer's step: the same factors.
    from bpr_numpy.model._minibatch import apply_batch

    ref = BPR(**kw).fit(X, epochs=0)
    state = OptimizerState("sgd", 0, 0, 4)
    for u, i in calls:
        keep = i != 0
        apply_batch(ref.user_factors, ref.item_factors, ref.item_biases, state, u[keep], i[keep],
                    (i[keep] + 1) % 20, learning_rate=0.1, loss="bpr", regularization=Regularization.coerce(0.01))
    np.testing.assert_allclose(model.item_factors, ref.item_factors, rtol=0, atol=1e-12)


def test_a_sampler_with_a_draw_is_refused_where_it_cannot_run(next_item_sampler):
    with pytest.raises(ValueError, match="only solver='minibatch' calls"):
        BPR(sampler="next-item")
    with pytest.raises(ValueError, match="its own function"):
        sampling.negative_distribution("next-item", [0], 5)
    codes = sampling.SamplerCodes(sampling.CANDIDATE_UNIFORM, False, sampling.ADAPTIVE_NONE)
    with pytest.raises(TypeError, match="callable"):
        sampling.register_sampler(sampling.Sampler("bad", codes, (), False, True, False, draw=3))
    with pytest.raises(ValueError, match="its own draw"):
        sampling.register_sampler(sampling.Sampler("bad", codes, (), True, True, False, draw=lambda *a: a[1]))
    with pytest.raises(ValueError, match="its own draw"):
        sampling.register_sampler(sampling.Sampler("bad", codes._replace(skip_liked=True), (), False, True, False,
                                                   draw=lambda *a: a[1]))
    assert "bad" not in sampling.REGISTRY


@pytest.mark.parametrize("returned, message", [
    (lambda u, i, m: i[:-1], "one integer item per triplet"),
    (lambda u, i, m: i.astype(float), "one integer item per triplet"),
    (lambda u, i, m: i * 0 + m.shape[1], "outside"),
    (lambda u, i, m: i * 0 - 2, "outside"),
])
def test_a_draw_that_returns_nonsense_is_named(returned, message):
    codes = sampling.SamplerCodes(sampling.CANDIDATE_UNIFORM, False, sampling.ADAPTIVE_NONE)
    sampling.register_sampler(sampling.Sampler("broken", codes, (), False, True, False,
                                               draw=lambda u, i, m, rng: returned(u, i, m)))
    try:
        X, _ = _planted(seed=11, n_users=20, n_items=15)
        with pytest.raises(ValueError, match=f"sampler 'broken': draw .*{message}"):
            BPR(factors=3, epochs=1, solver="minibatch", sampler="broken", random_state=0).fit(X)
    finally:
        sampling.unregister_sampler("broken")
