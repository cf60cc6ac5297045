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
kernel of the single-machine model. With ``threads=1`` and a given
``n_blocks`` the result is bitwise the same whatever the number of workers,
on Dask or in this process, and after a lost worker (on workers of one CPU
type: numba compiles for the host, and may vectorise sums differently on
another).

Dask (``pip install bpr_numpy[distributed]``) is imported only by :func:`fit`
with a client; ``client=None`` runs the same schedule on threads of this
process.
"""

from __future__ import annotations

import operator
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from . import _strata, sampling
from ._executors import WORKER_TIMEOUT, WorkerLostError, _Dask, _Threads
from ._runtime import available_threads
from ._validation import as_user_items
from .model import BPR, EpochReport, TrainingDivergedError
from .model._reporting import epoch_report
from .model._training import TrainingState, _check_epochs
from .objective import LOSS_REGISTRY, OPTIMIZER_REGISTRY, Regularization, loss_code
from .sampling import REGISTRY as SAMPLER_REGISTRY

__all__ = [
    "fit",
    "SUPPORTED",
    "TrainingLog",
    "WORKER_TIMEOUT",
    "WorkerLostError",
    "stratum_settings",
    "tasks_per_epoch",
]

#: Hyperparameter values the stratified trainer supports (others raise ValueError).
SUPPORTED = {
    kind: tuple(spec.name for spec in registry.values() if spec.distributed)
    for kind, registry in (("loss", LOSS_REGISTRY), ("sampler", SAMPLER_REGISTRY), ("optimizer", OPTIMIZER_REGISTRY))
}


def tasks_per_epoch(n_blocks: int) -> int:
    """Tasks the scheduler runs per epoch with ``P = n_blocks``: ``P**2`` strata, the item shuffle and its
    ``P`` hand-outs, ``P`` reports (see :class:`_Trainer`)."""
    return n_blocks * n_blocks + 2 * n_blocks + 1


def stratum_settings(model: BPR, threads: int) -> _strata.StratumSettings:
    """What a stratum task of ``model``'s current epoch needs: its hyperparameters, the epoch's learning rate."""
    reg = Regularization.coerce(model.regularization)
    return _strata.StratumSettings(
        int(model.user_run),
        float(TrainingState(model).learning_rate()),
        reg.user,
        reg.positive,
        reg.negative,
        reg.bias,
        loss_code(model.loss),
        bool(model.item_bias),
        bool(sampling.sampler_codes(model.sampler).skip_liked),
        int(threads),
    )


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
        Per epoch, bytes of item factors, biases and ids sent from one worker
        to another (in this process: that would be sent): the rotation between sub-epochs, and the epoch's new item
        layout (all blocks to the first block's worker and back out). The
        interactions and user factors stay put.
    checkpoint_bytes : list of int
        Per epoch, bytes gathered by the client into its checkpoint (0 for
        epochs without one).
    """

    n_blocks: int
    workers: int
    restarts: int = 0
    item_bytes: list = field(default_factory=list)
    checkpoint_bytes: list = field(default_factory=list)


def fit(
    client,
    user_items,
    *,
    n_blocks: int | None = None,
    epochs: int | None = None,
    checkpoint_every: int = 1,
    max_restarts: int = 3,
    callback: Callable[[EpochReport], object] | None = None,
    show_progress: bool | None = None,
    model: BPR | None = None,
    _record: list | None = None,
    **hyperparameters,
) -> BPR:
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
    TrainingState(model).check_parameters()
    if model.solver != "kernel":
        raise ValueError(f"distributed training runs the numba kernels (solver='kernel'), not solver={model.solver!r}")
    for name, allowed in SUPPORTED.items():
        if getattr(model, name) not in allowed:
            raise ValueError(f"distributed training supports {name} in {allowed}, got {getattr(model, name)!r}")
    if int(model.n_negatives) != 1:
        raise ValueError(f"distributed training takes one negative per positive, got n_negatives={model.n_negatives}")
    for name, value, low in (
        ("checkpoint_every", checkpoint_every, 1),
        ("max_restarts", max_restarts, 0),
        ("n_blocks", 1 if n_blocks is None else n_blocks, 1),
    ):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    epochs = model.epochs if epochs is None else epochs
    _check_epochs(epochs)
    matrix = as_user_items(user_items)
    executor = _Threads(model.threads or available_threads()) if client is None else _Dask(client)
    try:
        workers = executor.workers()
        n_blocks = int(n_blocks or min(len(workers), *matrix.shape))
        if n_blocks > min(matrix.shape):
            raise ValueError(
                f"n_blocks={n_blocks} is more than the {matrix.shape[0]} users or "
                f"{matrix.shape[1]} items: every block needs at least one of each"
            )
        TrainingState(model).start(matrix)
        model.distributed_log_ = TrainingLog(n_blocks, len(workers))
        trainer = _Trainer(model, matrix, executor, n_blocks, int(checkpoint_every), int(max_restarts), _record)
        try:
            trainer.run(int(epochs), callback, sys.stderr.isatty() if show_progress is None else show_progress)
        finally:
            trainer.release()
    finally:
        executor.close()
    return model


class _Trainer:
    """The epochs of :func:`fit`: where the blocks are, the tasks of an epoch, checkpoints, restarts.

    Tasks per epoch: ``P**2`` strata (each returns its item block, the input of the next
    stratum on the next worker), one shuffle of the item blocks into the epoch's layout and
    ``P`` tasks to hand them out, and ``P`` reports (statistics; factors at checkpoints).
    The user blocks stay on their workers (:func:`bpr_numpy._strata.host_block`).
    """

    def __init__(
        self, model: BPR, matrix, executor, n_blocks: int, checkpoint_every: int, max_restarts: int, record: list | None
    ) -> None:
        self.model = model
        self.state = TrainingState(model)  # the model's epoch count, seed and history
        self.matrix = matrix
        self.executor = executor
        self.n_blocks = n_blocks
        self.checkpoint_every = checkpoint_every
        self.max_restarts = max_restarts
        self.record = record
        self.bounds = _strata.user_block_bounds(matrix.indptr, n_blocks)
        self.log = model.distributed_log_
        self.fit_id: str | None = None
        # Bytes of an item row on the move: its factors, bias and id.
        self.row_bytes = (model.factors + 1) * model._factors()[0].dtype.itemsize + 8

    # ---------------------------------------------------------------- placement
    def distribute(self) -> None:
        """Send the interactions, user blocks and the current epoch's item blocks from the client."""
        model, matrix, P, ex = self.model, self.matrix, self.n_blocks, self.executor
        user_factors, item_factors, item_biases = model._factors()
        self.release()
        self.fit_id = uuid.uuid4().hex
        workers = ex.workers()
        self.worker_of = [workers[p % len(workers)] for p in range(P)]
        ex.assign(self.worker_of)
        self.after = []  # per user block: its last task, which the next one waits for
        for p in range(P):
            a, b = self.bounds[p], self.bounds[p + 1]
            indptr = matrix.indptr[a : b + 1].astype(np.int64) - matrix.indptr[a]
            indices = matrix.indices[matrix.indptr[a] : matrix.indptr[b]]
            w = self.worker_of[p]
            data, factors = ex.put((indptr, indices), w), ex.put(user_factors[a:b].copy(), w)
            self.after.append(
                ex.submit(_strata.host_block, self.fit_id, p, data, factors, int(a), self.step(0), worker=w)
            )
        self.layout_epoch = self.state.epochs_done
        layout = self.layout(self.layout_epoch)
        # Sub-epoch 0 pairs user block q with item block q.
        self.items = [
            ex.put(
                _strata.new_block(
                    item_factors[layout.block(q)], item_biases[layout.block(q)], layout.block(q), step=self.step(0)
                ),
                self.worker_of[q],
            )
            for q in range(P)
        ]
        self.item_worker = list(self.worker_of)

    def release(self) -> None:
        """Drop the hosted blocks of the current placement, on every worker that still has them."""
        if self.fit_id is not None:
            # Cancelled first: a queued task must not run after the blocks are gone (host_block
            # refuses a released fit in any case).
            self.executor.cancel(self.after + self.items)
            self.executor.run_everywhere(_strata.forget, self.fit_id)
            self.fit_id = None

    def step(self, sub_epoch: int) -> int:
        """The count of sub-epochs the blocks have been through at ``sub_epoch`` of the current epoch."""
        return self.state.epochs_done * self.n_blocks + sub_epoch

    def layout(self, epoch: int) -> _strata.ItemBlocks:
        return _strata.item_blocks(self.matrix.shape[1], self.n_blocks, self.state.seed, epoch)

    def block_bytes(self, layout: _strata.ItemBlocks, q: int) -> int:
        return int(layout.bounds[q + 1] - layout.bounds[q]) * self.row_bytes

    # ---------------------------------------------------------------- one epoch
    def shuffle(self, epoch: int) -> int:
        """Move the item rows into ``epoch``'s layout (through one task); returns the bytes sent."""
        P, ex, hub = self.n_blocks, self.executor, self.worker_of[0]
        old, new = self.layout(epoch - 1), self.layout(epoch)
        moved = sum(self.block_bytes(old, r) for r in range(P) if self.item_worker[r] != hub)
        blocks = ex.submit(
            _strata.shuffle_items, self.matrix.shape[1], P, self.state.seed, epoch, *self.items, worker=hub
        )
        self.items = [ex.submit(operator.getitem, blocks, q, worker=hub) for q in range(P)]
        moved += sum(self.block_bytes(new, q) for q in range(P) if self.worker_of[q] != hub)
        self.item_worker = list(self.worker_of)  # where the first sub-epoch needs them
        return moved

    def epoch(self, with_factors: bool) -> tuple[list, list, int, float]:
        """Run one epoch; returns ``(per-stratum stats, user factor blocks or Nones, item bytes moved, seconds)``."""
        model, P, ex = self.model, self.n_blocks, self.executor
        epoch = self.state.epochs_done
        start = time.perf_counter()
        moved = self.shuffle(epoch) if self.layout_epoch != epoch else 0
        self.layout_epoch = epoch
        layout = self.layout(epoch)
        threads = 1 if isinstance(self.executor, _Threads) else (model.threads or 1)
        settings, n_items, seed = stratum_settings(model, threads), self.matrix.shape[1], self.state.seed
        for s, pairs in enumerate(_strata.schedule(P)):
            for p, q in pairs:
                w = self.worker_of[p]
                if self.item_worker[q] != w:
                    moved += self.block_bytes(layout, q)
                self.items[q] = self.after[p] = ex.submit(
                    _strata.train_hosted,
                    self.fit_id,
                    p,
                    self.items[q],
                    self.after[p],
                    q,
                    settings,
                    seed,
                    epoch,
                    s,
                    P,
                    n_items,
                    self.record is not None,
                    worker=w,
                )
                self.item_worker[q] = w
        reports = ex.gather(
            [
                ex.submit(_strata.report_hosted, self.fit_id, p, self.after[p], with_factors, worker=self.worker_of[p])
                for p in range(P)
            ]
        )
        seconds = time.perf_counter() - start
        stats = [r for report in reports for r in report[0]]
        if self.record is not None:  # rows as the tasks saw them (their own blocks' ids)
            for p, (block_stats, _) in enumerate(reports):
                for s, r in enumerate(block_stats):
                    self.record.append((epoch, s, p, (p + s) % P, r[4], r[5]))
        return stats, [r[1] for r in reports], moved, seconds

    def checkpoint(self, users: list, epoch: int) -> int:
        """Put ``epoch``'s factors into the model (``users``: each block's user factors, or Nones to fetch them).

        New arrays are filled, then swapped in with the checkpoint's epoch (``saved``), so that an
        interrupt never leaves the model half one epoch and half another.
        """
        from ._runtime import aligned_empty

        model, P, ex = self.model, self.n_blocks, self.executor
        if any(u is None for u in users):
            users = [
                r[1]
                for r in ex.gather(
                    [
                        ex.submit(_strata.report_hosted, self.fit_id, p, self.after[p], True, worker=self.worker_of[p])
                        for p in range(P)
                    ]
                )
            ]
        items = ex.gather(self.items)
        fresh = [aligned_empty(a.shape, a.dtype) for a in model._factors()]
        for p in range(P):
            fresh[0][self.bounds[p] : self.bounds[p + 1]] = users[p]
        for rows, bias, ids, _ in items:
            fresh[1][ids] = rows
            fresh[2][ids] = bias
        self.saved = epoch
        self.state.install(fresh, epoch)  # raises TrainingDivergedError on NaN or inf
        return sum(u.nbytes for u in users) + sum(i[0].nbytes + i[1].nbytes for i in items)

    # ---------------------------------------------------------------- the loop
    def run(self, epochs: int, callback, show_progress: bool) -> None:
        state, log = self.state, self.log
        target = state.epochs_done + epochs
        self.saved = state.epochs_done  # the epoch the model's arrays (the checkpoint) hold
        placed = False
        try:
            while state.epochs_done < target:
                try:
                    if not placed:
                        self.distribute()
                        placed = True
                    epoch = state.epochs_done + 1
                    due = epoch - self.saved >= self.checkpoint_every or epoch == target
                    results, users, moved, seconds = self.epoch(with_factors=due)
                    loss_sum = sum(r[0] for r in results)
                    gathered = self.checkpoint(users, epoch) if due or not np.isfinite(loss_sum) else 0
                except self.executor.lost as error:
                    log.restarts += 1
                    if log.restarts > self.max_restarts:
                        raise RuntimeError(
                            f"distributed training lost workers {log.restarts} times (max_restarts="
                            f"{self.max_restarts}); the model holds epoch {self.saved}"
                        ) from error
                    print(
                        f"a worker was lost in epoch {state.epochs_done + 1} ({type(error).__name__}): "
                        f"restarting from epoch {self.saved}, the last checkpoint",
                        file=sys.stderr,
                        flush=True,
                    )
                    self.rewind(self.saved)
                    placed = False
                    continue
                report = epoch_report(
                    epoch,
                    loss_sum,
                    sum(r[1] for r in results),
                    sum(r[2] for r in results),
                    sum(r[3] for r in results),
                    seconds,
                )
                state.finish_epoch(report)
                log.item_bytes.append(moved)
                log.checkpoint_bytes.append(gathered)
                if show_progress:
                    print(f"{report}  [{report.epoch}/{target}]", file=sys.stderr, flush=True)
                if callback is not None and callback(report) is False:
                    if self.saved != state.epochs_done:
                        log.checkpoint_bytes[-1] += self.checkpoint([None] * self.n_blocks, state.epochs_done)
                    break
        except TrainingDivergedError:
            raise  # the model holds the diverged epoch and says so, as a single-machine fit does
        except BaseException as error:
            # Anywhere else (a callback that raises, Ctrl-C, too many lost workers): the model
            # holds the last checkpoint's factors; its epoch count and history follow them.
            self.rewind(self.saved)
            if isinstance(error, KeyboardInterrupt):
                self.model.interrupted_ = True
                print(
                    f"interrupted: the model keeps the factors of epoch {self.saved} (the last checkpoint)",
                    file=sys.stderr,
                    flush=True,
                )
            raise

    def rewind(self, epoch: int) -> None:
        """Forget the epochs after the checkpoint of ``epoch`` (the model's arrays hold it)."""
        keep = self.state.rewind(epoch)
        del self.log.item_bytes[keep:]
        del self.log.checkpoint_bytes[keep:]
