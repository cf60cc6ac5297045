"""numba kernels of the hybrid (side-feature) model.

The update is :func:`bpr_numpy.objective.hybrid_sgd_step` (the math and its
derivation live there; ``tests/test_hybrid.py`` replays triplets through
both). Triplets are drawn exactly as for the plain model
(:func:`bpr_numpy._kernels._draw_batch`, same streams per ``(seed, epoch,
chunk)``), so a hybrid model whose only features are identities trains on the
same triplets as the plain model.

Feature matrices arrive as CSR arrays ``(indptr, indices, data)`` with sorted
column indices; representations are built per triplet in float64 scratch
rows, so no ``n_users x factors`` table is kept in step with the embeddings.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from ._kernels import (
    _FASTMATH,
    BATCH,
    _adam_corrections,
    _adaptive_rule,
    _batch_buffers,
    _chunk_streams,
    _draw_batch,
    _fetch_add,
    _pair_loss_and_slope,
)
from .objective import OPTIMIZER_ADAM, OPTIMIZER_SGD


@njit(cache=True, inline="always")
def _represent(out, emb, ptr, idx, val, row):
    """``out = sum_f val_f emb[f]`` over the stored features of ``row``."""
    for k in range(out.shape[0]):
        out[k] = 0.0
    for p in range(ptr[row], ptr[row + 1]):
        x = np.float64(val[p])
        f = idx[p]
        for k in range(out.shape[0]):
            out[k] += x * emb[f, k]


@njit(cache=True, inline="always")
def _represent_bias(c, ptr, idx, val, row):
    total = 0.0
    for p in range(ptr[row], ptr[row + 1]):
        total += np.float64(val[p]) * c[idx[p]]
    return total


@njit(cache=True, inline="always")
def _step(theta, row, k, g, code, lr, first, second, c1, c2):
    """Move ``theta[row, k]`` by one optimiser step of gradient ``g`` (float64)."""
    old = np.float64(theta[row, k])
    if code == OPTIMIZER_SGD:
        theta[row, k] = old - lr * g
        return
    m = first[row, k] if code == OPTIMIZER_ADAM else 0.0
    theta[row, k], m, second[row, k] = _adaptive_rule(old, g, m, second[row, k], code, lr, c1, c2)
    if code == OPTIMIZER_ADAM:
        first[row, k] = m


@njit(cache=True, inline="always")
def _step_bias(theta, row, g, code, lr, first, second, c1, c2):
    """:func:`_step` for a 1-D parameter (the item-feature biases)."""
    old = np.float64(theta[row])
    if code == OPTIMIZER_SGD:
        theta[row] = old - lr * g
        return
    m = first[row] if code == OPTIMIZER_ADAM else 0.0
    theta[row], m, second[row] = _adaptive_rule(old, g, m, second[row], code, lr, c1, c2)
    if code == OPTIMIZER_ADAM:
        first[row] = m


@njit(cache=True, inline="always")
def _hybrid_update(
    E,
    Fm,
    c,
    xptr,
    xidx,
    xval,
    yptr,
    yidx,
    yval,
    u,
    i,
    j,
    lr,
    reg_u,
    reg_i,
    reg_j,
    reg_b,
    loss_code,
    use_bias,
    w,
    hi,
    hj,
    opt,
):
    """One step of :func:`bpr_numpy.objective.hybrid_sgd_step`; returns ``(x, linear, factor)``.

    Gradients are taken at the old values: the representations are built
    first, and each feature row's gradient uses only them and the row's own
    old value, so the order of the row updates does not matter. The item
    features of i and j are merged (both rows are sorted), so a feature of
    both items gets one step with both terms.
    """
    code, mU, mV, mb, vU, vV, vb, tU, tV = opt
    _represent(w, E, xptr, xidx, xval, u)
    _represent(hi, Fm, yptr, yidx, yval, i)
    _represent(hj, Fm, yptr, yidx, yval, j)
    x = 0.0
    for k in range(w.shape[0]):
        x += w[k] * (hi[k] - hj[k])
    if use_bias:
        x += _represent_bias(c, yptr, yidx, yval, i) - _represent_bias(c, yptr, yidx, yval, j)
    linear, factor, slope = _pair_loss_and_slope(x, loss_code, 1.0, 1.0)
    lr = np.float64(lr)
    c1 = c2 = 1.0
    for p in range(xptr[u], xptr[u + 1]):
        f = xidx[p]
        coef = np.float64(xval[p]) * slope
        if code == OPTIMIZER_ADAM:
            c1, c2 = _adam_corrections(tU, f)
        for k in range(w.shape[0]):
            _step(E, f, k, coef * (hi[k] - hj[k]) + reg_u * np.float64(E[f, k]), code, lr, mU, vU, c1, c2)
    pa, ea = yptr[i], yptr[i + 1]
    pb, eb = yptr[j], yptr[j + 1]
    while pa < ea or pb < eb:
        ga = yidx[pa] if pa < ea else -1
        gb = yidx[pb] if pb < eb else -1
        coef = 0.0
        regc = 0.0
        touches = 0.0
        if gb < 0 or (ga >= 0 and ga <= gb):
            g = ga
            coef += np.float64(yval[pa])
            regc += reg_i
            touches += 1.0
            pa += 1
        else:
            g = gb
        if pb < eb and yidx[pb] == g:
            coef -= np.float64(yval[pb])
            regc += reg_j
            touches += 1.0
            pb += 1
        if code == OPTIMIZER_ADAM:
            c1, c2 = _adam_corrections(tV, g)
        coef *= slope
        for k in range(w.shape[0]):
            _step(Fm, g, k, coef * w[k] + regc * np.float64(Fm[g, k]), code, lr, mV, vV, c1, c2)
        if use_bias:
            _step_bias(c, g, coef + reg_b * touches * np.float64(c[g]), code, lr, mb, vb, c1, c2)
    return x, linear, factor


@njit(cache=True, fastmath=_FASTMATH)
def _hybrid_run_chunk(
    E,
    Fm,
    c,
    xptr,
    xidx,
    xval,
    yptr,
    yidx,
    yval,
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
    opt,
):
    """Sample and apply the triplets of chunk ``chunk``, as :func:`bpr_numpy._kernels._run_chunk` does.

    Returns ``(sum of ell(x_uij), count of x_uij > 0, skipped samples)``.
    """
    n_items = yptr.shape[0] - 1
    _, n_samples, pos_state, neg_state, starts = _chunk_streams(
        epoch_samples, indices.shape[0], user_run, seed, epoch, chunk
    )
    bu, bi, bj, base, length = _batch_buffers()
    w = np.empty(E.shape[1])
    hi = np.empty(E.shape[1])
    hj = np.empty(E.shape[1])
    loss_sum = 0.0
    product = 1.0
    ordered = 0
    skipped = 0
    for start in range(0, n_samples, BATCH):
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
            E,
            Fm,
            False,
            True,
            skip_liked,
            popularity,
            None,
            starts,
            start // BATCH,
        )
        for t in range(n):
            if bj[t] < 0:
                skipped += 1
                continue
            x, linear, factor = _hybrid_update(
                E,
                Fm,
                c,
                xptr,
                xidx,
                xval,
                yptr,
                yidx,
                yval,
                bu[t],
                bi[t],
                bj[t],
                lr,
                reg_u,
                reg_i,
                reg_j,
                reg_b,
                loss_code,
                use_bias,
                w,
                hi,
                hj,
                opt,
            )
            loss_sum += linear
            product *= factor
            if x > 0.0:
                ordered += 1
        loss_sum += np.log(product)
        product = 1.0
    return loss_sum, ordered, skipped


@njit(cache=True)
def _hybrid_epoch_chunk(params, features, data, settings, popularity, opt, outs, ch):
    """Chunk ``ch`` of the epoch the bundles describe, its results into ``outs`` (as ``_kernels._epoch_chunk``)."""
    E, Fm, c = params
    xptr, xidx, xval, yptr, yidx, yval = features
    indptr, indices, row_blocks, _ = data
    (n_samples, user_run, seed, epoch, lr, reg_u, reg_i, reg_j, reg_b, loss_code, use_bias, skip_liked, _) = settings
    out_loss, out_ordered, out_skipped = outs
    out_loss[ch], out_ordered[ch], out_skipped[ch] = _hybrid_run_chunk(
        E,
        Fm,
        c,
        xptr,
        xidx,
        xval,
        yptr,
        yidx,
        yval,
        indptr,
        indices,
        row_blocks,
        n_samples,
        user_run,
        seed,
        epoch,
        ch,
        lr,
        reg_u,
        reg_i,
        reg_j,
        reg_b,
        loss_code,
        use_bias,
        skip_liked,
        popularity,
        opt,
    )


@njit(cache=True)
def _hybrid_epoch_serial(params, features, data, settings, popularity, opt, outs, chunk_start, chunk_stop):
    """Chunks ``chunk_start .. chunk_stop - 1`` in order on the calling thread: bitwise reproducible.

    ``params``: the embeddings as a :class:`bpr_numpy._kernel_args.Parameters`; ``features``:
    FeatureMatrices; ``data``, ``settings``, ``outs`` as for :func:`bpr_numpy._kernels._epoch_serial`
    (the bitmap and run prefetching are not used); ``popularity`` as in its Sampling.
    """
    for ch in range(chunk_start, chunk_stop):
        _hybrid_epoch_chunk(params, features, data, settings, popularity, opt, outs, ch)


@njit(cache=True, parallel=True)
def _hybrid_epoch_parallel(params, features, data, settings, popularity, opt, outs, chunk_start, chunk_stop):
    """:func:`_hybrid_epoch_serial`, the chunks shared out as in :func:`bpr_numpy._kernels._epoch_parallel`."""
    next_chunk = np.full(1, chunk_start, np.int64)
    for _ in prange(max(1, chunk_stop - chunk_start)):
        ch = _fetch_add(next_chunk, 0)
        while ch < chunk_stop:
            _hybrid_epoch_chunk(params, features, data, settings, popularity, opt, outs, ch)
            ch = _fetch_add(next_chunk, 0)


@njit(cache=True, fastmath=_FASTMATH)
def _hybrid_apply_triplets(params, features, triplets, settings, opt):
    """Apply the hybrid update to an explicit triplet sequence, in order; returns ``x_uij`` before each step.

    ``triplets`` is ``(users, positives, negatives)``; the other bundles as in :func:`_hybrid_epoch_serial`.
    """
    E, Fm, c = params
    xptr, xidx, xval, yptr, yidx, yval = features
    users, positives, negatives = triplets
    _, _, _, _, lr, reg_u, reg_i, reg_j, reg_b, loss_code, use_bias, _, _ = settings
    xs = np.empty(users.shape[0])
    w = np.empty(E.shape[1])
    hi = np.empty(E.shape[1])
    hj = np.empty(E.shape[1])
    for k in range(users.shape[0]):
        xs[k], _, _ = _hybrid_update(
            E,
            Fm,
            c,
            xptr,
            xidx,
            xval,
            yptr,
            yidx,
            yval,
            users[k],
            positives[k],
            negatives[k],
            lr,
            reg_u,
            reg_i,
            reg_j,
            reg_b,
            loss_code,
            use_bias,
            w,
            hi,
            hj,
            opt,
        )
    return xs
