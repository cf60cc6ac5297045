"""Timing one fit and its peak memory: the peak-RSS meter, the timed fit of one library (scored
afterwards when a test set is given), the untimed warm-up fits and the alternated repeats of a group.
"""

from __future__ import annotations

import gc
import importlib
import math
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Sequence, TextIO

import scipy.sparse as sp

from _adapters import Adapter, BprNumpyAdapter, Factors, FitSettings
from _data import tiny_matrix

QUALITY_KEYS = (("full_auc", "P1 full AUC"), ("auc", "P2 AUC"), ("precision@10", "prec@10"),
                ("ndcg@10", "NDCG@10"))


@dataclass
class FitRecord:
    """One timed fit."""

    dataset: str
    library: str
    threads: int
    threads_used: int
    epochs: int
    nnz: int
    repeat: int
    seed: int
    prep_s: float
    fit_s: float
    cpu_s: float
    peak_rss_mib: float
    kernel_s: float | None = None  # bpr_numpy: sum of history_ seconds (the epoch kernels alone)
    quality: dict[str, float] | None = None
    factors: Factors | None = field(default=None, repr=False)  # kept until scored

    @property
    def samples_per_s(self) -> float:
        return self.nnz * self.epochs / self.fit_s if self.fit_s > 0 else math.inf


def _proc_status_kib(key: str) -> int | None:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _hwm_reset() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")  # "5" resets the peak RSS (VmHWM) to the current RSS (Linux >= 4.0)
        return True
    except OSError:
        return False


_HWM_OK: bool | None = None
_LIBC: Any = None


def _malloc_trim() -> None:
    """Give the C heap's free pages back to the OS (glibc; a no-op elsewhere).

    glibc keeps memory freed by an earlier fit (and raises its mmap threshold after large
    frees, so big arrays come from the heap too); a later fit that reuses those pages would
    show no RSS increase. Trimming first makes every fit's pages count as new.
    """
    global _LIBC
    if _LIBC is None:
        _LIBC = False
        if sys.platform.startswith("linux"):
            try:
                import ctypes

                libc = ctypes.CDLL("libc.so.6")
                libc.malloc_trim  # noqa: B018 - musl and others lack it
                _LIBC = libc
            except (OSError, AttributeError):
                pass
    if _LIBC:
        _LIBC.malloc_trim(0)


def _hwm_available() -> bool:
    global _HWM_OK
    if _HWM_OK is None:
        _HWM_OK = _proc_status_kib("VmHWM") is not None and _hwm_reset()
    return _HWM_OK


class PeakRSS:
    """Peak increase of this process's resident memory during a ``with`` block.

    Method, best available first:

    ``vmhwm``
        Linux keeps the peak RSS of a process (``VmHWM`` in ``/proc/self/status``); writing
        ``5`` to ``/proc/self/clear_refs`` resets it to the current RSS. Reset before the
        block, read after: exact (to the kernel's per-thread counter batching, well under
        1 MiB), costs nothing while the fit runs, and sees allocations made inside numba or
        OpenMP code that holds the GIL.
    ``psutil``
        A background thread samples ``psutil.Process().memory_info().rss`` every
        ``interval`` seconds. It can miss short peaks, and cannot sample while a kernel holds
        the GIL (bpr_numpy's numba kernels do), so it is only a fallback.
    ``none``
        Neither is available: NaN.

    In both cases the figure is peak RSS minus RSS just before the block. On glibc the block
    starts with ``malloc_trim(0)`` so that heap pages freed by earlier work, which a fit could
    otherwise reuse without raising the RSS, are returned to the OS first.

    Parameters
    ----------
    interval : float
        Sampling period of the psutil fallback, seconds.
    """

    def __init__(self, interval: float = 0.002) -> None:
        self.interval = interval
        self.method = "none"
        self.delta_bytes = math.nan
        self._before = 0
        self._peak = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._proc: Any = None

    def __enter__(self) -> "PeakRSS":
        _malloc_trim()
        if _hwm_available() and _hwm_reset():
            self.method = "vmhwm"
            self._before = (_proc_status_kib("VmRSS") or 0) * 1024
            return self
        try:
            import psutil
        except ImportError:
            return self
        self.method = "psutil"
        self._proc = psutil.Process()
        self._before = self._peak = self._proc.memory_info().rss
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            self._peak = max(self._peak, self._proc.memory_info().rss)

    def __exit__(self, *exc: Any) -> None:
        if self.method == "vmhwm":
            self.delta_bytes = max(0, (_proc_status_kib("VmHWM") or 0) * 1024 - self._before)
        elif self.method == "psutil":
            self._stop.set()
            assert self._thread is not None
            self._thread.join()
            self._peak = max(self._peak, self._proc.memory_info().rss)
            self.delta_bytes = max(0, self._peak - self._before)

    @property
    def delta_mib(self) -> float:
        return self.delta_bytes / 2**20


def memory_method() -> str:
    """How :class:`PeakRSS` measures on this machine, in words."""
    if _hwm_available():
        return ("peak ΔRSS = VmHWM after the fit minus VmRSS before it (VmHWM reset via /proc/self/clear_refs, "
                "malloc_trim first)")
    try:
        importlib.import_module("psutil")  # importable is enough
        return ("peak ΔRSS = max RSS sampled every 2 ms by a psutil thread minus RSS before the fit "
                "(blind while a kernel holds the GIL)")
    except ImportError:
        return "peak ΔRSS unavailable (no /proc/self/clear_refs, no psutil)"


def score(factors: Factors, train: sp.csr_matrix, test: sp.csr_matrix) -> dict[str, float]:
    """P1 full AUC, P2 AUC, precision@10 and NDCG@10 of fitted factors (:mod:`bpr_numpy.metrics`).

    Parameters
    ----------
    factors : Factors
    train, test : scipy.sparse.csr_matrix
        Train positives (excluded from the top-k, negatives in P1) and held-out positives.

    Returns
    -------
    dict
        Keys ``full_auc``, ``auc``, ``precision@10``, ``ndcg@10``.
    """
    from bpr_numpy import metrics

    res = metrics.evaluate(factors, train, test, k=10, metrics=["full_auc", "auc", "precision", "ndcg"])
    return {key: float(res[key]) for key, _ in QUALITY_KEYS}


def measure_fit(adapter: Adapter, csr: sp.csr_matrix, settings: FitSettings, *, dataset: str = "",
                repeat: int = 0, test: sp.csr_matrix | None = None, keep_factors: bool = False) -> FitRecord:
    """Prepare, fit (timed) and, with ``test``, score one library once.

    Parameters
    ----------
    adapter : Adapter
    csr : scipy.sparse.csr_matrix
        Training matrix from :func:`canonical_csr`.
    settings : FitSettings
    dataset : str
        Label for the record.
    repeat : int
        Repeat index, for the record.
    test : scipy.sparse.csr_matrix, optional
        Held-out positives; when given, P1/P2 AUC, precision@10 and NDCG@10 are computed
        (after the timer).
    keep_factors : bool
        Keep the fitted :class:`Factors` in the record (to score later).

    Returns
    -------
    FitRecord
    """
    shape = csr.shape
    t0 = time.perf_counter()
    data = adapter.prepare(csr, settings)
    prep_s = time.perf_counter() - t0
    model = adapter.build(settings, shape)
    gc.collect()  # garbage from the previous fit must not be freed (or counted) inside this one
    with PeakRSS() as mem:
        c0 = time.process_time()
        t0 = time.perf_counter()
        adapter.fit(model, data, settings)
        fit_s = time.perf_counter() - t0
        cpu_s = time.process_time() - c0
    kernel_s = None
    if isinstance(adapter, BprNumpyAdapter):
        kernel_s = float(sum(r.seconds for r in model.history_))
    factors = adapter.factors(model, shape, settings) if (keep_factors or test is not None) else None
    rec = FitRecord(dataset=dataset, library=adapter.name, threads=settings.threads,
                    threads_used=adapter.threads_used(model, settings), epochs=settings.epochs,
                    nnz=int(csr.nnz), repeat=repeat, seed=settings.seed, prep_s=prep_s, fit_s=fit_s,
                    cpu_s=cpu_s, peak_rss_mib=mem.delta_mib, kernel_s=kernel_s,
                    factors=factors if keep_factors else None)
    if test is not None:
        rec.quality = score(factors, csr, test)
    del model, data
    gc.collect()
    return rec


def warm_up(adapters: Sequence[Adapter], threads: Sequence[int], settings: FitSettings,
            log: TextIO | None = None) -> None:
    """Fit every library once on a tiny matrix for every thread count (not measured).

    This compiles (or loads from cache) bpr_numpy's numba kernels for this dtype and thread
    mode and starts the peers' OpenMP pools, so no timed fit pays for them. Each variant of
    bpr_numpy's epoch kernel is its own compiled specialisation, so three fits: a dense matrix
    and a sparse one (below 1/64 density: the kernels take a membership bitmap on dense
    catalogues only), and the sparse one again as if it were beyond the caches (the kernels then
    fetch each run's rows ahead, ``bpr_numpy._runtime.beyond_cache``), as large data sets train.
    """
    from bpr_numpy import _runtime

    log = sys.stderr if log is None else log
    tiny = tiny_matrix()
    sparse = tiny_matrix(n_users=64, n_items=1024, per_user=8)
    t0 = time.perf_counter()
    for matrix, large in ((tiny, False), (sparse, False), (sparse, True)):
        threshold = _runtime._PREFETCH_RUNS_BYTES
        _runtime._PREFETCH_RUNS_BYTES = -1 if large else threshold
        try:
            for t in threads:
                for a in adapters:
                    if large and not a.name.startswith("bpr_numpy"):
                        continue
                    s = FitSettings(factors=settings.factors, epochs=2, learning_rate=settings.learning_rate,
                                    regularization=settings.regularization, threads=t, seed=settings.seed)
                    model = a.build(s, matrix.shape)
                    a.fit(model, a.prepare(matrix, s), s)
                    a.factors(model, matrix.shape, s)
        finally:
            _runtime._PREFETCH_RUNS_BYTES = threshold
    print(f"warm-up fits on {tiny.shape[0]}x{tiny.shape[1]} and 64x1024 matrices ({tiny.nnz} pairs each) for "
          f"{', '.join(a.name for a in adapters)} x threads {','.join(map(str, threads))}: "
          f"{time.perf_counter() - t0:.1f} s (not timed)", file=log, flush=True)


def run_group(adapters: Sequence[Adapter], csr: sp.csr_matrix, *, dataset: str, threads: Sequence[int],
              repeats: int, settings: FitSettings, test: sp.csr_matrix | None = None,
              log: TextIO | None = None) -> list[FitRecord]:
    """Time every library on one data set: repeats x thread counts, libraries alternated.

    Parameters
    ----------
    adapters : sequence of Adapter
        Libraries, in the order they alternate.
    csr : scipy.sparse.csr_matrix
        Training matrix (:func:`canonical_csr`).
    dataset : str
        Label.
    threads : sequence of int
        Thread counts.
    repeats : int
        Repeats; repeat ``r`` uses seed ``settings.seed + r``.
    settings : FitSettings
        Everything but ``threads`` and ``seed``, which are set per fit.
    test : scipy.sparse.csr_matrix, optional
        Held-out positives for the quality columns. Scoring waits until every fit of the
        group is timed, so that no BLAS or OpenMP threads left spinning by the scoring run
        into the next library's fit.
    log : file-like, optional
        Progress lines (default: stderr).

    Returns
    -------
    list of FitRecord
    """
    log = sys.stderr if log is None else log
    records = []
    for r in range(repeats):
        for t in threads:
            for a in adapters:
                s = FitSettings(factors=settings.factors, epochs=settings.epochs,
                                learning_rate=settings.learning_rate, regularization=settings.regularization,
                                threads=t, seed=settings.seed + r)
                rec = measure_fit(a, csr, s, dataset=dataset, repeat=r, keep_factors=test is not None)
                records.append(rec)
                print(f"  [{dataset} repeat {r + 1}/{repeats} threads {t}] {a.name:<9s} fit {rec.fit_s:8.3f} s  "
                      f"{rec.samples_per_s / 1e6:7.2f} M/s  CPU/wall {rec.cpu_s / rec.fit_s:4.2f}  "
                      f"ΔRSS {rec.peak_rss_mib:7.1f} MiB", file=log, flush=True)
    if test is not None:
        for rec in records:
            rec.quality = score(rec.factors, csr, test)
            rec.factors = None
            print(f"  [{dataset} repeat {rec.repeat + 1}/{repeats} threads {rec.threads}] {rec.library:<9s} "
                  f"P1 {rec.quality['full_auc']:.4f}  P2 {rec.quality['auc']:.4f}  "
                  f"prec@10 {rec.quality['precision@10']:.4f}  NDCG@10 {rec.quality['ndcg@10']:.4f}",
                  file=log, flush=True)
    return records
