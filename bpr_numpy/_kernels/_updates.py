"""The update rules in numba: the pair loss's slope, SGD, AdaGrad and lazy Adam on a batch of triplets.

The math is :mod:`bpr_numpy.objective` (:func:`~bpr_numpy.objective.sgd_step`); ``tests/test_kernels.py`` replays
triplets through both and compares.
"""

from __future__ import annotations

import functools
import math

import numpy as np
from numba import njit

from ..objective import ADAM_BETA1, ADAM_BETA2, ADAM_EPSILON, LOSS_SIGMOID, LOSS_WARP, OPTIMIZER_ADAGRAD, OPTIMIZER_ADAM
from ..sampling import ADAPTIVE_DNS
from ._draws import _adaptive_negative
from ._primitives import _FASTMATH, BATCH, PREFETCH_AHEAD, _prefetch, _prefetch_row


@njit(cache=True, inline="always")
def _pair_loss_and_slope(x, loss_code, weight, one):
    """``omega ell(x)`` and ``omega ell'(x)``, as :mod:`bpr_numpy.objective` defines them, returned in float64.

    Written with ``exp(-|x|)``, overflow-free; it agrees with the reference's
    SciPy ``expit``/``log_expit`` to round-off (the kernel tests hold it to that).
    The exponential and the division are computed in the type of ``x`` and
    ``one`` (1 in that type): float32 for the SGD step of a float32 model,
    whose slope is rounded to float32 anyway (7% faster on MovieLens 100k
    than float64's ``exp`` and division), float64 everywhere else.
    The loss comes in two parts, ``ell(x) = linear + log(factor)``, so that a
    caller summing many losses can multiply the factors (each in [1, 2]) and
    take one logarithm per batch of ``BATCH`` samples instead of one per sample.
    Returns ``(linear, factor, slope)``. ``weight`` (``omega``) is 1 except
    for WARP, whose loss has no logarithmic part.
    """
    x64 = np.float64(x)
    if loss_code == LOSS_WARP:
        if x64 < 1.0:
            return weight * (1.0 - x64), 1.0, -weight
        return 0.0, 1.0, 0.0
    e = math.exp(-abs(x))
    inv = one / (one + e)
    if x >= 0:
        g = e * inv  # sigma(-x)
        sx = inv  # sigma(x)
    else:
        g = inv
        sx = e * inv
    if loss_code == LOSS_SIGMOID:
        return np.float64(g), 1.0, -np.float64(g * sx)
    # "bpr", and "softmax" with one negative (which is BPR; with several, _kernels/_negatives.py
    # computes its slopes): softplus(-x) = max(-x, 0) + log(1 + exp(-|x|))
    return max(-x64, 0.0), 1.0 + np.float64(e), -np.float64(g)


@njit(cache=True, inline="always")
def _adaptive_rule(theta, g, m, v, code, lr, c1, c2):
    """One element of an AdaGrad or Adam step (``code``), in float64; returns ``(theta, m, v)``.

    The rules of :func:`bpr_numpy.objective._optimizers._optimizer_rows`: AdaGrad's
    accumulator is ``v``; Adam's bias corrections arrive as ``c1 = 1 / (1 -
    beta1^t)`` and ``c2 = 1 / (1 - beta2^t)`` for the row's step count ``t``.
    """
    if code == OPTIMIZER_ADAGRAD:
        v = v + g * g
        return theta - lr * g / math.sqrt(v), m, v
    m = ADAM_BETA1 * m + (1.0 - ADAM_BETA1) * g
    v = ADAM_BETA2 * v + (1.0 - ADAM_BETA2) * g * g
    return theta - lr * (m * c1) / (math.sqrt(v * c2) + ADAM_EPSILON), m, v


# The optimisers' rules on whole rows (the same rules as _adaptive_rule, which the biases use):
# one row per loop lets LLVM vectorise the square roots and divisions that made AdaGrad and Adam
# cost 9x and 11x an SGD step while the three rows shared one loop. The arithmetic is in the
# type of the arguments: float32 for a float32 model (as the reference computes it), which puts
# 8 elements in a vector where float64 put 4, and the divider, which these loops are bound by,
# does twice the work per instruction (AdaGrad 5.5x -> 2.4x an SGD step, Adam 6.6x -> 3.0-3.3x,
# benchmarks/slow_paths.py: MovieLens 100k, 64 factors, one thread). Inlined into _apply_batch,
# whose error model they take.
@njit(cache=True, inline="always", fastmath=_FASTMATH, error_model="numpy")
def _adagrad_row(theta, acc, g, lr):
    """AdaGrad on one row (the rule of :func:`_adaptive_rule`), from its gradient row ``g``, in ``theta``'s dtype."""
    for f in range(theta.shape[0]):
        v = acc[f] + g[f] * g[f]
        theta[f] = theta[f] - lr * g[f] / math.sqrt(v)
        acc[f] = v


@njit(cache=True, inline="always", fastmath=_FASTMATH, error_model="numpy")
def _adam_row(theta, first, second, g, lr, c1, c2, beta):
    """Adam on one row (the rule of :func:`_adaptive_rule`), from its gradient row ``g``, in ``beta``'s dtype.

    ``beta`` holds ``(beta1, 1 - beta1, beta2, 1 - beta2, epsilon)``.
    """
    for f in range(theta.shape[0]):
        m = beta[0] * first[f] + beta[1] * g[f]
        v = beta[2] * second[f] + beta[3] * g[f] * g[f]
        theta[f] = theta[f] - lr * (m * c1) / (math.sqrt(v * c2) + beta[4])
        first[f] = m
        second[f] = v


_LOG_BETA1, _LOG_BETA2 = math.log(ADAM_BETA1), math.log(ADAM_BETA2)


@njit(cache=True, inline="always")
def _adam_constants(like):
    """``(beta1, 1 - beta1, beta2, 1 - beta2, epsilon)`` in ``like``'s dtype, for :func:`_adam_row`."""
    beta = np.empty(5, like.dtype)
    beta[0] = ADAM_BETA1
    beta[1] = 1.0 - ADAM_BETA1
    beta[2] = ADAM_BETA2
    beta[3] = 1.0 - ADAM_BETA2
    beta[4] = ADAM_EPSILON
    return beta


@njit(cache=True, inline="always")
def _adam_factors(steps):
    """Adam's bias corrections ``(c1, c2)`` after ``steps`` steps of a row."""
    # 1 / (1 - beta^t) written -1 / expm1(t ln beta): an expm1 costs less than a pow (Adam's
    # step 10-15% faster on MovieLens 100k), and 1 - beta^t loses no digits to cancellation.
    t = np.float64(steps)
    return -1.0 / math.expm1(t * _LOG_BETA1), -1.0 / math.expm1(t * _LOG_BETA2)


@njit(cache=True)
def _adam_factor_table():
    """:func:`_adam_factors` of every step count from 1 to the first at which both are exactly 1.0.

    Row ``t`` holds ``(c1, c2)`` after ``t`` steps (row 0, before any step, NaN). The values are
    :func:`_adam_factors`' own (computed by it, in float64), and it stays at exactly 1.0 past the
    last row (``t ln beta`` only goes further below the point where ``expm1`` rounds to -1;
    ``tests/test_kernels.py`` checks every step to 2**22), so a lookup gives its bits.
    """
    last = 1
    while True:
        c1, c2 = _adam_factors(last)
        if c1 == 1.0 and c2 == 1.0:
            break
        last += 1
    table = np.empty((last + 1, 2))
    table[0, 0] = table[0, 1] = np.nan
    for t in range(1, last + 1):
        table[t, 0], table[t, 1] = _adam_factors(t)
    return table


@functools.cache
def adam_factor_table() -> np.ndarray:
    """The process's :func:`_adam_factor_table` (37,413 rows, 0.6 MB; read-only), built on the first Adam state."""
    table = _adam_factor_table()
    table.flags.writeable = False
    return table


# Adam's bias corrections are looked up, not computed: two expm1 for each of the three rows of a
# sample were a sixth of Adam's step (MovieLens 100k, 64 factors, one thread: kernel time 0.83x,
# 8 runs side by side with the computing version on the two cores). The same bits (above).
@njit(cache=True, inline="always")
def _adam_lookup(table, steps):
    """:func:`_adam_factors` ``(c1, c2)`` after ``steps >= 1`` steps, from :func:`adam_factor_table`.

    No bounds check: ``table`` must be that table, which :meth:`OptimizerState.kernel_args
    <bpr_numpy.objective.OptimizerState.kernel_args>` gives every Adam state (the other
    optimisers get an empty one, which their branches never read).
    """
    row = min(steps, table.shape[0] - 1)
    return table[row, 0], table[row, 1]


# Compiled on its own and called once per batch, not inlined (inline="always") into _run_chunks:
# numba's IR inliner re-scans the host function after each inlined call, and inlining this
# function with its own inlined helpers took about 10 s of the 14 s a first fit spent compiling
# (numba's pass timers). Called, the first fit compiles in 4.3-6.5 s (quiet or loaded machine);
# the call costs within 1% of a MovieLens 100k epoch (CPU time, A/B alternated), and the factors are bitwise the same
# (benchmarks/equivalence.py, fresh and cached): the same fastmath flags as its callers.
# error_model="numpy" leaves out Python's zero-divisor check, which kept the optimisers' row
# loops scalar: no divisor here can be zero (1 + exp(-|x|) >= 1, AdaGrad's accumulator starts at
# ADAGRAD_INITIAL > 0, Adam adds ADAM_EPSILON, WARP's and AOBPR's divisors are positive by the
# hyperparameter checks), so only that check goes.
@njit(cache=True, fastmath=_FASTMATH, error_model="numpy")
def _apply_batch(
    U,
    V,
    b,
    indptr,
    indices,
    bu,
    bi,
    bj,
    bw,
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
    trace_row,
    xs,
):
    """Apply triplets ``0 .. n-1`` of ``(bu, bi, bj)`` in order, in place, each from the current row values.

    The SGD step is the one of :func:`bpr_numpy.objective.sgd_step`; ``lr``
    and the ``reg_*`` arrive in the factors' dtype, so float32 models stay in
    float32 arithmetic (the slope's exponential too, see
    :func:`_pair_loss_and_slope`), and ``scratch`` (a 1-element array of that
    dtype) gives 1 in that dtype and rounds the slope to it. With ``opt``
    (:meth:`bpr_numpy.objective.OptimizerState.kernel_args`) the step is
    AdaGrad's or Adam's instead. ``bw`` is None (weight 1, or the
    weight ``adaptive`` gives) or the weights of an explicit sequence;
    ``adaptive`` as in :func:`_adaptive_negative`; with DNS alone, ``candidates[t]`` are sample
    ``t``'s extra candidates (:func:`_draw_dns_candidates`, drawn with the batch). ``trace`` (None or an
    array) receives ``(u, i, j, weight)`` of sample ``t`` in row ``trace_row
    + t``; ``xs`` (None or an array) receives ``x_uij`` before each step (NaN
    where skipped). ``j = -1`` skips a sample (counted), ``j = -2`` is WARP's
    "no violation found" (no step, counted as ordered). Every applied
    triplet has ``i != j``, as :func:`bpr_numpy.objective.sgd_step` requires
    (epochs draw non-positives): Adam's step counts of u, i and j advance
    before their corrections are taken, which relies on it.

    The SGD step is written out in this loop, not called: an inlined helper
    that takes the factor arrays costs four reference-count increments and
    decrements per sample (atomic, on counters both threads share), which
    made the epoch 15% slower on one thread and scale worse on two (measured
    on MovieLens 100k). A caller summing many losses gets ``omega ell(x) =
    linear + log(factor)`` per sample (see :func:`_pair_loss_and_slope`) and
    one logarithm per batch.

    Returns ``(neg_state, sum of omega ell(x_uij), count of x_uij > 0, skipped)``.
    """
    n_factors = U.shape[1]
    n_items = V.shape[0]
    scratch[0] = 1
    one = scratch[0]  # 1 in the factors' dtype
    if adaptive is not None:
        dns_only = adaptive[0] == ADAPTIVE_DNS and adaptive[1] == 0  # DNS without WARP
    if opt is not None:
        # Unpacked once per batch: inside the sample loop each array would be reference-counted per sample.
        code, m_u, m_v, m_b, v_u, v_v, v_b, t_u, t_v, factors = opt
        adam = code == OPTIMIZER_ADAM
        # The triplet's gradients (rows u, i, j) and Adam's constants, in the factors' dtype.
        grad = np.empty((3, n_factors), U.dtype)
        beta = _adam_constants(U)
        corrections = np.empty(6, U.dtype)
    loss_sum = 0.0
    product = 1.0
    ordered = 0
    skipped = 0
    # The rows (biases included: the other thread's writes evict them) of the triplet
    # PREFETCH_AHEAD steps ahead are requested first; the loop starts that far before 0.
    for t in range(-PREFETCH_AHEAD, n):
        ahead = t + PREFETCH_AHEAD
        if ahead < n and bj[ahead] >= 0:
            _prefetch_row(U, bu[ahead])
            _prefetch_row(V, bi[ahead])
            _prefetch_row(V, bj[ahead])
            if use_bias:
                _prefetch(b, bi[ahead], 0)
                _prefetch(b, bj[ahead], 0)
            if adaptive is not None and dns_only:
                for c in range(candidates.shape[1]):
                    _prefetch_row(V, candidates[ahead, c])
                    if use_bias:
                        _prefetch(b, candidates[ahead, c], 0)
        if t < 0:
            continue
        u = bu[t]
        i = bi[t]
        j = bj[t]
        weight = 1.0 if bw is None else bw[t]
        if adaptive is not None:
            if j >= 0 and dns_only:
                # DNS alone (the common case): the highest-scored of j and the candidates drawn with
                # the batch (the same draws as _dns_choose's), the first of ties; scored as
                # _item_score scores, in float64. Written out, not called through _adaptive_negative
                # (its tuple of arrays unpacked per sample cost DNS-2 a fifth of its epoch) nor
                # through a helper taking U, V, b and a row of ``candidates`` (their reference counts
                # per sample cost DNS-2 8% of its epoch on MovieLens 100k). A candidate that was not
                # found holds j itself (_draw_dns_candidates): it scores what j scores and is not
                # taken, so no candidate is tested, and LLVM compiles the running maximum to a
                # compare and conditional moves. With the test (a third way into the loop's join)
                # it kept a branch that goes either way at random: without it DNS-5 takes 0.88 and
                # DNS-8 0.86 of the kernel time (MovieLens 100k, one thread); DNS-2, one compare a
                # sample, does not change.
                best_score = 0.0
                for f in range(n_factors):
                    best_score += np.float64(U[u, f]) * np.float64(V[j, f])
                if use_bias:
                    best_score += np.float64(b[j])
                for c in range(candidates.shape[1]):
                    item = candidates[t, c]
                    score = 0.0
                    for f in range(n_factors):
                        score += np.float64(U[u, f]) * np.float64(V[item, f])
                    if use_bias:
                        score += np.float64(b[item])
                    if score > best_score:
                        j = item
                        best_score = score
            elif j >= 0:
                neg_state, j, weight = _adaptive_negative(
                    neg_state,
                    U,
                    V,
                    b,
                    use_bias,
                    indices,
                    indptr[u],
                    indptr[u + 1],
                    u,
                    i,
                    j,
                    n_items,
                    popularity,
                    adaptive,
                )
        if trace is not None:
            trace[trace_row + t, 0] = u
            trace[trace_row + t, 1] = i
            trace[trace_row + t, 2] = j
            trace[trace_row + t, 3] = weight
        if j < 0:
            if j == -1:
                skipped += 1
            else:
                ordered += 1  # WARP: every draw within the margin, nothing to learn from this positive
            continue
        # x_uij in the factors' dtype (a float32 zero: numba unifies it to float64 for float64 factors).
        x32 = np.float32(0.0)
        for f in range(n_factors):
            x32 += U[u, f] * (V[i, f] - V[j, f])
        if use_bias:
            x32 += b[i] - b[j]
        x = np.float64(x32)
        if opt is None:
            linear, factor, slope64 = _pair_loss_and_slope(x32, loss_code, weight, one)
            scratch[0] = slope64
            slope = scratch[0]
            for f in range(n_factors):
                wu = U[u, f]
                hi = V[i, f]
                hj = V[j, f]
                U[u, f] = wu - lr * (slope * (hi - hj) + reg_u * wu)
                V[i, f] = hi - lr * (slope * wu + reg_i * hi)
                V[j, f] = hj - lr * (reg_j * hj - slope * wu)
            if use_bias:
                b_i = b[i]
                b_j = b[j]
                b[i] = b_i - lr * (slope + reg_b * b_i)
                b[j] = b_j - lr * (reg_b * b_j - slope)
        else:
            # AdaGrad or Adam (objective/_optimizers.py, apply_rows): the SGD step's gradients, in the
            # factors' dtype, another rule per element. Written out here for the reason the SGD step is.
            linear, factor, slope64 = _pair_loss_and_slope(x, loss_code, weight, 1.0)
            scratch[0] = slope64
            slope = scratch[0]
            cu1 = cu2 = ci1 = ci2 = cj1 = cj2 = 1.0
            if adam:
                t_u[u] += 1
                t_v[i] += 1
                t_v[j] += 1
                cu1, cu2 = _adam_lookup(factors, t_u[u])
                ci1, ci2 = _adam_lookup(factors, t_v[i])
                cj1, cj2 = _adam_lookup(factors, t_v[j])
                corrections[0] = cu1
                corrections[1] = cu2
                corrections[2] = ci1
                corrections[3] = ci2
                corrections[4] = cj1
                corrections[5] = cj2
            # Two passes: the three rows' gradients into scratch rows (from the old values), then
            # the rule one row at a time, in loops LLVM vectorises: AdaGrad's through _adagrad_row,
            # Adam's written out here (_adam_row's rule, expression for expression: the same bits).
            # Called, _adam_row took four row views per row, whose reference counts cost Adam's
            # step 7-12% (kernel seconds, MovieLens 100k, two A/Bs of 3 alternated rounds).
            # Adam's corrections arrive in the factors' dtype, through ``corrections``.
            for f in range(n_factors):
                wu = U[u, f]
                hi = V[i, f]
                hj = V[j, f]
                grad[0, f] = slope * (hi - hj) + reg_u * wu
                grad[1, f] = slope * wu + reg_i * hi
                grad[2, f] = reg_j * hj - slope * wu
            if adam:
                c1_r = corrections[0]  # row u
                c2_r = corrections[1]
                for f in range(n_factors):
                    m = beta[0] * m_u[u, f] + beta[1] * grad[0, f]
                    v = beta[2] * v_u[u, f] + beta[3] * grad[0, f] * grad[0, f]
                    U[u, f] = U[u, f] - lr * (m * c1_r) / (math.sqrt(v * c2_r) + beta[4])
                    m_u[u, f] = m
                    v_u[u, f] = v
                c1_r = corrections[2]  # row i
                c2_r = corrections[3]
                for f in range(n_factors):
                    m = beta[0] * m_v[i, f] + beta[1] * grad[1, f]
                    v = beta[2] * v_v[i, f] + beta[3] * grad[1, f] * grad[1, f]
                    V[i, f] = V[i, f] - lr * (m * c1_r) / (math.sqrt(v * c2_r) + beta[4])
                    m_v[i, f] = m
                    v_v[i, f] = v
                c1_r = corrections[4]  # row j
                c2_r = corrections[5]
                for f in range(n_factors):
                    m = beta[0] * m_v[j, f] + beta[1] * grad[2, f]
                    v = beta[2] * v_v[j, f] + beta[3] * grad[2, f] * grad[2, f]
                    V[j, f] = V[j, f] - lr * (m * c1_r) / (math.sqrt(v * c2_r) + beta[4])
                    m_v[j, f] = m
                    v_v[j, f] = v
            else:
                _adagrad_row(U[u], v_u[u], grad[0], lr)
                _adagrad_row(V[i], v_v[i], grad[1], lr)
                _adagrad_row(V[j], v_v[j], grad[2], lr)
            if use_bias:
                # The biases' rule in float64 (two scalars: no vector to gain).
                rate = np.float64(lr)
                slope_b = np.float64(slope)
                b_i = np.float64(b[i])
                b_j = np.float64(b[j])
                gbi = slope_b + reg_b * b_i
                gbj = reg_b * b_j - slope_b
                b[i], m, v_b[i] = _adaptive_rule(b_i, gbi, m_b[i] if adam else 0.0, v_b[i], code, rate, ci1, ci2)
                if adam:
                    m_b[i] = m
                b[j], m, v_b[j] = _adaptive_rule(b_j, gbj, m_b[j] if adam else 0.0, v_b[j], code, rate, cj1, cj2)
                if adam:
                    m_b[j] = m
        if xs is not None:
            xs[t] = x
        loss_sum += linear
        product *= factor
        if x > 0.0:
            ordered += 1
    # Each factor is in [1, 2]: BATCH of them stay far from overflow.
    return neg_state, loss_sum + math.log(product), ordered, skipped


@njit(cache=True, fastmath=_FASTMATH)
def _apply_triplets(params, triplets, settings, opt):
    """Apply the model's update to an explicit triplet sequence, in order (``opt`` as in :func:`_run_chunks`).

    ``params``: Parameters; ``triplets``: ``(users, positives, negatives, weights)``;
    ``settings``: EpochSettings (its step size, penalties, loss and bias switch). Negatives
    below 0 are skipped (as in an epoch). Returns ``x_uij`` before each step (NaN for skipped
    entries).
    """
    U, V, b = params
    users, positives, negatives, weights = triplets
    _, _, _, _, lr, reg_u, reg_i, reg_j, reg_b, loss_code, use_bias, _, _ = settings
    xs = np.full(users.shape[0], np.nan)
    scratch = np.empty(1, U.dtype)
    no_csr = np.zeros(1, np.int64)
    for start in range(0, users.shape[0], BATCH):
        stop = min(start + BATCH, users.shape[0])
        _apply_batch(
            U,
            V,
            b,
            no_csr,
            no_csr,
            users[start:stop],
            positives[start:stop],
            negatives[start:stop],
            weights[start:stop],
            stop - start,
            lr,
            reg_u,
            reg_i,
            reg_j,
            reg_b,
            loss_code,
            use_bias,
            scratch,
            np.uint64(0),
            None,
            None,
            no_csr.reshape(1, 1),
            opt,
            None,
            0,
            xs[start:stop],
        )
    return xs
