"""The numba kernels against the NumPy reference (objective.sgd_step), and the sampler's contract."""

import functools

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from numba import njit
from hypothesis import strategies as st
from scipy import stats

from _budget import examples
from bpr_numpy import _kernels as K
from bpr_numpy import _rng
from bpr_numpy._kernel_args import Parameters, Sampling, epoch_outputs, epoch_settings, training_data
from bpr_numpy._runtime import positives_bitmap
from bpr_numpy._validation import as_user_items
from bpr_numpy.objective import LOSSES, Regularization, loss_code, pair_loss, sgd_step

REG = Regularization(user=0.01, positive=0.02, negative=0.03, bias=0.04)


def _csr(n_users=30, n_items=25, density=0.2, seed=0):
    rng = np.random.default_rng(seed)
    m = sp.random(n_users, n_items, density=density, format="csr", random_state=rng)
    return as_user_items(m)



def _stream(m, n, user_run, seed, epoch, skip_liked=False, popularity=None):
    return K._sample_stream(training_data(m.indptr, m.indices), m.shape[1], n, user_run, seed, epoch, skip_liked,
                            popularity)


def _params(m, factors, dtype, seed=1):
    rng = np.random.default_rng(seed)
    return (rng.normal(0, 0.3, (m.shape[0], factors)).astype(dtype),
            rng.normal(0, 0.3, (m.shape[1], factors)).astype(dtype),
            rng.normal(0, 0.1, m.shape[1]).astype(dtype))


def _settings(dtype, lr, loss, bias, n=0, user_run=1, seed=0, epoch=0, skip_liked=False, prefetch_runs=False):
    return epoch_settings(n_samples=n, user_run=user_run, seed=seed, epoch=epoch, learning_rate=lr,
                          regularization=REG, loss_code=loss_code(loss), use_bias=bias, skip_liked=skip_liked,
                          dtype=dtype, prefetch_runs=prefetch_runs)


def _apply(U, V, b, users, pos, neg, lr, loss, bias, weights=None, opt=None):
    w = np.ones(len(users)) if weights is None else weights
    return K._apply_triplets(Parameters(U, V, b), (users, pos, neg, w), _settings(U.dtype, lr, loss, bias), opt)


# The epoch on the calling thread (chunks in order: bitwise reproducible) and Hogwild on two threads.
SERIAL = K._train_chunks
PARALLEL = functools.partial(K._train_chunks, threads=2)


def _epoch(kernel, U, V, b, m, n, user_run, seed, epoch, lr, loss, bias=True, skip_liked=False, popularity=None,
           adaptive=None, opt=None, trace=None):
    chunks = K.n_chunks(n)
    outs = epoch_outputs(chunks)
    kernel(Parameters(U, V, b), training_data(m.indptr, m.indices),
           _settings(U.dtype, lr, loss, bias, n, user_run, seed, epoch, skip_liked), Sampling(popularity, adaptive),
           opt, trace, outs, 0, chunks)
    return outs


def _replay(U, V, b, users, pos, neg, lr, loss, bias):
    """Apply objective.sgd_step to each triplet in float64; return x before each step."""
    U, V = U.astype(np.float64), V.astype(np.float64)
    b = b.astype(np.float64) if bias else None
    xs = np.full(len(users), np.nan)
    for k in range(len(users)):
        if neg[k] >= 0:
            xs[k] = sgd_step(U, V, b, users[k], pos[k], neg[k], learning_rate=lr, loss=loss, regularization=REG)
    return U, V, (np.zeros(V.shape[0]) if b is None else b), xs


@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("bias", [True, False])
def test_kernel_update_equals_reference_in_float64(loss, bias):
    m = _csr()
    users, pos, neg = _stream(m, 3000, 1, 7, 0)
    U, V, b = _params(m, 16, np.float64)
    if not bias:
        b[:] = 0
    refU, refV, refb, ref_x = _replay(U, V, b, users, pos, neg, 0.1, loss, bias)
    xs = _apply(U, V, b, users, pos, neg, 0.1, loss, bias)
    np.testing.assert_allclose(U, refU, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(V, refV, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(b, refb, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(xs, ref_x, rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("loss", LOSSES)
def test_kernel_update_in_float32_tracks_reference(loss):
    m = _csr()
    users, pos, neg = _stream(m, 500, 16, 3, 0)
    U, V, b = _params(m, 32, np.float32)
    refU, refV, refb, _ = _replay(U, V, b, users, pos, neg, 0.05, loss, True)
    _apply(U, V, b, users, pos, neg, 0.05, loss, True)
    assert U.dtype == np.float32
    np.testing.assert_allclose(U, refU, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(V, refV, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(b, refb, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("loss", ["bpr", "sigmoid"])  # WARP draws at update time: tests/test_samplers.py
@pytest.mark.parametrize("user_run", [1, 16])
def test_serial_epoch_is_its_sample_stream_then_the_update(loss, user_run):
    m = _csr(seed=3)
    n = m.nnz * 3 + 17  # several chunks, the last one partial
    users, pos, neg = _stream(m, n, user_run, 11, 4)
    U, V, b = _params(m, 8, np.float64)
    U2, V2, b2 = U.copy(), V.copy(), b.copy()
    out = _epoch(SERIAL, U, V, b, m, n, user_run, 11, 4, 0.05, loss)
    xs = _apply(U2, V2, b2, users, pos, neg, 0.05, loss, True)
    np.testing.assert_array_equal(U, U2)
    np.testing.assert_array_equal(V, V2)
    applied = ~np.isnan(xs)
    assert out[2].sum() == (~applied).sum()
    assert out[1].sum() == (xs[applied] > 0).sum()
    np.testing.assert_allclose(out[0].sum(), pair_loss(xs[applied], loss).sum(), rtol=1e-10)


def test_parallel_epoch_draws_the_same_triplets_as_serial():
    # Hogwild changes the arithmetic order, not the sampled stream: with a zero
    # learning rate nothing moves, and the per-chunk statistics must agree exactly.
    m = _csr(200, 150, 0.1, seed=5)
    n = m.nnz * 4
    results = []
    for kernel in (SERIAL, PARALLEL):
        U, V, b = _params(m, 8, np.float64)
        results.append(_epoch(kernel, U, V, b, m, n, 16, 99, 0, 0.0, "bpr"))
    for a, b in zip(*results):
        np.testing.assert_array_equal(a, b)


def test_an_epoch_in_two_calls_equals_the_epoch_in_one():
    # Every chunk exactly once, in order, whatever group of chunks a call covers (the model calls
    # the kernel per group of 64 chunks, and AOBPR where it refreshes its rankings).
    m = _csr(200, 150, 0.1, seed=5)
    n = m.nnz * 4
    chunks = K.n_chunks(n)
    results = []
    for calls in (((0, chunks),), ((0, 23), (23, chunks))):
        U, V, b = _params(m, 8, np.float64)
        out = epoch_outputs(chunks)
        for start, stop in calls:
            SERIAL(Parameters(U, V, b), training_data(m.indptr, m.indices),
                   _settings(U.dtype, 0.05, "bpr", True, n, 16, 99, 0), Sampling(None, None), None, None, out,
                   start, stop)
        results.append((U, V, b, *out))
    for got, want in zip(*results):
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("user_run", [1, 7, 16, 32])
def test_sampler_never_returns_a_known_positive_and_covers_all_pairs(user_run):
    m = _csr(40, 30, 0.3, seed=2)
    users, pos, neg = _stream(m, 200_000, user_run, 5, 0)
    dense = m.toarray() > 0
    assert dense[users, pos].all()  # positives are observed pairs
    ok = neg >= 0
    assert not dense[users[ok], neg[ok]].any()  # negatives never are
    # Runs: within a batch, samples come in runs of user_run samples of one user.
    first = np.array([K._chunk_range(len(users), c)[0] for c in range(K.n_chunks(len(users)))])
    k = np.arange(len(users))
    t = (k - first[np.searchsorted(first, k, side="right") - 1]) % K.BATCH
    starts = t % user_run == 0
    run_start = np.flatnonzero(starts)
    owner = run_start[np.searchsorted(run_start, np.arange(len(users)), side="right") - 1]
    assert (users == users[owner]).all()
    # Samples within a run are dependent (same user), so test what holds exactly:
    # run starts are independent pairs uniform over the observed pairs ...
    flat = np.flatnonzero(dense.ravel())
    pair = np.searchsorted(flat, users * m.shape[1] + pos)
    assert stats.chisquare(np.bincount(pair[starts], minlength=len(flat))).pvalue > 1e-4
    # ... and, given the user, every other sample's positive is uniform over the user's row
    # (multinomial given the per-user counts: a conditional chi-square).
    if user_run > 1:
        observed = np.bincount(pair[~starts], minlength=len(flat))
        row_len = np.diff(m.indptr)
        per_user = np.bincount(users[~starts], minlength=m.shape[0])
        expected = np.repeat(per_user / np.maximum(row_len, 1), row_len)
        keep = expected > 0
        dof = int((row_len[per_user > 0] - 1).sum())
        chi2 = (((observed - expected) ** 2)[keep] / expected[keep]).sum()
        assert stats.chi2.sf(chi2, dof) > 1e-4


def test_negatives_are_uniform_over_the_users_non_positives():
    m = as_user_items(sp.csr_matrix(np.array([[1, 0, 1, 0, 0, 1, 0, 0, 0, 0]], dtype=float)))
    users, pos, neg = _stream(m, 140_000, 16, 1, 0)
    counts = np.bincount(neg, minlength=10)
    assert counts[[0, 2, 5]].sum() == 0
    assert stats.chisquare(counts[[1, 3, 4, 6, 7, 8, 9]]).pvalue > 1e-4


def test_user_holding_every_item_is_skipped_and_counted_without_hanging():
    dense = np.zeros((3, 4))
    dense[0] = 1  # user 0 has every item
    dense[1, 2] = 1
    m = as_user_items(dense)
    users, pos, neg = _stream(m, 10_000, 16, 0, 0)
    assert (neg[users == 0] == -1).all()
    assert (neg[users == 1] >= 0).all()
    # A one-item catalogue: every sample is skipped, and the epoch ends.
    one = as_user_items(np.ones((2, 1)))
    U, V, b = np.zeros((2, 3)), np.zeros((1, 3)), np.zeros(1)
    out = _epoch(SERIAL, U, V, b, one, 2, 16, 0, 0, 0.1, "bpr")
    assert out[2][0] == 2


def test_uniform_integer_mapping_stays_in_range():
    # below() must never return n, even where (1 - 2**-53) * n rounds up to n.
    for n in (1, 2, 3, 2**30, 2**31 - 1, 2**40 + 1):
        assert _rng.below(np.uint64(2**64 - 1), n) == n - 1
        assert _rng.below(np.uint64(0), n) == 0
    assert 0.0 < _rng.unit_open(np.uint64(0)) < _rng.unit_open(np.uint64(2**64 - 1)) < 1.0


def test_longest_user_run_is_the_batch():
    from bpr_numpy._parameters import MAX_USER_RUN

    assert MAX_USER_RUN == K.BATCH


def test_streams_differ_across_seeds_epochs_and_chunks():
    seeds = {int(K._stream_seed(s, e, c, k)) for s in range(3) for e in range(3) for c in range(3) for k in range(2)}
    assert len(seeds) == 54


# ------------------------------------------------------------------ speed paths that must not change results
@settings(max_examples=examples(60), deadline=None)
@given(st.integers(0, 3 * K.MIN_CHUNKS * K.BATCH + 5 * K.CHUNK_SIZE))
def test_chunks_cover_the_epoch_in_order_with_equal_sizes(n):
    count = K.n_chunks(n)
    bounds = [K._chunk_range(n, c) for c in range(count)]
    assert [b[0] for b in bounds[1:]] == [b[1] for b in bounds[:-1]]  # contiguous, in order
    assert (bounds[0][0], bounds[-1][1]) == (0, n) if n else count == 0
    sizes = [stop - start for start, stop in bounds]
    if sizes:
        assert max(sizes) - min(sizes) <= 1 and max(sizes) <= K.CHUNK_SIZE and min(sizes) >= 1
    if n >= K.MIN_CHUNKS * K.BATCH:
        assert count >= K.MIN_CHUNKS  # enough chunks for threads to share out evenly


@settings(max_examples=examples(40), deadline=None)
@given(st.integers(1, 40), st.integers(1, 150), st.floats(0.0, 1.0), st.integers(0, 2**31))
def test_membership_bitmap_is_the_dense_matrix(n_users, n_items, density, seed):
    rng = np.random.default_rng(seed)
    m = sp.random(n_users, n_items, density=density, format="csr", random_state=rng)
    m.sort_indices()
    bits = positives_bitmap(m.indptr, m.indices, n_items)
    assert bits.shape == (n_users, (n_items + 63) // 64)
    unpacked = np.unpackbits(bits.view(np.uint8), axis=1, bitorder="little")[:, :n_items]
    np.testing.assert_array_equal(unpacked.astype(bool), m.toarray() > 0)
    assert not np.unpackbits(bits.view(np.uint8), axis=1, bitorder="little")[:, n_items:].any()


@settings(max_examples=examples(60), deadline=None)
@given(st.lists(st.one_of(st.just(0), st.integers(0, 3), st.integers(0, 300)), min_size=1, max_size=60))
def test_row_index_finds_the_user_of_every_position(row_lengths):
    # The samplers' row index against the user of each position spelled out (np.repeat), with
    # empty rows (leading, trailing, in runs) and rows shorter and longer than a block.
    from bpr_numpy._kernel_args import ROW_BLOCK, row_blocks

    indptr = np.concatenate([[0], np.cumsum(row_lengths)]).astype(np.int64)
    blocks = row_blocks(indptr)
    assert blocks.dtype == np.int32 and blocks.shape == (-(-int(indptr[-1]) // ROW_BLOCK) + 1,)
    want = np.repeat(np.arange(len(row_lengths)), row_lengths)
    got = [K._row_of(indptr, blocks, k) for k in range(int(indptr[-1]))]
    np.testing.assert_array_equal(got, want)


@settings(max_examples=examples(40), deadline=None)
@given(st.integers(1, 30), st.integers(1, 90), st.floats(0.0, 1.0), st.integers(0, 2**31),
       st.sampled_from([1, 5, 16, 32]), st.booleans(), st.booleans())
def test_bitmap_membership_draws_the_same_stream_as_the_binary_search(n_users, n_items, density, seed, user_run,
                                                                       skip_liked, popular):
    from bpr_numpy import sampling

    m = _csr(n_users, n_items, max(density, 1 / (n_users * n_items)), seed)
    popularity = sampling.alias_table(sampling.popularity_weights(m, 0.8)) if popular else None
    bits = positives_bitmap(m.indptr, m.indices, n_items)
    n = 3 * m.nnz + 40
    args = (n_items, n, user_run, seed % 1000, 3, skip_liked, popularity)
    for got, want in zip(K._sample_stream(training_data(m.indptr, m.indices, bits), *args),
                         K._sample_stream(training_data(m.indptr, m.indices), *args)):
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("dns", [0, 3], ids=["uniform", "dns-3"])
@pytest.mark.parametrize("kernel", [SERIAL, PARALLEL], ids=["serial", "parallel"])
def test_epoch_with_the_bitmap_or_run_prefetching_equals_the_plain_epoch(kernel, dns):
    # DNS tests its extra candidates (drawn with the batch) against the bitmap too: the same draws.
    from bpr_numpy import sampling

    adaptive = None
    if dns:
        adaptive = (sampling.ADAPTIVE_DNS, 0, dns, 1.0, np.zeros((0, 0), np.int32), np.zeros(0))
    m = _csr(60, 100, 0.15, seed=8)
    n = 20_011  # chunks of ~313 samples: 10 batches each, the prefetch pipeline's steady state included
    bits = positives_bitmap(m.indptr, m.indices, m.shape[1])
    results = []
    for bitmap, prefetch_runs in ((None, False), (bits, False), (None, True), (bits, True)):
        U, V, b = _params(m, 8, np.float64)
        chunks = K.n_chunks(n)
        out = epoch_outputs(chunks)
        # Zero learning rate under threads: the statistics must agree exactly; serially the factors too.
        lr = 0.05 if kernel is SERIAL else 0.0
        kernel(Parameters(U, V, b), training_data(m.indptr, m.indices, bitmap),
               _settings(U.dtype, lr, "bpr", True, n, 16, 5, 2, prefetch_runs=prefetch_runs), Sampling(None, adaptive),
               None, None, out, 0, chunks)
        results.append((U, V, b, *out))
    for other in results[1:]:
        for got, want in zip(other, results[0]):
            np.testing.assert_array_equal(got, want)


@settings(max_examples=examples(60), deadline=None)
@given(st.lists(st.sampled_from([0.0, 1.5, -2.0, 1e30, np.inf, -np.inf, np.nan]), max_size=40),
       st.sampled_from([np.float32, np.float64]))
def test_copy_finite_copies_and_reports_non_finite_values(values, dtype):
    from bpr_numpy.model import _training

    src = np.array(values, dtype=dtype)
    dst = np.full_like(src, 7)
    assert K._copy_finite(src, dst) == bool(np.isfinite(src).all())
    np.testing.assert_array_equal(dst, src)
    # The snapshot's kernel and its NumPy twin, both ways.
    chooser = _training._snapshot_chooser()
    try:
        for path in ("numba", "numpy"):
            chooser.path = path
            dst = np.full_like(src, 7)
            assert _training._copy_checking_finite(src, dst) == bool(np.isfinite(src).all())
            np.testing.assert_array_equal(dst, src)
    finally:
        chooser.path = "auto"


@settings(max_examples=examples(60), deadline=None)
@given(st.integers(1, 10**7))
def test_adam_corrections_are_the_references(steps):
    # The kernels write 1 / (1 - beta^t) as -1 / expm1(t ln beta): the same values to round-off.
    from bpr_numpy.objective import ADAM_BETA1, ADAM_BETA2

    c1, c2 = K._adam_factors(steps)
    np.testing.assert_allclose([c1, c2], [1 / (1 - ADAM_BETA1**steps), 1 / (1 - ADAM_BETA2**steps)], rtol=1e-12)
    # The kernels look them up in a table: the same bits, past its end too.
    assert _adam_lookup_of(K.adam_factor_table(), steps) == (c1, c2)


@njit
def _adam_lookup_of(table, steps):
    return K._adam_lookup(table, steps)


@njit
def _first_step_not_looked_up_exactly(table, last):
    """The first step count up to ``last`` whose looked-up corrections are not _adam_factors' bits (0: none)."""
    for t in range(1, last + 1):
        if K._adam_lookup(table, t) != K._adam_factors(t):
            return t
    return 0


def test_adam_factor_table_gives_the_formulas_bits_to_2_to_the_22_steps():
    # Every row is _adam_factors' own value, and the formula stays at exactly 1.0 past the table's
    # last row (where the lookup stops): checked for every step count to 2**22, beyond which
    # t ln(beta) is only further below the point where expm1 rounds to -1.
    table = K.adam_factor_table()
    last = table.shape[0] - 1
    assert tuple(table[last]) == (1.0, 1.0) and tuple(table[last - 1]) != (1.0, 1.0)
    assert not table.flags.writeable and K.adam_factor_table() is table
    assert _first_step_not_looked_up_exactly(table, 1 << 22) == 0
    assert K._adam_factors(1 << 40) == (1.0, 1.0) and K._adam_factors(2**62) == (1.0, 1.0)


# --------------------------------------------------------------------------- Hogwild helper threads

@njit(nogil=True)
def _count_chunks(counts, fail_at, next_chunk, chunk_stop, work=0):
    """A stand-in epoch kernel: counts each chunk it takes (after ``work`` steps of busy work);
    chunk ``fail_at`` raises."""
    c = K._fetch_add(next_chunk, 0)
    while c < chunk_stop:
        x = 0.0
        for t in range(work):
            x += np.sqrt(t + x)
        counts[c] += 1 + int(x < 0)
        if c == fail_at:
            raise ValueError("chunk failed")
        c = K._fetch_add(next_chunk, 0)


@pytest.mark.parametrize("threads", [1, 2, 3, 5])
def test_hogwild_runs_every_chunk_of_each_call_exactly_once(threads):
    from bpr_numpy._runtime import hogwild

    counts = np.zeros(300, np.int64)
    for start, stop in ((0, 1), (1, 2), (2, 70), (70, 70), (70, 300)):  # empty and one-chunk calls too
        hogwild(_count_chunks, (counts, -1), start, stop, threads)
    np.testing.assert_array_equal(counts, 1)


def test_hogwild_raises_a_helpers_error_once_every_thread_is_done():
    from bpr_numpy._runtime import hogwild

    # Over 20 calls the failing chunk falls to a helper thread as well as to the caller.
    for fail_at in range(0, 2000, 100):
        counts = np.zeros(2000, np.int64)
        with pytest.raises(ValueError, match="chunk failed"):
            hogwild(_count_chunks, (counts, fail_at), 0, 2000, 3)
        np.testing.assert_array_equal(counts, 1)  # the other threads took the other chunks
    # The helpers serve the next call as before.
    counts[:] = 0
    hogwild(_count_chunks, (counts, -1), 0, 2000, 3)
    np.testing.assert_array_equal(counts, 1)


def test_hogwild_interrupted_while_posting_waits_for_the_posted_helper(monkeypatch):
    # A Ctrl-C after the first helper was posted (before the caller's own kernel): the call must
    # raise only once that helper has finished its chunks, and leave none to take the next call's.
    from bpr_numpy import _runtime

    hogwild = _runtime.hogwild
    hogwild(_count_chunks, (np.zeros(10, np.int64), -1), 0, 10, 3)  # helpers started, kernel compiled
    original, posts = _runtime._Helper.post, []

    def post(self, *args):
        original(self, *args)
        posts.append(self)
        if len(posts) == 1:
            raise KeyboardInterrupt

    monkeypatch.setattr(_runtime._Helper, "post", post)
    counts = np.zeros(400, np.int64)
    with pytest.raises(KeyboardInterrupt):
        hogwild(lambda *args: _count_chunks(*args, 20_000), (counts, -1), 0, 400, 3)
    np.testing.assert_array_equal(counts, 1)  # the posted helper did every chunk, and is done
    monkeypatch.undo()
    counts = np.zeros(400, np.int64)
    hogwild(_count_chunks, (counts, -1), 0, 400, 3)
    np.testing.assert_array_equal(counts, 1)
