"""Stratified SGD (bpr_numpy._strata, bpr_numpy.distributed without a cluster): blocks, schedule, strata
against brute force, the in-process trainer against the single-machine model."""

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from _budget import examples
from bpr_numpy import BPR, TrainingDivergedError, _strata, distributed
from bpr_numpy._validation import as_user_items


def _csr(n_users, n_items, density, seed):
    """A canonical CSR (sorted, no duplicates), empty ones included."""
    rng = np.random.default_rng(seed)
    m = sp.random(n_users, n_items, density=density, format="csr", random_state=rng)
    m.sum_duplicates()
    m.sort_indices()
    return m


def _matrix(n_users, n_items, density, seed):
    return as_user_items(_csr(n_users, n_items, density, seed))


@settings(max_examples=examples(60), deadline=None)
@given(st.integers(0, 40), st.integers(1, 30), st.floats(0, 1), st.integers(1, 9), st.integers(0, 2**31))
def test_user_blocks_are_contiguous_cover_every_user_and_balance_positives(n_users, n_items, density, P, seed):
    m = _csr(n_users, n_items, density, seed)
    bounds = _strata.user_block_bounds(m.indptr, P)
    assert bounds.shape == (P + 1,) and bounds[0] == 0 and bounds[-1] == n_users
    assert np.all(np.diff(bounds) >= 0)
    per_block = np.diff(m.indptr[bounds])
    # Each block ends at the first row reaching its share: off by less than one user's positives.
    heaviest = np.diff(m.indptr).max(initial=0)
    assert np.all(per_block <= m.nnz / P + heaviest + 1)


@settings(max_examples=examples(60), deadline=None)
@given(st.integers(1, 200), st.integers(1, 12), st.integers(0, 2**32), st.integers(0, 1000))
def test_item_blocks_partition_the_items_with_equal_sizes_and_ascending_ids(n_items, P, seed, epoch):
    layout = _strata.item_blocks(n_items, P, seed, epoch)
    sizes = np.diff(layout.bounds)
    assert sizes.sum() == n_items and sizes.max() - sizes.min() <= 1
    assert np.array_equal(np.sort(layout.items), np.arange(n_items))
    for q in range(P):
        block = layout.block(q)
        assert np.all(np.diff(block) > 0)
        assert np.all(layout.block_of[block] == q)
        assert np.array_equal(layout.local_of[block], np.arange(block.size))
    again = _strata.item_blocks.__wrapped__(n_items, P, seed, epoch)
    assert all(np.array_equal(a, b) for a, b in zip(layout, again))


def test_item_layout_changes_every_epoch():
    layouts = [_strata.item_blocks(500, 4, 7, e).block_of for e in range(5)]
    assert all(not np.array_equal(layouts[0], other) for other in layouts[1:])


@pytest.mark.parametrize("P", [1, 2, 3, 5, 8])
def test_schedule_pairs_every_user_block_with_every_item_block_once_and_never_two_at_a_time(P):
    sub_epochs = _strata.schedule(P)
    assert len(sub_epochs) == P
    seen = set()
    for pairs in sub_epochs:
        users, items = zip(*pairs)
        assert sorted(users) == list(range(P)) and sorted(items) == list(range(P))  # disjoint rows
        seen.update(pairs)
    assert seen == {(p, q) for p in range(P) for q in range(P)}


@settings(max_examples=examples(60), deadline=None)
@given(st.integers(0, 30), st.integers(1, 40), st.floats(0, 1), st.integers(1, 7), st.integers(0, 2**31),
       st.integers(0, 50))
def test_strata_are_the_sub_matrices_over_block_local_ids(n_users, n_items, density, P, seed, epoch):
    m = _csr(n_users, n_items, density, seed)
    layout = _strata.item_blocks(n_items, P, seed, epoch)
    strata = _strata.stratify((m.indptr.astype(np.int64), m.indices), n_items, P, seed, epoch)
    assert strata[0].shape == (P + 1,) and strata[1].shape == strata[2].shape == (m.nnz,)
    for q in range(P):
        indptr, indices, user_of = _strata.stratum_csr(strata, q, n_users)
        stratum = sp.csr_matrix((np.ones(indices.size), indices, indptr), shape=(n_users, layout.block(q).size))
        expected = m[:, layout.block(q)]
        assert (stratum.astype(bool) != expected.astype(bool)).nnz == 0
        for r in range(n_users):  # rows sorted, as the kernels' membership tests need
            assert np.all(np.diff(indices[indptr[r]:indptr[r + 1]]) > 0)
        assert np.array_equal(user_of, np.repeat(np.arange(n_users), np.diff(indptr)))


@settings(max_examples=examples(40), deadline=None)
@given(st.integers(1, 60), st.integers(1, 6), st.integers(0, 2**31), st.integers(1, 30))
def test_item_blocks_shuffle_into_the_next_layout_with_their_rows(n_items, P, seed, epoch):
    V = np.random.default_rng(seed).normal(size=(n_items, 3)).astype(np.float32)
    b = np.arange(n_items, dtype=np.float32)
    old, new = _strata.item_blocks(n_items, P, seed, epoch - 1), _strata.item_blocks(n_items, P, seed, epoch)
    blocks = [_strata.new_block(V[old.block(r)], b[old.block(r)], old.block(r), step=0) for r in range(P)]
    shuffled = _strata.shuffle_items(n_items, P, seed, epoch, *blocks)
    assert len(shuffled) == P
    for q, (rows, bias, ids, step) in enumerate(shuffled):
        assert np.array_equal(ids, new.block(q))
        assert np.array_equal(rows, V[new.block(q)]) and np.array_equal(bias, b[new.block(q)])
        assert step[0] == epoch * P and rows.flags.c_contiguous


def test_hosted_blocks_are_found_by_their_fit_and_forgotten():
    m = _matrix(20, 30, 0.3, 0)
    data = (m.indptr.astype(np.int64), m.indices)
    settings_ = _strata.StratumSettings(4, 0.05, 0.01, 0.01, 0.01, 0.01, 0, True, False, 1)
    rng = np.random.default_rng(0)
    items = _strata.new_block(rng.normal(size=(30, 4)).astype(np.float32), np.zeros(30, np.float32),
                              np.arange(30), step=0)
    start = rng.normal(size=(20, 4)).astype(np.float32)
    _strata.host_block("fit-a", 0, data, start.copy(), 0, 0)
    items = _strata.train_hosted("fit-a", 0, items, None, 0, settings_, 0, 0, 0, 1, 30)
    stats, factors = _strata.report_hosted("fit-a", 0, None, True)
    assert len(stats) == 1 and stats[0][3] == m.nnz and not np.array_equal(factors, start)
    assert _strata.report_hosted("fit-a", 0, None, False) == ([], None)  # reported once
    with pytest.raises(_strata.StaleBlockError, match="not on this worker"):
        _strata.train_hosted("fit-b", 0, items, None, 0, settings_, 0, 0, 1, 1, 30)
    assert _strata.forget("fit-a") == 1 and _strata.forget("fit-a") == 0
    with pytest.raises(_strata.StaleBlockError):
        _strata.report_hosted("fit-a", 0, None, False)
    with pytest.raises(_strata.StaleBlockError, match="released"):  # a host task that comes too late
        _strata.host_block("fit-a", 0, data, start.copy(), 0, 0)


def test_a_stratum_task_run_twice_on_the_same_blocks_refuses():
    m = _matrix(20, 30, 0.3, 0)
    strata = _strata.stratify((m.indptr.astype(np.int64), m.indices), 30, 1, 0, 0)
    users = _strata.new_block(np.zeros((20, 4), np.float32), step=5)
    items = _strata.new_block(np.zeros((30, 4), np.float32), np.zeros(30, np.float32), np.arange(30), step=5)
    settings_ = _strata.StratumSettings(4, 0.05, 0.01, 0.01, 0.01, 0.01, 0, True, False, 1)
    _strata.train_stratum(users, items, strata, 0, settings_, 0, 0, 5)
    assert users[-1][0] == items[-1][0] == 6
    with pytest.raises(_strata.StaleBlockError, match="steps 6"):
        _strata.train_stratum(users, items, strata, 0, settings_, 0, 0, 5)


# ------------------------------------------------------------------------- the in-process trainer
def test_one_block_is_the_single_machine_model_bitwise():
    m = _matrix(60, 80, 0.1, 3)
    kwargs = dict(factors=8, epochs=4, threads=1, random_state=11, user_run=4)
    single = BPR(**kwargs).fit(m)
    strat = distributed.fit(None, m, n_blocks=1, **kwargs)
    for name in ("user_factors", "item_factors", "item_biases"):
        assert np.array_equal(getattr(single, name), getattr(strat, name)), name
    assert [r.loss for r in single.history_] == [r.loss for r in strat.history_]


def assert_conflict_free(m, model, record, n_blocks, epochs):
    """Every sub-epoch's strata changed disjoint user and item rows, each within its own blocks."""
    P = n_blocks
    bounds = _strata.user_block_bounds(m.indptr, P)
    assert len(record) == epochs * P * P
    for epoch in range(epochs):
        layout = _strata.item_blocks(m.shape[1], P, model._seed, epoch)
        for s in range(P):
            tasks = sorted((r for r in record if r[0] == epoch and r[1] == s), key=lambda r: r[2])
            assert [t[2] for t in tasks] == list(range(P))
            for _, _, p, q, users, items in tasks:
                assert q == (p + s) % P and users.size and items.size
                assert np.all((users >= bounds[p]) & (users < bounds[p + 1]))
                assert np.all(layout.block_of[items] == q)
            for a in range(P):  # no row written by two strata of one sub-epoch
                for b in range(a + 1, P):
                    assert not np.intersect1d(tasks[a][4], tasks[b][4]).size
                    assert not np.intersect1d(tasks[a][5], tasks[b][5]).size
    assert all(r.samples == m.nnz for r in model.history_)


def test_strata_change_disjoint_rows_within_their_blocks():
    m = _matrix(50, 70, 0.15, 4)
    record = []
    model = distributed.fit(None, m, n_blocks=3, factors=4, epochs=3, random_state=2, _record=record)
    assert_conflict_free(m, model, record, n_blocks=3, epochs=3)


def test_results_do_not_depend_on_threads_or_checkpoints():
    m = _matrix(40, 50, 0.2, 5)
    kwargs = dict(factors=4, epochs=5, random_state=3, n_blocks=4)
    ref = distributed.fit(None, m, threads=1, **kwargs)
    for other in (distributed.fit(None, m, threads=3, **kwargs),
                  distributed.fit(None, m, threads=2, checkpoint_every=2, **kwargs)):
        assert np.array_equal(ref.user_factors, other.user_factors)
        assert np.array_equal(ref.item_factors, other.item_factors)
    log = other.distributed_log_
    assert [bool(b) for b in log.checkpoint_bytes] == [False, True, False, True, True]
    assert log.n_blocks == 4 and len(log.item_bytes) == 5


def test_the_fitted_model_is_a_plain_bpr(tmp_path):
    m = _matrix(30, 40, 0.2, 6)
    model = distributed.fit(None, m, n_blocks=2, factors=4, epochs=2, random_state=0)
    assert isinstance(model, BPR) and model.is_fitted and model.user_items is not None
    items, scores = model.recommend(np.arange(30), n=5)
    assert items.shape == scores.shape == (30, 5)
    model.save(tmp_path / "model.npz")
    loaded = BPR.load(tmp_path / "model.npz")
    assert np.array_equal(loaded.user_factors, model.user_factors)
    assert np.array_equal(loaded.recommend(np.arange(30), n=5)[0], items)
    model.partial_fit(m, epochs=1)  # continues on one machine
    assert model.history_[-1].epoch == 3


def test_a_callback_stopping_between_checkpoints_gets_the_factors_of_its_epoch():
    m = _matrix(40, 50, 0.2, 8)
    kwargs = dict(factors=4, random_state=5, n_blocks=2, threads=1)
    ref = distributed.fit(None, m, epochs=3, **kwargs)
    stopped = distributed.fit(None, m, epochs=10, checkpoint_every=5, callback=lambda r: r.epoch < 3, **kwargs)
    assert len(stopped.history_) == 3 and stopped._epochs_done == 3
    assert np.array_equal(ref.user_factors, stopped.user_factors)
    assert np.array_equal(ref.item_factors, stopped.item_factors)


def test_an_error_in_an_epoch_or_a_callback_leaves_the_last_checkpoint(monkeypatch):
    m = _matrix(40, 50, 0.2, 9)
    kwargs = dict(factors=4, random_state=5, threads=2)
    ref = distributed.fit(None, m, epochs=2, n_blocks=2, **kwargs)

    def fail_at_epoch_4(report):
        if report.epoch == 4:
            raise RuntimeError("callback failed")

    model = BPR(**kwargs)
    with pytest.raises(RuntimeError, match="callback failed"):
        distributed.fit(None, m, n_blocks=2, epochs=10, checkpoint_every=2, callback=fail_at_epoch_4,
                        model=model)
    assert model._epochs_done == 4 and len(model.history_) == 4  # epoch 4 was a checkpoint
    model = BPR(**kwargs)
    with pytest.raises(RuntimeError, match="callback failed"):
        distributed.fit(None, m, n_blocks=2, epochs=10, checkpoint_every=3, callback=fail_at_epoch_4,
                        model=model)
    assert model._epochs_done == 3 and [r.epoch for r in model.history_] == [1, 2, 3]

    train = _strata.train_hosted
    calls = []

    def failing_task(*args, **kw):  # the 7th stratum (epoch 2) fails: no hang, the error comes out
        calls.append(1)
        if len(calls) == 7:
            raise ValueError("task failed")
        return train(*args, **kw)

    monkeypatch.setattr(_strata, "train_hosted", failing_task)
    model = BPR(**kwargs)
    with pytest.raises(ValueError, match="task failed"):
        distributed.fit(None, m, n_blocks=2, epochs=5, model=model)
    assert model._epochs_done == 1 and len(model.history_) == 1
    partial = distributed.fit(None, m, n_blocks=2, epochs=1, **kwargs)
    assert np.array_equal(model.user_factors, partial.user_factors)
    assert ref.history_[0].loss == model.history_[0].loss


@pytest.mark.parametrize("kwargs, match", [
    (dict(optimizer="adam"), "optimizer"), (dict(sampler="dns"), "sampler"), (dict(loss="warp"), "loss"),
    (dict(n_blocks=0), "n_blocks"), (dict(checkpoint_every=0), "checkpoint_every"),
    (dict(max_restarts=-1), "max_restarts"), (dict(epochs=-1), "epochs"), (dict(factors=0), "factors"),
    (dict(n_blocks=6), "at least one of each"),
])
def test_unsupported_or_bad_settings_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        distributed.fit(None, _matrix(5, 5, 0.5, 0), **kwargs)


def test_divergence_names_the_epoch():
    m = _matrix(30, 40, 0.3, 7)
    with pytest.raises(TrainingDivergedError, match="diverged in epoch"):
        distributed.fit(None, m, n_blocks=2, learning_rate=1e30, epochs=5, random_state=0)
