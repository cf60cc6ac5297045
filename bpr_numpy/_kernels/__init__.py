"""numba kernels: random numbers, triplet sampling and the BPR SGD update.

One module per concern: :mod:`._primitives` (constants, chunk layout and seeds, atomics,
prefetches, membership tests), :mod:`._draws` (triplets, each sampler's negatives),
:mod:`._updates` (the pair loss's slope and the update rules) and :mod:`._epoch` (a chunk, the
epoch's chunks in order or Hogwild, the sample stream alone); the side-feature model's kernels are
:mod:`bpr_numpy._hybrid_kernels`. Related arrays travel in the bundles of
:mod:`bpr_numpy._kernel_args`.

The update is the one of :func:`bpr_numpy.objective.sgd_step` (the math lives
there; ``tests/test_kernels.py`` replays triplet sequences through both and
compares). Kernels take plain arrays and scalars, never objects; validation is
the caller's job (:mod:`bpr_numpy.model`).

Reproducibility: an epoch is cut into :func:`n_chunks` chunks of equal size
(within one sample), at most ``CHUNK_SIZE`` samples each and at least
``MIN_CHUNKS`` of them when there are enough samples; chunk ``c`` of epoch
``e`` draws its positives and its negatives from two SplitMix64 streams
seeded from ``(seed, e, c)``. The chunk layout depends only on the number of
samples, so the stream of sampled triplets is the same whatever the thread
count, and the serial path (one thread) is bitwise reproducible. With
several threads the chunks run Hogwild (lock-free, racing updates), as every
fast BPR does, each thread taking the next unstarted chunk when it finishes
one (see :func:`_run_chunks`).

Speed: the triplets do not depend on the factors, so a chunk draws them a
batch (``BATCH``) at a time ahead of the updates and prefetches what the next
step will read: the three factor rows (and biases) of each triplet, and on
matrices beyond the caches the rows each run of one user starts from
(:func:`_prefetch_runs`). The updates are then applied in the same order as
without batching; only the memory latency is hidden. When the catalogue is
dense enough (see :func:`bpr_numpy._runtime.membership_bitmap`) the test "is
the drawn negative a positive of u?" reads one bit of a users x items
bitmap instead of binary-searching u's row: the same answer, hence the same
stream, 10% faster on MovieLens 100k.

Every function compiles lazily, on first call, and is cached on disk
(``cache=True``): importing this module compiles nothing.
"""

from ..sampling import MAX_NEGATIVE_TRIES
from ._draws import (
    _adaptive_negative,
    _aobpr_draw,
    _batch_buffers,
    _chunk_streams,
    _dns_choose,
    _draw_adaptive_negatives,
    _draw_batch,
    _draw_candidate,
    _draw_negative,
    _draw_run_starts,
    _item_score,
    _prefetch_runs,
    _runs_per_batch,
    _settle_negatives,
    _warp_search,
    _warp_weight,
)
from ._epoch import _run_chunks, _sample_stream, _sample_stream_arrays, _train_chunks
from ._primitives import (
    _FASTMATH,
    BATCH,
    CHUNK_SIZE,
    MIN_CHUNKS,
    PREFETCH_AHEAD,
    ROW_BLOCK,
    _chunk_range,
    _contains,
    _copy_finite,
    _fetch_add,
    _prefetch,
    _prefetch_row,
    _row_of,
    _stream_seed,
    n_chunks,
)
from ._updates import (
    _adam_factor_table,
    _adam_factors,
    _adam_lookup,
    _adaptive_rule,
    _apply_batch,
    _apply_triplets,
    _pair_loss_and_slope,
    adam_factor_table,
)

__all__ = [
    "_batch_buffers",
    "_chunk_streams",
    "CHUNK_SIZE",
    "MIN_CHUNKS",
    "MAX_NEGATIVE_TRIES",
    "BATCH",
    "PREFETCH_AHEAD",
    "ROW_BLOCK",
    "_FASTMATH",
    "_stream_seed",
    "_fetch_add",
    "n_chunks",
    "_chunk_range",
    "_prefetch",
    "_prefetch_row",
    "_row_of",
    "_contains",
    "_copy_finite",
    "_draw_candidate",
    "_draw_negative",
    "_runs_per_batch",
    "_draw_run_starts",
    "_prefetch_runs",
    "_draw_batch",
    "_settle_negatives",
    "_item_score",
    "_dns_choose",
    "_aobpr_draw",
    "_warp_search",
    "_warp_weight",
    "_adaptive_negative",
    "_draw_adaptive_negatives",
    "_pair_loss_and_slope",
    "_adaptive_rule",
    "_adam_factors",
    "_adam_factor_table",
    "_adam_lookup",
    "adam_factor_table",
    "_apply_batch",
    "_apply_triplets",
    "_run_chunks",
    "_train_chunks",
    "_sample_stream",
    "_sample_stream_arrays",
]
