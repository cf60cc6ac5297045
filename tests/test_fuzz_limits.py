"""What an outside fuzz broke, and its classes: replaced arrays, magnitudes, long kernel calls, saves.

Each finding has a test that failed before its fix. The property tests sweep the class: every
public method that reaches a kernel with arrays replaced by ones of any shape and dtype; every
hyperparameter and size argument at and beyond the int64/float64 limits. A case either works or
raises ValueError/TypeError naming the problem: never a crash, a raw OverflowError/MemoryError, a
silent wrong answer or a kernel call too long to interrupt. The replaced-array test also runs under
``NUMBA_BOUNDSCHECK=1`` (``test_fuzz.py::test_fuzz_subset_runs_with_boundscheck``).
"""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
from _budget import examples
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bpr_numpy import BPR, TrainingDivergedError, datasets, metrics
from bpr_numpy.model import _kernel_epoch as model_module
from bpr_numpy._parameters import CONSTRAINTS, MAX_CANDIDATES

REPO = Path(__file__).resolve().parents[1]
SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
NAMED = (ValueError, TypeError)
N_USERS, N_ITEMS, FACTORS = 12, 9, 4


def fuzz(n: int):
    return settings(max_examples=examples(n), **SETTINGS)


def small_matrix(seed: int = 0) -> sp.csr_matrix:
    rng = np.random.default_rng(seed)
    dense = (rng.random((N_USERS, N_ITEMS)) < 0.35).astype(np.float32)
    dense[np.arange(N_USERS), rng.integers(0, N_ITEMS, N_USERS)] = 1  # every user has a positive
    return sp.csr_matrix(dense)


@pytest.fixture(scope="module")
def trained() -> BPR:
    return BPR(factors=FACTORS, epochs=2, threads=1, random_state=0).fit(small_matrix())


@pytest.fixture(scope="module")
def trained_hybrid() -> BPR:
    rng = np.random.default_rng(1)
    item_features = sp.csr_matrix((rng.random((N_ITEMS, 3)) < 0.5).astype(np.float64))
    return BPR(factors=FACTORS, epochs=2, threads=1, random_state=0).fit(small_matrix(), item_features=item_features)


def run_python(code: str, env: dict | None = None) -> subprocess.CompletedProcess:
    full = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    full.update(env or {})
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=600, env=full, cwd=str(REPO))


# --------------------------------------------------------------------------- 1. replaced arrays

def test_a_replaced_short_bias_is_a_named_error_not_a_segfault():
    # The outside fuzz's case: recommend read ~3e35 garbage, partial_fit wrote past the array (SIGSEGV).
    result = run_python("""
        import numpy as np, scipy.sparse as sp
        from bpr_numpy import BPR
        X = sp.random(300, 2000, density=0.02, random_state=0, format="csr"); X.data[:] = 1
        model = BPR(epochs=1, threads=1, random_state=0).fit(X)
        model.item_biases = np.zeros(1, np.float32)
        for call in (lambda: model.recommend(0), lambda: model.partial_fit(X)):
            try:
                call()
                print("no error")
            except ValueError as exc:
                print("ValueError:", exc)
    """)
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.splitlines()
    assert len(lines) == 2 and all("model.item_biases has shape (1,)" in line for line in lines), result.stdout


def _replacement(draw, reference: np.ndarray) -> np.ndarray:
    """An array like ``reference`` or off in shape, dimensionality or dtype."""
    ndim = draw(st.sampled_from([reference.ndim, reference.ndim, 0, 1, 2, 3]))
    shape = tuple(draw(st.sampled_from([0, 1, 2, 8, 11, 13] + list(reference.shape))) for _ in range(ndim))
    if ndim == reference.ndim and draw(st.booleans()):
        shape = reference.shape
    dtype = draw(st.sampled_from(["float32", "float32", "float64", "float16", "int64", "bool", "complex64"]))
    return np.ones(shape, dtype=dtype)


CALLS = {
    "recommend": lambda m, X: m.recommend(np.arange(3), n=4),
    "recommend_one": lambda m, X: m.recommend(1, n=4),
    "recommend_vectors": lambda m, X: m.recommend(user_factors=np.ones((2, FACTORS)), filter_liked=False),
    "similar_items": lambda m, X: m.similar_items([0, 1], n=3),
    "score": lambda m, X: m.score(np.arange(3), 1),
    "partial_fit": lambda m, X: m.partial_fit(X, epochs=1),
    "partial_fit_threads": lambda m, X: m.set_params(threads=2).partial_fit(X, epochs=1),
    "fold_in": lambda m, X: m.fold_in(X[:2]),
    "evaluate": lambda m, X: metrics.evaluate(m, X, X, k=3, metrics=["ndcg", "auc"]),
    "save": lambda m, X: m.save(os.devnull),
}


@fuzz(300)
@given(st.sampled_from(["user_factors", "item_factors", "item_biases"]), st.sampled_from(sorted(CALLS)), st.data())
def test_fuzzed_replaced_arrays_reach_no_kernel_unchecked(trained, name, call, data):
    model = BPR(**trained.get_params()).set_params(threads=1)
    model.fit(small_matrix(), epochs=1)
    new = _replacement(data.draw, getattr(model, name))
    setattr(model, name, new)
    shapes_fit = new.shape == getattr(trained, name).shape
    try:
        CALLS[call](model, small_matrix())
    except NAMED as exc:
        assert any(word in str(exc) for word in (name, "dtype", "factors", "model has")), exc
        return
    # Accepted: only an array of the right shape and a float dtype (evaluate also takes ints and bools).
    assert shapes_fit, (name, new.shape)


@fuzz(60)
@given(st.sampled_from(["user_embeddings", "item_embeddings", "item_bias_embeddings"]),
       st.sampled_from(["recommend", "partial_fit", "save"]), st.data())
def test_fuzzed_replaced_feature_embeddings_are_checked(trained_hybrid, name, call, data):
    model = BPR(**trained_hybrid.get_params()).set_params(threads=1)
    model.fit(small_matrix(), epochs=1, item_features=trained_hybrid._features.items.matrix[:, N_ITEMS:])
    reference = getattr(model, name)
    new = _replacement(data.draw, reference)
    model._features.set_embeddings([new if n == name else a for n, a in
                                    zip(("user_embeddings", "item_embeddings", "item_bias_embeddings"),
                                        model._features.embeddings())])
    try:
        CALLS[call](model, small_matrix())
    except NAMED as exc:
        assert name in str(exc) or "dtype" in str(exc), exc
        return
    assert new.shape == reference.shape


def test_arrays_reshaped_in_place_by_a_callback_are_caught_before_the_next_epoch():
    def reshape(report):
        model.item_factors.shape = (N_ITEMS * 2, FACTORS // 2)

    model = BPR(factors=FACTORS, epochs=3, threads=1, random_state=0)
    with pytest.raises(ValueError, match=r"model.item_factors has shape \(18, 2\)"):
        model.fit(small_matrix(), callback=reshape)


def test_replaced_factors_disagreeing_with_the_stored_interactions_are_refused(trained):
    model = BPR(**trained.get_params()).fit(small_matrix(), epochs=1)
    model.user_factors = np.ones((N_USERS + 5, FACTORS), np.float32)  # rows the interactions do not have
    with pytest.raises(ValueError, match="interactions"):
        model.recommend(N_USERS + 2)


def test_optimizer_state_of_other_shapes_is_rebuilt_not_indexed(trained):
    from bpr_numpy.objective import OptimizerState

    state = OptimizerState("adam", N_USERS, N_ITEMS, FACTORS, dtype=np.float32)
    assert state.fits("adam", N_USERS, N_ITEMS, FACTORS, np.float32)
    assert not state.fits("adam", N_USERS, N_ITEMS + 1, FACTORS, np.float32)
    assert not state.fits("adam", N_USERS, N_ITEMS, FACTORS, np.float64)
    assert not state.fits("adagrad", N_USERS, N_ITEMS, FACTORS, np.float32)
    state.item_steps = np.zeros(1, np.int64)  # one array off
    assert not state.fits("adam", N_USERS, N_ITEMS, FACTORS, np.float32)


# --------------------------------------------------------------------------- 2. kernel calls Ctrl-C can stop

@pytest.mark.parametrize("setting", [dict(sampler="dns", dns_candidates=2 * 10**8),
                                     dict(loss="warp", max_sampled=10**9)])
def test_candidate_counts_that_make_a_kernel_call_uninterruptible_are_refused(setting):
    name = next(k for k in setting if k in ("dns_candidates", "max_sampled"))
    with pytest.raises(ValueError, match=f"{name} must be <= {MAX_CANDIDATES}.*Ctrl-C"):
        BPR(**setting)


@pytest.mark.parametrize("setting", [
    dict(), dict(sampler="dns", dns_candidates=MAX_CANDIDATES), dict(loss="warp", max_sampled=MAX_CANDIDATES),
    dict(optimizer="adam"), dict(factors=2048), dict(factors=2048, sampler="dns", dns_candidates=64),
    dict(features=True), dict(features=True, optimizer="adagrad"),
])
def test_each_kernel_call_does_at_most_the_work_of_a_default_call(monkeypatch, setting):
    """The work of one call (chunks x samples x factors x rows touched) is bounded, whatever the setting."""
    from bpr_numpy import _hybrid_kernels, _kernels

    setting = dict(setting)
    features = setting.pop("features", False)
    X = datasets.synthetic(n_users=400, n_items=300, nnz=30_000, random_state=0).matrix
    model = BPR(threads=1, random_state=0, **setting)
    calls = []
    for module, name in ((_kernels, "_train_chunks"), (_hybrid_kernels, "_hybrid_train_chunks")):
        original = getattr(module, name)

        def record(*args, _original=original, _name=name):
            calls.append(args[-2] - args[-3])  # chunk_stop - chunk_start (then the thread count)
            return _original(*args)

        monkeypatch.setattr(module, name, record)
    item_features = sp.csr_matrix(np.ones((X.shape[1], 40))) if features else None  # dense rows: costly samples
    model.fit(X, epochs=1, item_features=item_features)
    samples_per_chunk = X.nnz / _kernels.n_chunks(X.nnz)
    candidates = setting.get("dns_candidates", 0) + setting.get("max_sampled", 0)
    rows = (1 + 2 * 41) / 3 if features else 1  # feature rows per factor row a sample touches
    work = model.factors * (3 + candidates) * (1 if model.optimizer == "sgd" else 10) * rows
    default_call = model_module._CHUNKS_PER_CALL * samples_per_chunk * 64 * 3
    assert max(calls) * samples_per_chunk * work <= 1.01 * default_call or max(calls) == 1
    assert sum(calls) == _kernels.n_chunks(X.nnz)


def test_chunks_per_call_does_not_change_the_triplets(monkeypatch):
    X = datasets.synthetic(n_users=300, n_items=200, nnz=20_000, random_state=1).matrix
    reference = BPR(threads=1, random_state=3, sampler="dns", dns_candidates=3).fit(X, epochs=2)
    monkeypatch.setattr(model_module, "_CHUNKS_PER_CALL", 1)
    one_by_one = BPR(threads=1, random_state=3, sampler="dns", dns_candidates=3).fit(X, epochs=2)
    for a, b in zip(reference._parameters(), one_by_one._parameters()):
        assert np.array_equal(a, b)


# --------------------------------------------------------------------------- 4. what save writes, load reads

def test_initial_factors_infinite_in_float32_are_refused():
    with pytest.raises(ValueError, match="init_std.*float32"):
        BPR(epochs=0, init_std=1e39)  # finite in float64, infinite in float32
    with pytest.raises(ValueError, match="init_std=3e\\+38 gives (user|item)_factors infinite values"):
        BPR(epochs=0, init_std=3e38, threads=1).fit(small_matrix())  # std * a normal draw above 1.14 overflows
    BPR(epochs=0, init_std=3e38, dtype=np.float64, threads=1).fit(small_matrix())  # fine in float64


@pytest.mark.parametrize("name", ["user_factors", "item_factors", "item_biases"])
def test_nan_written_by_a_user_is_refused_by_save_and_named_by_recommend(trained, tmp_path, name):
    model = BPR(**trained.get_params()).fit(small_matrix(), epochs=1)
    getattr(model, name)[...] = np.nan
    with pytest.raises(ValueError, match=f"cannot save: model.{name} holds NaN"):
        model.save(tmp_path / "m.npz")
    assert not (tmp_path / "m.npz").exists()
    with pytest.raises(ValueError, match=f"model.{name} holds NaN or infinite values"):
        model.recommend(0)
    if name == "item_factors":  # the only array similar_items reads
        with pytest.raises(ValueError, match="holds NaN or infinite values"):
            model.similar_items(0)


def test_a_single_nan_item_still_recommends_the_others_when_enough_remain(trained):
    model = BPR(**trained.get_params()).fit(small_matrix(), epochs=1)
    model.item_biases[0] = np.nan  # one item unrankable: recommend must not pass over it in silence
    with pytest.raises(ValueError, match="item_biases"):
        model.recommend(np.arange(N_USERS), n=N_ITEMS, filter_liked=False)


# --------------------------------------------------------------------------- 5. file permissions

@pytest.mark.parametrize("umask, expected", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_saved_models_get_the_mode_an_ordinary_write_would(trained, tmp_path, umask, expected):
    old = os.umask(umask)
    try:
        trained.save(tmp_path / "m.npz")
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(tmp_path / "m.npz").st_mode) == expected
    os.chmod(tmp_path / "m.npz", 0o640)  # a file being replaced keeps its own permissions
    trained.save(tmp_path / "m.npz")
    assert stat.S_IMODE(os.stat(tmp_path / "m.npz").st_mode) == 0o640


# --------------------------------------------------------------------------- 6. magnitudes and edges

# The setting under which a parameter is used at all.
COMPANIONS = {"popularity_exponent": {"sampler": "popularity"}, "aobpr_lambda": {"sampler": "aobpr"},
              "dns_candidates": {"sampler": "dns"}, "max_sampled": {"loss": "warp"},
              "batch_size": {"solver": "minibatch"}}
HUGE_INTEGERS = [2**31, 2**62, 2**63 - 1, 2**63, 2**64 + 5, 10**30, -(2**63) - 1]
HUGE_REALS = [1e38, 1e39, 1e300, 1.7e308, -1e300, float("inf"), float("nan"), 5e-324]
BAD_KINDS = [1.5, "3", None, True, np.float64(2.0), [1], np.int8(3)]


@fuzz(400)
@given(st.sampled_from(sorted(CONSTRAINTS) + ["dtype"]), st.sampled_from(HUGE_INTEGERS + HUGE_REALS + BAD_KINDS),
       st.sampled_from([np.float32, np.float64]))
def test_every_hyperparameter_at_and_beyond_the_limits_fits_or_is_named(name, value, dtype):
    settings = {"dtype": dtype, "threads": 1, "random_state": 0, **COMPANIONS.get(name, {}), name: value}
    try:
        model = BPR(**settings)
    except NAMED as exc:
        assert name.split("_")[0] in str(exc), (name, value, exc)
        return
    try:
        model.fit(small_matrix(), epochs=2)  # the epochs argument: a huge "epochs" would train for ever
    except (*NAMED, TrainingDivergedError) as exc:
        assert str(exc)
        return
    for a in model._parameters():
        assert np.isfinite(a).all()


def test_a_decay_that_overflows_names_the_epoch_and_the_remedy():
    model = BPR(learning_rate_decay=1e300, threads=1, random_state=0)
    with pytest.raises(ValueError, match=r"learning rate of epoch 2 .* use learning_rate_decay <= 1"):
        model.fit(small_matrix(), epochs=3)
    assert model._epochs_done == 1  # the epoch that could be trained is kept


def test_random_states_beyond_63_bits_and_floats_are_refused_not_aliased():
    with pytest.raises(ValueError, match=r"non-negative integer below 2\*\*63"):
        BPR(random_state=2**63 + 5)
    with pytest.raises(TypeError, match="random_state"):
        BPR(random_state=5.0)
    model = BPR(factors=FACTORS, epochs=1, threads=1, random_state=0).fit(small_matrix())
    with pytest.raises(TypeError, match="random_state"):
        model.fold_in(small_matrix()[:2], random_state=1.5)
    with pytest.raises(ValueError, match="random_state"):
        model.fold_in(small_matrix()[:2], random_state=2**64)


def test_user_vectors_are_checked_in_the_model_precision(trained):
    with pytest.raises(ValueError, match="user_factors holds NaN or infinite values"):
        trained.recommend(user_factors=np.full(FACTORS, 1e39), filter_liked=False)  # inf once float32


def test_a_huge_factor_count_is_a_named_error_not_a_memory_error():
    with pytest.raises(ValueError, match="factors=1000000000000.*GiB"):
        BPR(factors=10**12, threads=1).fit(small_matrix())


SIZE_CALLS = {
    "recommend n": lambda m, v: m.recommend(0, n=v),
    "similar_items n": lambda m, v: m.similar_items(0, n=v),
    "score users": lambda m, v: m.score(v, 0),
    "evaluate k": lambda m, v: metrics.evaluate(m, small_matrix(), small_matrix(), k=v),
    "precision_at_k k": lambda m, v: metrics.precision_at_k(m, small_matrix(), small_matrix(), k=v),
    "evaluate block_size": lambda m, v: metrics.evaluate(m, small_matrix(), small_matrix(), block_size=v),
    "fold_in max_iter": lambda m, v: m.fold_in(small_matrix()[:1], max_iter=v),
    "fold_in max_pairs": lambda m, v: m.fold_in(small_matrix()[:1], max_pairs=v),
    "fit epochs": lambda m, v: BPR(threads=1).fit(small_matrix(), epochs=v, callback=lambda r: False),
    "partial_fit epochs": lambda m, v: BPR(threads=1).partial_fit(small_matrix(), epochs=v, callback=lambda r: False),
    "synthetic n_users": lambda m, v: datasets.synthetic(n_users=v, n_items=10, nnz=20),
    "synthetic n_items": lambda m, v: datasets.synthetic(n_users=10, n_items=v, nnz=20),
    "synthetic nnz": lambda m, v: datasets.synthetic(n_users=10, n_items=10, nnz=v),
    "synthetic factors": lambda m, v: datasets.synthetic(n_users=10, n_items=10, nnz=20, factors=v),
    "synthetic chunk_users": lambda m, v: datasets.synthetic(n_users=10, n_items=10, nnz=20, chunk_users=v),
    "synthetic max_items_per_user": lambda m, v: datasets.synthetic(n_users=10, n_items=10, nnz=20,
                                                                    max_items_per_user=v),
    "synthetic random_state": lambda m, v: datasets.synthetic(n_users=10, n_items=10, nnz=20, random_state=v),
    "split_leave_k_out k": lambda m, v: datasets.split_leave_k_out(datasets.synthetic_small(), k=v),
    "split_leave_k_out min_train": lambda m, v: datasets.split_leave_k_out(datasets.synthetic_small(), min_train=v),
    "split_random random_state": lambda m, v: datasets.split_random(datasets.synthetic_small(), random_state=v),
    "gradcheck n_users": lambda m, v: __import__("bpr_numpy").gradcheck(n_users=v),
    "gradcheck n_items": lambda m, v: __import__("bpr_numpy").gradcheck(n_items=v),
    "gradcheck factors": lambda m, v: __import__("bpr_numpy").gradcheck(factors=v),
    "gradcheck batch": lambda m, v: __import__("bpr_numpy").gradcheck(batch=v),
    "gradcheck random_state": lambda m, v: __import__("bpr_numpy").gradcheck(random_state=v),
}


@fuzz(300)
@given(st.sampled_from(sorted(SIZE_CALLS)), st.sampled_from(HUGE_INTEGERS + [1.5, -1, 0, True]))
def test_fuzzed_sizes_counts_and_k_beyond_int64_are_named(trained, call, value):
    try:
        SIZE_CALLS[call](trained, value)
    except NAMED as exc:
        assert str(exc)


def test_ids_that_a_save_would_merge_are_refused(trained, tmp_path):
    model = BPR(**trained.get_params()).fit(small_matrix(), epochs=1)
    ids = [f"u{k}" for k in range(N_USERS)]
    model.user_ids = np.array(["a", "a\0"] + ids[2:], dtype=object)  # one id once saved: "a"
    with pytest.raises(ValueError, match=r"user_ids\[1\] ends with a NUL"):
        model.save(tmp_path / "m.npz")
    model.user_ids = ["b\0"] + ids[1:]  # would load as "b"
    with pytest.raises(ValueError, match=r"user_ids\[0\] ends with a NUL"):
        model.save(tmp_path / "m.npz")
    model.user_ids = ["x"] + ids[1:-1] + ["x"]
    with pytest.raises(ValueError, match="'x' more than once"):
        model.save(tmp_path / "m.npz")
    model.user_ids = ["\0inside"] + ids[1:]  # a NUL that is not trailing survives the round trip
    model.save(tmp_path / "m.npz")
    assert BPR.load(tmp_path / "m.npz").user_ids[0] == "\0inside"


def test_a_loaded_epoch_count_past_int64_is_refused(trained, tmp_path):
    import json
    import zipfile

    trained.save(tmp_path / "m.npz")
    with zipfile.ZipFile(tmp_path / "m.npz") as z:
        members = {n: z.read(n) for n in z.namelist()}
    from numpy.lib import format as npy
    import io

    meta = json.loads(npy.read_array(io.BytesIO(members["meta.npy"])).tobytes())
    meta["epochs_done"] = 2**63
    buf = io.BytesIO()
    npy.write_array(buf, np.frombuffer(json.dumps(meta).encode(), np.uint8))
    members["meta.npy"] = buf.getvalue()
    with zipfile.ZipFile(tmp_path / "bad.npz", "w") as z:
        for n, b in members.items():
            z.writestr(n, b)
    with pytest.raises(ValueError, match="epochs_done"):
        BPR.load(tmp_path / "bad.npz")


def test_a_second_ctrl_c_during_the_first_ones_handling_still_exits_130():
    # The train command's handler is made slow (the save of a large model, say) and a second
    # SIGINT arrives inside it: before the fix it escaped main() and the process died of SIGINT (-2).
    result = run_python("""
        import os, signal, sys, time
        from bpr_numpy import cli

        def train(args):
            try:
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(5)
            except KeyboardInterrupt:
                os.kill(os.getpid(), signal.SIGINT)  # the second Ctrl-C, during the handling
                time.sleep(0.2)
                raise

        cli._train = train
        sys.exit(cli.main(["train"]))
    """)
    assert result.returncode == 130, (result.returncode, result.stderr[-2000:])
    assert "interrupted" in result.stderr


def test_the_cli_reports_memory_errors_in_one_line(monkeypatch, capsys):
    from bpr_numpy import cli

    def train(args):
        raise MemoryError("Unable to allocate 4.00 GiB")

    monkeypatch.setattr(cli, "_train", train)
    assert cli.main(["train"]) == 1
    err = capsys.readouterr().err
    assert "error: out of memory: Unable to allocate 4.00 GiB" in err and "internal error" not in err
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # put back after main
