"""BPR beyond one machine: stratified SGD (DSGD) on Dask, or on the threads of this process.

::

    from dask.distributed import Client
    from bpr_numpy import distributed

    client = Client("tcp://scheduler-host:8786")      # or Client(LocalCluster(...))
    model = distributed.fit(client, user_items, factors=64, epochs=100)
    model.recommend([0, 1, 2])                         # a plain BPR: save, evaluate, recommend

The interactions are cut by user block once and stay on the workers; each
epoch every worker trains the strata of its user block one after another
while the item-factor blocks travel from worker to worker (Gemulla et al.,
KDD 2011; the blocks and the schedule are :mod:`bpr_numpy._strata`). No two
strata running at the same time share a user or an item row: there is
nothing to lock and nothing to average, and each stratum runs the very
kernel of the single-machine model. With ``threads=1`` the result is bitwise
the same whatever the number of workers, on Dask or in this process, and
after a lost worker.

Dask (``pip install bpr_numpy[distributed]``) is imported only by :func:`fit`
with a client; ``client=None`` runs the same schedule on threads of this
process.
"""

from __future__ import annotations

import concurrent.futures
import operator
import sys
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from . import _strata, sampling
from ._validation import as_user_items
from .model import BPR, EpochReport, _available_threads, _resolve_seed
from .objective import Regularization, loss_code

#: Seconds to wait for at least one worker (at the start, and after a lost one).
WORKER_TIMEOUT = 300

#: Hyperparameter values the stratified trainer supports (others raise ValueError).
SUPPORTED = {"loss": ("bpr", "sigmoid"), "sampler": ("uniform", "uniform-skip"), "optimizer": ("sgd",)}


@dataclass
class TrainingLog:
    """What a distributed fit did besides training, kept on the model as ``distributed_log_``.

    Attributes
    ----------
    n_blocks : int
        ``P``: user blocks = item blocks = sub-epochs per epoch.
    workers : int
        Workers (or threads) the blocks were spread over at the start.
    restarts : int
        Epochs restarted from a checkpoint after a lost worker.
    item_bytes : list of int
        Per epoch, bytes of item factors and biases sent from one worker to
        another (the rotation between sub-epochs and the new item layout of
        the epoch, ids included). The interactions and user factors stay put.
    checkpoint_bytes : list of int
        Per epoch, bytes gathered by the client into its checkpoint (0 for
        epochs without one).
    """

    n_blocks: int
    workers: int
    restarts: int = 0
    item_bytes: list = field(default_factory=list)
    checkpoint_bytes: list = field(default_factory=list)


def fit(client, user_items, *, n_blocks: int | None = None, epochs: int | None = None, checkpoint_every: int = 1,
        max_restarts: int = 3, callback: Callable[[EpochReport], object] | None = None,
        show_progress: bool | None = None, model: BPR | None = None, _record: list | None = None,
        **hyperparameters) -> BPR:
    """Train a :class:`~bpr_numpy.model.BPR` by stratified SGD over Dask workers (or this process's threads).

    Parameters
    ----------
    client : dask.distributed.Client or None
        The cluster to train on (a ``LocalCluster``'s, or a real scheduler's,
        ``Client("tcp://host:8786")``). None runs the same schedule on threads
        of this process.
    user_items : sparse matrix or array_like, shape (n_users, n_items)
        Interactions, as for :meth:`BPR.fit`; read on the client, then cut by
        user block and sent once to the workers.
    n_blocks : int, optional
        ``P``, the number of user blocks and item blocks; an epoch is ``P``
        sub-epochs of ``P`` strata each. Default: the number of workers (with
        a client) or of threads. Blocks are dealt to workers round-robin; a
        multiple of the worker count balances uneven blocks better. The
        triplets drawn depend on ``P`` and the seed only, not on the workers.
    epochs : int, optional
        Overrides the ``epochs`` hyperparameter.
    checkpoint_every : int, default 1
        Every this many epochs (and after the last) the client gathers the
        factors into the returned model: the state a lost worker's epoch
        restarts from, and what ``callback`` sees. Gathering costs the whole
        model's bytes (``distributed_log_.checkpoint_bytes``); raise it on
        large models.
    max_restarts : int, default 3
        Restarts from the checkpoint after lost workers before giving up.
    callback, show_progress
        As in :meth:`BPR.fit`; the model's factors are those of the last checkpoint.
    model : BPR, optional
        The estimator to train (its hyperparameters are used, its factors
        initialised afresh), e.g. to reach it from a callback. Default: a new
        ``BPR(**hyperparameters)``; give one or the other.
    **hyperparameters
        :class:`BPR`'s constructor arguments. Supported: ``loss`` "bpr" or
        "sigmoid", ``sampler`` "uniform" or "uniform-skip" (negatives are
        drawn within the positive's item block), ``optimizer`` "sgd"; no side
        features. ``threads``: with a client, numba threads of each stratum
        task (default 1: run one worker per core, ``threads_per_worker=1``);
        without, the strata running at once (default: all cores).

    Returns
    -------
    BPR
        A fitted model, like :meth:`BPR.fit`'s (``history_``, ``save``,
        ``recommend``, ``partial_fit`` on one machine...), with
        ``distributed_log_`` (:class:`TrainingLog`).

    Raises
    ------
    ValueError
        Unsupported hyperparameters, or bad ``n_blocks``/``checkpoint_every``.
    TrainingDivergedError
        NaN or infinite factors (seen at a checkpoint, or in the epoch's loss).
    RuntimeError
        Workers lost more than ``max_restarts`` times.
    """
    if model is None:
        model = BPR(**hyperparameters)
    elif hyperparameters:
        raise TypeError(f"give hyperparameters or model, not both (got {sorted(hyperparameters)})")
    model._check_params()
    for name, allowed in SUPPORTED.items():
        if getattr(model, name) not in allowed:
            raise ValueError(f"distributed training supports {name} in {allowed}, got {getattr(model, name)!r}")
    for name, value, low in (("checkpoint_every", checkpoint_every, 1), ("max_restarts", max_restarts, 0),
                             ("n_blocks", 1 if n_blocks is None else n_blocks, 1)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    epochs = model.epochs if epochs is None else epochs
    if isinstance(epochs, bool) or not isinstance(epochs, (int, np.integer)) or epochs < 0:
        raise ValueError(f"epochs must be a non-negative integer, got {epochs!r}")
    matrix = as_user_items(user_items)
    if client is None:
        executor = _Threads(model.threads or _available_threads())
    else:
        executor = _Dask(client)
    try:
        workers = executor.workers()
        n_blocks = int(n_blocks or len(workers))
        model._seed = _resolve_seed(model.random_state)
        model._features = None
        model._init_factors(*matrix.shape)
        model._user_items = matrix
        model.distributed_log_ = TrainingLog(n_blocks, len(workers))
        _Trainer(model, matrix, executor, n_blocks, int(checkpoint_every), int(max_restarts), _record).run(
            int(epochs), callback, sys.stderr.isatty() if show_progress is None else show_progress)
    finally:
        executor.close()
    return model


class _Threads:
    """Tasks on a pool of threads of this process; a task waits for the results it takes.

    Tasks are submitted in an order where each depends on earlier ones only,
    so a FIFO pool always has the oldest unfinished task running: no deadlock.
    """

    lost: tuple = ()

    def __init__(self, threads: int) -> None:
        self._pool = concurrent.futures.ThreadPoolExecutor(threads, thread_name_prefix="bpr-stratum")
        self._threads = threads

    def workers(self) -> list:
        return list(range(self._threads))

    def put(self, value, worker):
        future = concurrent.futures.Future()
        future.set_result(value)
        return future

    def submit(self, fn, *args, worker):
        def call():
            return fn(*(a.result() if isinstance(a, concurrent.futures.Future) else a for a in args))

        return self._pool.submit(call)

    def gather(self, handles: list) -> list:
        return [h.result() for h in handles]

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


class _Dask:
    """Tasks on a Dask cluster: each pinned (softly) to the worker that holds its user block."""

    def __init__(self, client) -> None:
        from distributed.comm.core import CommClosedError
        from distributed.scheduler import KilledWorker

        self._client = client
        # What a lost worker looks like from here: its scattered data and the futures that
        # needed it are cancelled, its tasks failed too often, a transfer or a scatter to it
        # broke (OSError: connection errors and timeouts), or a task found a block that had
        # moved on (a result recomputed from inputs trained since).
        self.lost = (concurrent.futures.CancelledError, KilledWorker, CommClosedError, OSError,
                     _strata.StaleBlockError)

    def workers(self) -> list:
        self._client.wait_for_workers(1, timeout=WORKER_TIMEOUT)
        return sorted(self._client.scheduler_info(n_workers=-1)["workers"])

    def put(self, value, worker):
        return self._client.scatter([value], workers=[worker], hash=False)[0]

    def submit(self, fn, *args, worker):
        return self._client.submit(fn, *args, workers=[worker], allow_other_workers=True, pure=False)

    def gather(self, handles: list) -> list:
        return self._client.gather(handles)

    def close(self) -> None:
        pass  # the client is the caller's


class _Trainer:
    """The epochs of :func:`fit`: where the blocks are, the tasks of an epoch, checkpoints, restarts."""

    def __init__(self, model: BPR, matrix, executor, n_blocks: int, checkpoint_every: int, max_restarts: int,
                 record: list | None) -> None:
        self.model = model
        self.matrix = matrix
        self.executor = executor
        self.n_blocks = n_blocks
        self.checkpoint_every = checkpoint_every
        self.max_restarts = max_restarts
        self.record = record
        self.bounds = _strata.user_block_bounds(matrix.indptr, n_blocks)
        self.log = model.distributed_log_
        dtype = model.user_factors.dtype
        # Bytes of an item row on the move: factors, bias, and (between layouts) its id.
        self.row_bytes = (model.factors + 1) * dtype.itemsize

    # ---------------------------------------------------------------- placement
    def distribute(self) -> None:
        """Send the interactions, user blocks and the current epoch's item blocks from the client."""
        model, matrix, P = self.model, self.matrix, self.n_blocks
        workers = self.executor.workers()
        self.worker_of = [workers[p % len(workers)] for p in range(P)]
        put = self.executor.put
        self.data, self.users = [], []
        for p in range(P):
            a, b = self.bounds[p], self.bounds[p + 1]
            indptr = matrix.indptr[a:b + 1].astype(np.int64) - matrix.indptr[a]
            indices = matrix.indices[matrix.indptr[a]:matrix.indptr[b]]
            self.data.append(put((indptr, indices), self.worker_of[p]))
            self.users.append(put(_strata.new_block(model.user_factors[a:b].copy(), step=self.step(0)),
                                  self.worker_of[p]))
        self.layout_epoch = model._epochs_done
        layout = self.layout(self.layout_epoch)
        # Sub-epoch 0 pairs user block q with item block q.
        self.items = [put(_strata.new_block(model.item_factors[layout.block(q)], model.item_bias[layout.block(q)],
                                            step=self.step(0)), self.worker_of[q]) for q in range(P)]
        self.item_worker = list(self.worker_of)

    def step(self, sub_epoch: int) -> int:
        """The count of sub-epochs the blocks have been through at ``sub_epoch`` of the current epoch."""
        return self.model._epochs_done * self.n_blocks + sub_epoch

    def layout(self, epoch: int) -> _strata.ItemBlocks:
        return _strata.item_blocks(self.matrix.shape[1], self.n_blocks, self.model._seed, epoch)

    # ---------------------------------------------------------------- one epoch
    def settings(self) -> _strata.StratumSettings:
        model = self.model
        reg = Regularization.coerce(model.regularization)
        threads = 1 if isinstance(self.executor, _Threads) else (model.threads or 1)
        return _strata.StratumSettings(
            int(model.user_run), float(model.learning_rate * model.learning_rate_decay ** model._epochs_done),
            reg.user, reg.positive, reg.negative, reg.bias, loss_code(model.loss), bool(model.use_item_bias),
            bool(sampling.sampler_codes(model.sampler).skip_liked), int(threads))

    def regroup(self, epoch: int) -> int:
        """Move the item rows from the previous epoch's layout to ``epoch``'s; returns bytes sent."""
        P, submit, n_items, seed = self.n_blocks, self.executor.submit, self.matrix.shape[1], self.model._seed
        pieces = [submit(_strata.split_item_block, self.items[r], n_items, P, seed, epoch, r,
                         worker=self.item_worker[r]) for r in range(P)]
        old, new = self.layout(epoch - 1), self.layout(epoch)
        moved = 0
        for q in range(P):
            parts = [submit(operator.getitem, pieces[r], q, worker=self.item_worker[r]) for r in range(P)]
            self.items[q] = submit(_strata.join_item_block, self.step(0), *parts, worker=self.worker_of[q])
            for r in range(P):
                if self.item_worker[r] != self.worker_of[q]:
                    count = int(np.count_nonzero(new.block_of[old.block(r)] == q))
                    moved += count * (self.row_bytes + 8)
        self.item_worker = list(self.worker_of)
        return moved

    def epoch(self) -> tuple[list, int, float]:
        """Submit and run one epoch; returns ``(per-stratum stats, item bytes moved, seconds)``."""
        model, P, ex = self.model, self.n_blocks, self.executor
        epoch = model._epochs_done
        start = time.perf_counter()
        moved = self.regroup(epoch) if self.layout_epoch != epoch else 0
        self.layout_epoch = epoch
        settings = self.settings()
        n_items, seed = self.matrix.shape[1], model._seed
        strata = [ex.submit(_strata.stratify, self.data[p], n_items, P, seed, epoch, worker=self.worker_of[p])
                  for p in range(P)]
        stats, where = [], []
        for s, pairs in enumerate(_strata.schedule(P)):
            for p, q in pairs:
                w = self.worker_of[p]
                stream = (epoch * P + s) * P + p
                out = ex.submit(_strata.train_stratum, self.users[p], self.items[q], strata[p], q, settings,
                                seed, stream, self.step(s), self.record is not None, worker=w)
                if self.item_worker[q] != w:
                    moved += int(self.layout(epoch).bounds[q + 1] - self.layout(epoch).bounds[q]) * self.row_bytes
                self.users[p] = ex.submit(operator.getitem, out, 0, worker=w)
                self.items[q] = ex.submit(operator.getitem, out, 1, worker=w)
                self.item_worker[q] = w
                stats.append(ex.submit(operator.getitem, out, 2, worker=w))
                where.append((s, p, q))
        results = ex.gather(stats)
        seconds = time.perf_counter() - start
        if self.record is not None:
            layout = self.layout(epoch)
            for (s, p, q), r in zip(where, results):
                self.record.append((epoch, s, p, q, self.bounds[p] + r[4], layout.block(q)[r[5]]))
        return results, moved, seconds

    def checkpoint(self) -> int:
        """Gather the factors into the model; returns the bytes gathered."""
        model, P = self.model, self.n_blocks
        users = self.executor.gather(self.users)
        items = self.executor.gather(self.items)
        layout = self.layout(self.layout_epoch)
        for p in range(P):
            model.user_factors[self.bounds[p]:self.bounds[p + 1]] = users[p][0]
        for q in range(P):
            model.item_factors[layout.block(q)] = items[q][0]
            model.item_bias[layout.block(q)] = items[q][1]
        model._item_norms = None
        bad = next((k for k, a in enumerate((model.user_factors, model.item_factors, model.item_bias))
                    if not np.isfinite(a).all()), -1)
        model._check_finite(bad)
        return sum(u[0].nbytes for u in users) + sum(i[0].nbytes + i[1].nbytes for i in items)

    # ---------------------------------------------------------------- the loop
    def run(self, epochs: int, callback, show_progress: bool) -> None:
        model, log = self.model, self.log
        target = model._epochs_done + epochs
        saved = model._epochs_done  # the epoch the model's arrays (the checkpoint) hold
        placed = False
        while model._epochs_done < target:
            try:
                if not placed:
                    self.distribute()
                    placed = True
                results, moved, seconds = self.epoch()
                loss_sum = sum(r[0] for r in results)
                due = (model._epochs_done + 1 - saved >= self.checkpoint_every
                       or model._epochs_done + 1 == target or not np.isfinite(loss_sum))
                model._epochs_done += 1
                gathered = self.checkpoint() if due else 0
            except self.executor.lost as error:
                log.restarts += 1
                if log.restarts > self.max_restarts:
                    raise RuntimeError(f"distributed training lost workers {log.restarts} times (max_restarts="
                                       f"{self.max_restarts}); the model holds epoch {saved}") from error
                print(f"a worker was lost in epoch {model._epochs_done + 1} ({type(error).__name__}): "
                      f"restarting from epoch {saved}, the last checkpoint", file=sys.stderr, flush=True)
                self.rewind(saved)
                placed = False
                continue
            except KeyboardInterrupt:
                self.rewind(saved)
                model.interrupted_ = True
                print(f"interrupted: the model keeps the factors of epoch {saved} (the last checkpoint)",
                      file=sys.stderr, flush=True)
                raise
            if due:
                saved = model._epochs_done
            samples = sum(r[3] for r in results)
            skipped = sum(r[2] for r in results)
            applied = samples - skipped
            report = EpochReport(
                epoch=model._epochs_done,
                loss=loss_sum / applied if applied else float("nan"),
                ordered_fraction=sum(r[1] for r in results) / applied if applied else float("nan"),
                skipped=skipped, samples=samples, seconds=seconds,
                samples_per_second=samples / seconds if seconds > 0 else float("inf"))
            model.history_.append(report)
            log.item_bytes.append(moved)
            log.checkpoint_bytes.append(gathered)
            if show_progress:
                print(f"{report}  [{report.epoch}/{target}]", file=sys.stderr, flush=True)
            if callback is not None and callback(report) is False:
                if saved != model._epochs_done:
                    log.checkpoint_bytes[-1] += self.checkpoint()
                break

    def rewind(self, epoch: int) -> None:
        """Forget the epochs after the checkpoint of ``epoch`` (the model's arrays hold it)."""
        model = self.model
        model._epochs_done = epoch
        keep = [k for k, r in enumerate(model.history_) if r.epoch <= epoch]
        del model.history_[len(keep):]
        del self.log.item_bytes[len(keep):]
        del self.log.checkpoint_bytes[len(keep):]
