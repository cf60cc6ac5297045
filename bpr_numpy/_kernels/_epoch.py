"""The epoch driver: a chunk's seeded streams and updates, the chunks in order or Hogwild over threads, and the
sample stream alone."""

from __future__ import annotations

import numpy as np
from numba import njit

from .._runtime import hogwild
from ..sampling import ADAPTIVE_AOBPR, ADAPTIVE_DNS
from ._draws import (
    _batch_buffers,
    _chunk_streams,
    _draw_batch,
    _draw_dns_candidates,
    _prefetch_runs,
    _settle_negatives,
)
from ._negatives import _apply_batch_multi
from ._primitives import _FASTMATH, BATCH, _fetch_add, n_chunks
from ._updates import _apply_batch


@njit(cache=True, fastmath=_FASTMATH, nogil=True)
def _run_chunks(
    U,
    V,
    b,
    indptr,
    indices,
    row_blocks,
    bitmap,
    epoch_samples,
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
    popularity,
    adaptive,
    negatives,
    opt,
    trace,
    out_loss,
    out_ordered,
    out_skipped,
    next_chunk,
    chunk_stop,
):
    """Sample and apply the triplets of the epoch's chunks, chunk ``next_chunk[0]`` (advanced atomically) on,
    until ``chunk_stop``, each from its own streams; chunk ``c``'s results into ``out_*[c]``.

    The arguments are the bundles of :mod:`bpr_numpy._kernel_args` flattened, in order
    (Parameters, TrainingData, EpochSettings, Sampling, then ``opt``, ``trace``, Outputs):
    :func:`_train_chunks` flattens them. Flat on purpose: numba prunes the branches on ``is
    None`` of arguments only, and a compiled level above this one (unpacking the bundles)
    cost a first fit 0.9 s more of compilation with an empty cache, LLVM optimising the whole
    linked module again.

    One caller runs the chunks in order: bitwise reproducible. Several threads calling it on
    one counter (:func:`bpr_numpy._runtime.hogwild`) share the chunks out, each taking the next
    unstarted one when it finishes one: a static split would make the epoch wait for the
    slowest thread's share, and the cores of a shared machine do not run at one speed.
    Releases the GIL.

    ``skip_liked``: a known positive drawn as negative skips the step
    instead of being redrawn; ``popularity`` is None (uniform candidates) or
    the alias table ``(prob, alias)`` of the popularity samplers (see
    :mod:`bpr_numpy.sampling`); ``adaptive`` is None or the tuple of
    :func:`_adaptive_negative` (DNS, AOBPR, WARP); ``opt`` is None for SGD or
    :meth:`bpr_numpy.objective.OptimizerState.kernel_args`. ``trace`` is None
    or an array whose row ``k`` receives ``(u, i, j, weight)`` of the epoch's
    ``k``-th sample (``j = -1``: skipped; ``j = -2``: WARP found no
    violation), for the tests' replay. ``bitmap``: see :func:`_draw_batch`.
    ``prefetch_runs``: True to fetch the runs' rows batches ahead (:func:`_prefetch_runs`),
    for matrices bigger than the caches (18% faster on 20M pairs, 2.5% slower
    on MovieLens 100k, where everything is cached already), or None. ``negatives`` is None (one
    negative per positive) or ``(k, dns_candidates)``: each sample's step takes k negatives
    (:func:`bpr_numpy._kernels._negatives._apply_batch_multi`; ``adaptive`` is then None).

    The optional arguments are None-or-tuple on purpose: numba prunes the
    branches on ``is None`` at compile time, so the default path (uniform,
    SGD, no trace) compiles to the lean loop it was, and each combination in
    use gets its own specialisation (cached like the rest).

    A chunk's results: ``out_loss`` the sum of omega ell(x_uij), ``out_ordered`` the count of
    x_uij > 0, ``out_skipped`` the skipped samples.
    """
    chunk = _fetch_add(next_chunk, 0)
    while chunk < chunk_stop:
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
        for batch in range(-3 if prefetch_runs is not None else 0, n_batches):
            # The runs' chains of loads, one link per batch, three batches ahead (_prefetch_runs).
            # None (small matrices) prunes it from the specialisation: 0.5 s of a first fit's compile.
            if prefetch_runs is not None:
                for stage in range(3):
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
                draw_negatives,
                popularity,
                bitmap,
                starts,
                batch,
            )
            neg_state = _settle_negatives(
                neg_state,
                indptr,
                indices,
                n_items,
                n,
                bu,
                bj,
                base,
                length,
                skip_liked,
                popularity,
                bitmap,
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
        out_loss[chunk] = loss_sum
        out_ordered[chunk] = ordered
        out_skipped[chunk] = skipped
        chunk = _fetch_add(next_chunk, 0)


def _train_chunks(
    params, data, settings, sampling, opt, trace, outs, chunk_start: int, chunk_stop: int, threads: int = 1
):
    """Chunks ``chunk_start .. chunk_stop - 1`` of the epoch the bundles describe: in order on the calling
    thread (``threads=1``: bitwise reproducible), or Hogwild over ``threads`` threads (same triplet
    streams). An epoch is usually one call per group of chunks (Ctrl-C is seen between two);
    AOBPR cuts it where its rankings are refreshed.

    The bundles are those of :mod:`bpr_numpy._kernel_args` (``params``: Parameters, ``data``:
    TrainingData, ``settings``: EpochSettings, ``sampling``: Sampling, ``outs``: Outputs);
    ``opt`` and ``trace`` as in :func:`_run_chunks`, which takes them flattened.
    """
    args = (*params, *data, *settings, *sampling, opt, trace, *outs)
    hogwild(_run_chunks, args, chunk_start, chunk_stop, threads)


@njit(cache=True)
def _sample_stream(data, n_items, n_samples, user_run, seed, epoch, skip_liked, popularity):
    """The triplets an epoch of a factor-free sampler would draw, without training (tests, inspection).

    ``data`` is a :class:`bpr_numpy._kernel_args.TrainingData`. Returns arrays ``(users,
    positives, negatives)`` of length ``n_samples``, ``negatives[k] = -1`` for skipped samples.
    """
    indptr, indices, row_blocks, bitmap = data
    # The bitmap goes on as an argument: numba prunes ``bitmap is None`` branches of arguments
    # only, and _draw_batch and _settle_negatives are inlined into the function that calls them.
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
    _, _, _, base, length = _batch_buffers()
    for c in range(n_chunks(n_samples)):
        first, size, pos_state, neg_state, starts = _chunk_streams(
            n_samples, indices.shape[0], user_run, seed, epoch, c
        )
        end = first + size
        for start in range(first, end, BATCH):
            n = min(BATCH, end - start)
            bu = users[start : start + n]  # views: the draws land in the outputs
            bj = negatives[start : start + n]
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
                positives[start : start + n],
                bj,
                base,
                length,
                True,
                popularity,
                bitmap,
                starts,
                (start - first) // BATCH,
            )
            neg_state = _settle_negatives(
                neg_state,
                indptr,
                indices,
                n_items,
                n,
                bu,
                bj,
                base,
                length,
                skip_liked,
                popularity,
                bitmap,
            )
    return users, positives, negatives
