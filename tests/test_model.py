"""The estimator: training, reproducibility, inputs checked at the door, inference, persistence."""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import scipy.sparse as sp

from bpr_numpy import BPR, EpochReport, TrainingDivergedError
from bpr_numpy.model import FORMAT_VERSION


def planted(n_users=120, n_items=80, factors=4, per_user=12, seed=0):
    """Interactions from a planted low-rank taste model, so that BPR has something to learn."""
    rng = np.random.default_rng(seed)
    P, Q = rng.normal(size=(n_users, factors)), rng.normal(size=(n_items, factors))
    scores = P @ Q.T + rng.gumbel(size=(n_users, n_items))
    top = np.argsort(-scores, axis=1)[:, :per_user]
    dense = np.zeros((n_users, n_items), np.float32)
    np.put_along_axis(dense, top, 1.0, axis=1)
    return sp.csr_matrix(dense), P @ Q.T


@pytest.fixture(scope="module")
def data():
    return planted()


@pytest.fixture(scope="module")
def fitted(data):
    return BPR(factors=8, epochs=30, learning_rate=0.05, regularization=0.01, threads=1, random_state=0).fit(data[0])


def test_fit_learns_the_planted_ranking(data, fitted):
    X, truth = data
    assert fitted.user_factors.shape == (X.shape[0], 8) and fitted.item_factors.shape == (X.shape[1], 8)
    assert fitted.item_biases.shape == (X.shape[1],)
    assert fitted.user_factors.dtype == np.float32
    h = fitted.history_
    assert [r.epoch for r in h] == list(range(1, 31))
    assert h[-1].loss < h[0].loss and h[-1].ordered_fraction > 0.9
    assert all(r.samples == X.nnz and r.skipped == 0 and r.samples_per_second > 0 for r in h)
    # Model scores agree with the planted scores on unobserved items more often than chance.
    s = fitted.score(np.arange(X.shape[0])[:, None], np.arange(X.shape[1])[None, :])
    mask = X.toarray() == 0
    corr = np.mean([np.corrcoef(s[u][mask[u]], truth[u][mask[u]])[0, 1] for u in range(X.shape[0])])
    assert corr > 0.3


def test_single_thread_is_bitwise_reproducible_and_resumable(data):
    X = data[0]
    a = BPR(factors=8, epochs=6, threads=1, random_state=42).fit(X)
    b = BPR(factors=8, epochs=6, threads=1, random_state=42).fit(X)
    c = BPR(factors=8, epochs=2, threads=1, random_state=42).fit(X).partial_fit(X, epochs=4)
    for m in (b, c):
        np.testing.assert_array_equal(a.user_factors, m.user_factors)
        np.testing.assert_array_equal(a.item_factors, m.item_factors)
        np.testing.assert_array_equal(a.item_biases, m.item_biases)
    assert [r.loss for r in a.history_] == [r.loss for r in c.history_]
    d = BPR(factors=8, epochs=6, threads=1, random_state=43).fit(X)
    assert not np.array_equal(a.item_factors, d.item_factors)


def test_reproducible_across_processes(tmp_path, data):
    X = data[0]
    path = tmp_path / "x.npz"
    sp.save_npz(path, X)
    code = textwrap.dedent(f"""
        import numpy as np, scipy.sparse as sp
        from bpr_numpy import BPR
        m = BPR(factors=8, epochs=3, threads=1, random_state=7).fit(sp.load_npz({str(path)!r}))
        np.save({str(tmp_path / 'u.npy')!r}, m.user_factors)
    """)
    subprocess.run([sys.executable, "-c", code], check=True, cwd=os.path.dirname(os.path.dirname(__file__)))
    here = BPR(factors=8, epochs=3, threads=1, random_state=7).fit(X)
    np.testing.assert_array_equal(np.load(tmp_path / "u.npy"), here.user_factors)


def test_multithreaded_fit_learns_as_well(data):
    X, _ = data
    m = BPR(factors=8, epochs=30, learning_rate=0.05, regularization=0.01, threads=2, random_state=0).fit(X)
    assert m.history_[-1].ordered_fraction > 0.9


def test_float64_and_options(data):
    X = data[0]
    m = BPR(factors=4, epochs=3, dtype=np.float64, item_bias=False, loss="sigmoid", threads=1,
            regularization={"user": 0.01, "positive": 0.01, "negative": 0.001}, random_state=0).fit(X)
    assert m.user_factors.dtype == np.float64
    assert not m.item_biases.any()
    assert m.get_params()["item_bias"] is False
    assert "loss='sigmoid'" in repr(m)


def test_callback_gets_reports_and_can_stop(data):
    seen = []

    def cb(report):
        seen.append(report)
        return report.epoch < 3

    m = BPR(factors=4, epochs=10, threads=1, random_state=0).fit(data[0], callback=cb)
    assert len(seen) == 3 and len(m.history_) == 3
    assert isinstance(seen[0], EpochReport) and "M samples/s" in str(seen[0])


def test_a_callback_may_fit_another_model_on_several_threads(data):
    # The epoch loop holds the (re-entrant) lock of numba's thread count; a nested fit must not deadlock.
    inner = []

    def cb(report):
        inner.append(BPR(factors=4, epochs=2, threads=2, random_state=1).fit(data[0]))

    BPR(factors=4, epochs=2, threads=2, random_state=0).fit(data[0], callback=cb)
    assert len(inner) == 2 and all(m.history_ for m in inner)


def test_divergence_in_an_array_a_callback_swapped_in_is_caught(data):
    def cb(report):
        if report.epoch == 1:
            m.item_factors = np.full_like(m.item_factors, np.inf)

    m = BPR(factors=4, epochs=3, threads=1, random_state=0)
    with pytest.raises(TrainingDivergedError, match="diverged in epoch 2: "):
        m.fit(data[0], callback=cb)


def test_trained_arrays_start_on_a_cache_line(data):
    m = BPR(factors=5, epochs=1, threads=1, random_state=0).fit(data[0])
    assert all(a.ctypes.data % 64 == 0 and a.flags.c_contiguous for a in (m.user_factors, m.item_factors, m.item_biases))
    # Arrays set by hand (unaligned, another dtype, read-only) are copied in at the next fit, values kept.
    odd = np.empty(m.item_factors.size + 1, np.float64)[1:].reshape(m.item_factors.shape)
    odd[...] = m.item_factors
    odd.flags.writeable = False
    m.item_factors = odd
    before = odd.astype(np.float32)
    m.partial_fit(data[0], epochs=0)
    assert m.item_factors.ctypes.data % 64 == 0 and m.item_factors.dtype == np.float32
    np.testing.assert_array_equal(m.item_factors, before)


def test_progress_lines_go_to_stderr(data, capsys):
    BPR(factors=4, epochs=2, threads=1, random_state=0).fit(data[0], show_progress=True)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and err[0].lstrip().startswith("epoch") and "[1/2]" in err[0]


@pytest.mark.parametrize("bad, error, match", [
    (np.array([[1.0, np.nan]]), ValueError, "NaN or infinite"),
    (sp.csr_matrix(np.array([[1.0, np.inf]])), ValueError, "NaN or infinite"),
    (np.ones(5), ValueError, "must be 2-D"),
    (np.ones((2, 2, 2)), ValueError, "must be 2-D"),
    (np.array([["a", "b"]]), TypeError, "real numbers"),
    (np.array([[1 + 1j]]), TypeError, "complex"),
    (np.zeros((3, 4)), ValueError, "no positive"),
    (-np.ones((3, 4)), ValueError, "no positive"),
    (np.zeros((0, 4)), ValueError, "at least one user"),
    ("matrix.csv", TypeError, "sparse matrix or a 2-D array"),
    (None, TypeError, "sparse matrix or a 2-D array"),
])
def test_bad_interactions_are_rejected_with_a_clear_message(bad, error, match):
    with pytest.raises(error, match=match):
        BPR(epochs=1).fit(bad)


def test_accepted_inputs_are_canonicalised():
    dense = np.array([[0, 2, -1, 0], [0, 0, 0, 0], [1, 0, 0, 0.5]])
    coo = sp.coo_matrix(([1.0, 1.0, 1.0], ([0, 0, 2], [1, 1, 3])), shape=(3, 4))  # duplicate (0, 1)
    for X in (dense, dense.tolist(), sp.csc_matrix(dense), coo, sp.csr_array(dense), dense.astype(bool)):
        original = X.copy() if hasattr(X, "copy") else None
        m = BPR(factors=2, epochs=1, threads=1, random_state=0).fit(X)
        liked = m._user_items
        assert liked.has_sorted_indices and liked.indptr.dtype == np.int64
        assert (liked.data > 0).all()
        if original is not None and sp.issparse(X):
            assert (X != original).nnz == 0  # the caller's matrix is not modified
    m = BPR(factors=2, epochs=1, threads=1, random_state=0).fit(dense)
    assert m._user_items.toarray().tolist() == [[0, 1, 0, 0], [0, 0, 0, 0], [1, 0, 0, 1]]  # <= 0 is not positive
    # A canonical CSR of positives is shared, not copied, and left untouched by training.
    X = sp.csr_matrix(np.array([[0, 2.0, 0, 1.0], [0, 0, 0, 0], [3.0, 0, 0, 0.5]], dtype=np.float32))
    before = X.copy()
    m = BPR(factors=2, epochs=3, threads=1, random_state=0).fit(X)
    assert np.shares_memory(m._user_items.indices, X.indices)
    assert (X != before).nnz == 0 and np.array_equal(X.indices, before.indices)


@pytest.mark.parametrize("params, error, match", [
    (dict(factors=0), ValueError, "factors must be >= 1"),
    (dict(factors=2.5), TypeError, "factors must be an integer"),
    (dict(learning_rate=0.0), ValueError, "learning_rate must be finite and > 0"),
    (dict(learning_rate=float("nan")), ValueError, "learning_rate"),
    (dict(regularization=-0.1), ValueError, "regularization"),
    (dict(regularization={"item": 0.1}), ValueError, "unknown regularization role"),
    (dict(loss="hinge"), ValueError, "loss must be one of"),
    (dict(loss="warp", sampler="aobpr"), ValueError, "loss='warp'"),
    (dict(optimizer="rmsprop"), ValueError, "optimizer must be one of"),
    (dict(learning_rate_decay=0.0), ValueError, "learning_rate_decay"),
    (dict(dns_candidates=0), ValueError, "dns_candidates must be >= 1"),
    (dict(sampler="hard"), ValueError, "sampler must be one of"),
    (dict(dtype=np.float16), ValueError, "dtype must be"),
    (dict(dtype=int), ValueError, "dtype must be"),
    (dict(threads=-1), ValueError, "threads must be >= 0"),
    (dict(user_run=0), ValueError, "user_run must be >= 1"),
    (dict(user_run=33), ValueError, "user_run must be <= 32"),
    (dict(random_state="seed"), TypeError, "random_state"),
    (dict(item_bias="yes"), TypeError, "item_bias must be a bool"),
])
def test_bad_hyperparameters_are_rejected(params, error, match):
    with pytest.raises(error, match=match):
        BPR(**params)
    with pytest.raises(error, match=match):
        BPR().set_params(**params)


def test_divergence_stops_with_the_epoch_and_the_remedy(data):
    m = BPR(factors=8, learning_rate=1e30, epochs=5, threads=1, random_state=0)
    with pytest.raises(TrainingDivergedError, match=r"epoch 1: .* Lower the learning rate"):
        m.fit(data[0])
    with pytest.raises(TrainingDivergedError):
        m.recommend(0)  # the broken factors are never served silently


def test_not_fitted_and_partial_fit_shape(data):
    with pytest.raises(RuntimeError, match="not fitted"):
        BPR().recommend(0)
    m = BPR(factors=4, epochs=1, threads=1, random_state=0).partial_fit(data[0])
    assert len(m.history_) == 1
    with pytest.raises(ValueError, match="was fitted on"):
        m.partial_fit(data[0][:, :-1])


def test_score_matches_factors(fitted):
    users, items = np.array([0, 3, 5]), np.array([1, 1, 7])
    expected = np.einsum("nf,nf->n", fitted.user_factors[users], fitted.item_factors[items]) + fitted.item_biases[items]
    np.testing.assert_allclose(fitted.score(users, items), expected, rtol=1e-6)
    assert fitted.score(2, np.arange(5)).shape == (5,)
    with pytest.raises(ValueError, match="user index 120 is out of range"):
        fitted.score(120, 0)
    with pytest.raises(TypeError, match="integers"):
        fitted.score(0.5, 0)


def test_recommend_is_the_brute_force_top_n(data, fitted):
    X = data[0]
    full = fitted.score(np.arange(X.shape[0])[:, None], np.arange(X.shape[1])[None, :]).astype(np.float64)
    for u in (0, 7, 119):
        items, scores = fitted.recommend(u, n=10)
        s = full[u].copy()
        s[X[u].indices] = -np.inf
        expected = np.lexsort((np.arange(len(s)), -s))[:10]
        np.testing.assert_array_equal(items, expected)
        np.testing.assert_allclose(scores, s[expected], rtol=1e-6)
        assert not set(items) & set(X[u].indices)
    batch_items, batch_scores = fitted.recommend(np.array([0, 7, 119]), n=10)
    assert batch_items.shape == (3, 10)
    np.testing.assert_array_equal(batch_items[1], fitted.recommend(7, n=10)[0])
    unfiltered, _ = fitted.recommend(0, n=X.shape[1], filter_liked=False)
    assert len(unfiltered) == X.shape[1]


def test_recommend_pads_when_candidates_run_out(fitted, data):
    n_items = data[0].shape[1]
    items, scores = fitted.recommend(np.array([0, 1]), n=n_items + 5)
    assert items.shape == (2, n_items)  # capped at the catalogue
    assert (items[:, -12:] == -1).all() and np.isneginf(scores[:, -12:]).all()  # 12 liked
    single, _ = fitted.recommend(0, n=n_items + 5)
    assert len(single) == n_items - 12


def test_recommend_breaks_ties_by_lower_item_index():
    m = BPR(factors=2, epochs=1, threads=1, random_state=0).fit(np.eye(3, 6))
    m.user_factors[:] = 0
    m.item_biases[:] = np.array([0, 1, 1, 1, 0, 1], dtype=np.float32)
    items, _ = m.recommend(0, n=3)
    np.testing.assert_array_equal(items, [1, 2, 3])


def test_similar_items_is_cosine_without_the_query(fitted):
    V = fitted.item_factors.astype(np.float64)
    unit = V / np.linalg.norm(V, axis=1, keepdims=True)
    items, sims = fitted.similar_items(4, n=5)
    expected_all = unit @ unit[4]
    expected_all[4] = -np.inf
    np.testing.assert_array_equal(items, np.argsort(-expected_all, kind="stable")[:5])
    np.testing.assert_allclose(sims, expected_all[items], rtol=1e-5)
    assert fitted.similar_items(np.array([1, 2]), n=3)[0].shape == (2, 3)


def test_save_load_round_trip(tmp_path, fitted, data):
    path = tmp_path / "model.npz"
    fitted.save(path)
    loaded = BPR.load(path)
    for name in ("user_factors", "item_factors", "item_biases"):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(fitted, name))
    assert loaded.get_params() == fitted.get_params()
    assert loaded.history_ == fitted.history_
    np.testing.assert_array_equal(loaded.recommend(3)[0], fitted.recommend(3)[0])
    # Resuming a loaded model continues the same stream as resuming the original.
    a = BPR.load(path).partial_fit(data[0], epochs=2)
    b = BPR.load(path).partial_fit(data[0], epochs=2)
    np.testing.assert_array_equal(a.item_factors, b.item_factors)
    assert [f for f in os.listdir(tmp_path) if f.endswith(".tmp")] == []


def test_save_without_interactions(tmp_path, fitted):
    fitted.save(tmp_path / "m.npz", include_interactions=False)
    loaded = BPR.load(tmp_path / "m.npz")
    with pytest.raises(ValueError, match="needs user_items"):
        loaded.recommend(0)
    assert len(loaded.recommend(0, filter_liked=False)[0]) == 10


def test_corrupt_truncated_and_foreign_files_are_rejected(tmp_path, fitted):
    good = tmp_path / "good.npz"
    fitted.save(good)
    raw = good.read_bytes()
    cases = {
        "truncated.npz": raw[: len(raw) // 2],
        "empty.npz": b"",
        "garbage.npz": os.urandom(2048),
    }
    for name, content in cases.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(ValueError, match="not a (readable|valid) bpr_numpy model"):
            BPR.load(tmp_path / name)
    np.savez(tmp_path / "foreign.npz", a=np.arange(3))
    with pytest.raises(ValueError, match="no 'meta' entry"):
        BPR.load(tmp_path / "foreign.npz")
    with np.load(good) as z:
        arrays = dict(z)
    import json

    meta = json.loads(arrays["meta"].tobytes())
    meta["format_version"] = FORMAT_VERSION + 1
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
    np.savez(tmp_path / "future.npz", **arrays)
    with pytest.raises(ValueError, match="format version"):
        BPR.load(tmp_path / "future.npz")
    meta["format_version"] = FORMAT_VERSION
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
    arrays["item_bias"] = arrays["item_bias"][:-1]
    np.savez(tmp_path / "shapes.npz", **arrays)
    with pytest.raises(ValueError, match="item_bias has shape"):
        BPR.load(tmp_path / "shapes.npz")
    with pytest.raises(FileNotFoundError):
        BPR.load(tmp_path / "missing.npz")


def test_failed_save_keeps_the_old_file(tmp_path, fitted, monkeypatch):
    path = tmp_path / "m.npz"
    fitted.save(path)
    before = path.read_bytes()

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", boom)
    with pytest.raises(OSError, match="disk full"):
        fitted.save(path)
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["m.npz"]


def test_import_compiles_nothing():
    code = ("import sys, bpr_numpy; assert 'numba' not in sys.modules, 'numba imported'; "
            "from bpr_numpy import _kernels; "
            "assert all(not f.signatures for f in (_kernels._run_chunks, _kernels._apply_batch))")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_validation_keeps_the_best_epoch_and_stops_early(data):
    X = data[0].tocsr()
    rng = np.random.default_rng(0)
    held = X.multiply(sp.csr_matrix(rng.random(X.shape) < 0.2)).tocsr()
    train = (X - held).tocsr()
    train.eliminate_zeros()
    m = BPR(factors=8, epochs=60, learning_rate=0.3, regularization=0.0, threads=1, random_state=0)
    m.fit(train, validation=(train, held), metric="precision@5", patience=5)
    values = [r.validation for r in m.history_]
    assert all(v is not None for v in values) and m.history_[0].metric == "precision@5"
    best = int(np.argmax(values))  # first maximum: later ties are not improvements
    assert m.best_epoch_ == best + 1 and m.best_score_ == values[best]
    assert len(m.history_) == min(60, best + 1 + 5)
    from bpr_numpy import metrics

    assert metrics.precision_at_k(m, train, held, k=5) == pytest.approx(m.best_score_)
    assert "precision@5" in str(m.history_[0])


def test_validation_every_n_epochs_and_bad_arguments(data):
    X = data[0]
    m = BPR(factors=4, epochs=6, threads=1, random_state=0).fit(X, validation=(X, X), metric="auc", validate_every=3)
    assert [r.validation is not None for r in m.history_] == [False, False, True, False, False, True]
    with pytest.raises(ValueError, match="unknown validation metric"):
        BPR(epochs=1).fit(X, validation=(X, X), metric="ndcg@x")
    with pytest.raises(ValueError, match="unknown validation metric"):
        BPR(epochs=1).fit(X, validation=(X, X), metric="auc@5")
    with pytest.raises(ValueError, match="has shape"):
        BPR(epochs=1).fit(X, validation=(X, X[:, :-1]))
    with pytest.raises(TypeError, match="pair"):
        BPR(epochs=1).fit(X, validation=X)
    with pytest.raises(ValueError, match="patience"):
        BPR(epochs=1).fit(X, validation=(X, X), patience=0)


def test_package_names_resolve_lazily_and_consistently():
    code = ("import sys, bpr_numpy; assert 'scipy.sparse' not in sys.modules; "
            "import bpr_numpy.gradcheck; from bpr_numpy import gradcheck, BPR, metrics; "
            "assert callable(gradcheck) and gradcheck.__name__ == 'gradcheck'; "
            "assert BPR.__name__ == 'BPR' and metrics.__name__ == 'bpr_numpy.metrics'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_initial_factors_do_not_depend_on_the_thread_count():
    # Drawn per block of rows from generators seeded by (seed, role, block), on several threads.
    rng = np.random.default_rng(0)
    n_users = 40_000  # more than two blocks
    X = sp.csr_matrix((np.ones(n_users), (np.arange(n_users), rng.integers(0, 50, n_users))), shape=(n_users, 50))
    one = BPR(factors=8, epochs=0, threads=1, random_state=3).fit(X)
    two = BPR(factors=8, epochs=0, threads=2, random_state=3).fit(X)
    np.testing.assert_array_equal(one.user_factors, two.user_factors)
    np.testing.assert_array_equal(one.item_factors, two.item_factors)
    assert one.user_factors.dtype == np.float32
    assert abs(one.user_factors.std() - 1 / np.sqrt(8)) < 0.01 and abs(one.user_factors.mean()) < 0.01
    assert not np.array_equal(one.user_factors[:50], one.item_factors)  # users and items draw different streams
    other = BPR(factors=8, epochs=0, threads=1, random_state=4).fit(X)
    assert not np.array_equal(one.user_factors, other.user_factors)
