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

A stratum trains with the single-machine kernel (``_kernels._epoch_serial``
or ``_epoch_parallel``) on its own rows: positives uniform over the
stratum's pairs, ``user_run`` as usual, negatives uniform over the item
block, redrawn while a positive of the user (the stratum's row of ``u`` holds
all of u's positives in that block, so the test is exact). Over an epoch each
positive pair is drawn once in expectation, as in a single-machine epoch; a
negative is uniform over the positive's item block, a fresh random ``1/P``
of the catalogue each epoch.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import numpy as np
from numba import njit

#: Seeds the item permutations apart from the model's other streams (initial factors: 0, 1).
_ITEM_STREAM = 0x5D56


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
        return self.items[self.bounds[q]:self.bounds[q + 1]]


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
    """Cut a user block's CSR (global item ids) into its ``n_blocks`` strata, in one counting pass.

    Returns ``(offsets, local_indices, users)``: stratum ``q`` is the CSR
    with ``indptr = offsets[q] - offsets[q, 0]`` over
    ``local_indices[offsets[q, 0]:offsets[q, -1]]`` (block-local item ids,
    ascending in each row, as the kernels' membership tests need), and
    ``users`` is the row of each of those entries (the kernels' ``user_of``).
    """
    rows = indptr.shape[0] - 1
    offsets = np.zeros((n_blocks, rows + 1), np.int64)
    for r in range(rows):
        for k in range(indptr[r], indptr[r + 1]):
            offsets[block_of[indices[k]], r + 1] += 1
    total = 0
    for q in range(n_blocks):
        offsets[q, 0] = total
        for r in range(rows):
            total += offsets[q, r + 1]
            offsets[q, r + 1] = total
    fill = offsets[:, :rows].copy()
    local_indices = np.empty(total, np.int32)
    users = np.empty(total, np.int32)
    # Rows are visited in order and each row's ids ascend: the writes ascend within every stratum row.
    for r in range(rows):
        for k in range(indptr[r], indptr[r + 1]):
            q = block_of[indices[k]]
            local_indices[fill[q, r]] = local_of[indices[k]]
            users[fill[q, r]] = r
            fill[q, r] += 1
    return offsets, local_indices, users


def stratify(block: tuple[np.ndarray, np.ndarray], n_items: int, n_blocks: int, seed: int, epoch: int):
    """:func:`split_strata` of a user block ``(indptr, indices)`` under epoch ``epoch``'s item layout."""
    layout = item_blocks(n_items, n_blocks, seed, epoch)
    return split_strata(block[0], block[1], layout.block_of, layout.local_of, n_blocks)


class StaleBlockError(RuntimeError):
    """A stratum task was given a block that another task has already advanced (see :func:`train_stratum`)."""


def new_block(*arrays: np.ndarray, step: int) -> tuple:
    """A block of rows that stratum tasks train in place: ``(*arrays, step counter)``."""
    return (*arrays, np.array([step], np.int64))


def train_stratum(user_block: tuple, item_block: tuple, strata, q: int, settings: StratumSettings, seed: int,
                  stream: int, step: int, record: bool = False):
    """Train stratum ``q`` of a user block, in place, with the single-machine kernel.

    ``user_block = (user rows, counter)`` holds the block's user rows,
    ``item_block = (item rows, item biases, counter)`` item block ``q``'s
    (:func:`new_block`), ``strata`` is :func:`stratify`'s result for the user
    block, ``stream`` a number no other stratum of the fit uses (it seeds the
    triplet streams in place of the epoch).

    The rows are updated in place, not copied: a copy of the user block per
    sub-epoch would cost more than the stratum's training on large data. So
    that a task run twice on the same arrays (a scheduler recomputing a lost
    result from inputs that have moved on) fails loudly instead of applying
    its updates twice, both blocks carry the count of sub-epochs they have
    been through: the task checks it equals ``step`` and advances it, else
    raises :class:`StaleBlockError` (the driver then restarts the epoch from
    its checkpoint).

    Returns ``(user_block, item_block, stats)`` with ``stats = (loss sum,
    ordered, skipped, samples)``, plus, with ``record``, the block-local user
    and item rows whose values the task changed.
    """
    from . import _kernels
    from .model import _PARALLEL_LOCK, _beyond_cache, _membership_bitmap, _numba_threads

    user_factors, user_step = user_block
    item_factors, item_bias, item_step = item_block
    if user_step[0] != step or item_step[0] != step:
        raise StaleBlockError(f"stratum {q} of sub-epoch step {step} was given blocks at steps "
                              f"{int(user_step[0])} (users) and {int(item_step[0])} (items)")
    offsets, local_indices, users = strata
    lo, hi = int(offsets[q, 0]), int(offsets[q, -1])
    indptr = offsets[q] - lo  # int64, as the model's CSR (as_user_items): the same compiled kernel serves both
    indices = local_indices[lo:hi]
    n_samples = hi - lo
    chunks = _kernels.n_chunks(n_samples)
    out_loss = np.zeros(chunks)
    out_ordered = np.zeros(chunks, np.int64)
    out_skipped = np.zeros(chunks, np.int64)
    if record:
        before = (user_factors.copy(), item_factors.copy(), item_bias.copy())
    if n_samples:
        dtype = user_factors.dtype.type
        bitmap = _membership_bitmap(indptr, indices, item_factors.shape[0])
        args = (user_factors, item_factors, item_bias, indptr, indices, users[lo:hi], n_samples, settings.user_run,
                seed, stream, 0, chunks, dtype(settings.learning_rate), dtype(settings.reg_user),
                dtype(settings.reg_positive), dtype(settings.reg_negative), dtype(settings.reg_bias),
                settings.loss_code, settings.use_bias, settings.skip_liked, None, None, None, None,
                out_loss, out_ordered, out_skipped, bitmap,
                _beyond_cache(user_factors, item_factors, indices))
        if settings.threads > 1:
            with _numba_threads(settings.threads), _PARALLEL_LOCK:
                _kernels._epoch_parallel(*args)
        else:
            _kernels._epoch_serial(*args)
    user_step[0] = item_step[0] = step + 1
    stats = (float(out_loss.sum()), int(out_ordered.sum()), int(out_skipped.sum()), n_samples)
    if record:  # the rows whose values changed
        stats += (np.flatnonzero((before[0] != user_factors).any(axis=1)),
                  np.flatnonzero((before[1] != item_factors).any(axis=1) | (before[2] != item_bias)))
    return user_block, item_block, stats


def split_item_block(item_block: tuple, n_items: int, n_blocks: int, seed: int,
                     epoch: int, r: int) -> tuple:
    """Cut block ``r`` of epoch ``epoch - 1``'s item layout into its pieces for each block of epoch ``epoch``.

    Returns one ``(item ids, item rows, item biases)`` per new block, ids
    ascending (see :func:`join_item_block`).
    """
    ids = item_blocks(n_items, n_blocks, seed, epoch - 1).block(r)
    dest = item_blocks(n_items, n_blocks, seed, epoch).block_of[ids]
    order = np.argsort(dest, kind="stable")
    cuts = np.searchsorted(dest[order], np.arange(n_blocks + 1))
    rows, bias = item_block[:2]
    return tuple((ids[order[a:b]], rows[order[a:b]], bias[order[a:b]]) for a, b in zip(cuts[:-1], cuts[1:]))


def join_item_block(step: int, *pieces) -> tuple:
    """The item block (:func:`new_block` at ``step``) made of its pieces (:func:`split_item_block` of every old
    block), rows in ascending id order."""
    from .model import _aligned_empty

    ids = np.concatenate([p[0] for p in pieces])
    order = np.argsort(ids, kind="stable")
    first = pieces[0][1]
    rows = _aligned_empty((ids.shape[0], first.shape[1]), first.dtype)
    bias = _aligned_empty(ids.shape[0], first.dtype)
    rows[...] = np.concatenate([p[1] for p in pieces])[order]
    bias[...] = np.concatenate([p[2] for p in pieces])[order]
    return new_block(rows, bias, step=step)
