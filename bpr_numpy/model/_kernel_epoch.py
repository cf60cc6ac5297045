"""One epoch of the numba kernels (``BPR(solver="kernel")``): the kernel's arguments, its calls over chunks.

The sibling of :mod:`._minibatch` (``solver="minibatch"``); both have the signature the epoch
loop (:func:`._training.epoch_loop`) calls through ``_training._EPOCHS``.
"""

from __future__ import annotations

import time
from contextlib import nullcontext
from typing import TYPE_CHECKING

import numpy as np
import scipy.sparse as sp

from .. import sampling
from .._kernel_args import Parameters, Sampling, TrainingData, epoch_outputs, epoch_settings
from .._runtime import PARALLEL_LOCK, beyond_cache
from ..objective import LOSS_REGISTRY, Regularization, loss_code
from ._reporting import EpochReport, epoch_report
from ._training import epoch_learning_rate

if TYPE_CHECKING:  # pragma: no cover
    from ._estimator import BPR

__all__ = ["chunks_per_call", "run_epoch"]

#: Chunks per kernel call: about 0.1 s of work on one thread, so Ctrl-C is answered quickly.
_CHUNKS_PER_CALL = 64


def run_epoch(
    model: BPR,
    matrix: sp.csr_matrix,
    rows: np.ndarray,
    threads: int,
    alias: tuple[np.ndarray, np.ndarray],
    bitmap: np.ndarray | None,
    reg: Regularization,
    n_samples: int | None = None,
) -> EpochReport | None:
    """One epoch of the kernel over ``matrix`` (``rows``: its row index, ``reg``: the coerced regularisation).

    ``n_samples=0`` only compiles the kernel and returns None.
    """
    from .. import _kernels

    codes = sampling.sampler_codes(model.sampler)
    warm_up = n_samples == 0
    n_samples = matrix.nnz if n_samples is None else n_samples
    chunks = _kernels.n_chunks(n_samples)
    outs = epoch_outputs(chunks)
    U, V, b = model._factors()
    n_items = V.shape[0]
    aobpr = codes.adaptive == sampling.ADAPTIVE_AOBPR
    # The epoch runs as several kernel calls over groups of chunks: Ctrl-C is seen between
    # two calls (numba code cannot be interrupted), and AOBPR refreshes its rankings there,
    # every n ln n samples.
    group = (
        sampling.aobpr_refresh_chunks(n_items, max(1, n_samples // max(chunks, 1))) if aobpr else chunks_per_call(model)
    )
    data = TrainingData(matrix.indptr, matrix.indices, rows, bitmap)
    seed, state, features = model._seed, model._optimizer_state, model._features
    assert seed is not None and state is not None, "start() resolves the seed and the optimiser state first"
    settings = epoch_settings(
        n_samples=n_samples,
        user_run=model.user_run,
        seed=seed,
        epoch=model._epochs_done,
        learning_rate=epoch_learning_rate(model, model._epochs_done),
        regularization=reg,
        loss_code=loss_code(model.loss),
        use_bias=model.item_bias,
        skip_liked=codes.skip_liked,
        dtype=U.dtype,
        prefetch_runs=beyond_cache(U, V, matrix.indices),
    )
    if features is not None:
        from .. import _hybrid_kernels
    popularity = alias if alias[0].size else None
    opt = state.kernel_args() if state.code else None
    adaptive_kind = int(codes.adaptive)
    warp_max_sampled = int(model.max_sampled) if LOSS_REGISTRY[model.loss].draws_negatives else 0
    no_ranks = (np.zeros((0, 0), np.int32), np.zeros(0))
    several = None
    # Several negatives, or a loss joint over them (the sampled softmax, even with one): the
    # several-negatives kernel, which draws the extra negatives and applies DNS to each itself.
    if int(model.n_negatives) > 1 or LOSS_REGISTRY[model.loss].joint:
        candidates = int(model.dns_candidates) if adaptive_kind == sampling.ADAPTIVE_DNS else 1
        several = (np.int64(model.n_negatives), np.int64(candidates))

    def run(chunk_start: int, chunk_stop: int) -> None:
        if features is not None:
            # The side-feature kernel does not prefetch runs: None keeps it one specialisation.
            hybrid_settings = settings._replace(prefetch_runs=None)
            hybrid_args = (*features.kernel_args(), data, hybrid_settings, popularity, state.kernel_args(), outs)
            _hybrid_kernels._hybrid_train_chunks(*hybrid_args, chunk_start, chunk_stop, threads)
            return
        adaptive = None
        if several is not None:  # DNS, if any, picks each of the negatives (several[1] candidates)
            args = (Parameters(U, V, b), data, settings, Sampling(popularity, None, several), opt, None, outs)
            _kernels._train_chunks(*args, chunk_start, chunk_stop, threads)
            return
        if adaptive_kind or warp_max_sampled:
            ranks, spread = no_ranks
            if aobpr and chunk_stop > chunk_start:
                ranks, spread = sampling.aobpr_rankings(V, b if model.item_bias else None)
            adaptive = (
                adaptive_kind,
                warp_max_sampled,
                int(model.dns_candidates),
                float(model.aobpr_lambda * n_items),
                ranks,
                spread,
            )
        _kernels._train_chunks(
            Parameters(U, V, b),
            data,
            settings,
            Sampling(popularity, adaptive),
            opt,
            None,
            outs,
            chunk_start,
            chunk_stop,
            threads,
        )

    start = time.perf_counter()
    with PARALLEL_LOCK if threads > 1 else nullcontext():
        for c in range(0, max(chunks, 1), group):
            run(c, min(c + group, chunks))
    if features is not None:
        # In place: the epoch snapshot holds these very arrays.
        fresh_arrays = features.representations(bool(model.item_bias))
        for live, fresh in zip(model._parameters(), fresh_arrays, strict=False):
            np.copyto(live, fresh)
    seconds = time.perf_counter() - start
    if warm_up:
        return None
    model._epochs_done += 1
    return epoch_report(
        model._epochs_done, outs.loss.sum(), outs.ordered.sum(), int(outs.skipped.sum()), n_samples, seconds
    )


def chunks_per_call(model: BPR) -> int:
    """Chunks per kernel call: about the work of :data:`_CHUNKS_PER_CALL` chunks of a default fit.

    numba code cannot be interrupted, so Ctrl-C is seen between two calls: a setting whose
    samples cost more (many candidates, wide factors, an adaptive optimiser, dense feature
    rows) runs fewer chunks per call. The chunks and their streams are the same either way.
    """
    # The candidates one draw may score: DNS's, or WARP's draws (the registries name the parameter).
    candidates = sum(
        int(getattr(model, name))
        for name in (*sampling.REGISTRY[model.sampler].parameters, *LOSS_REGISTRY[model.loss].parameters)
        if name in ("dns_candidates", "max_sampled")
    )
    # Python ints: a numpy int8 parameter would overflow in this product.
    # Several negatives: each scores its candidates and moves a row.
    work: float = int(model.factors) * (3 + int(candidates)) * (1 if model.optimizer == "sgd" else 10)
    work *= int(model.n_negatives)
    if model._features is not None:  # a sample touches every feature row of its user and items
        users, items = model._features.users.matrix, model._features.items.matrix
        work *= (users.nnz / users.shape[0] + 2 * items.nnz / items.shape[0]) / 3
    default_work = 64 * 3  # per sample: 64 factors, three rows, plain SGD
    return int(max(1, min(_CHUNKS_PER_CALL, _CHUNKS_PER_CALL * default_work // work)))
