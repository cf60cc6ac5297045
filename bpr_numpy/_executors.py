"""Where the strata tasks run: this process's threads or a Dask cluster, behind one small interface.

:class:`bpr_numpy.distributed._Trainer` places data (``put``), starts tasks on a given worker once
their inputs are ready (``submit``), gathers results, and learns of lost workers through
``lost``; :class:`_Threads` and :class:`_Dask` implement that for a thread pool and a Dask client.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading

from . import _strata

#: Seconds to wait for at least one worker (at the start, and after a lost one).
WORKER_TIMEOUT = 300


class _Threads:
    """Tasks on a pool of threads of this process, each started once the results it takes are ready.

    A task never waits inside the pool: one blocked on its inputs would hold a thread while
    the strata it waits for queue behind it (two threads then trained one stratum at a time).
    """

    lost: tuple = ()

    def __init__(self, threads: int) -> None:
        self._pool = concurrent.futures.ThreadPoolExecutor(threads, thread_name_prefix="bpr-stratum")
        self._threads = threads

    def workers(self) -> list:
        return list(range(self._threads))

    def put(self, value, worker):
        future: concurrent.futures.Future = concurrent.futures.Future()
        future.set_result(value)
        return future

    def submit(self, fn, *args, worker):
        result: concurrent.futures.Future = concurrent.futures.Future()
        inputs = [a for a in args if isinstance(a, concurrent.futures.Future)]
        waiting = [len(inputs)]
        lock = threading.Lock()

        def finish(done: concurrent.futures.Future) -> None:
            if done.cancelled():
                result.cancel()
            elif done.exception() is not None:
                result.set_exception(done.exception())
            else:
                result.set_result(done.result())

        def launch() -> None:
            try:
                values = [a.result() if isinstance(a, concurrent.futures.Future) else a for a in args]
                self._pool.submit(fn, *values).add_done_callback(finish)
            except BaseException as error:  # an input failed or was cancelled, or the pool is shut down
                result.set_exception(error)

        def input_done(_) -> None:
            with lock:
                waiting[0] -= 1
                ready = waiting[0] == 0
            if ready:
                launch()

        if not inputs:
            launch()
        for a in inputs:
            a.add_done_callback(input_done)
        return result

    def gather(self, handles: list) -> list:
        return [h.result() for h in handles]

    def assign(self, workers: list) -> None:
        pass

    def cancel(self, handles: list) -> None:
        for h in handles:
            h.cancel()

    def run_everywhere(self, fn, *args) -> None:
        fn(*args)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


class WorkerLostError(RuntimeError):
    """A worker holding a user block left the cluster while its tasks were pending."""


class _Dask:
    """Tasks on a Dask cluster, each pinned to the worker that hosts its user block."""

    #: Seconds between two looks at the cluster while waiting for an epoch.
    POLL = 1.0

    def __init__(self, client) -> None:
        from distributed.comm.core import CommClosedError
        from distributed.scheduler import KilledWorker

        self._client = client
        self._assigned: set = set()
        # What a lost worker looks like from here: a worker we placed blocks on is gone (tasks
        # pinned to it would wait forever), futures that needed its data are cancelled, its
        # tasks failed too often, a transfer or a scatter to it broke (OSError: connection
        # errors and timeouts), or a task found its block gone or moved on.
        self.lost = (
            WorkerLostError,
            concurrent.futures.CancelledError,
            KilledWorker,
            CommClosedError,
            OSError,
            _strata.StaleBlockError,
        )

    def workers(self) -> list:
        self._client.wait_for_workers(1, timeout=WORKER_TIMEOUT)
        return sorted(self._client.scheduler_info(n_workers=-1)["workers"])

    def assign(self, workers: list) -> None:
        self._assigned = set(workers)

    def put(self, value, worker):
        return self._client.scatter([value], workers=[worker], hash=False)[0]

    def submit(self, fn, *args, worker):
        # Pinned: the hosted block is on that worker only, and nothing may be stolen elsewhere.
        return self._client.submit(fn, *args, workers=[worker], allow_other_workers=False, pure=False)

    def gather(self, handles: list) -> list:
        from distributed import wait

        while True:
            try:
                wait(handles, timeout=self.POLL)
                break
            except (TimeoutError, asyncio.TimeoutError):  # distinct classes before Python 3.11
                gone = self._assigned - set(self._client.scheduler_info(n_workers=-1)["workers"])
                if gone:
                    raise WorkerLostError(f"worker(s) {sorted(gone)} left the cluster") from None
        return self._client.gather(handles)

    def cancel(self, handles: list) -> None:
        with contextlib.suppress(Exception):  # the cluster may be gone
            self._client.cancel(handles)

    def run_everywhere(self, fn, *args) -> None:
        with contextlib.suppress(Exception):  # the cluster may be gone: the workers' memory went with it
            self._client.run(fn, *args, on_error="ignore")

    def close(self) -> None:
        pass  # the client is the caller's
