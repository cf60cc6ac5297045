"""Stratified SGD for BPR (DSGD, Gemulla et al., KDD 2011): blocks, schedule and the stratum task.

Nothing here knows about a cluster: :mod:`bpr_numpy.distributed` ships these
functions to Dask workers (or runs them on threads in this process).

With ``P`` blocks, one epoch is ``P`` sub-epochs:

- users are cut once into ``P`` contiguous blocks of about equal numbers of
  positives (:func:`user_block_bounds`); a block's interactions stay where
  they were sent;
- items are cut afresh every epoch into ``P`` blocks of equal size by a
  permutation drawn from ``(seed, epoch)`` (:func:`item_blocks`);
- stratum ``(p, q)`` holds the positives of user block ``p`` whose items lie
  in item block ``q``, as a CSR over block-local ids (:func:`split_strata`);
- in sub-epoch ``s`` stratum ``(p, (p + s) mod P)`` trains for every ``p``
  (:func:`schedule`): no two strata of a sub-epoch share a user row or an
  item row, so they run at the same time without a single conflicting write,
  and after each sub-epoch the item blocks move on to the next user block.

A stratum trains with the single-machine kernel (``_kernels._train_chunks``, on
one thread or several) on its own rows: positives uniform over the
stratum's pairs, ``user_run`` as usual, negatives uniform over the item
block, redrawn while a positive of the user (the stratum's row of ``u`` holds
all of u's positives in that block, so the test is exact). Over an epoch each
positive pair is drawn once in expectation, as in a single-machine epoch; a
negative is uniform over the positive's item block, a fresh random ``1/P``
of the catalogue each epoch.
"""

from __future__ import annotations

import functools
import threading
from typing import NamedTuple

import numpy as np
from numba import njit

#: Seeds the item permutations apart from the model's other streams (initial factors: 0, 1).
_ITEM_STREAM = 0x5D56

#: Stratum streams (the kernels' "epoch" argument) start here when P > 1.
STREAM_BASE = 1 << 40


class ItemBlocks(NamedTuple):
    """The item layout of one epoch (:func:`item_blocks`)."""

    #: Block of each item, shape ``(n_items,)``.
    block_of: np.ndarray
    #: Index of each item inside its block (its rank among the block's ids), shape ``(n_items,)``.
    local_of: np.ndarray
    #: The items of block ``q`` are ``items[bounds[q]:bounds[q + 1]]``, ascending.
    items: np.ndarray
    bounds: np.ndarray

    def block(self, q: int) -> np.ndarray:
        return self.items[self.bounds[q] : self.bounds[q + 1]]


class StratumSettings(NamedTuple):
    """What a stratum task needs of the model's hyperparameters (plain values: they travel)."""

    user_run: int
    learning_rate: float
    reg_user: float
    reg_positive: float
    reg_negative: float
    reg_bias: float
    loss_code: int
    use_bias: bool
    skip_liked: bool
    #: numba threads of one stratum's kernel (1: the serial, reproducible kernel).
    threads: int


def user_block_bounds(indptr: np.ndarray, n_blocks: int) -> np.ndarray:
    """``n_blocks + 1`` row bounds cutting the users into contiguous blocks of about equal positives.

    Block ``p`` is rows ``bounds[p]:bounds[p + 1]`` (empty when a single user
    holds more than a block's share).
    """
    n_users = indptr.shape[0] - 1
    nnz = int(indptr[-1])
    targets = (np.arange(1, n_blocks, dtype=np.float64) * nnz) / n_blocks
    cuts = np.searchsorted(np.asarray(indptr, np.int64), targets, side="left")
    bounds = np.concatenate([[0], np.minimum(cuts, n_users), [n_users]]).astype(np.int64)
    return np.maximum.accumulate(bounds)


@functools.lru_cache(maxsize=4)
def item_blocks(n_items: int, n_blocks: int, seed: int, epoch: int) -> ItemBlocks:
    """Epoch ``epoch``'s cut of the items into ``n_blocks`` blocks of equal size (within one).

    A permutation drawn from ``(seed, epoch)``: the client and every worker
    compute the same layout without sending it. Each block's ids ascend, so
    the local id is monotone in the global id (rows of a stratum stay sorted).
    Cached: several tasks of a worker ask for the same epoch.
    """
    perm = np.random.default_rng([seed, _ITEM_STREAM, epoch]).permutation(n_items)
    bounds = (np.arange(n_blocks + 1, dtype=np.int64) * n_items) // n_blocks
    block_of = np.empty(n_items, np.int32)
    block_of[perm] = np.repeat(np.arange(n_blocks, dtype=np.int32), np.diff(bounds))
    # A stable sort by block keeps the ids ascending within each block.
    items = np.argsort(block_of, kind="stable")
    local_of = np.empty(n_items, np.int32)
    local_of[items] = np.arange(n_items) - np.repeat(bounds[:-1], np.diff(bounds))
    for a in (block_of, local_of, items, bounds):
        a.flags.writeable = False  # shared through the cache
    return ItemBlocks(block_of, local_of, items, bounds)


def schedule(n_blocks: int) -> list[list[tuple[int, int]]]:
    """The strata ``(user block, item block)`` of each sub-epoch: ``(p, (p + s) mod P)`` in sub-epoch ``s``."""
    return [[(p, (p + s) % n_blocks) for p in range(n_blocks)] for s in range(n_blocks)]


@njit(cache=True, nogil=True)
def split_strata(indptr, indices, block_of, local_of, n_blocks):
    """Cut a user block's CSR (global item ids) into its ``n_blocks`` strata: a stable counting sort by block.

    Returns ``(bounds, local_indices, users)``: stratum ``q``'s entries are
    ``bounds[q]:bounds[q + 1]`` of ``local_indices`` (block-local item ids)
    and ``users`` (their rows), rows ascending and ids ascending within each
    row, as the kernels' membership tests need (:func:`stratum_csr` makes the
    stratum's CSR). Memory: two int32 per positive, nothing per user.
    """
    rows = indptr.shape[0] - 1
    bounds = np.zeros(n_blocks + 1, np.int64)
    for k in range(indptr[rows]):
        bounds[block_of[indices[k]] + 1] += 1
    for q in range(n_blocks):
        bounds[q + 1] += bounds[q]
    fill = bounds[:n_blocks].copy()
    local_indices = np.empty(bounds[n_blocks], np.int32)
    users = np.empty(bounds[n_blocks], np.int32)
    # Rows are visited in order and each row's ids ascend (the local id is monotone in the
    # global id within a block): every stratum's entries come out sorted by (row, id).
    for r in range(rows):
        for k in range(indptr[r], indptr[r + 1]):
            q = block_of[indices[k]]
            local_indices[fill[q]] = local_of[indices[k]]
            users[fill[q]] = r
            fill[q] += 1
    return bounds, local_indices, users


def stratify(block: tuple[np.ndarray, np.ndarray], n_items: int, n_blocks: int, seed: int, epoch: int):
    """:func:`split_strata` of a user block ``(indptr, indices)`` under epoch ``epoch``'s item layout."""
    indptr, indices = block
    if n_blocks == 1:  # the block is its only stratum, its ids already local: no pass over it
        users = np.repeat(np.arange(indptr.shape[0] - 1, dtype=np.int32), np.diff(indptr))
        return np.array([0, indices.shape[0]], np.int64), indices, users
    layout = item_blocks(n_items, n_blocks, seed, epoch)
    return split_strata(indptr, indices, layout.block_of, layout.local_of, n_blocks)


def stratum_csr(strata, q: int, rows: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Stratum ``q`` of :func:`stratify`'s ``strata`` over ``rows`` users: ``(indptr, indices, user_of)``.

    ``indptr`` is int64, as the model's CSR (``as_user_items``): the same compiled kernel serves both.
    """
    bounds, local_indices, users = strata
    lo, hi = int(bounds[q]), int(bounds[q + 1])
    indptr = np.zeros(rows + 1, np.int64)
    np.cumsum(np.bincount(users[lo:hi], minlength=rows), out=indptr[1:])
    return indptr, local_indices[lo:hi], users[lo:hi]


class StaleBlockError(RuntimeError):
    """A stratum task was given a block that another task has advanced or is training (see :func:`train_stratum`)."""


def new_block(*arrays: np.ndarray, step: int) -> tuple:
    """A block of rows that stratum tasks train in place: ``(*arrays, step counter)``.

    User blocks are ``(factors, counter)``; item blocks ``(factors, biases, global ids, counter)``.
    """
    return (*arrays, np.array([step], np.int64))


def train_stratum(
    user_block: tuple,
    item_block: tuple,
    strata,
    q: int,
    settings: StratumSettings,
    seed: int,
    stream: int,
    step: int,
    record: bool = False,
):
    """Train stratum ``q`` of a user block, in place, with the single-machine kernel.

    ``user_block = (user rows, counter)`` holds the block's user rows,
    ``item_block = (item rows, item biases, item ids, counter)`` item block
    ``q``'s (:func:`new_block`), ``strata`` is :func:`stratify`'s result for
    the user block, ``stream`` a number no other stratum of the fit uses (it
    seeds the triplet streams in place of the epoch).

    The rows are updated in place, not copied: a copy of the user block per
    sub-epoch would cost more than the stratum's training on large data. So
    that a task run twice on the same arrays (a scheduler recomputing a lost
    result from inputs that have moved on), or two tasks on one array, fail
    loudly instead of applying updates twice, both blocks carry the count of
    sub-epochs they have been through: the task checks it equals ``step``,
    marks the blocks as in training (-1), and advances the count when done;
    otherwise it raises :class:`StaleBlockError` (the driver then restarts
    the epoch from its checkpoint).

    Returns ``(user_block, item_block, stats)`` with ``stats = (loss sum,
    ordered, skipped, samples)``, plus, with ``record``, the block-local user
    rows and the global ids (from the item block itself) of the item rows
    whose values the task changed.
    """
    import numba

    from . import _kernels
    from ._kernel_args import Parameters, Sampling, TrainingData, epoch_outputs, epoch_settings, row_blocks
    from ._runtime import PARALLEL_LOCK, beyond_cache, membership_bitmap
    from .objective import Regularization

    user_factors, user_step = user_block
    item_factors, item_bias, item_ids, item_step = item_block
    if user_step[0] != step or item_step[0] != step:
        raise StaleBlockError(
            f"stratum {q} of sub-epoch step {step} was given blocks at steps "
            f"{int(user_step[0])} (users) and {int(item_step[0])} (items; -1: in training)"
        )
    user_step[0] = item_step[0] = -1
    indptr, indices, _ = stratum_csr(strata, q, user_factors.shape[0])
    n_samples = indices.shape[0]
    chunks = _kernels.n_chunks(n_samples)
    outs = epoch_outputs(chunks)
    if record:
        before = (user_factors.copy(), item_factors.copy(), item_bias.copy())
    threads = min(settings.threads, numba.config.NUMBA_NUM_THREADS)
    if n_samples:
        bitmap = membership_bitmap(indptr, indices, item_factors.shape[0])
        epoch = epoch_settings(
            n_samples=n_samples,
            user_run=settings.user_run,
            seed=seed,
            epoch=stream,
            learning_rate=settings.learning_rate,
            regularization=Regularization(
                settings.reg_user, settings.reg_positive, settings.reg_negative, settings.reg_bias
            ),
            loss_code=settings.loss_code,
            use_bias=settings.use_bias,
            skip_liked=settings.skip_liked,
            dtype=user_factors.dtype,
            prefetch_runs=beyond_cache(user_factors, item_factors, indices),
        )
        args = (
            Parameters(user_factors, item_factors, item_bias),
            TrainingData(indptr, indices, row_blocks(indptr), bitmap),
            epoch,
            Sampling(None, None),
            None,
            None,
            outs,
            0,
            chunks,
        )
        if threads > 1:
            with PARALLEL_LOCK:
                _kernels._train_chunks(*args, threads)
        else:
            _kernels._train_chunks(*args)
    user_step[0] = item_step[0] = step + 1
    stats: tuple = (float(outs.loss.sum()), int(outs.ordered.sum()), int(outs.skipped.sum()), n_samples)
    if record:  # the rows whose values changed
        changed_items = (before[1] != item_factors).any(axis=1) | (before[2] != item_bias)
        stats += (np.flatnonzero((before[0] != user_factors).any(axis=1)), item_ids[changed_items])
    return user_block, item_block, stats


def shuffle_items(n_items: int, n_blocks: int, seed: int, epoch: int, *blocks) -> tuple:
    """Epoch ``epoch``'s item blocks made from epoch ``epoch - 1``'s ``blocks``, one task for all of them.

    An all-to-all between workers would be ``P**2`` pieces, each a task for the scheduler
    (``P = 64``: 4,096 of them per epoch); through one task the item factors cross the network
    twice instead (in, then out to the worker of each block). Returns one :func:`new_block`
    per new block, at step ``epoch * n_blocks``, rows in ascending id order.
    """
    from ._runtime import aligned_empty

    old, new = item_blocks(n_items, n_blocks, seed, epoch - 1), item_blocks(n_items, n_blocks, seed, epoch)
    rows = np.empty((n_items, blocks[0][0].shape[1]), blocks[0][0].dtype)
    bias = np.empty(n_items, blocks[0][1].dtype)
    for r, block in enumerate(blocks):
        if not np.array_equal(block[2], old.block(r)):
            raise StaleBlockError(f"item block {r} does not hold epoch {epoch - 1}'s items")
        rows[old.block(r)] = block[0]
        bias[old.block(r)] = block[1]
    out = []
    for q in range(n_blocks):
        ids = new.block(q)
        block_rows = aligned_empty((ids.shape[0], rows.shape[1]), rows.dtype)
        block_bias = aligned_empty(ids.shape[0], rows.dtype)
        block_rows[...] = rows[ids]
        block_bias[...] = bias[ids]
        out.append(new_block(block_rows, block_bias, ids, step=epoch * n_blocks))
    return tuple(out)


# ----------------------------------------------------------------------------- hosted user blocks
# A user block (its interactions, user factors, strata and pending statistics) lives on its
# worker between tasks, in this process-wide table, rather than in the scheduler's futures:
# a task that returned both the user block and the item block would need two more tasks to
# split its result (getitem), which made the scheduler, not the kernels, the limit at 64 blocks.

_HOSTED: dict = {}
_HOSTED_LOCK = threading.Lock()


#: Fits whose blocks were dropped: a ``host_block`` task still queued for one of them (the client
#: gave up while placing the blocks) must not bring its block back.
_FORGOTTEN: set = set()


class HostedBlock:
    """A user block kept on its worker: ``(indptr, indices)`` of its rows, factors, strata, statistics."""

    def __init__(self, data: tuple, factors: np.ndarray, first_row: int, step: int) -> None:
        self.data = data
        self.first_row = first_row
        self.block = new_block(factors, step=step)
        self.strata = None
        self.strata_epoch = -1
        self.stats: list = []


def host_block(fit: str, p: int, data: tuple, factors: np.ndarray, first_row: int, step: int) -> int:
    """Keep user block ``p`` of fit ``fit`` (rows from ``first_row``) on this worker (a task); returns ``step``."""
    from ._runtime import kernel_ready

    factors = kernel_ready(factors, factors.dtype)  # arrays that arrive over the network start anywhere
    with _HOSTED_LOCK:
        if fit in _FORGOTTEN:
            raise StaleBlockError(f"fit {fit} was released")
        _HOSTED[(fit, p)] = HostedBlock(data, factors, first_row, step)
    return step


def forget(fit: str) -> int:
    """Drop every block of fit ``fit`` hosted here; returns how many."""
    with _HOSTED_LOCK:
        _FORGOTTEN.add(fit)
        keys = [k for k in _HOSTED if k[0] == fit]
        for k in keys:
            del _HOSTED[k]
    return len(keys)


def _hosted(fit: str, p: int) -> HostedBlock:
    try:
        return _HOSTED[(fit, p)]
    except KeyError:
        raise StaleBlockError(f"user block {p} of fit {fit} is not on this worker (restarted since?)") from None


def train_hosted(
    fit: str,
    p: int,
    item_block: tuple,
    after,
    q: int,
    settings: StratumSettings,
    seed: int,
    epoch: int,
    s: int,
    n_blocks: int,
    n_items: int,
    record: bool = False,
) -> tuple:
    """Sub-epoch ``s`` of epoch ``epoch`` for hosted user block ``p``: stratum ``q`` (a task).

    ``after`` is the result of the block's previous task, unused: it orders this task after
    that one (it lives on this worker already, so nothing moves). Cuts the block into the
    epoch's strata on its first sub-epoch, trains in place (:func:`train_stratum`), keeps the
    statistics for :func:`report_hosted`, and returns the item block (the next task's input).
    """
    from ._runtime import kernel_ready

    hosted = _hosted(fit, p)
    rows, bias, ids, step = item_block
    # A block received from another worker starts wherever its message put it; rows that straddle
    # one more cache line than needed cost the kernel 6% (model._aligned_empty). A copy is V/P.
    item_block = (kernel_ready(rows, rows.dtype), kernel_ready(bias, bias.dtype), ids, step)
    if hosted.strata_epoch != epoch:
        hosted.strata = None  # the old strata go before the new ones are built
        hosted.strata = stratify(hosted.data, n_items, n_blocks, seed, epoch)
        hosted.strata_epoch = epoch
    # With one block the streams are the single-machine model's (epoch), so that P = 1 is that
    # model bitwise; with more they live far above any epoch number a later partial_fit uses.
    stream = epoch if n_blocks == 1 else STREAM_BASE + (epoch * n_blocks + s) * n_blocks + p
    _, item_block, stats = train_stratum(
        hosted.block, item_block, hosted.strata, q, settings, seed, stream, epoch * n_blocks + s, record
    )
    if record:
        stats = (*stats[:4], hosted.first_row + stats[4], stats[5])
    hosted.stats.append(stats)
    return item_block


def report_hosted(fit: str, p: int, after, with_factors: bool) -> tuple:
    """The statistics kept since the last report (and, with ``with_factors``, the block's factors)."""
    hosted = _hosted(fit, p)
    stats, hosted.stats = hosted.stats, []
    return stats, (hosted.block[0] if with_factors else None)
