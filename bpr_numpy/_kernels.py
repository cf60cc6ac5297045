"""numba kernels: random numbers, triplet sampling and the BPR SGD update.

The update is the one of :func:`bpr_numpy.objective.sgd_step` (the math lives
there; ``tests/test_kernels.py`` replays triplet sequences through both and
compares). Kernels take plain arrays and scalars, never objects; validation is
the caller's job (:mod:`bpr_numpy.model`).

Reproducibility: an epoch is cut into chunks of ``CHUNK_SIZE`` samples; chunk
``c`` of epoch ``e`` draws from its own SplitMix64 stream seeded from
``(seed, e, c)``. The chunk layout depends only on the number of samples, so
the stream of sampled triplets is the same whatever the thread count, and the
serial path (one thread) is bitwise reproducible. With several threads the
chunks run Hogwild (lock-free, racing updates), as every fast BPR does.

Every function compiles lazily, on first call, and is cached on disk
(``cache=True``): importing this module compiles nothing.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from ._rng import GOLDEN, below, mix64, next_bits

#: Samples per chunk. Fixed, so that the sampled stream does not depend on threads.
CHUNK_SIZE = 4096

#: Negative draws tried for one positive before the sample is skipped.
MAX_NEGATIVE_TRIES = 64

#: Samples between logarithms of the running product of loss factors (each
#: factor <= 2, so the product stays below 2**256, far from overflow).
LOG_EVERY = 256

# The dot products and row updates may be reassociated and fused (SIMD);
# no flag that would drop NaN/inf semantics, so divergence stays visible.
# The hot helpers are inlined at numba-IR level (inline="always"): LLVM does
# not inline across jitted functions here, and the calls cost a third of the
# update's time. Inlined code takes the fastmath flags of its caller.
_FASTMATH = {"reassoc", "contract"}


@njit(cache=True)
def _stream_seed(seed, epoch, chunk):
    """Initial state of the stream of chunk ``chunk`` of epoch ``epoch``."""
    s = mix64(np.uint64(seed) + GOLDEN * np.uint64(epoch + 1))
    return mix64(s + GOLDEN * np.uint64(chunk + 1))


@njit(cache=True, inline="always")
def _contains(indices, lo, hi, item):
    """Binary search for ``item`` in the sorted ``indices[lo:hi]``."""
    while lo < hi:
        mid = (lo + hi) >> 1
        v = indices[mid]
        if v < item:
            lo = mid + 1
        elif v > item:
            hi = mid
        else:
            return True
    return False


@njit(cache=True, inline="always")
def _draw_triplet(state, indptr, indices, user_of, n_items):
    """Draw ``(u, i, j)``: a uniform observed pair and a uniform non-positive j.

    j is resampled while it is a known positive of u, at most
    ``MAX_NEGATIVE_TRIES`` times. Returns ``(state, u, i, j)`` with ``j = -1``
    when no negative was found (a user who holds every item, or bad luck on a
    nearly full row): the caller skips and counts that sample.
    """
    state, bits = next_bits(state)
    k = below(bits, indices.shape[0])
    u = np.int64(user_of[k])
    i = np.int64(indices[k])
    lo = indptr[u]
    hi = indptr[u + 1]
    if hi - lo >= n_items:
        return state, u, i, np.int64(-1)
    for _ in range(MAX_NEGATIVE_TRIES):
        state, bits = next_bits(state)
        j = below(bits, n_items)
        if not _contains(indices, lo, hi, j):
            return state, u, i, j
    return state, u, i, np.int64(-1)


@njit(cache=True, inline="always")
def _pair_loss_and_slope(x, loss_code):
    """``ell(x)`` and ``ell'(x)`` in float64, as :mod:`bpr_numpy.objective` defines them.

    Same formulation as ``objective._sigmoid``/``_softplus`` (``exp(-|x|)``),
    so the kernel agrees with the reference to round-off, with no overflow.
    The loss comes in two parts, ``ell(x) = linear + log(factor)``, so that a
    caller summing many losses can multiply the factors (each in [1, 2]) and
    take one logarithm per ``LOG_EVERY`` samples instead of one per sample.
    Returns ``(linear, factor, slope)``.
    """
    e = math.exp(-abs(x))
    inv = 1.0 / (1.0 + e)
    if x >= 0.0:
        g = e * inv  # sigma(-x)
        sx = inv     # sigma(x)
    else:
        g = inv
        sx = e * inv
    if loss_code == 0:
        return max(-x, 0.0), 1.0 + e, -g  # softplus(-x) = max(-x, 0) + log(1 + exp(-|x|))
    return g, 1.0, -g * sx


@njit(cache=True, inline="always")
def _sgd_update(U, V, b, u, i, j, lr, reg_u, reg_i, reg_j, reg_b, loss_code, use_bias, scratch):
    """One SGD step on triplet (u, i, j), in place, from the old row values.

    ``lr`` and the ``reg_*`` arrive in the factors' dtype, so float32 models
    stay in float32 arithmetic; ``scratch`` is a 1-element array of that dtype
    through which the float64 slope is rounded once. Returns
    ``(x_uij, linear, factor)`` before the step, with
    ``ell(x_uij) = linear + log(factor)`` (see :func:`_pair_loss_and_slope`).
    """
    n_factors = U.shape[1]
    # float32 zero: numba unifies it to float64 when the factors are float64.
    x = np.float32(0.0)
    for f in range(n_factors):
        x += U[u, f] * (V[i, f] - V[j, f])
    if use_bias:
        x += b[i] - b[j]
    linear, factor, slope64 = _pair_loss_and_slope(np.float64(x), loss_code)
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
        bi = b[i]
        bj = b[j]
        b[i] = bi - lr * (slope + reg_b * bi)
        b[j] = bj - lr * (reg_b * bj - slope)
    return np.float64(x), linear, factor


@njit(cache=True, fastmath=_FASTMATH)
def _run_chunk(U, V, b, indptr, indices, user_of, n_samples, seed, epoch, chunk,
               lr, reg_u, reg_i, reg_j, reg_b, loss_code, use_bias):
    """Sample and apply ``n_samples`` triplets from chunk ``chunk``'s stream.

    Returns ``(sum of ell(x_uij), count of x_uij > 0, skipped samples)``.
    """
    n_items = V.shape[0]
    state = _stream_seed(seed, epoch, chunk)
    loss_sum = 0.0
    product = 1.0
    ordered = 0
    skipped = 0
    scratch = np.empty(1, U.dtype)
    for k in range(n_samples):
        state, u, i, j = _draw_triplet(state, indptr, indices, user_of, n_items)
        if j < 0:
            skipped += 1
            continue
        x, linear, factor = _sgd_update(U, V, b, u, i, j, lr, reg_u, reg_i, reg_j, reg_b, loss_code, use_bias,
                                        scratch)
        loss_sum += linear
        product *= factor
        if (k & (LOG_EVERY - 1)) == 0:
            loss_sum += math.log(product)
            product = 1.0
        if x > 0.0:
            ordered += 1
    return loss_sum + math.log(product), ordered, skipped


@njit(cache=True)
def _epoch_serial(U, V, b, indptr, indices, user_of, n_samples, seed, epoch,
                  lr, reg_u, reg_i, reg_j, reg_b, loss_code, use_bias, out_loss, out_ordered, out_skipped):
    """One epoch, chunks in order on the calling thread: bitwise reproducible."""
    n_chunks = out_loss.shape[0]
    for c in range(n_chunks):
        n = min(CHUNK_SIZE, n_samples - c * CHUNK_SIZE)
        out_loss[c], out_ordered[c], out_skipped[c] = _run_chunk(
            U, V, b, indptr, indices, user_of, n, seed, epoch, c,
            lr, reg_u, reg_i, reg_j, reg_b, loss_code, use_bias)


@njit(cache=True, parallel=True)
def _epoch_parallel(U, V, b, indptr, indices, user_of, n_samples, seed, epoch,
                    lr, reg_u, reg_i, reg_j, reg_b, loss_code, use_bias, out_loss, out_ordered, out_skipped):
    """One epoch, chunks spread over threads (Hogwild); same triplet stream as serial."""
    n_chunks = out_loss.shape[0]
    for c in prange(n_chunks):
        n = min(CHUNK_SIZE, n_samples - c * CHUNK_SIZE)
        out_loss[c], out_ordered[c], out_skipped[c] = _run_chunk(
            U, V, b, indptr, indices, user_of, n, seed, epoch, c,
            lr, reg_u, reg_i, reg_j, reg_b, loss_code, use_bias)


@njit(cache=True)
def _sample_stream(indptr, indices, user_of, n_items, n_samples, seed, epoch):
    """The triplets an epoch would draw, without training (for tests and inspection).

    Returns arrays ``(users, positives, negatives)`` of length ``n_samples``,
    ``negatives[k] = -1`` for skipped samples.
    """
    users = np.empty(n_samples, np.int64)
    positives = np.empty(n_samples, np.int64)
    negatives = np.empty(n_samples, np.int64)
    n_chunks = (n_samples + CHUNK_SIZE - 1) // CHUNK_SIZE
    for c in range(n_chunks):
        state = _stream_seed(seed, epoch, c)
        for k in range(c * CHUNK_SIZE, min(n_samples, (c + 1) * CHUNK_SIZE)):
            state, u, i, j = _draw_triplet(state, indptr, indices, user_of, n_items)
            users[k] = u
            positives[k] = i
            negatives[k] = j
    return users, positives, negatives


@njit(cache=True, fastmath=_FASTMATH)
def _sgd_triplets(U, V, b, users, positives, negatives, lr, reg_u, reg_i, reg_j, reg_b, loss_code, use_bias):
    """Apply the SGD update to an explicit triplet sequence, in order.

    Negatives equal to -1 are skipped (as in an epoch). Returns ``x_uij``
    before each step (NaN for skipped entries).
    """
    xs = np.full(users.shape[0], np.nan)
    scratch = np.empty(1, U.dtype)
    for k in range(users.shape[0]):
        if negatives[k] < 0:
            continue
        xs[k], _, _ = _sgd_update(U, V, b, users[k], positives[k], negatives[k],
                               lr, reg_u, reg_i, reg_j, reg_b, loss_code, use_bias, scratch)
    return xs


def n_chunks(n_samples: int) -> int:
    """Number of chunks an epoch of ``n_samples`` is cut into."""
    return (n_samples + CHUNK_SIZE - 1) // CHUNK_SIZE
