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

from ._kernels import BATCH, _adam_corrections, _adaptive_rule, _chunk_range, _draw_batch, _draw_run_starts, \
    _fetch_add, _pair_loss_and_slope, _stream_seed, _tally, _FASTMATH


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
    if code == 0:
        theta[row, k] = old - lr * g
        return
    m = first[row, k] if code == 2 else 0.0
    theta[row, k], m, second[row, k] = _adaptive_rule(old, g, m, second[row, k], code, lr, c1, c2)
    if code == 2:
        first[row, k] = m


@njit(cache=True, inline="always")
def _step_bias(theta, row, g, code, lr, first, second, c1, c2):
    """:func:`_step` for a 1-D parameter (the item-feature biases)."""
    old = np.float64(theta[row])
    if code == 0:
        theta[row] = old - lr * g
        return
    m = first[row] if code == 2 else 0.0
    theta[row], m, second[row] = _adaptive_rule(old, g, m, second[row], code, lr, c1, c2)
    if code == 2:
        first[row] = m


@njit(cache=True, inline="always")
def _hybrid_apply_batch(E, Fm, c, xptr, xidx, xval, yptr, yidx, yval, bu, bi, bj, n, lr, reg_u, reg_i, reg_j, reg_b,
                        loss_code, use_bias, w, hi, hj, opt, xs):
    """Apply triplets ``0 .. n-1`` of ``(bu, bi, bj)`` in order: :func:`bpr_numpy.objective.hybrid_sgd_step` each.

    Returns ``(sum of ell(x_uij), count of x_uij > 0, skipped)``; ``j < 0`` skips a
    sample (counted; ``xs[t]`` NaN). ``xs`` (None or an array) receives ``x_uij``
    before each step. ``w``, ``hi``, ``hj`` are float64 scratch rows.

    Gradients are taken at the old values: the representations are built
    first, and each feature row's gradient uses only them and the row's own
    old value, so the order of the row updates does not matter. The item
    features of i and j are merged (both rows are sorted), so a feature of
    both items gets one step with both terms. The step is written in this
    loop, the optimiser's tuple unpacked once per batch, for the reason
    :func:`bpr_numpy._kernels._apply_batch` gives (reference counts per sample).
    """
    code, mU, mV, mb, vU, vV, vb, tU, tV = opt
    lr = np.float64(lr)
    loss_sum = 0.0
    product = 1.0
    ordered = 0
    skipped = 0
    for t in range(n):
        if bj[t] < 0:
            skipped += 1
            if xs is not None:
                xs[t] = np.nan
            continue
        u = bu[t]
        i = bi[t]
        j = bj[t]
        _represent(w, E, xptr, xidx, xval, u)
        _represent(hi, Fm, yptr, yidx, yval, i)
        _represent(hj, Fm, yptr, yidx, yval, j)
        x = 0.0
        for k in range(w.shape[0]):
            x += w[k] * (hi[k] - hj[k])
        if use_bias:
            x += _represent_bias(c, yptr, yidx, yval, i) - _represent_bias(c, yptr, yidx, yval, j)
        linear, factor, slope = _pair_loss_and_slope(x, loss_code, 1.0, 1.0)
        c1 = c2 = 1.0
        for p in range(xptr[u], xptr[u + 1]):
            f = xidx[p]
            coef = np.float64(xval[p]) * slope
            if code == 0:
                for k in range(w.shape[0]):
                    old = np.float64(E[f, k])
                    E[f, k] = old - lr * (coef * (hi[k] - hj[k]) + reg_u * old)
                continue
            if code == 2:
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
            coef *= slope
            if code == 0:
                for k in range(w.shape[0]):
                    old = np.float64(Fm[g, k])
                    Fm[g, k] = old - lr * (coef * w[k] + regc * old)
                if use_bias:
                    old = np.float64(c[g])
                    c[g] = old - lr * (coef + reg_b * touches * old)
                continue
            if code == 2:
                c1, c2 = _adam_corrections(tV, g)
            for k in range(w.shape[0]):
                _step(Fm, g, k, coef * w[k] + regc * np.float64(Fm[g, k]), code, lr, mV, vV, c1, c2)
            if use_bias:
                _step_bias(c, g, coef + reg_b * touches * np.float64(c[g]), code, lr, mb, vb, c1, c2)
        if xs is not None:
            xs[t] = x
        loss_sum, product, ordered = _tally(loss_sum, product, ordered, x, linear, factor)
    # Each factor is in [1, 2]: BATCH of them stay far from overflow.
    return loss_sum + np.log(product), ordered, skipped


@njit(cache=True, fastmath=_FASTMATH)
def _hybrid_run_chunk(E, Fm, c, xptr, xidx, xval, yptr, yidx, yval, indptr, indices, user_of, epoch_samples,
                      user_run, seed, epoch, chunk, lr, reg_u, reg_i, reg_j, reg_b, loss_code, use_bias, skip_liked,
                      popularity, opt):
    """Sample and apply the triplets of chunk ``chunk``, as :func:`bpr_numpy._kernels._run_chunk` does.

    Returns ``(sum of ell(x_uij), count of x_uij > 0, skipped samples)``.
    """
    n_items = yptr.shape[0] - 1
    first, stop = _chunk_range(epoch_samples, chunk)
    n_samples = stop - first
    pos_state = _stream_seed(seed, epoch, chunk, 0)
    neg_state = _stream_seed(seed, epoch, chunk, 1)
    bu = np.empty(BATCH, np.int64)
    bi = np.empty(BATCH, np.int64)
    bj = np.empty(BATCH, np.int64)
    base = np.empty(BATCH, np.int64)
    length = np.empty(BATCH, np.int64)
    w = np.empty(E.shape[1])
    hi = np.empty(E.shape[1])
    hj = np.empty(E.shape[1])
    loss_sum = 0.0
    ordered = 0
    skipped = 0
    pos_state, starts = _draw_run_starts(pos_state, indices.shape[0], n_samples, user_run)
    for start in range(0, n_samples, BATCH):
        n = min(BATCH, n_samples - start)
        pos_state, neg_state = _draw_batch(pos_state, neg_state, indptr, indices, user_of, n_items, n, user_run,
                                           bu, bi, bj, base, length, E, Fm, False, True, skip_liked, popularity, None,
                                           starts, start // BATCH)
        batch_loss, batch_ordered, batch_skipped = _hybrid_apply_batch(
            E, Fm, c, xptr, xidx, xval, yptr, yidx, yval, bu, bi, bj, n, lr, reg_u, reg_i, reg_j, reg_b, loss_code,
            use_bias, w, hi, hj, opt, None)
        loss_sum += batch_loss
        ordered += batch_ordered
        skipped += batch_skipped
    return loss_sum, ordered, skipped


@njit(cache=True)
def _hybrid_epoch_serial(E, Fm, c, xptr, xidx, xval, yptr, yidx, yval, indptr, indices, user_of, n_samples,
                         user_run, seed, epoch, chunk_start, chunk_stop, lr, reg_u, reg_i, reg_j, reg_b, loss_code,
                         use_bias, skip_liked, popularity, opt, out_loss, out_ordered, out_skipped):
    """Chunks ``chunk_start .. chunk_stop - 1`` in order on the calling thread: bitwise reproducible."""
    for ch in range(chunk_start, chunk_stop):
        out_loss[ch], out_ordered[ch], out_skipped[ch] = _hybrid_run_chunk(
            E, Fm, c, xptr, xidx, xval, yptr, yidx, yval, indptr, indices, user_of, n_samples, user_run, seed, epoch,
            ch, lr, reg_u, reg_i, reg_j, reg_b, loss_code, use_bias, skip_liked, popularity, opt)


@njit(cache=True, parallel=True)
def _hybrid_epoch_parallel(E, Fm, c, xptr, xidx, xval, yptr, yidx, yval, indptr, indices, user_of, n_samples,
                           user_run, seed, epoch, chunk_start, chunk_stop, lr, reg_u, reg_i, reg_j, reg_b, loss_code,
                           use_bias, skip_liked, popularity, opt, out_loss, out_ordered, out_skipped):
    """:func:`_hybrid_epoch_serial`, the chunks shared out as in :func:`bpr_numpy._kernels._epoch_parallel`."""
    next_chunk = np.full(1, chunk_start, np.int64)
    for _ in prange(max(1, chunk_stop - chunk_start)):
        ch = _fetch_add(next_chunk, 0)
        while ch < chunk_stop:
            out_loss[ch], out_ordered[ch], out_skipped[ch] = _hybrid_run_chunk(
                E, Fm, c, xptr, xidx, xval, yptr, yidx, yval, indptr, indices, user_of, n_samples, user_run, seed,
                epoch, ch, lr, reg_u, reg_i, reg_j, reg_b, loss_code, use_bias, skip_liked, popularity, opt)
            ch = _fetch_add(next_chunk, 0)


@njit(cache=True, fastmath=_FASTMATH)
def _hybrid_apply_triplets(E, Fm, c, xptr, xidx, xval, yptr, yidx, yval, users, positives, negatives, lr, reg_u,
                           reg_i, reg_j, reg_b, loss_code, use_bias, opt):
    """Apply the hybrid update to an explicit triplet sequence, in order; returns ``x_uij`` before each step.

    Negatives below 0 are skipped (NaN in the result), as in an epoch.
    """
    xs = np.empty(users.shape[0])
    w = np.empty(E.shape[1])
    hi = np.empty(E.shape[1])
    hj = np.empty(E.shape[1])
    for start in range(0, users.shape[0], BATCH):
        stop = min(start + BATCH, users.shape[0])
        _hybrid_apply_batch(E, Fm, c, xptr, xidx, xval, yptr, yidx, yval, users[start:stop], positives[start:stop],
                            negatives[start:stop], stop - start, lr, reg_u, reg_i, reg_j, reg_b, loss_code, use_bias,
                            w, hi, hj, opt, xs[start:stop])
    return xs
