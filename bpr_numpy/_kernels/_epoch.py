"""The epoch driver: a chunk's seeded streams and updates, serial or Hogwild over chunks, and the sample stream
alone."""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from ..sampling import ADAPTIVE_AOBPR, ADAPTIVE_DNS
from ._draws import _batch_buffers, _chunk_streams, _draw_batch, _draw_dns_candidates, _prefetch_runs
from ._negatives import _apply_batch_multi
from ._primitives import _FASTMATH, BATCH, _fetch_add, n_chunks
from ._updates import _apply_batch


@njit(cache=True, fastmath=_FASTMATH)
def _run_chunk(
    U,
    V,
    b,
    indptr,
    indices,
    row_blocks,
    epoch_samples,
    user_run,
    seed,
    epoch,
    chunk,
    lr,
    reg_u,
    reg_i,
    reg_j,
    reg_b,
    loss_code,
    use_bias,
    skip_liked,
    popularity,
    adaptive,
    opt,
    trace,
    bitmap=None,
    prefetch_runs=False,
    negatives=None,
):
    """Sample and apply the triplets of chunk ``chunk`` of an epoch of ``epoch_samples``, from the chunk's streams.

    ``skip_liked``: a known positive drawn as negative skips the step
    instead of being redrawn; ``popularity`` is None (uniform candidates) or
    the alias table ``(prob, alias)`` of the popularity samplers (see
    :mod:`bpr_numpy.sampling`); ``adaptive`` is None or the tuple of
    :func:`_adaptive_negative` (DNS, AOBPR, WARP); ``opt`` is None for SGD or
    :meth:`bpr_numpy.objective.OptimizerState.kernel_args`. ``trace`` is None
    or an array whose row ``k`` receives ``(u, i, j, weight)`` of the epoch's
    ``k``-th sample (``j = -1``: skipped; ``j = -2``: WARP found no
    violation), for the tests' replay. ``bitmap``: see :func:`_draw_batch`.
    ``prefetch_runs``: fetch the runs' rows batches ahead (:func:`_prefetch_runs`),
    for matrices bigger than the caches: 18% faster on 20M pairs, 2.5% slower
    on MovieLens 100k, where everything is cached already. ``negatives`` is None (one
    negative per positive) or ``(k, dns_candidates)``: each sample's step takes k negatives
    (:func:`bpr_numpy._kernels._negatives._apply_batch_multi`; ``adaptive`` is then None).

    The optional arguments are None-or-tuple on purpose: numba prunes the
    branches on ``is None`` at compile time, so the default path (uniform,
    SGD, no trace) compiles to the lean loop it was, and each combination in
    use gets its own specialisation (cached like the rest).

    Returns ``(sum of omega ell(x_uij), count of x_uij > 0, skipped samples)``.
    """
    n_items = V.shape[0]
    first, n_samples, pos_state, neg_state, starts = _chunk_streams(
        epoch_samples, indices.shape[0], user_run, seed, epoch, chunk
    )
    bu, bi, bj, base, length = _batch_buffers()
    scratch = np.empty(1, U.dtype)
    # Negatives chosen at update time (from the current factors) are not drawn in the batch.
    draw_negatives = True
    # DNS alone draws its extra candidates with the batch (_draw_dns_candidates): none elsewhere.
    dns_extra = 0
    if adaptive is not None:
        draw_negatives = adaptive[0] != ADAPTIVE_AOBPR and adaptive[1] == 0
        if adaptive[0] == ADAPTIVE_DNS and adaptive[1] == 0:
            dns_extra = adaptive[2] - 1
    candidates = np.empty((BATCH, dns_extra), np.int64)
    loss_sum = 0.0
    ordered = 0
    skipped = 0
    n_batches = (n_samples + BATCH - 1) // BATCH
    for batch in range(-3, n_batches):
        # The runs' chains of loads, one link per batch, three batches ahead (_prefetch_runs).
        for stage in range(3 if prefetch_runs else 0):
            if 0 <= batch + 3 - stage < n_batches:
                _prefetch_runs(starts, batch + 3 - stage, stage, user_run, row_blocks, indptr, indices, U)
        if batch < 0:
            continue
        start = batch * BATCH
        n = min(BATCH, n_samples - start)
        pos_state, neg_state = _draw_batch(
            pos_state,
            neg_state,
            indptr,
            indices,
            row_blocks,
            n_items,
            n,
            user_run,
            bu,
            bi,
            bj,
            base,
            length,
            U,
            V,
            False,
            draw_negatives,
            skip_liked,
            popularity,
            bitmap,
            starts,
            batch,
        )
        # Under ``adaptive is not None``, which numba prunes at compile time: the default path's
        # specialisation compiles without this code (0.3 s of a first fit with an empty cache).
        if adaptive is not None and dns_extra > 0:
            neg_state = _draw_dns_candidates(neg_state, indptr, indices, bitmap, bu, bj, n, candidates, n_items)
        if negatives is not None:
            neg_state, batch_loss, batch_ordered, batch_skipped = _apply_batch_multi(
                U,
                V,
                b,
                indptr,
                indices,
                bu,
                bi,
                bj,
                n,
                lr,
                reg_u,
                reg_i,
                reg_j,
                reg_b,
                loss_code,
                use_bias,
                neg_state,
                popularity,
                negatives,
                None,
                opt,
                trace,
                first + start,
                None,
            )
        else:
            neg_state, batch_loss, batch_ordered, batch_skipped = _apply_batch(
                U,
                V,
                b,
                indptr,
                indices,
                bu,
                bi,
                bj,
                None,
                n,
                lr,
                reg_u,
                reg_i,
                reg_j,
                reg_b,
                loss_code,
                use_bias,
                scratch,
                neg_state,
                popularity,
                adaptive,
                candidates,
                opt,
                trace,
                first + start,
                None,
            )
        loss_sum += batch_loss
        ordered += batch_ordered
        skipped += batch_skipped
    return loss_sum, ordered, skipped


@njit(cache=True)
def _epoch_chunk(params, data, settings, sampling, opt, trace, outs, c):
    """Chunk ``c`` of the epoch the bundles describe (:mod:`bpr_numpy._kernel_args`), its results into ``outs``.

    The bundles are unpacked here and reach :func:`_run_chunk` as arguments, where numba prunes
    the branches of the options that are None. Not inlined on purpose: inlined into the prange
    loop of :func:`_epoch_parallel`, numba's parfor pass dropped its writes to the unpacked
    arrays as dead code (the epoch then trained nothing; caught by the tests). Inlined into
    :func:`_epoch_serial` it compiled 0.4 s faster on a first fit but made a warm MovieLens 100k
    fit on one thread 3% slower (ab_speed.py, 12-16 rounds): kept as a call.
    """
    U, V, b = params
    indptr, indices, row_blocks, bitmap = data
    (
        n_samples,
        user_run,
        seed,
        epoch,
        lr,
        reg_u,
        reg_i,
        reg_j,
        reg_b,
        loss_code,
        use_bias,
        skip_liked,
        prefetch_runs,
    ) = settings
    popularity, adaptive, negatives = sampling
    out_loss, out_ordered, out_skipped = outs
    out_loss[c], out_ordered[c], out_skipped[c] = _run_chunk(
        U,
        V,
        b,
        indptr,
        indices,
        row_blocks,
        n_samples,
        user_run,
        seed,
        epoch,
        c,
        lr,
        reg_u,
        reg_i,
        reg_j,
        reg_b,
        loss_code,
        use_bias,
        skip_liked,
        popularity,
        adaptive,
        opt,
        trace,
        bitmap,
        prefetch_runs,
        negatives,
    )


@njit(cache=True, nogil=True)
def _epoch_serial(params, data, settings, sampling, opt, trace, outs, chunk_start, chunk_stop):
    """Chunks ``chunk_start .. chunk_stop - 1`` of an epoch, in order on the calling thread: bitwise reproducible.

    An epoch is usually one call over all its chunks; AOBPR cuts it where its
    rankings are refreshed. Releases the GIL: the strata of a stratified epoch
    (:mod:`bpr_numpy._strata`) run on threads of one process.

    The arguments are the bundles of :mod:`bpr_numpy._kernel_args` (``params``: Parameters,
    ``data``: TrainingData, ``settings``: EpochSettings, ``sampling``: Sampling, ``outs``:
    Outputs); ``opt`` and ``trace`` are as in :func:`_run_chunk`.
    """
    for c in range(chunk_start, chunk_stop):
        _epoch_chunk(params, data, settings, sampling, opt, trace, outs, c)


@njit(cache=True, parallel=True)
def _epoch_parallel(params, data, settings, sampling, opt, trace, outs, chunk_start, chunk_stop):
    """:func:`_epoch_serial` with the chunks spread over threads (Hogwild); same triplet streams.

    Each thread takes the next unstarted chunk (an atomic counter) until none
    is left: a static split would make the epoch wait for the slowest
    thread's share, and the cores of a shared machine do not run at one
    speed. (The loop has one iteration per chunk so that numba's static split
    gives every thread one; a thread's first iteration does its whole share,
    the others find the counter spent. Asking numba for the thread count
    inside the kernel would make it uncacheable.)
    """
    # Unpacked out here, not per chunk through _epoch_chunk: the parallel region then captures
    # plain arrays and scalars (with the bundles captured, MovieLens 100k fits on 2 threads took
    # 12% longer, alternated A/B).
    U, V, b = params
    indptr, indices, row_blocks, bitmap = data
    (
        n_samples,
        user_run,
        seed,
        epoch,
        lr,
        reg_u,
        reg_i,
        reg_j,
        reg_b,
        loss_code,
        use_bias,
        skip_liked,
        prefetch_runs,
    ) = settings
    popularity, adaptive, negatives = sampling
    out_loss, out_ordered, out_skipped = outs
    next_chunk = np.full(1, chunk_start, np.int64)
    for _ in prange(max(1, chunk_stop - chunk_start)):
        c = _fetch_add(next_chunk, 0)
        while c < chunk_stop:
            out_loss[c], out_ordered[c], out_skipped[c] = _run_chunk(
                U,
                V,
                b,
                indptr,
                indices,
                row_blocks,
                n_samples,
                user_run,
                seed,
                epoch,
                c,
                lr,
                reg_u,
                reg_i,
                reg_j,
                reg_b,
                loss_code,
                use_bias,
                skip_liked,
                popularity,
                adaptive,
                opt,
                trace,
                bitmap,
                prefetch_runs,
                negatives,
            )
            c = _fetch_add(next_chunk, 0)


@njit(cache=True)
def _sample_stream(data, n_items, n_samples, user_run, seed, epoch, skip_liked, popularity):
    """The triplets an epoch of a factor-free sampler would draw, without training (tests, inspection).

    ``data`` is a :class:`bpr_numpy._kernel_args.TrainingData`. Returns arrays ``(users,
    positives, negatives)`` of length ``n_samples``, ``negatives[k] = -1`` for skipped samples.
    """
    indptr, indices, row_blocks, bitmap = data
    # The bitmap goes on as an argument: numba prunes ``bitmap is None`` branches of arguments
    # only, and _draw_batch is inlined into the function that calls it.
    return _sample_stream_arrays(
        indptr, indices, row_blocks, bitmap, n_items, n_samples, user_run, seed, epoch, skip_liked, popularity
    )


@njit(cache=True)
def _sample_stream_arrays(
    indptr, indices, row_blocks, bitmap, n_items, n_samples, user_run, seed, epoch, skip_liked, popularity
):
    """:func:`_sample_stream` on the unpacked training data."""
    users = np.empty(n_samples, np.int64)
    positives = np.empty(n_samples, np.int64)
    negatives = np.empty(n_samples, np.int64)
    dummy = np.empty((1, 1), np.float32)
    _, _, _, base, length = _batch_buffers()
    for c in range(n_chunks(n_samples)):
        first, size, pos_state, neg_state, starts = _chunk_streams(
            n_samples, indices.shape[0], user_run, seed, epoch, c
        )
        end = first + size
        for start in range(first, end, BATCH):
            n = min(BATCH, end - start)
            pos_state, neg_state = _draw_batch(
                pos_state,
                neg_state,
                indptr,
                indices,
                row_blocks,
                n_items,
                n,
                user_run,
                users[start : start + n],
                positives[start : start + n],
                negatives[start : start + n],
                base,
                length,
                dummy,
                dummy,
                False,
                True,
                skip_liked,
                popularity,
                bitmap,
                starts,
                (start - first) // BATCH,
            )
    return users, positives, negatives
