"""numba kernels of the hybrid (side-feature) model.

The update is :func:`bpr_numpy.objective.hybrid_sgd_step` (the math and its
derivation live there; ``tests/test_hybrid.py`` replays triplets through
both). Triplets are drawn exactly as for the plain model
(:func:`bpr_numpy._kernels._draw_batch` and ``_settle_negatives``, same
streams per ``(seed, epoch, chunk)``), so a hybrid model whose only features
are identities trains on the same triplets as the plain model.

Feature matrices arrive as CSR arrays ``(indptr, indices, data)`` with sorted
column indices; representations are built per triplet in scratch rows, so no
``n_users x factors`` table is kept in step with the embeddings.

One module of about 500 lines on purpose: the per-batch step is inlined into both of its
callers here (the epoch's chunks and the explicit sequence the tests replay), and its bits
depend on being inlined (see the comment above :func:`_hybrid_apply_batch`), so the step and
its callers stay in one room.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from ._kernels import (
    _FASTMATH,
    BATCH,
    _adam_lookup,
    _adaptive_rule,
    _batch_buffers,
    _chunk_streams,
    _draw_batch,
    _fetch_add,
    _pair_loss_and_slope,
    _settle_negatives,
)
from ._kernels._updates import _adagrad_row, _adam_constants, _adam_row
from ._runtime import hogwild
from .objective import OPTIMIZER_ADAM, OPTIMIZER_SGD


# Called once per batch, with every per-sample step written out in its loop: no helper that takes
# an array is called per sample or per element (AdaGrad and Adam call their row rules per feature
# row, as the plain kernel does per row). An inlined helper taking arrays costs a
# reference-count increment and decrement per array and call (atomic, on counters both threads
# share); the representations, the merge of the item rows and each element's optimiser step were
# such helpers, and made the identity-features model cost 5.7x a plain SGD step (2.2x written out)
# and with AdaGrad 74x (10x). The steps then compute in the embeddings' dtype, as the plain kernel
# does (float32 vectors hold twice the elements and need no conversions; AdaGrad and Adam through
# its row rules), and the items' representations enter only as their difference: 1.5x, AdaGrad
# 3.5x (benchmarks/slow_paths.py, MovieLens 100k, one thread).
#
# Inlined into its callers (numba's IR inliner), not compiled on its own as _kernels._apply_batch
# is: a function compiled on its own is linked into each caller's module, and LLVM optimises that
# copy again there. The process that compiles the kernels runs the function's own build (the
# callers' calls bind to the first definition loaded), a process that loads the callers from
# numba's cache runs the callers' copies; here the two builds differed in the last bits (Adam on
# float64, which a sigmoid loss then amplified), so cached and fresh processes trained different
# factors. Inlined, there is one build per caller. tests/test_equivalence_smoke.py trains each kind
# of path in a fresh and a cached process and compares the factors bitwise.
@njit(cache=True, inline="always", fastmath=_FASTMATH, error_model="numpy")
def _hybrid_apply_batch(
    E,
    Fm,
    c,
    xptr,
    xidx,
    xval,
    yptr,
    yidx,
    yval,
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
    scratch,
    opt,
    xs,
    loss_sum,
):
    """Apply triplets ``0 .. n-1`` of ``(bu, bi, bj)`` in order, each one :func:`bpr_numpy.objective.hybrid_sgd_step`.

    ``scratch`` is a ``(4, factors)`` array of the embeddings' dtype (the representation of u,
    the difference of i's and j's, a cell for rounding to that dtype, a gradient row); ``lr``
    and the ``reg_*`` arrive in that dtype; ``opt`` as in :func:`_hybrid_run_chunks`; ``xs``
    (None or an array) receives ``x_uij`` before each step (NaN where skipped). ``j < 0`` skips a sample (counted).
    ``loss_sum`` is the running total the batch's losses are added to.

    Gradients are taken at the old values: the representations (u's, and the
    difference of i's and j's, which is all the step needs of them) are built
    first, and each feature row's gradient uses only them and the row's own
    old value, so the order of the row updates does not matter. The item
    features of i and j are merged (both rows are sorted), so a feature of
    both items gets one step with both terms.

    Arithmetic: as in :func:`bpr_numpy._kernels._apply_batch`, the representations, ``x_uij``,
    the slope, the gradient rows and their rules (SGD's step, or AdaGrad's and Adam's row rules
    ``_adagrad_row`` and ``_adam_row``, the plain kernel's) are computed in the embeddings' dtype
    (float32 for a float32 model; feature values and coefficients rounded to it), so a float64
    model follows the float64 reference to round-off and a float32 model computes what the plain
    float32 kernel computes. The item biases' adaptive rule runs in float64, as the plain
    kernel's does.

    Returns ``(loss_sum + the batch's sum of ell(x_uij), count of x_uij > 0, skipped)``.
    """
    code, mU, mV, mb, vU, vV, vb, tU, tV, factors = opt
    adam = code == OPTIMIZER_ADAM
    w = scratch[0]
    d = scratch[1]
    grad = scratch[3]
    beta = _adam_constants(E)
    cell = scratch[2]  # cell[0] = value; value = cell[0] rounds a float64 to the embeddings' dtype
    n_factors = w.shape[0]
    cell[0] = 1
    one = cell[0]
    rate = np.float64(lr)  # the adaptive rules' step size
    product = 1.0
    ordered = 0
    skipped = 0
    for t in range(n):
        u = bu[t]
        i = bi[t]
        j = bj[t]
        if j < 0:
            skipped += 1
            if xs is not None:
                xs[t] = np.nan
            continue
        # A user and two items that are each one feature of value 1 (identities only, or rows
        # without metadata): the representations are those rows themselves and d = F[gi] - F[gj]
        # exactly (1 * e = e; the merge below sums two rounded terms, i.e. subtracts), so SGD's
        # step is the plain kernel's: one pass over the three rows, as the plain kernel makes it,
        # each expression written as the general path writes it; no scratch rows, no merge. The
        # same bits as the general path (tests/test_hybrid.py; with identities only, the plain
        # model's bits); identities only take 0.69 of the kernel time (MovieLens 100k, one
        # thread). AdaGrad and Adam keep the general path: their gradient rows, computed here in
        # one pass or in three, were not the general path's bits (LLVM fused other products).
        pu = xptr[u]
        pi = yptr[i]
        pj = yptr[j]
        if (
            code == OPTIMIZER_SGD
            and xptr[u + 1] - pu == 1
            and yptr[i + 1] - pi == 1
            and yptr[j + 1] - pj == 1
            and xval[pu] == 1.0
            and yval[pi] == 1.0
            and yval[pj] == 1.0
            and yidx[pi] != yidx[pj]
        ):
            f = xidx[pu]
            gi = yidx[pi]
            gj = yidx[pj]
            x32 = np.float32(0.0)
            for k in range(n_factors):
                x32 += E[f, k] * (Fm[gi, k] - Fm[gj, k])
            if use_bias:
                x32 += c[gi] - c[gj]
            x = np.float64(x32)
            linear, factor, slope = _pair_loss_and_slope(x32, loss_code, 1.0, one)
            cell[0] = slope
            s = cell[0]
            s_neg = -s  # the general path's coefficient of j: (0 - 1) * slope, rounded
            for k in range(n_factors):
                wu = E[f, k]
                hi = Fm[gi, k]
                hj = Fm[gj, k]
                E[f, k] = wu - lr * (s * (hi - hj) + reg_u * wu)
                Fm[gi, k] = hi - lr * (s * wu + reg_i * hi)
                Fm[gj, k] = hj - lr * (s_neg * wu + reg_j * hj)
            if use_bias:
                old = c[gi]
                c[gi] = old - lr * (s + reg_b * old)
                old = c[gj]
                c[gj] = old - lr * (s_neg + reg_b * old)
        else:
            # The user's representation w = sum_f x_uf E[f]: the first feature sets it (0 + v e = v e,
            # no pass of zeros), an empty row is zero.
            for p in range(xptr[u], xptr[u + 1]):
                cell[0] = xval[p]
                value = cell[0]
                f = xidx[p]
                if p == xptr[u]:
                    for k in range(n_factors):
                        w[k] = value * E[f, k]
                else:
                    for k in range(n_factors):
                        w[k] += value * E[f, k]
            if xptr[u] == xptr[u + 1]:
                w[:] = 0
            # The items' difference d = h_i - h_j = sum_g (y_ig - y_jg) F[g] in one pass over both
            # sorted rows, merged: a feature both items hold with the same value is read not at all
            # (the representations h_i and h_j themselves are never needed), and the bias
            # difference with it. The first term sets d, as for w.
            pa, ea = yptr[i], yptr[i + 1]
            pb, eb = yptr[j], yptr[j + 1]
            started = False
            bias_d = np.float32(0.0)  # in the embeddings' dtype (numba unifies it to float64 for float64 ones)
            while pa < ea or pb < eb:
                ga = yidx[pa] if pa < ea else -1
                gb = yidx[pb] if pb < eb else -1
                coef = 0.0
                if gb < 0 or (ga >= 0 and ga <= gb):
                    g = ga
                    coef += np.float64(yval[pa])
                    pa += 1
                else:
                    g = gb
                if pb < eb and yidx[pb] == g:
                    coef -= np.float64(yval[pb])
                    pb += 1
                if coef == 0.0:
                    continue
                cell[0] = coef
                value = cell[0]
                if not started:
                    for k in range(n_factors):
                        d[k] = value * Fm[g, k]
                    started = True
                else:
                    for k in range(n_factors):
                        d[k] += value * Fm[g, k]
                if use_bias:
                    bias_d += value * c[g]
            if not started:
                d[:] = 0
            # x_uij in the embeddings' dtype (a float32 zero: numba unifies it to float64 for float64 ones).
            x32 = np.float32(0.0)
            for k in range(n_factors):
                x32 += w[k] * d[k]
            if use_bias:
                x32 += bias_d
            x = np.float64(x32)
            linear, factor, slope = _pair_loss_and_slope(x32, loss_code, 1.0, one)
            c1 = c2 = 1.0
            # The user's feature rows: gradient x_uf * slope * d + reg_u * E[f].
            for p in range(xptr[u], xptr[u + 1]):
                f = xidx[p]
                coef = np.float64(xval[p]) * slope
                if code == OPTIMIZER_SGD:
                    cell[0] = coef
                    coef_e = cell[0]
                    for k in range(n_factors):
                        old = E[f, k]
                        E[f, k] = old - lr * (coef_e * d[k] + reg_u * old)
                    continue
                # AdaGrad or Adam: the gradient row in the embeddings' dtype, then the row rule the
                # plain kernel applies (_adagrad_row, _adam_row: vectorised, in that dtype).
                cell[0] = coef
                coef_e = cell[0]
                for k in range(n_factors):
                    grad[k] = coef_e * d[k] + reg_u * E[f, k]
                # The rule by hand (a helper taking the arrays made AdaGrad 40% slower: reference counts).
                if adam:
                    tU[f] += 1
                    c1, c2 = _adam_lookup(factors, tU[f])
                    cell[0] = c1  # the corrections in the embeddings' dtype, as _adam_row takes them
                    c1_e = cell[0]
                    cell[0] = c2
                    _adam_row(E[f], mU[f], vU[f], grad, lr, c1_e, cell[0], beta)
                else:
                    _adagrad_row(E[f], vU[f], grad, lr)
            # The item feature rows of i and j, merged: gradient slope * (y_ig - y_jg) * w + penalty.
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
                if code == OPTIMIZER_SGD:
                    cell[0] = coef
                    coef_e = cell[0]
                    cell[0] = regc
                    regc_e = cell[0]
                    for k in range(n_factors):
                        old = Fm[g, k]
                        Fm[g, k] = old - lr * (coef_e * w[k] + regc_e * old)
                    if use_bias:
                        cell[0] = reg_b * touches
                        regb_e = cell[0]
                        old = c[g]
                        c[g] = old - lr * (coef_e + regb_e * old)
                    continue
                cell[0] = coef
                coef_e = cell[0]
                cell[0] = regc
                regc_e = cell[0]
                for k in range(n_factors):
                    grad[k] = coef_e * w[k] + regc_e * Fm[g, k]
                if adam:
                    tV[g] += 1
                    c1, c2 = _adam_lookup(factors, tV[g])
                    cell[0] = c1
                    c1_e = cell[0]
                    cell[0] = c2
                    _adam_row(Fm[g], mV[g], vV[g], grad, lr, c1_e, cell[0], beta)
                else:
                    _adagrad_row(Fm[g], vV[g], grad, lr)
                if use_bias:
                    old = np.float64(c[g])
                    g_b = coef + reg_b * touches * old
                    m = mb[g] if adam else 0.0
                    c[g], m, vb[g] = _adaptive_rule(old, g_b, m, vb[g], code, rate, c1, c2)
                    if adam:
                        mb[g] = m
        if xs is not None:
            xs[t] = x
        loss_sum += linear
        product *= factor
        if x > 0.0:
            ordered += 1
    # Each factor is in [1, 2]: BATCH of them stay far from overflow.
    return loss_sum + np.log(product), ordered, skipped


# error_model="numpy" (no check before each division), which the row rules of AdaGrad and Adam
# inlined here need to be vectorised. The first version of this rewrite applied those rules
# element by element in float64, and with this error model its own build and its caller's copy
# differed for float64 Adam (the hazard described above _hybrid_apply_batch, one level up); with
# the row rules every combination agrees (benchmarks/equivalence.py --fresh-cache).
@njit(cache=True, fastmath=_FASTMATH, error_model="numpy", nogil=True)
def _hybrid_run_chunks(
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
    opt,
    out_loss,
    out_ordered,
    out_skipped,
    next_chunk,
    chunk_stop,
):
    """The epoch's chunks, chunk ``next_chunk[0]`` (advanced atomically) on, until ``chunk_stop``, as
    :func:`bpr_numpy._kernels._run_chunks` does for the plain model.

    The arguments are the bundles flattened, in order: Parameters (the embeddings),
    FeatureMatrices, TrainingData, EpochSettings (run prefetching is not used), the Sampling's
    ``popularity``, ``opt``, Outputs. Chunk ``ch``'s ``(sum of ell(x_uij), count of x_uij > 0,
    skipped samples)`` go to ``out_*[ch]``. Releases the GIL.
    """
    ch = _fetch_add(next_chunk, 0)
    while ch < chunk_stop:
        n_items = yptr.shape[0] - 1
        _, n_samples, pos_state, neg_state, starts = _chunk_streams(
            epoch_samples, indices.shape[0], user_run, seed, epoch, ch
        )
        bu, bi, bj, base, length = _batch_buffers()
        scratch = np.empty((4, E.shape[1]), E.dtype)
        loss_sum = 0.0
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
                True,
                popularity,
                bitmap,
                starts,
                start // BATCH,
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
            loss_sum, batch_ordered, batch_skipped = _hybrid_apply_batch(
                E,
                Fm,
                c,
                xptr,
                xidx,
                xval,
                yptr,
                yidx,
                yval,
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
                scratch,
                opt,
                None,
                loss_sum,
            )
            ordered += batch_ordered
            skipped += batch_skipped
        out_loss[ch] = loss_sum
        out_ordered[ch] = ordered
        out_skipped[ch] = skipped
        ch = _fetch_add(next_chunk, 0)


def _hybrid_train_chunks(
    params, features, data, settings, popularity, opt, outs, chunk_start: int, chunk_stop: int, threads: int = 1
):
    """Chunks ``chunk_start .. chunk_stop - 1``: in order on the calling thread (``threads=1``: bitwise
    reproducible) or Hogwild over ``threads`` threads, as :func:`bpr_numpy._kernels._train_chunks`."""
    args = (*params, *features, *data, *settings, popularity, opt, *outs)
    hogwild(_hybrid_run_chunks, args, chunk_start, chunk_stop, threads)


@njit(cache=True, fastmath=_FASTMATH, error_model="numpy")
def _hybrid_apply_triplets(params, features, triplets, settings, opt):
    """Apply the hybrid update to an explicit triplet sequence, in order; returns ``x_uij`` before each step.

    Negatives below 0 are skipped (NaN in the result), as in an epoch. ``triplets`` is
    ``(users, positives, negatives)``; the other bundles as in :func:`_hybrid_train_chunks`.
    """
    E, Fm, c = params
    xptr, xidx, xval, yptr, yidx, yval = features
    users, positives, negatives = triplets
    _, _, _, _, lr, reg_u, reg_i, reg_j, reg_b, loss_code, use_bias, _, _ = settings
    xs = np.empty(users.shape[0])
    scratch = np.empty((4, E.shape[1]), E.dtype)
    for start in range(0, users.shape[0], BATCH):
        stop = min(start + BATCH, users.shape[0])
        _hybrid_apply_batch(
            E,
            Fm,
            c,
            xptr,
            xidx,
            xval,
            yptr,
            yidx,
            yval,
            users[start:stop],
            positives[start:stop],
            negatives[start:stop],
            stop - start,
            lr,
            reg_u,
            reg_i,
            reg_j,
            reg_b,
            loss_code,
            use_bias,
            scratch,
            opt,
            xs[start:stop],
            0.0,
        )
    return xs
