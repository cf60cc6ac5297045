"""Several negatives per positive (``n_negatives = k``) in numba: the extra draws and the step.

The math is :mod:`bpr_numpy.objective._negatives` (:func:`~bpr_numpy.objective.multi_negative_step`):
the mean of the positive's k triplet objectives, every gradient at the old values, each
touched row moved once. ``tests/test_negatives.py`` replays the kernel's own trace through the
reference and compares.

Kept apart from :func:`bpr_numpy._kernels._updates._apply_batch`: the one-negative step stays
the lean loop it is, and an epoch with ``negatives`` None (the default) compiles without this
module's code (numba prunes the branch on ``is None``).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from ..objective import LOSS_SOFTMAX, OPTIMIZER_ADAM
from ._draws import _draw_negative
from ._primitives import _FASTMATH, PREFETCH_AHEAD, _prefetch, _prefetch_row
from ._updates import _adagrad_row, _adam_constants, _adam_factors, _adam_row, _adaptive_rule, _pair_loss_and_slope


# Called once per batch, not inlined, for the reason _apply_batch is (numba's inliner re-scans the
# host); error_model="numpy" for the same reason too: every divisor is positive (1 + exp(-|x|),
# AdaGrad's accumulator, Adam's epsilon, the count of negatives found, which is >= 1 where divided).
@njit(cache=True, fastmath=_FASTMATH, error_model="numpy")
def _apply_batch_multi(
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
    given,
    opt,
    trace,
    trace_row,
    xs,
):
    """Apply samples ``0 .. n-1`` in order, each a positive ``(bu[t], bi[t])`` with k negatives.

    ``negatives`` is ``(k, dns_candidates)``. The first negative is the batch's draw ``bj[t]``
    (-1: the sample is skipped, as with one negative); the other ``k - 1`` are drawn here from
    ``neg_state`` as the sampler draws (uniform or ``popularity``'s alias table, redrawn while a
    known positive, -1 if none is found in the redraws), in order. With ``dns_candidates > 1``
    each of them is the best-scored of that many (:func:`_dns_choose`; the extra candidates
    uniform), chosen from the factors as they are at this sample. ``given`` is None or an array
    ``(n, k)`` of negatives to use instead of drawing (the replay entry point).

    The step is :func:`bpr_numpy.objective.multi_negative_step`: the slopes of the mean of the
    pair losses, or of the sampled softmax (``loss_code`` ``LOSS_SOFTMAX``) once every score is
    known; gradients of every row at the
    old values into float64 scratch rows (a negative drawn twice sums into its first
    occurrence's row), then each distinct row moves once, by SGD, AdaGrad or lazy Adam
    (``opt`` as in :func:`_apply_batch`).

    ``trace`` (None or an array) receives ``(u, i, j_1 .. j_k)`` of sample ``t`` in row
    ``trace_row + t`` (``j_1 = -1``: skipped); ``xs`` (None or an array ``(n, k)``) receives each
    ``x_uij`` before the step (NaN where none). Returns ``(neg_state, sum over samples of the mean
    of omega ell(x_uij), count of samples whose first x_uij > 0, skipped)``: the first negative is
    the sampler's plain draw, so the count estimates the same training AUC as with one negative.
    """
    k, dns_candidates = negatives
    n_factors = U.shape[1]
    n_items = V.shape[0]
    negs = np.empty(k, np.int64)
    owner = np.empty(k, np.int64)  # the slot whose row a negative's gradient goes to (its first occurrence)
    slopes = np.empty(k, np.float64)
    scores = np.empty(k, np.float64)  # x_uij of each negative slot (the softmax needs all of them first)
    joint = loss_code == LOSS_SOFTMAX
    grad = np.empty((k + 2, n_factors))  # rows: w_u, h_i, then one per negative slot (float64)
    bias_grad = np.empty(k + 1)  # b_i, then one per negative slot
    # w_u and h_i of the sample in float64 (exact), converted once for its k (1 + candidates) scores.
    w64 = np.empty(n_factors)
    h64 = np.empty(n_factors)
    if opt is not None:
        # Adam's corrections computed, not looked up in the table (opt's last entry) as the
        # one-negative kernels do: here they reach _adam_row's float64 arithmetic directly (the
        # others pass them through an array), and looked up they changed the last bits of 7
        # float64 combinations (benchmarks/equivalence.py; fastmath likely folds the formula's
        # division into the step). This step is dominated by its k negatives' scores anyway.
        code, m_u, m_v, m_b, v_u, v_v, v_b, t_u, t_v, _ = opt
        adam = code == OPTIMIZER_ADAM
        beta = _adam_constants(grad)  # Adam's constants in float64, the type of this kernel's step
    rate = np.float64(lr)
    ru = np.float64(reg_u)
    ri = np.float64(reg_i)
    rj = np.float64(reg_j)
    rb = np.float64(reg_b)
    loss_sum = 0.0
    ordered = 0
    skipped = 0
    # Every draw of the batch first, in the order the updates used to draw them: a sample with a
    # negative draws its k - 1 extra negatives, and DNS the extra candidates of each negative found
    # after it. The draws do not depend on the factors (the membership test reads the CSR), so
    # the stream, the candidates and DNS's choices are the same as drawing at the update; drawn
    # ahead, the candidates' rows can be prefetched PREFETCH_AHEAD samples before they are scored
    # (on Gowalla, 10 MiB of item rows, a candidate's score waited on memory).
    drawn = np.full((n if given is None else 0, k, dns_candidates), -1, np.int64)
    for t in range(drawn.shape[0]):
        if bj[t] < 0:
            continue
        u = bu[t]
        lo = indptr[u]
        hi = indptr[u + 1]
        for m in range(k):
            if m == 0:
                drawn[t, 0, 0] = bj[t]
            else:
                neg_state, drawn[t, m, 0] = _draw_negative(neg_state, indices, lo, hi, n_items, popularity)
            if dns_candidates > 1 and drawn[t, m, 0] >= 0:
                for c in range(1, dns_candidates):
                    neg_state, item = _draw_negative(neg_state, indices, lo, hi, n_items, None)
                    # Not found: the slot's own negative, which cannot win (ties keep the first), so
                    # the choice below tests no candidate and compiles without a branch (_apply_batch).
                    drawn[t, m, c] = item if item >= 0 else drawn[t, m, 0]
    for t in range(-PREFETCH_AHEAD if given is None else 0, n):
        ahead = t + PREFETCH_AHEAD
        if given is None and ahead < n and bj[ahead] >= 0:
            _prefetch_row(U, bu[ahead])
            _prefetch_row(V, bi[ahead])
            for m in range(k):
                for c in range(dns_candidates):
                    if drawn[ahead, m, c] >= 0:
                        _prefetch_row(V, drawn[ahead, m, c])
                        if use_bias:
                            _prefetch(b, drawn[ahead, m, c], 0)
        if t < 0:
            continue
        u = bu[t]
        i = bi[t]
        for f in range(n_factors):
            w64[f] = U[u, f]
            h64[f] = V[i, f]
        if given is not None:
            for m in range(k):
                negs[m] = given[t, m]
        else:
            for m in range(k):
                # DNS: the highest-scored of the negative and its candidates, the first of ties
                # (_dns_choose's rule and float64 scores), written out: called, it took the factor
                # arrays, reference-counted per negative. With the draws ahead and w_u converted
                # once, Gowalla's DNS-5 with 8 negatives went from 1.6-2.1 to 1.3 kernel s/epoch.
                best = drawn[t, m, 0]
                if dns_candidates > 1 and best >= 0:
                    best_score = 0.0
                    for f in range(n_factors):
                        best_score += w64[f] * np.float64(V[best, f])
                    if use_bias:
                        best_score += np.float64(b[best])
                    for c in range(1, dns_candidates):
                        item = drawn[t, m, c]
                        score = 0.0
                        for f in range(n_factors):
                            score += w64[f] * np.float64(V[item, f])
                        if use_bias:
                            score += np.float64(b[item])
                        if score > best_score:
                            best = item
                            best_score = score
                negs[m] = best
        if trace is not None:
            trace[trace_row + t, 0] = u
            trace[trace_row + t, 1] = i
            for m in range(k):
                trace[trace_row + t, 2 + m] = negs[m] if negs[0] >= 0 or given is not None else -1
        if given is None and negs[0] < 0:
            skipped += 1
            continue
        found = 0
        for m in range(k):
            if negs[m] >= 0:
                found += 1
        if found == 0:
            skipped += 1
            continue
        share = 1.0 / found
        # Scores and slopes, all at the old values.
        slope_sum = 0.0
        mean_loss = 0.0
        first_x = np.nan
        for m in range(k):
            j = negs[m]
            owner[m] = -1
            if j < 0:
                if xs is not None:
                    xs[t, m] = np.nan
                continue
            x = 0.0
            for f in range(n_factors):
                x += w64[f] * (h64[f] - np.float64(V[j, f]))
            if use_bias:
                x += np.float64(b[i]) - np.float64(b[j])
            if xs is not None:
                xs[t, m] = x
            if m == 0:
                first_x = x
            scores[m] = x
            if not joint:
                linear, factor, slope = _pair_loss_and_slope(x, loss_code, 1.0, 1.0)
                mean_loss += share * (linear + math.log(factor))
                slopes[m] = share * slope
                slope_sum += slopes[m]
            owner[m] = m
            for p in range(m):
                if negs[p] == j:
                    owner[m] = p  # drawn twice: one row, the gradients summed
                    break
        if joint:
            # The sampled softmax: ln(1 + sum_m e^-x_m), shifted by max(0, max_m -x_m) against
            # overflow; slope_m = -e^-x_m / (1 + sum e^-x) (objective/_negatives.py).
            shift = 0.0
            for m in range(k):
                if owner[m] >= 0 and -scores[m] > shift:
                    shift = -scores[m]
            total = math.exp(-shift)
            for m in range(k):
                if owner[m] >= 0:
                    total += math.exp(-scores[m] - shift)
            mean_loss = shift + math.log(total)
            for m in range(k):
                if owner[m] >= 0:
                    slopes[m] = -math.exp(-scores[m] - mean_loss)
                    slope_sum += slopes[m]
        # Gradients: w_u and h_i, then the negatives' rows (regularisation shared out by 1/k).
        for f in range(n_factors):
            wu = np.float64(U[u, f])
            grad[0, f] = ru * wu
            grad[1, f] = slope_sum * wu + ri * np.float64(V[i, f])
        for m in range(k):
            if owner[m] == m:
                for f in range(n_factors):
                    grad[2 + m, f] = 0.0
                bias_grad[1 + m] = 0.0
        for m in range(k):
            if owner[m] < 0:
                continue
            j = negs[m]
            s = slopes[m]
            row = 2 + owner[m]
            for f in range(n_factors):
                wu = np.float64(U[u, f])
                hj = np.float64(V[j, f])
                grad[0, f] += s * (np.float64(V[i, f]) - hj)
                grad[row, f] += share * rj * hj - s * wu
            if use_bias:
                bias_grad[1 + owner[m]] += share * rb * np.float64(b[j]) - s
        if use_bias:
            bias_grad[0] = slope_sum + rb * np.float64(b[i])
        # Each distinct row moves once.
        if opt is None:
            # SGD, theta -= lr g, each row written out (row views would be reference-counted per sample).
            for f in range(n_factors):
                U[u, f] = np.float64(U[u, f]) - rate * grad[0, f]
                V[i, f] = np.float64(V[i, f]) - rate * grad[1, f]
            for m in range(k):
                if owner[m] == m:
                    j = negs[m]
                    for f in range(n_factors):
                        V[j, f] = np.float64(V[j, f]) - rate * grad[2 + m, f]
            if use_bias:
                b[i] = np.float64(b[i]) - rate * bias_grad[0]
                for m in range(k):
                    if owner[m] == m:
                        b[negs[m]] = np.float64(b[negs[m]]) - rate * bias_grad[1 + m]
        else:
            if adam:
                t_u[u] += 1
                t_v[i] += 1
                cu1, cu2 = _adam_factors(t_u[u])
                ci1, ci2 = _adam_factors(t_v[i])
                _adam_row(U[u], m_u[u], v_u[u], grad[0], rate, cu1, cu2, beta)
                _adam_row(V[i], m_v[i], v_v[i], grad[1], rate, ci1, ci2, beta)
            else:
                ci1 = ci2 = 1.0
                _adagrad_row(U[u], v_u[u], grad[0], rate)
                _adagrad_row(V[i], v_v[i], grad[1], rate)
            if use_bias:
                b[i], mb, v_b[i] = _adaptive_rule(
                    np.float64(b[i]), bias_grad[0], m_b[i] if adam else 0.0, v_b[i], code, rate, ci1, ci2
                )
                if adam:
                    m_b[i] = mb
            for m in range(k):
                if owner[m] != m:
                    continue
                j = negs[m]
                cj1 = cj2 = 1.0
                if adam:
                    t_v[j] += 1
                    cj1, cj2 = _adam_factors(t_v[j])
                    _adam_row(V[j], m_v[j], v_v[j], grad[2 + m], rate, cj1, cj2, beta)
                else:
                    _adagrad_row(V[j], v_v[j], grad[2 + m], rate)
                if use_bias:
                    b[j], mb, v_b[j] = _adaptive_rule(
                        np.float64(b[j]), bias_grad[1 + m], m_b[j] if adam else 0.0, v_b[j], code, rate, cj1, cj2
                    )
                    if adam:
                        m_b[j] = mb
        loss_sum += mean_loss
        if first_x > 0.0:
            ordered += 1
    return neg_state, loss_sum, ordered, skipped


@njit(cache=True, fastmath=_FASTMATH)
def _apply_multi_triplets(params, samples, settings, opt):
    """Apply the model's several-negative step to explicit samples, in order (the tests' replay).

    ``samples``: ``(users, positives, negatives)``, negatives of shape (n, k), -1 left out;
    ``settings``: EpochSettings (its step size, penalties, loss and bias switch). Returns each
    ``x_uij`` before its step, shape (n, k), NaN where none.
    """
    U, V, b = params
    users, positives, negs = samples
    _, _, _, _, lr, reg_u, reg_i, reg_j, reg_b, loss_code, use_bias, _, _ = settings
    n = users.shape[0]
    k = negs.shape[1]
    xs = np.full((n, k), np.nan)
    no_csr = np.zeros(users.max() + 2 if n else 1, np.int64)
    dummy = np.zeros(1, np.int64)
    _apply_batch_multi(
        U,
        V,
        b,
        no_csr,
        dummy,
        users,
        positives,
        dummy,
        n,
        lr,
        reg_u,
        reg_i,
        reg_j,
        reg_b,
        loss_code,
        use_bias,
        np.uint64(0),
        None,
        (np.int64(k), np.int64(1)),
        negs,
        opt,
        None,
        0,
        xs,
    )
    return xs
