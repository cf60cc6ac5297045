"""Side features: the hybrid math against the oracle, the kernel against the math, the estimator API."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from _budget import examples
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from bpr_numpy import BPR
from bpr_numpy._hybrid_kernels import _hybrid_apply_triplets
from bpr_numpy._kernel_args import FeatureMatrices, Parameters, epoch_outputs, epoch_settings, training_data
from bpr_numpy._kernels import _sample_stream
from bpr_numpy.gradcheck import check_hybrid_gradients
from bpr_numpy.hybrid import as_feature_matrix
from bpr_numpy.objective import (LOSSES, OPTIMIZER_REGISTRY, OptimizerState, Regularization, hybrid_representations,
                                 hybrid_sgd_step, hybrid_triplet_gradients, loss_code)

#: The update rules the hybrid kernels apply.
HYBRID_OPTIMIZERS = [name for name, spec in OPTIMIZER_REGISTRY.items() if spec.hybrid]
SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@st.composite
def hybrid_problems(draw, max_rows=6, max_features=5):
    """Random sparse feature matrices (features shared by several rows, any real values), embeddings, triplets."""
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    n_users, n_items = draw(st.integers(1, max_rows)), draw(st.integers(2, max_rows))
    n_uf, n_if = draw(st.integers(1, max_features)), draw(st.integers(1, max_features))
    factors = draw(st.integers(1, 4))
    density = draw(st.sampled_from([0.3, 0.6, 1.0]))

    # Some rows a lone feature of value 1, as identities are: the kernel's SGD takes its plain-step
    # path for a triplet of such rows (two items may share that feature: the general path).
    unit_rows = draw(st.sampled_from([0.0, 0.5, 1.0]))

    def features(rows, cols):
        values = rng.choice([1.0, 0.5, 2.0, -1.0, 0.25], size=(rows, cols))
        dense = np.where(rng.random((rows, cols)) < density, values, 0.0)
        lone = rng.random(rows) < unit_rows
        dense[lone] = 0.0
        dense[np.flatnonzero(lone), rng.integers(0, cols, lone.sum())] = 1.0
        return sp.csr_matrix(dense)

    X, Y = features(n_users, n_uf), features(n_items, n_if)
    E = rng.normal(0, 0.7, (n_uf, factors))
    F = rng.normal(0, 0.7, (n_if, factors))
    c = rng.normal(0, 0.7, n_if) if draw(st.booleans()) else None
    batch = draw(st.integers(1, 12))
    users = rng.integers(0, n_users, batch)
    positives = rng.integers(0, n_items, batch)
    negatives = (positives + rng.integers(1, n_items, batch)) % n_items
    reg = Regularization(*rng.choice([0.0, 0.01, 0.3], 4))
    return E, F, c, X, Y, users, positives, negatives, reg


@settings(max_examples=examples(150), **SETTINGS)
@given(hybrid_problems(), st.sampled_from(LOSSES))
def test_hybrid_gradients_pass_the_finite_difference_oracle(problem, loss):
    E, F, c, X, Y, users, positives, negatives, reg = problem
    if loss == "warp":  # differences straddling the hinge's kink are not a gradient error
        U, V, b = hybrid_representations(E, F, c, X, Y)
        x = np.einsum("bf,bf->b", U[users], V[positives] - V[negatives])
        if c is not None:
            x += b[positives] - b[negatives]
        assume(np.abs(1.0 - x).min() > 1e-3)
    result = check_hybrid_gradients(E, F, c, X, Y, users, positives, negatives, loss=loss, regularization=reg)
    assert result.passed, result.errors


def test_the_hybrid_oracle_catches_a_planted_error(monkeypatch):
    # The oracle must be able to fail: a factor-2 regularisation error in the item embeddings.
    import sys

    gc = sys.modules["bpr_numpy.gradcheck"]  # the package binds the name gradcheck to the function

    rng = np.random.default_rng(0)
    X, Y = sp.csr_matrix(rng.random((3, 2))), sp.csr_matrix(rng.random((4, 3)))
    E, F, c = rng.normal(size=(2, 3)), rng.normal(size=(3, 3)), rng.normal(size=3)
    args = (E, F, c, X, Y, np.array([0, 1, 2]), np.array([0, 1, 2]), np.array([1, 2, 3]))
    assert check_hybrid_gradients(*args, regularization=0.1).passed
    honest = gc.hybrid_triplet_gradients

    def wrong(*a, **kw):
        g = honest(*a, **kw)
        return g._replace(item_embeddings=g.item_embeddings + 0.1 * np.asarray(a[1]))

    monkeypatch.setattr(gc, "hybrid_triplet_gradients", wrong)
    result = check_hybrid_gradients(*args, regularization=0.1)
    assert not result.passed and result.errors["item_embeddings"] > 1e-3


def test_identity_features_reproduce_the_plain_gradients():
    from bpr_numpy.objective import triplet_gradients

    rng = np.random.default_rng(1)
    U, V, b = rng.normal(size=(4, 3)), rng.normal(size=(5, 3)), rng.normal(size=5)
    u, i, j = np.array([0, 3, 3, 1]), np.array([0, 1, 4, 2]), np.array([1, 2, 0, 4])
    reg = Regularization(0.1, 0.2, 0.3, 0.4)
    plain = triplet_gradients(U, V, b, u, i, j, regularization=reg)
    hybrid = hybrid_triplet_gradients(U, V, b, np.eye(4), np.eye(5), u, i, j, regularization=reg)
    assert hybrid.loss == pytest.approx(plain.loss, rel=1e-14)
    for a, h in zip(plain[1:], hybrid[1:]):
        np.testing.assert_allclose(h, a, rtol=1e-14, atol=1e-15)


# ----------------------------------------------------------------------------- kernel against the reference

@settings(max_examples=examples(80), **SETTINGS)
@given(hybrid_problems(), st.sampled_from(["bpr", "sigmoid"]), st.sampled_from(HYBRID_OPTIMIZERS),
       st.sampled_from([np.float64, np.float32]))
def test_kernel_steps_replay_the_reference_step_by_step(problem, loss, optimizer, dtype):
    # float32 embeddings: the kernel computes in float32 (as the plain kernel does), the reference
    # in float64 from the same (float32) start, so they agree to float32 round-off over the steps.
    E, F, c, X, Y, users, positives, negatives, reg = problem
    use_bias = c is not None
    c = np.zeros(F.shape[0]) if c is None else c
    E, F, c = (a.astype(dtype) for a in (E, F, c))
    rtol, atol = (1e-9, 1e-12) if dtype == np.float64 else (2e-4, 2e-5)
    ref = [a.astype(np.float64) for a in (E, F, c)]
    ref_state = OptimizerState(optimizer, E.shape[0], F.shape[0], E.shape[1])
    xs_ref = [hybrid_sgd_step(ref[0], ref[1], ref[2] if use_bias else None, X, Y, u, i, j, learning_rate=0.05,
                              loss=loss, regularization=reg, optimizer=optimizer,
                              state=ref_state if optimizer != "sgd" else None)
              for u, i, j in zip(users, positives, negatives)]
    got = [E.copy(), F.copy(), c.copy()]
    state = OptimizerState(optimizer, E.shape[0], F.shape[0], E.shape[1], dtype=dtype)
    Xc, Yc = X.tocsr(), Y.tocsr()
    setup = epoch_settings(n_samples=0, user_run=1, seed=0, epoch=0, learning_rate=0.05, regularization=reg,
                           loss_code=loss_code(loss), use_bias=use_bias, skip_liked=False, dtype=E.dtype)
    xs = _hybrid_apply_triplets(Parameters(*got), FeatureMatrices(Xc.indptr, Xc.indices, Xc.data, Yc.indptr,
                                                                  Yc.indices, Yc.data),
                                (users, positives, negatives), setup, state.kernel_args())
    np.testing.assert_allclose(xs, xs_ref, rtol=rtol, atol=atol)
    for a, b in zip(got, ref):
        assert a.dtype == dtype
        np.testing.assert_allclose(a, b, rtol=rtol, atol=atol)
    if optimizer != "sgd":
        np.testing.assert_allclose(state.item_second, ref_state.item_second, rtol=rtol, atol=atol)


def _interactions(seed=0, n_users=50, n_items=30, density=0.2):
    rng = np.random.default_rng(seed)
    dense = (rng.random((n_users, n_items)) < density).astype(np.float32)
    dense[np.arange(n_users), rng.integers(0, n_items, n_users)] = 1
    return sp.csr_matrix(dense)


def _metadata(rows, cols, seed):
    rng = np.random.default_rng(seed)
    return sp.csr_matrix((rng.random((rows, cols)) < 0.4).astype(np.float64))


def test_a_hybrid_epoch_in_two_calls_equals_the_epoch_in_one():
    # Every chunk exactly once, in order, whatever group of chunks a call covers.
    from bpr_numpy import _hybrid_kernels as HK
    from bpr_numpy._kernels import n_chunks

    R = _interactions(seed=3, n_users=120, n_items=40)
    Xm, Ym = _metadata(120, 4, 1), _metadata(40, 6, 2)
    results = []
    for cut in (None, 5):
        model = BPR(factors=3, epochs=0, threads=1, random_state=5, dtype=np.float64).fit(
            R, user_features=Xm, item_features=Ym)
        m = model._user_items
        n = m.nnz * 3
        chunks = n_chunks(n)
        out = epoch_outputs(chunks)
        params, features = model._features.kernel_args()
        setup = epoch_settings(n_samples=n, user_run=16, seed=7, epoch=0, learning_rate=0.05,
                               regularization=Regularization.coerce(0.01), loss_code=0, use_bias=True,
                               skip_liked=False, dtype=np.float64)
        for start, stop in (((0, chunks),) if cut is None else ((0, cut), (cut, chunks))):
            HK._hybrid_train_chunks(params, features, training_data(m.indptr, m.indices), setup, None,
                             OptimizerState("sgd", 0, 0, 3).kernel_args(), out, start, stop)
        results.append((*(a.copy() for a in params), *out))
    for got, want in zip(*results):
        np.testing.assert_array_equal(got, want)


def test_an_epoch_applies_the_plain_samplers_triplets_in_order():
    # The hybrid epoch draws exactly the plain model's triplet stream and applies it as the replay kernel does.
    R = _interactions()
    Xm, Ym = _metadata(50, 4, 1), _metadata(30, 6, 2)
    model = BPR(factors=3, epochs=0, threads=1, random_state=5, dtype=np.float64, user_run=4).fit(
        R, user_features=Xm, item_features=Ym)
    start = [a.copy() for a in (model.user_embeddings, model.item_embeddings, model.item_bias_embeddings)]
    model.partial_fit(R, epochs=1)
    indptr, indices = R.indptr.astype(np.int64), R.indices.astype(np.int32)
    u, i, j = _sample_stream(training_data(indptr, indices), 30, R.nnz, 4, model._seed, 0, False,
                             None)
    keep = j >= 0
    feats = model._features
    X, Y = feats.users.matrix, feats.items.matrix
    reg = Regularization.coerce(model.regularization)
    state = OptimizerState("sgd", 0, 0, 3)
    setup = epoch_settings(n_samples=0, user_run=1, seed=0, epoch=0, learning_rate=model.learning_rate,
                           regularization=reg, loss_code=0, use_bias=True, skip_liked=False, dtype=np.float64)
    _hybrid_apply_triplets(Parameters(*start), FeatureMatrices(X.indptr, X.indices, X.data, Y.indptr, Y.indices,
                                                               Y.data),
                           (u[keep], i[keep], j[keep]), setup, state.kernel_args())
    for a, b in zip(start, (model.user_embeddings, model.item_embeddings, model.item_bias_embeddings)):
        np.testing.assert_array_equal(a, b)
    # And the model's factors are the representations of the new embeddings.
    U, V, b = hybrid_representations(*start, X, Y)
    np.testing.assert_allclose(model.user_factors, U, rtol=1e-12)
    np.testing.assert_allclose(model.item_factors, V, rtol=1e-12)
    np.testing.assert_allclose(model.item_biases, b, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("optimizer", HYBRID_OPTIMIZERS)
@pytest.mark.parametrize("sampler", ["uniform", "popularity-skip"])
def test_identity_features_only_train_the_plain_model(optimizer, sampler, dtype):
    # The hybrid kernel computes SGD's step in the embeddings' dtype, as the plain kernel does, and
    # with identities only its sums are the plain kernel's (1 * e = e, d = V[i] - V[j]): the same
    # factors, bit for bit. AdaGrad and Adam: both kernels apply the same row rules, but the
    # gradient rows are summed in another order (j's: -slope w + reg h against reg h - slope w),
    # so they agree to round-off.
    R = _interactions(1)
    kw = dict(factors=16, epochs=4, threads=1, random_state=2, dtype=dtype, optimizer=optimizer,
              sampler=sampler, learning_rate=0.05)
    plain = BPR(**kw).fit(R)
    hybrid = BPR(**kw).fit(R, user_features=np.zeros((50, 0)), item_features=np.zeros((30, 0)))
    for name in ("user_factors", "item_factors", "item_biases"):
        if optimizer == "sgd":
            np.testing.assert_array_equal(getattr(hybrid, name), getattr(plain, name))
        else:
            rtol, atol = (1e-12, 1e-14) if dtype == np.float64 else (1e-4, 1e-6)
            np.testing.assert_allclose(getattr(hybrid, name), getattr(plain, name), rtol=rtol, atol=atol)
    assert [r.skipped for r in hybrid.history_] == [r.skipped for r in plain.history_]


# ----------------------------------------------------------------------------- estimator API

@pytest.fixture(scope="module")
def hybrid_model():
    R = _interactions(3)
    Xm, Ym = _metadata(50, 4, 4), _metadata(30, 6, 5)
    model = BPR(factors=4, epochs=15, threads=1, random_state=0, learning_rate=0.05, normalize_features=True).fit(
        R, user_features=Xm, item_features=Ym)
    return model, R, Xm, Ym


def test_cold_start_representations_are_the_metadata_part_of_the_embeddings(hybrid_model):
    model, R, Xm, Ym = hybrid_model
    new_users = np.array([[1, 0, 0, 1], [0, 0, 0, 0], [0, 2, 0, 0]], float)
    W = model.user_representations(new_users)
    normalized = new_users / np.maximum(np.abs(new_users).sum(1, keepdims=True), 1e-300)
    np.testing.assert_allclose(W, normalized @ model.user_embeddings[50:], rtol=1e-5, atol=1e-7)
    assert not W[1].any()  # no feature: the zero vector
    items = np.array([[0, 1, 1, 0, 0, 0]], float)
    V, b = model.item_representations(items)
    np.testing.assert_allclose(V[0], 0.5 * (model.item_embeddings[31] + model.item_embeddings[32]), rtol=1e-6)
    np.testing.assert_allclose(b[0], 0.5 * (model.item_bias_embeddings[31] + model.item_bias_embeddings[32]),
                               rtol=1e-5, atol=1e-7)
    scores = model.score_new_items([0, 3], items)
    np.testing.assert_allclose(scores, model.user_factors[[0, 3]] @ V.T + b, rtol=1e-6)
    top, _ = model.recommend(user_factors=W, filter_liked=False, n=5)
    assert top.shape == (3, 5)


def test_metadata_only_items_score_their_own_training_rows_alike():
    R = _interactions(4)
    Ym = _metadata(30, 6, 7)
    model = BPR(factors=4, epochs=5, threads=1, random_state=0, identity=False).fit(R, item_features=Ym)
    assert model.item_embeddings.shape == (6, 4)           # metadata only
    assert model.user_embeddings.shape == (50, 4)          # no user metadata: identities
    one_sided = BPR(factors=4, epochs=1, identity="users").fit(R, user_features=np.ones((50, 2)), item_features=Ym)
    assert one_sided.user_embeddings.shape == (52, 4) and one_sided.item_embeddings.shape == (6, 4)
    V, b = model.item_representations(Ym)
    np.testing.assert_allclose(V, model.item_factors, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(b, model.item_biases, rtol=1e-6, atol=1e-7)
    with pytest.raises(ValueError, match="without user_features"):
        model.user_representations(np.ones((1, 2)))


def test_validation_keeps_the_best_epochs_embeddings_with_its_factors():
    R = _interactions(5, n_users=80, n_items=40)
    Xm, Ym = _metadata(80, 3, 1), _metadata(40, 5, 2)
    holdout = _interactions(6, n_users=80, n_items=40)
    model = BPR(factors=4, epochs=12, threads=1, random_state=0, learning_rate=0.3).fit(
        R, user_features=Xm, item_features=Ym, validation=(R, holdout), metric="auc", validate_every=3)
    U, V, b = hybrid_representations(model.user_embeddings, model.item_embeddings, model.item_bias_embeddings,
                                     model._features.users.matrix, model._features.items.matrix)
    np.testing.assert_allclose(model.user_factors, U, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(model.item_factors, V, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(model.item_biases, b, rtol=1e-5, atol=1e-6)


def test_partial_fit_continues_like_one_fit_and_keeps_its_features():
    R = _interactions(7)
    Xm, Ym = _metadata(50, 3, 8), _metadata(30, 4, 9)
    kw = dict(factors=3, threads=1, random_state=4)
    once = BPR(epochs=6, **kw).fit(R, user_features=Xm, item_features=Ym)
    twice = BPR(epochs=2, **kw).fit(R, user_features=Xm, item_features=Ym).partial_fit(R, epochs=4)
    np.testing.assert_array_equal(once.item_embeddings, twice.item_embeddings)
    np.testing.assert_array_equal(once.user_factors, twice.user_factors)
    with pytest.raises(ValueError, match="item_features lay out 35 feature columns"):
        twice.partial_fit(R, item_features=_metadata(30, 5, 1))
    with pytest.raises(ValueError, match="fitted without side features"):
        BPR(factors=3, epochs=1).fit(R).partial_fit(R, item_features=Ym)


def test_save_and_load_keep_the_features(tmp_path, hybrid_model):
    model, R, Xm, Ym = hybrid_model
    path = tmp_path / "hybrid.npz"
    model.save(path)
    loaded = BPR.load(path)
    for name in ("user_embeddings", "item_embeddings", "item_bias_embeddings", "user_factors"):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(model, name))
    items = np.eye(6)[:2]
    np.testing.assert_array_equal(loaded.score_new_items(0, items), model.score_new_items(0, items))
    a = BPR.load(path).partial_fit(R, epochs=2)
    b = BPR.load(path).partial_fit(R, epochs=2, user_features=Xm, item_features=Ym)
    np.testing.assert_array_equal(a.item_embeddings, b.item_embeddings)
    # A file whose feature entries are incomplete is refused, not half-loaded.
    arrays = dict(np.load(path))
    del arrays["item_features_data"]
    np.savez(tmp_path / "broken.npz", **arrays)
    with pytest.raises(ValueError, match="not a valid bpr_numpy model file"):
        BPR.load(tmp_path / "broken.npz")


def test_two_threads_train_the_hybrid_model():
    R = _interactions(8, n_users=200, n_items=60)
    model = BPR(factors=4, epochs=3, threads=2, random_state=0).fit(R, user_features=_metadata(200, 3, 1),
                                                                     item_features=_metadata(60, 4, 2))
    assert np.isfinite(model.user_factors).all() and len(model.history_) == 3


@pytest.mark.parametrize("kw, fit_kw, error, match", [
    ({"loss": "warp"}, {}, ValueError, "side features support loss"),
    ({"sampler": "dns"}, {}, ValueError, "solver='kernel' support the samplers uniform, uniform-skip"),
    ({}, {"item_features": np.ones((29, 2))}, ValueError, "29 rows; expected 30"),
    ({}, {"user_features": np.full((50, 2), np.nan)}, ValueError, "NaN"),
    ({}, {"user_features": "genres"}, TypeError, "sparse matrix or a 2-D array"),
    ({}, {"item_features": np.ones(30)}, ValueError, "2-D"),
    ({}, {"item_features": np.array([["a"]] * 30)}, TypeError, "item_features"),
    ({"identity": "yes"}, {}, ValueError, "identity must be a bool, 'users' or 'items'"),
    ({"identity": 1}, {}, TypeError, "identity must be a bool"),
])
def test_bad_features_and_settings_are_named(kw, fit_kw, error, match):
    R = _interactions()
    fit_kw = dict(fit_kw)
    fit_kw.setdefault("user_features", np.ones((50, 2)))
    with pytest.raises(error, match=match):
        BPR(factors=2, epochs=1, **kw).fit(R, **fit_kw)


def test_cold_start_needs_features_of_the_fitted_columns(hybrid_model):
    model, *_ = hybrid_model
    with pytest.raises(ValueError, match="fitted with 6"):
        model.item_representations(np.ones((1, 5)))
    with pytest.raises(ValueError, match="without side features"):
        BPR(factors=2, epochs=1).fit(_interactions()).item_representations(np.ones((1, 2)))


@settings(max_examples=examples(100), **SETTINGS)
@given(st.sampled_from(["csr", "csc", "coo", "dense", "list"]), st.integers(1, 4), st.integers(0, 3),
       st.sampled_from([np.float64, np.float32, np.int8, np.bool_]), st.integers(0, 2**16))
def test_feature_matrices_in_any_format_mean_the_same(fmt, rows, cols, dtype, seed):
    rng = np.random.default_rng(seed)
    dense = (rng.random((rows, cols)) < 0.5) * rng.choice([1, 2, -1], (rows, cols))
    dense = dense.astype(dtype)
    obj = {"csr": sp.csr_matrix, "csc": sp.csc_matrix, "coo": sp.coo_matrix, "dense": np.asarray,
           "list": lambda a: a.tolist()}[fmt](dense)
    m = as_feature_matrix(obj, rows, "f")
    np.testing.assert_array_equal(m.toarray(), dense.astype(np.float64))
    assert m.has_canonical_format and (m.data != 0).all()


# ----------------------------------------------------------------------------- found by review

def test_a_model_whose_dtype_changed_saves_and_loads(tmp_path):
    R = _interactions(9)
    model = BPR(factors=3, epochs=1, threads=1, random_state=0).fit(R, user_features=_metadata(50, 3, 1),
                                                                     item_features=_metadata(30, 2, 2))
    model.set_params(dtype=np.float64).partial_fit(R)
    model.save(tmp_path / "m.npz")
    loaded = BPR.load(tmp_path / "m.npz")
    np.testing.assert_array_equal(loaded.item_embeddings, model.item_embeddings)
    assert loaded.user_factors.dtype == np.float64


@pytest.mark.parametrize("change", [{"loss": "warp"}, {"sampler": "dns"}, {"sampler": "aobpr"}])
def test_settings_changed_after_fitting_with_features_are_checked(change):
    R = _interactions(10)
    model = BPR(factors=3, epochs=1, threads=1).fit(R, item_features=_metadata(30, 2, 2))
    with pytest.raises(ValueError, match="side features"):
        model.set_params(**change).partial_fit(R)


def test_a_file_whose_factors_and_embeddings_disagree_is_refused(tmp_path):
    R = _interactions(11)
    model = BPR(factors=3, epochs=2, threads=1, random_state=0).fit(R, item_features=_metadata(30, 2, 2))
    model.save(tmp_path / "m.npz")
    arrays = dict(np.load(tmp_path / "m.npz"))
    arrays["item_factors"] = arrays["item_factors"][::-1].copy()
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(ValueError, match="not the sums of its feature embeddings"):
        BPR.load(tmp_path / "bad.npz")
    import json

    arrays = dict(np.load(tmp_path / "m.npz"))
    meta = json.loads(arrays["meta"].tobytes())
    meta["params"]["normalize_features"] = True
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
    np.savez(tmp_path / "bad2.npz", **arrays)
    with pytest.raises(ValueError, match="identity/normalize_features"):
        BPR.load(tmp_path / "bad2.npz")


def test_partial_fit_with_new_features_checks_first_and_keeps_factors_in_step():
    R = _interactions(12)
    Xm, Ym = _metadata(50, 3, 1), _metadata(30, 2, 2)
    model = BPR(factors=3, epochs=1, threads=1, random_state=0).fit(R, user_features=Xm, item_features=Ym)
    before = model.user_factors.copy()
    with pytest.raises(ValueError, match="epochs"):
        model.partial_fit(R, epochs=-1, user_features=Xm * 5)
    np.testing.assert_array_equal(model.user_factors, before)
    model.partial_fit(R, epochs=0, user_features=Xm * 5)      # only the user side given: items keep theirs
    U, V, b = hybrid_representations(model.user_embeddings, model.item_embeddings, model.item_bias_embeddings,
                                     model._features.users.matrix, model._features.items.matrix)
    np.testing.assert_allclose(model.user_factors, U, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(model.item_factors, V, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="item_features lay out 34 feature columns"):
        model.partial_fit(R, item_features=_metadata(30, 4, 2))


def test_degenerate_feature_values_and_layouts():
    R = _interactions(13)
    # A matrix without columns represents nothing: that side keeps its identities.
    model = BPR(factors=3, epochs=1, threads=1, identity=False).fit(R, item_features=np.zeros((30, 0)))
    assert model.item_embeddings.shape == (30, 3)
    huge = np.zeros((30, 2))
    huge[0] = 1e308
    with pytest.raises(ValueError, match="item_features row 0 has an L1 norm too large"):
        BPR(factors=3, epochs=1, normalize_features=True).fit(R, item_features=huge)
    tiny = np.zeros((30, 2))
    tiny[:, 0] = 1e-50  # kept exactly: feature values are float64 whatever the model's dtype
    model = BPR(factors=3, epochs=1, threads=1, identity=False).fit(R, item_features=tiny + np.eye(30, 2))
    assert model._features.items.matrix.data.dtype == np.float64 and (model._features.items.matrix.data != 0).all()
    with pytest.raises(ValueError, match="'users' or 'items'"):
        BPR(identity="both")


def test_numpy_bool_settings_save(tmp_path):
    R = _interactions(14)
    model = BPR(factors=2, epochs=1, identity=np.True_, normalize_features=np.False_, item_bias=np.True_).fit(
        R, item_features=_metadata(30, 2, 2))
    model.save(tmp_path / "m.npz")
    assert BPR.load(tmp_path / "m.npz").identity is True


def test_summed_integer_duplicates_do_not_wrap_around():
    coo = sp.coo_matrix((np.array([100, 100], np.int8), (np.array([0, 0]), np.array([1, 1]))), shape=(2, 3))
    np.testing.assert_array_equal(as_feature_matrix(coo, 2, "f").toarray()[0], [0, 200, 0])
    from bpr_numpy._validation import as_user_items

    assert as_user_items(coo).toarray()[0, 1] > 0
    raw = sp.csr_matrix((np.array([100, 100], np.int8), np.array([1, 1]), np.array([0, 2, 2])), shape=(2, 3))
    assert as_user_items(raw).toarray()[0, 1] > 0
