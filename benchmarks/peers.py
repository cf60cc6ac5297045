"""bpr_numpy side by side with implicit, cornac and LightFM: speed, peak memory and quality.

Every library gets the same users x items CSR matrix (float32 ones, sorted indices), the
same number of factors, epochs, learning rate, regularisation, threads and seed, mapped onto
its own parameters as documented in each adapter. Each fitted model is turned into plain
user factors, item factors and item biases (scores ``U @ V.T + b``) and scored with
:mod:`bpr_numpy.metrics`.

    python benchmarks/peers.py movielens [--data PATH] [--epochs 100] [--threads 2,1]
    python benchmarks/peers.py synthetic [--epochs 3] [--threads 1,2]
    python benchmarks/peers.py scaling   [--sizes 1M,5M,20M] [--threads 1,2]
    python benchmarks/peers.py all       [--markdown RESULTS.md] [--plot peers.png]
    python benchmarks/peers.py recommend [--init random,trained] [--threads 1,2] [--interactions syn20m.npz]
    python benchmarks/peers.py movielens --quick --repeats 1 --epochs 5     # a smoke run

Common options: ``--repeats 3``, ``--factors 64``, ``--learning-rate 0.02``,
``--regularization 0.02``, ``--seed 0``, ``--libs bpr_numpy,implicit,cornac,lightfm``,
``--quick`` (small synthetic sizes, 1 repeat and 5 MovieLens epochs unless given).

How it measures
---------------
* A warm-up fit on a tiny matrix runs first for every library and thread count, so numba
  compilation (bpr_numpy) and first-call costs (thread pools, imports) are not timed.
* The fit time is the wall time of the library's own fit call. Converting the CSR to the
  library's format happens before the timer and is reported as ``prep s``.
* samples/s = nnz x epochs / fit seconds (one epoch is nnz samples for all four).
* Repeats alternate the libraries (A B C D, A B C D, ...). The second core of the machines
  we measure on comes and goes, so the headline is ``bpr_numpy/peer``: bpr_numpy's samples/s
  divided by the peer's, both from the same repeat, median (min-max) over repeats.
* ``CPU/wall`` is the process CPU time over the wall time of the fit: close to the thread
  count when the cores were ours, lower when something else ran.
* Peak ΔRSS: see :class:`PeakRSS`.
* Quality (movielens only): P1 full AUC, P2 AUC, precision@10 and NDCG@10 on ``ua.test``,
  median over repeats; repeat ``r`` uses seed ``--seed + r``.
* ``recommend`` (not part of ``all``): bpr_numpy's and implicit's batch ``recommend`` for
  every user of the 20M set (n=10, liked items filtered) over the same factors, alternated,
  BLAS held to the thread count with threadpoolctl; the top-10 lists of a user sample are
  checked to agree. See :func:`cmd_recommend`.

Peers are optional: one that does not import is skipped with a one-line message. Nothing
is installed by this script (``pip install -e .[bench]`` installs the peers).
"""

from __future__ import annotations

import argparse
import gc
import importlib
import math
import os
import platform
import re
import statistics
import sys
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence, TextIO

import numpy as np
import scipy.sparse as sp

if str(Path(__file__).resolve().parent) not in sys.path:  # loaded by path (a test): see _common.py
    sys.path.append(str(Path(__file__).resolve().parent))
from _common import cpu_model  # noqa: E402

INSTALL_HINT = "pip install -e .[bench]"
LIBRARIES = ("bpr_numpy", "implicit", "cornac", "lightfm")
DEFAULT_DATA = Path(os.environ.get(
    "BPR_NUMPY_ML100K", Path(__file__).resolve().parents[2] / "shared" / "data" / "ml-100k"))
QUALITY_KEYS = (("full_auc", "P1 full AUC"), ("auc", "P2 AUC"), ("precision@10", "prec@10"),
                ("ndcg@10", "NDCG@10"))
# Default scaling sizes and their --quick stand-ins (small enough for a smoke run).
SCALING_SIZES = (1_000_000, 5_000_000, 20_000_000)
QUICK_SIZES = (100_000, 200_000, 400_000)


# --------------------------------------------------------------------------- settings, results


@dataclass(frozen=True)
class FitSettings:
    """What every library is asked to do; each adapter maps it onto its own parameters.

    Attributes
    ----------
    factors : int
        Latent dimensions.
    epochs : int
        Passes; one epoch is nnz samples.
    learning_rate : float
        SGD step (LightFM: the adagrad base step).
    regularization : float
        L2 strength in the ``lambda / 2`` convention (update ``-lr * lambda * theta``).
    threads : int
        Threads requested.
    seed : int
        Random seed.
    """

    factors: int = 64
    epochs: int = 10
    learning_rate: float = 0.02
    regularization: float = 0.02
    threads: int = 1
    seed: int = 0


@dataclass
class Factors:
    """A fitted model in the common form: ``scores = user_factors @ item_factors.T + item_bias``.

    Any per-user additive term (LightFM's user bias) is dropped: it cancels in every
    per-user ranking, so none of the metrics can see it. ``bpr_numpy.metrics`` accepts this
    object as a model.
    """

    user_factors: np.ndarray
    item_factors: np.ndarray
    item_bias: np.ndarray


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


def canonical_csr(matrix: Any) -> sp.csr_matrix:
    """The one input all adapters get: users x items CSR, float32 ones, sorted unique indices.

    Parameters
    ----------
    matrix : scipy sparse matrix or array
        Stored values > 0 are positives.

    Returns
    -------
    scipy.sparse.csr_matrix
    """
    csr = sp.csr_matrix(matrix, dtype=np.float32, copy=True)
    csr.sum_duplicates()  # also sorts the indices
    csr.data = (csr.data > 0).astype(np.float32)
    csr.eliminate_zeros()
    csr.sort_indices()
    csr.data[:] = 1.0
    return csr


# --------------------------------------------------------------------------- adapters


class Adapter:
    """One library behind the same four steps: prepare, build, fit (the timed one), factors.

    Attributes
    ----------
    name : str
        Name in tables and in ``--libs``.
    module : str
        What must import for the library to run.
    package : str
        The distribution that provides it (for messages).
    """

    name = ""
    module = ""
    package = ""

    def import_error(self) -> str | None:
        """None if the library imports, else a one-line reason."""
        try:
            importlib.import_module(self.module)
        except Exception as exc:  # any failure (missing, broken build) means "skip this peer"
            return f"{type(exc).__name__}: {exc}".splitlines()[0]
        return None

    def skip_message(self, reason: str) -> str:
        """The one line printed when the library is skipped."""
        pkg = f" (package {self.package})" if self.package != self.name else ""
        return (f"skipping {self.name}: cannot import {self.module}{pkg} ({reason}); "
                f"install the peers with `{INSTALL_HINT}`")

    def version(self) -> str:
        """Version string of the library."""
        from importlib import metadata

        try:
            return metadata.version(self.package)
        except metadata.PackageNotFoundError:
            return str(getattr(importlib.import_module(self.name), "__version__", "?"))

    def prepare(self, csr: sp.csr_matrix, settings: FitSettings) -> Any:
        """Convert the shared CSR to the library's input format (not timed as fit)."""
        return csr

    def build(self, settings: FitSettings, shape: tuple[int, int]) -> Any:
        """Construct the unfitted model."""
        raise NotImplementedError

    def fit(self, model: Any, data: Any, settings: FitSettings) -> None:
        """The library's fit call: the only timed step."""
        raise NotImplementedError

    def factors(self, model: Any, shape: tuple[int, int], settings: FitSettings) -> Factors:
        """Fitted parameters in the common form, rows/columns in the CSR's order."""
        raise NotImplementedError

    def threads_used(self, model: Any, settings: FitSettings) -> int:
        """Threads the library actually trained with."""
        return settings.threads

    def notes(self) -> list[str]:
        """Lines for the notes under the table (quirks that change what was measured)."""
        return []


class BprNumpyAdapter(Adapter):
    """bpr_numpy itself.

    Mapping: ``BPR(factors=factors, learning_rate=learning_rate,
    regularization=regularization, epochs=epochs, threads=threads, random_state=seed,
    dtype=float32)`` with the defaults ``loss="bpr"``, ``sampler="uniform"`` (j uniform over
    items, resampled while it is a known positive) and ``item_bias=True``; a float
    regularisation applies the same lambda to user, positive, negative and bias (lambda/2
    convention, update ``-lr * lambda * theta``). Threads above numba's thread count are
    clamped by bpr_numpy. Factors are ``user_factors``, ``item_factors``, ``item_bias`` as
    they are.
    """

    name = module = package = "bpr_numpy"

    def build(self, settings: FitSettings, shape: tuple[int, int]) -> Any:
        from bpr_numpy import BPR

        return BPR(factors=settings.factors, learning_rate=settings.learning_rate,
                   regularization=settings.regularization, epochs=settings.epochs,
                   loss="bpr", sampler="uniform", item_bias=True, dtype=np.float32,
                   threads=settings.threads, random_state=settings.seed)

    def fit(self, model: Any, data: Any, settings: FitSettings) -> None:
        model.fit(data, show_progress=False)

    def factors(self, model: Any, shape: tuple[int, int], settings: FitSettings) -> Factors:
        return Factors(model.user_factors, model.item_factors, model.item_biases)

    def threads_used(self, model: Any, settings: FitSettings) -> int:
        import numba

        return min(settings.threads, int(numba.config.NUMBA_NUM_THREADS))

    def version(self) -> str:
        import bpr_numpy
        import numba

        try:
            layer = f", threading layer {numba.threading_layer()}"
        except ValueError:  # only known once a parallel kernel has run
            layer = ""
        return f"{bpr_numpy.__version__} (numba {numba.__version__}{layer})"


class ImplicitAdapter(Adapter):
    """implicit 0.7 (CPU): ``implicit.cpu.bpr.BayesianPersonalizedRanking``.

    Mapping: ``BayesianPersonalizedRanking(factors=factors, learning_rate=learning_rate,
    regularization=regularization, iterations=epochs, num_threads=threads,
    random_state=seed, verify_negative_samples=True, dtype=float32)``, fitted on the
    users x items CSR (0.7 takes ``user_items``) with ``show_progress=False``. Its update is
    ``theta += lr * (z * grad - reg * theta)``, the same lambda convention as bpr_numpy, and
    the bias gets the same ``reg``.

    Sampling differs: the positive is a uniformly random stored pair, the negative the item
    of another random pair (popularity-weighted); a negative the user likes is *skipped*
    (the sample is lost), not redrawn. Initialisation: uniform ``(-0.5, 0.5) / factors``;
    users and items without any pair get all-zero rows.

    Factors: implicit stores the item bias as an extra factor column. ``item_factors`` has
    ``factors + 1`` columns, the last being ``b_i``, and ``user_factors`` has a matching
    last column of ones (never updated). The CPU model does not pad ``factors`` (the stored
    width is exactly ``factors + 1``; checked here); only the GPU model rounds widths up.
    So ``U = user_factors[:, :f]``, ``V = item_factors[:, :f]``, ``b = item_factors[:, f]``.
    """

    name = package = "implicit"
    module = "implicit.cpu.bpr"

    def prepare(self, csr: sp.csr_matrix, settings: FitSettings) -> Any:
        # implicit wants a scipy csr_matrix (it warns and converts anything else inside fit).
        return sp.csr_matrix(csr)

    def build(self, settings: FitSettings, shape: tuple[int, int]) -> Any:
        from implicit.cpu.bpr import BayesianPersonalizedRanking

        return BayesianPersonalizedRanking(
            factors=settings.factors, learning_rate=settings.learning_rate,
            regularization=settings.regularization, dtype=np.float32, iterations=settings.epochs,
            num_threads=settings.threads, verify_negative_samples=True, random_state=settings.seed)

    def fit(self, model: Any, data: Any, settings: FitSettings) -> None:
        model.fit(data, show_progress=False)

    def factors(self, model: Any, shape: tuple[int, int], settings: FitSettings) -> Factors:
        uf = np.asarray(model.user_factors)
        itf = np.asarray(model.item_factors)
        f = uf.shape[1] - 1
        if f != settings.factors or itf.shape[1] != f + 1:
            raise RuntimeError(f"implicit stored {uf.shape[1]}/{itf.shape[1]} columns for factors="
                               f"{settings.factors}; expected factors + 1 (bias column)")
        if not np.all(uf[:, f] == 1.0):
            raise RuntimeError("implicit's last user column is not all ones: cannot read it as an item bias")
        return Factors(uf[:, :f], itf[:, :f], itf[:, f].copy())

    def notes(self) -> list[str]:
        return ["implicit: negatives popularity-weighted, a liked negative is skipped (no update); "
                "item bias = last item column (user column of ones), no factor padding on CPU"]


class CornacAdapter(Adapter):
    """cornac 3: ``cornac.models.BPR``.

    Mapping: ``BPR(k=factors, max_iter=epochs, learning_rate=learning_rate,
    lambda_reg=regularization, use_bias=True, num_threads=threads, seed=seed,
    verbose=False)``. Its update is ``theta += lr * (z * grad - lambda_reg * theta)``, the
    same lambda convention as bpr_numpy, bias included.

    Threads and seed: cornac's constructor sets ``num_threads = 1`` whenever ``seed`` is not
    None (its docstring: "If seed is not None, num_threads=1 to remove randomness from
    parallelization"); otherwise it uses ``num_threads`` if ``0 < num_threads < cpu_count``
    and ``cpu_count`` else. So for ``threads > 1`` we pass ``seed=None`` and then seed the
    model's ``rng`` attribute (a ``RandomState``, used for the initial factors and the
    per-thread mt19937 seeds), which keeps the initialisation reproducible while training
    runs Hogwild on ``threads`` threads. ``threads_used`` reports what cornac chose.

    Sampling: positive = a uniformly random stored pair, negative uniform over the items
    cornac knows, a liked negative is *skipped* (no redraw). Initialisation: uniform
    ``(-0.5, 0.5) / k``, biases 0.

    Data: the cornac ``Dataset`` is built from the CSR's (user, item, 1.0) triplets with
    integer ids and ``uid_map``/``iid_map`` mapping each id to itself, so every row and
    column of the CSR exists in cornac (also users/items without a pair) and in the same
    order. That is what ``Dataset.build(triplets, global_uid_map=identity,
    global_iid_map=identity)`` produces, built here from arrays because ``build`` loops in
    Python over every triplet (minutes and gigabytes at 20M pairs). Factors are read back
    through ``uid_map``/``iid_map``: ``U[u] = u_factors[uid_map[u]]`` etc.
    """

    name = module = package = "cornac"

    def prepare(self, csr: sp.csr_matrix, settings: FitSettings) -> Any:
        from cornac.data import Dataset

        n_users, n_items = csr.shape
        coo = csr.tocoo()
        uid_map = OrderedDict((u, u) for u in range(n_users))
        iid_map = OrderedDict((i, i) for i in range(n_items))
        # dtypes as Dataset.build makes them: int ("int" = int64) ids, float ratings.
        uir = (coo.row.astype(np.int64), coo.col.astype(np.int64), np.ones(csr.nnz, dtype=np.float64))
        ds = Dataset(num_users=n_users, num_items=n_items, uid_map=uid_map, iid_map=iid_map,
                     uir_tuple=uir, seed=settings.seed)
        # cornac builds its CSR lazily inside fit; build it now so the timer sees only training.
        m = ds.matrix
        if not m.has_sorted_indices:  # its negative check is a binary search in the row
            m.sort_indices()
        return ds

    def build(self, settings: FitSettings, shape: tuple[int, int]) -> Any:
        from cornac.models import BPR
        from cornac.utils import get_rng

        seeded = settings.threads == 1
        model = BPR(k=settings.factors, max_iter=settings.epochs, learning_rate=settings.learning_rate,
                    lambda_reg=settings.regularization, use_bias=True, num_threads=settings.threads,
                    trainable=True, verbose=False, seed=settings.seed if seeded else None)
        if not seeded:
            # a seed would force one thread; seed the initialisation through the model's rng instead
            model.rng = get_rng(settings.seed)
        return model

    def fit(self, model: Any, data: Any, settings: FitSettings) -> None:
        model.fit(data)

    def factors(self, model: Any, shape: tuple[int, int], settings: FitSettings) -> Factors:
        n_users, n_items = shape
        uidx = np.fromiter((model.uid_map[u] for u in range(n_users)), dtype=np.int64, count=n_users)
        iidx = np.fromiter((model.iid_map[i] for i in range(n_items)), dtype=np.int64, count=n_items)
        bias = np.asarray(model.i_biases)
        return Factors(np.asarray(model.u_factors)[uidx], np.asarray(model.i_factors)[iidx], bias[iidx])

    def threads_used(self, model: Any, settings: FitSettings) -> int:
        return int(model.num_threads)

    def notes(self) -> list[str]:
        return ["cornac: a seed forces num_threads=1, so threads>1 runs pass seed=None and seed "
                "model.rng (init reproducible, Hogwild training); negatives uniform, a liked one is skipped"]


class LightFMAdapter(Adapter):
    """LightFM (the maintained fork ``lightfm-next``, imported as ``lightfm``), BPR loss.

    Mapping: ``LightFM(no_components=factors, loss="bpr", learning_schedule="adagrad",
    learning_rate=learning_rate, item_alpha=2 * regularization / n_items,
    user_alpha=regularization / n_users, random_state=seed)`` then
    ``fit_partial(interactions_coo, epochs=epochs, num_threads=threads)`` on a fresh model
    (what ``fit`` does after resetting the state).

    * Learning rate: LightFM has no plain SGD; with adagrad (its default) the per-coordinate
      step is ``learning_rate / sqrt(1 + sum of squared past gradients)``, so the first step
      equals ``learning_rate`` and later ones shrink.
    * Regularisation: LightFM's ``item_alpha``/``user_alpha`` are a *global* lazy weight
      decay: after every sample all item (user) parameters, biases included, shrink by
      ``1 / (1 + alpha * mean adagrad step)``. SGD L2 as in bpr_numpy shrinks only the rows a
      sample touches, by ``lr * lambda``: two item rows and one user row per sample. Equal
      expected shrinkage per sample gives ``item_alpha = 2 lambda / n_items`` and
      ``user_alpha = lambda / n_users``. This is the closest equivalent, not an identity.
    * Sampling: an epoch is a shuffled pass over all stored pairs (each positive once); the
      negative is the item of a random pair (popularity-weighted), redrawn while the user
      likes it.
    * Biases: LightFM learns user and item biases; its ``predict`` is
      ``u . v + user_bias + item_bias``. The user bias is constant per user and cancels in
      every per-user ranking, so the common form keeps ``item_biases`` only.
    * Per epoch LightFM rebuilds a CSR copy of the interactions and a shuffle of all pairs
      inside ``fit_partial``; that is LightFM's own cost and is timed.
    * Without OpenMP (LightFM warns at import) it trains on one thread whatever is asked.
    """

    name = "lightfm"
    module = "lightfm"
    package = "lightfm-next"

    def version(self) -> str:
        from importlib import metadata

        for dist in ("lightfm-next", "lightfm"):
            try:
                return f"{metadata.version(dist)} ({dist})"
            except metadata.PackageNotFoundError:
                continue
        return str(getattr(importlib.import_module("lightfm"), "__version__", "?"))

    @staticmethod
    def has_openmp() -> bool:
        from lightfm import _lightfm_fast

        return "openmp" in _lightfm_fast.fit_bpr.__module__ and "no_openmp" not in _lightfm_fast.fit_bpr.__module__

    def prepare(self, csr: sp.csr_matrix, settings: FitSettings) -> Any:
        # fit_partial calls .tocoo() and casts to float32: both no-ops on this input.
        return sp.coo_matrix(csr, dtype=np.float32)

    def build(self, settings: FitSettings, shape: tuple[int, int]) -> Any:
        from lightfm import LightFM

        n_users, n_items = shape
        return LightFM(no_components=settings.factors, loss="bpr", learning_schedule="adagrad",
                       learning_rate=settings.learning_rate,
                       item_alpha=2.0 * settings.regularization / max(n_items, 1),
                       user_alpha=settings.regularization / max(n_users, 1),
                       random_state=settings.seed)

    def fit(self, model: Any, data: Any, settings: FitSettings) -> None:
        model.fit_partial(data, epochs=settings.epochs, num_threads=settings.threads)

    def factors(self, model: Any, shape: tuple[int, int], settings: FitSettings) -> Factors:
        # identity feature matrices: embedding row k is user/item k
        return Factors(np.asarray(model.user_embeddings), np.asarray(model.item_embeddings),
                       np.asarray(model.item_biases))

    def threads_used(self, model: Any, settings: FitSettings) -> int:
        return settings.threads if self.has_openmp() else 1

    def notes(self) -> list[str]:
        return ["lightfm: adagrad (base step = learning rate), global weight decay item_alpha = "
                "2*reg/n_items, user_alpha = reg/n_users; user bias dropped (cancels per user); "
                "negatives popularity-weighted, redrawn while liked"]


ADAPTERS: dict[str, type[Adapter]] = {
    "bpr_numpy": BprNumpyAdapter,
    "implicit": ImplicitAdapter,
    "cornac": CornacAdapter,
    "lightfm": LightFMAdapter,
}


def resolve_adapters(names: Sequence[str], log: TextIO | None = None) -> tuple[list[Adapter], list[str]]:
    """Adapters for the libraries that import; one skip message for each that does not.

    Parameters
    ----------
    names : sequence of str
        Library names, from :data:`LIBRARIES`.
    log : file-like, optional
        Where to print the skip messages (default: stderr).

    Returns
    -------
    adapters : list of Adapter
        In the order given.
    skipped : list of str
        The messages printed.
    """
    log = sys.stderr if log is None else log
    adapters, skipped = [], []
    for name in names:
        if name not in ADAPTERS:
            raise ValueError(f"unknown library {name!r}; choose from {', '.join(LIBRARIES)}")
        adapter = ADAPTERS[name]()
        reason = adapter.import_error()
        if reason is None:
            adapters.append(adapter)
        else:
            msg = adapter.skip_message(reason)
            skipped.append(msg)
            print(msg, file=log, flush=True)
    return adapters, skipped


# --------------------------------------------------------------------------- measurement


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
        import psutil  # noqa: F401

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


def tiny_matrix(n_users: int = 64, n_items: int = 48, per_user: int = 8, seed: int = 0) -> sp.csr_matrix:
    """A small random interaction matrix (every user has items and unobserved items).

    Parameters
    ----------
    n_users, n_items, per_user : int
        Shape and items per user (``per_user < n_items``).
    seed : int

    Returns
    -------
    scipy.sparse.csr_matrix
    """
    rng = np.random.default_rng(seed)
    rows = np.repeat(np.arange(n_users), per_user)
    cols = np.concatenate([rng.choice(n_items, per_user, replace=False) for _ in range(n_users)])
    return canonical_csr(sp.csr_matrix((np.ones(rows.size, np.float32), (rows, cols)), shape=(n_users, n_items)))


def warm_up(adapters: Sequence[Adapter], threads: Sequence[int], settings: FitSettings,
            log: TextIO | None = None) -> None:
    """Fit every library once on a tiny matrix for every thread count (not measured).

    This compiles (or loads from cache) bpr_numpy's numba kernels for this dtype and thread
    mode and starts the peers' OpenMP pools, so no timed fit pays for them. Two matrices: a
    dense one and a sparse one (below 1/64 density), because bpr_numpy's kernels take a
    membership bitmap on dense catalogues only, and each variant is its own compiled kernel.
    """
    log = sys.stderr if log is None else log
    tiny = tiny_matrix()
    t0 = time.perf_counter()
    for matrix in (tiny, tiny_matrix(n_users=64, n_items=1024, per_user=8)):
        for t in threads:
            for a in adapters:
                s = FitSettings(factors=settings.factors, epochs=2, learning_rate=settings.learning_rate,
                                regularization=settings.regularization, threads=t, seed=settings.seed)
                model = a.build(s, matrix.shape)
                a.fit(model, a.prepare(matrix, s), s)
                a.factors(model, matrix.shape, s)
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


# --------------------------------------------------------------------------- summaries


@dataclass
class Row:
    """One line of a table: a library at a thread count on one data set, over repeats."""

    dataset: str
    library: str
    threads: int
    threads_used: int
    epochs: int
    nnz: int
    repeats: int
    fit_s: tuple[float, float, float]  # median, min, max
    samples_per_s: float  # median
    ratio: tuple[float, float, float] | None  # bpr_numpy/peer samples/s in the same repeat
    peak_rss_mib: float
    prep_s: float
    cpu_per_wall: float
    kernel_samples_per_s: float | None = None
    quality: dict[str, float] = field(default_factory=dict)


def _mmm(values: Sequence[float]) -> tuple[float, float, float]:
    return float(statistics.median(values)), float(min(values)), float(max(values))


def summarize(records: Sequence[FitRecord]) -> list[Row]:
    """Group records by (data set, library, threads); medians, spreads and same-repeat ratios.

    Parameters
    ----------
    records : sequence of FitRecord

    Returns
    -------
    list of Row
        In first-seen order of data set, then threads, then library.
    """
    order = {name: k for k, name in enumerate(dict.fromkeys(x.dataset for x in records))}
    groups: OrderedDict[tuple[str, int, str], list[FitRecord]] = OrderedDict()
    for rec in sorted(records, key=lambda x: (order[x.dataset], x.threads)):  # stable: library order kept
        groups.setdefault((rec.dataset, rec.threads, rec.library), []).append(rec)
    ours = {(x.dataset, x.threads, x.repeat, x.epochs): x for x in records if x.library == "bpr_numpy"}
    rows = []
    for (dataset, threads, library), recs in groups.items():
        ratios = [ours[(x.dataset, x.threads, x.repeat, x.epochs)].samples_per_s / x.samples_per_s
                  for x in recs if (x.dataset, x.threads, x.repeat, x.epochs) in ours]
        quality = {}
        if all(x.quality for x in recs):
            quality = {k: float(statistics.median(x.quality[k] for x in recs)) for k, _ in QUALITY_KEYS}
        kernel = None
        if all(x.kernel_s for x in recs):
            kernel = float(statistics.median(x.nnz * x.epochs / x.kernel_s for x in recs))
        rows.append(Row(
            dataset=dataset, library=library, threads=threads, threads_used=recs[0].threads_used,
            epochs=recs[0].epochs, nnz=recs[0].nnz, repeats=len(recs), fit_s=_mmm([x.fit_s for x in recs]),
            samples_per_s=float(statistics.median(x.samples_per_s for x in recs)),
            ratio=_mmm(ratios) if ratios else None,
            peak_rss_mib=float(statistics.median(x.peak_rss_mib for x in recs)),
            prep_s=float(statistics.median(x.prep_s for x in recs)),
            cpu_per_wall=float(statistics.median(x.cpu_s / x.fit_s for x in recs)),
            kernel_samples_per_s=kernel, quality=quality))
    return rows


def _fmt_spread(m: tuple[float, float, float], digits: int) -> str:
    return f"{m[0]:.{digits}f} ({m[1]:.{digits}f}-{m[2]:.{digits}f})"


def _table_cells(rows: Sequence[Row], *, with_quality: bool, with_nnz: bool) -> tuple[list[str], list[list[str]]]:
    head = (["nnz"] if with_nnz else []) + ["library", "threads", "epochs", "fit s (median, min-max)",
                                            "samples/s (M)", "bpr_numpy/peer", "peak ΔRSS MiB", "prep s",
                                            "CPU/wall"]
    if with_quality:
        head += [label for _, label in QUALITY_KEYS]
    body = []
    for row in rows:
        digits = 3 if row.fit_s[0] < 10 else 1
        threads = str(row.threads) if row.threads_used == row.threads else f"{row.threads} (ran {row.threads_used})"
        if row.library == "bpr_numpy":
            ratio = "1"
        elif row.ratio is None:
            ratio = "n/a"
        else:
            ratio = _fmt_spread(row.ratio, 2) if row.ratio[1] != row.ratio[2] else f"{row.ratio[0]:.2f}"
        fit = _fmt_spread(row.fit_s, digits) if row.repeats > 1 else f"{row.fit_s[0]:.{digits}f}"
        cells = ([f"{row.nnz:,}"] if with_nnz else []) + [
            row.library, threads, str(row.epochs), fit, f"{row.samples_per_s / 1e6:.2f}", ratio,
            f"{row.peak_rss_mib:.1f}", f"{row.prep_s:.3f}", f"{row.cpu_per_wall:.2f}"]
        if with_quality:
            cells += [f"{row.quality[k]:.4f}" if row.quality else "" for k, _ in QUALITY_KEYS]
        body.append(cells)
    return head, body


def format_table(rows: Sequence[Row], *, with_quality: bool = False, with_nnz: bool = False,
                 markdown: bool = False) -> str:
    """Render rows as an aligned plain-text table, or as a Markdown table.

    Parameters
    ----------
    rows : sequence of Row
    with_quality : bool
        Add the P1/P2 AUC, precision@10 and NDCG@10 columns.
    with_nnz : bool
        Add an nnz column (scaling).
    markdown : bool
        Markdown pipes instead of aligned columns.

    Returns
    -------
    str
    """
    head, body = _table_cells(rows, with_quality=with_quality, with_nnz=with_nnz)
    return _render(head, body, markdown=markdown)


def _render(head: Sequence[str], body: Sequence[Sequence[str]], *, markdown: bool = False) -> str:
    """Cells as an aligned plain-text table or a Markdown table (text columns left-aligned)."""
    left = ("library", "factors")
    if markdown:
        right = [h not in left for h in head]
        lines = ["| " + " | ".join(head) + " |",
                 "|" + "|".join("---:" if r else "---" for r in right) + "|"]
        lines += ["| " + " | ".join(c) + " |" for c in body]
        return "\n".join(lines)
    widths = [max(len(h), *(len(c[i]) for c in body)) if body else len(h) for i, h in enumerate(head)]
    lines = ["  ".join(h.ljust(w) if h in left else h.rjust(w) for h, w in zip(head, widths))]
    lines.append("  ".join("-" * w for w in widths))
    for c in body:
        lines.append("  ".join(x.ljust(w) if h in left else x.rjust(w) for x, h, w in zip(c, head, widths)))
    return "\n".join(lines)


def table_notes(rows: Sequence[Row], adapters: Sequence[Adapter], *, quality: bool) -> list[str]:
    """Lines printed under a table: what the columns mean, and the peers' quirks."""
    notes = [
        "fit s: wall time of the library's fit call only, after an untimed warm-up fit per library and "
        "thread count (no numba compilation or first-call cost); prep s: conversion to the library's "
        "input format, before the timer",
        "samples/s = nnz x epochs / fit s; bpr_numpy/peer = bpr_numpy samples/s / peer samples/s in the "
        "same repeat (libraries alternated), median (min-max); > 1 means bpr_numpy is faster",
        memory_method() + "; median over repeats",
        "CPU/wall: process CPU seconds / wall seconds during the fit (about the thread count when the cores "
        "were free)",
    ]
    kernels = [r for r in rows if r.kernel_samples_per_s]
    if kernels:
        notes.append("bpr_numpy epoch kernels alone (history_): " + ", ".join(
            f"{r.threads} thr{' ' + format(r.nnz, ',') if len({k.nnz for k in kernels}) > 1 else ''}: "
            f"{r.kernel_samples_per_s / 1e6:.2f} M/s" for r in kernels))
    if quality:
        notes.append("quality: bpr_numpy.metrics on ua.test (ratings >= 4), train positives excluded from "
                     "the top-k; median over repeats, repeat r seeded with seed + r")
    for a in adapters:
        notes.extend(a.notes())
    return notes


# --------------------------------------------------------------------------- data


def load_movielens(path: str | os.PathLike) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    """MovieLens 100k ``ua`` split, ratings >= 4: (train, test) as canonical CSR matrices.

    Parameters
    ----------
    path : str or os.PathLike
        The ``ml-100k`` folder or zip.

    Returns
    -------
    (scipy.sparse.csr_matrix, scipy.sparse.csr_matrix)
        943 x 1682 each (ua.base / ua.test positives).
    """
    from bpr_numpy.datasets import load_movielens_100k

    train, test = load_movielens_100k(path, split="ua", min_rating=4.0)
    return canonical_csr(train.matrix), canonical_csr(test.matrix)


def synthetic_shape(nnz: int) -> tuple[int, int, int]:
    """Users, items and pairs of a synthetic set with ``nnz`` pairs.

    The shape is the 20M benchmark preset (200,000 users x 50,000 items) scaled by
    ``nnz / 20M`` in both directions, so 20M is the benchmark set itself and smaller sizes
    keep its 4:1 user:item ratio and 100 pairs per user on average. For small sizes the
    item count is raised to at least 4 x the mean pairs per user (at most 25% density), so
    that users keep unobserved items to draw negatives from (1M and up are unaffected).

    Parameters
    ----------
    nnz : int

    Returns
    -------
    (int, int, int)
    """
    from bpr_numpy.datasets import SYNTHETIC_PRESETS

    n_users, n_items, full = SYNTHETIC_PRESETS["benchmark"]
    s = nnz / full
    users = max(1, round(n_users * s))
    items = max(2, round(n_items * s), math.ceil(4 * nnz / users))
    return users, items, int(nnz)


def synthetic_data(nnz: int, seed: int = 0, log: TextIO | None = None) -> sp.csr_matrix:
    """The power-law synthetic set of :func:`bpr_numpy.datasets.synthetic` at ``nnz`` pairs."""
    from bpr_numpy.datasets import synthetic

    log = sys.stderr if log is None else log
    n_users, n_items, nnz = synthetic_shape(nnz)
    t0 = time.perf_counter()
    data = synthetic(n_users, n_items, nnz, random_state=seed)
    csr = canonical_csr(data.matrix)
    print(f"generated synthetic {n_users:,} users x {n_items:,} items, {nnz:,} pairs in "
          f"{time.perf_counter() - t0:.1f} s", file=log, flush=True)
    return csr


def parse_size(text: str) -> int:
    """``"20M"`` -> 20_000_000, ``"500k"`` -> 500_000, ``"12345"`` -> 12345."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([kKmM]?)\s*", text)
    if not m:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 500k, 5M)")
    mult = {"": 1, "k": 10**3, "m": 10**6}[m.group(2).lower()]
    return int(round(float(m.group(1)) * mult))


def _int_list(text: str) -> list[int]:
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def _lib_list(text: str) -> list[str]:
    names = [x.strip() for x in text.split(",") if x.strip()]
    bad = [n for n in names if n not in ADAPTERS]
    if bad or not names:
        raise argparse.ArgumentTypeError(f"unknown libraries {bad}; choose from {','.join(LIBRARIES)}")
    return names


# --------------------------------------------------------------------------- machine


def machine_lines(adapters: Sequence[Adapter]) -> list[str]:
    """Lines describing the machine and the library versions."""
    cores = os.cpu_count() or 0
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = cores
    mem = ""
    total_kib = None
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemTotal:"):
                    total_kib = int(line.split()[1])
    except OSError:
        pass
    if total_kib:
        mem = f", {total_kib / 2**20:.1f} GiB RAM"
    load = ""
    if hasattr(os, "getloadavg"):
        load = "load average at start " + " ".join(f"{x:.2f}" for x in os.getloadavg())
    import scipy

    lines = [
        f"machine: {cpu_model()}, {cores} cores ({usable} usable){mem}; {platform.system()} "
        f"{platform.release()}; Python {platform.python_version()}",
        f"numpy {np.__version__}, scipy {scipy.__version__}; " + "; ".join(f"{a.name} {a.version()}" for a in adapters),
    ]
    if load:
        lines.append(load)
    return lines


# --------------------------------------------------------------------------- plot


def plot(records: Sequence[FitRecord], path: str | os.PathLike, log: TextIO | None = None) -> bool:
    """PNG: samples/s vs nnz and samples/s vs threads, one line per library.

    Parameters
    ----------
    records : sequence of FitRecord
    path : str or os.PathLike
    log : file-like, optional

    Returns
    -------
    bool
        False (with a message) when matplotlib is not installed.
    """
    log = sys.stderr if log is None else log
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print(f"--plot: matplotlib is not installed, no plot written (`{INSTALL_HINT}`)", file=log)
        return False
    rows = summarize(records)
    fig, (ax_n, ax_t) = plt.subplots(1, 2, figsize=(11, 4.2))
    libs = list(dict.fromkeys(r.library for r in rows))
    threads = sorted({r.threads for r in rows})
    styles = ["-", "--", ":", "-."]
    # vs nnz: synthetic sizes only (MovieLens is a different kind of data), every thread count
    synth = [r for r in rows if r.dataset.startswith("synthetic")]
    for li, lib in enumerate(libs):
        for ti, t in enumerate(threads):
            pts = sorted((r.nnz, r.samples_per_s) for r in synth if r.library == lib and r.threads == t)
            if pts:
                ax_n.plot([p[0] for p in pts], [p[1] / 1e6 for p in pts], styles[ti % 4], marker="o",
                          color=f"C{li}", label=f"{lib}, {t} thr")
    ax_n.set_xscale("log")
    ax_n.set_xlabel("pairs (nnz)")
    ax_n.set_ylabel("M samples/s")
    ax_n.set_title("throughput vs data size" if synth else "throughput vs data size (no synthetic runs)")
    if synth:
        ax_n.legend(fontsize=7)
    # vs threads: the largest data set that was run
    biggest = max(rows, key=lambda r: r.nnz).dataset if rows else None
    for li, lib in enumerate(libs):
        pts = sorted((r.threads, r.samples_per_s) for r in rows if r.dataset == biggest and r.library == lib)
        if pts:
            ax_t.plot([p[0] for p in pts], [p[1] / 1e6 for p in pts], marker="o", color=f"C{li}", label=lib)
    ax_t.set_xticks(threads)
    ax_t.set_xlabel("threads")
    ax_t.set_ylabel("M samples/s")
    ax_t.set_title(f"throughput vs threads ({biggest})")
    ax_t.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    print(f"plot written to {path}", file=log)
    return True


# --------------------------------------------------------------------------- sub-commands


class DataMissing(Exception):
    """A sub-command's data is not there (``all`` skips it, a single sub-command stops)."""


@dataclass
class Section:
    """One sub-command's output."""

    title: str
    data_line: str
    rows: list[Row]
    notes: list[str]
    with_quality: bool = False
    with_nnz: bool = False
    table: tuple[list[str], list[list[str]]] | None = None  # head and body, instead of fit rows


class Session:
    """State of one invocation: options, libraries, cached data sets and measured groups."""

    def __init__(self, args: argparse.Namespace, out: TextIO, log: TextIO) -> None:
        self.args = args
        self.out = out
        self.log = log
        self.adapters, self.skipped = resolve_adapters(args.libs, log)
        if not self.adapters:
            raise SystemExit("no library to benchmark")
        self.records: list[FitRecord] = []
        self._data: dict[int, sp.csr_matrix] = {}
        self._groups: dict[tuple, list[FitRecord]] = {}
        self._warm: set[int] = set()

    def settings(self, epochs: int) -> FitSettings:
        a = self.args
        return FitSettings(factors=a.factors, epochs=epochs, learning_rate=a.learning_rate,
                           regularization=a.regularization, threads=1, seed=a.seed)

    def threads(self, default: Sequence[int]) -> list[int]:
        return list(self.args.threads) if self.args.threads else list(default)

    def epochs(self, default: int) -> int:
        return self.args.epochs if self.args.epochs else default

    def repeats(self) -> int:
        if self.args.repeats:
            return self.args.repeats
        return 1 if self.args.quick else 3

    def warm(self, threads: Sequence[int], settings: FitSettings) -> None:
        todo = [t for t in threads if t not in self._warm]
        if todo:
            warm_up(self.adapters, todo, settings, self.log)
            self._warm.update(todo)

    def synthetic(self, nnz: int) -> sp.csr_matrix:
        if nnz not in self._data:
            path = self.args.interactions
            if path and Path(path).exists() and sp.load_npz(path).nnz == nnz:
                self._data[nnz] = canonical_csr(sp.load_npz(path))
                print(f"loaded {nnz:,} pairs from {path}", file=self.log, flush=True)
            else:
                self._data[nnz] = synthetic_data(nnz, seed=0, log=self.log)
                if path and not Path(path).exists():
                    sp.save_npz(path, self._data[nnz])
        return self._data[nnz]

    def group(self, csr: sp.csr_matrix, dataset: str, threads: Sequence[int], epochs: int,
              test: sp.csr_matrix | None = None) -> list[FitRecord]:
        settings = self.settings(epochs)
        key = (dataset, tuple(threads), settings, self.repeats(), test is not None)
        if key not in self._groups:  # `all` measures the 20M set once for synthetic and scaling
            self.warm(threads, settings)
            recs = run_group(self.adapters, csr, dataset=dataset, threads=threads, repeats=self.repeats(),
                             settings=settings, test=test, log=self.log)
            self._groups[key] = recs
            self.records.extend(recs)
        return self._groups[key]

    def emit(self, section: Section) -> None:
        print(f"\n== {section.title} ==", file=self.out)
        print(section.data_line, file=self.out)
        if section.table:
            print(_render(*section.table), file=self.out)
        else:
            print(format_table(section.rows, with_quality=section.with_quality, with_nnz=section.with_nnz),
                  file=self.out)
        for line in section.notes:
            print(f"  * {line}", file=self.out)
        self.out.flush()
        if self.args.markdown:
            with open(self.args.markdown, "a", encoding="utf-8") as fh:
                fh.write(f"\n### {section.title}\n\n{section.data_line}\n\n")
                fh.write(_render(*section.table, markdown=True) if section.table else
                         format_table(section.rows, with_quality=section.with_quality,
                                      with_nnz=section.with_nnz, markdown=True))
                fh.write("\n\n" + "".join(f"- {line}\n" for line in section.notes))


def cmd_movielens(session: Session) -> Section:
    """ML-100k ua.base (ratings >= 4): speed, memory and quality."""
    a = session.args
    if not Path(a.data).exists():
        raise DataMissing(f"MovieLens 100k not found at {a.data}; pass --data PATH (the ml-100k folder or zip)")
    train, test = load_movielens(a.data)
    epochs = session.epochs(5 if a.quick else 100)
    threads = session.threads([2, 1])
    recs = session.group(train, "movielens", threads, epochs, test=test)
    rows = summarize(recs)
    data_line = (f"data: MovieLens 100k ua.base ratings >= 4: {train.shape[0]:,} users x {train.shape[1]:,} "
                 f"items, {train.nnz:,} pairs (test ua.test ratings >= 4: {test.nnz:,}); factors {a.factors}, "
                 f"lr {a.learning_rate}, reg {a.regularization}, {session.repeats()} repeat(s)")
    return Section("movielens", data_line, rows, table_notes(rows, session.adapters, quality=True),
                   with_quality=True)


def cmd_synthetic(session: Session) -> Section:
    """The 200k x 50k x 20M power-law set (a scaled-down one with --quick): speed and memory."""
    a = session.args
    nnz = max(QUICK_SIZES) if a.quick else SCALING_SIZES[-1]
    csr = session.synthetic(nnz)
    epochs = session.epochs(3)
    threads = session.threads([1, 2])
    recs = session.group(csr, f"synthetic {nnz:,}", threads, epochs)
    rows = summarize(recs)
    data_line = (f"data: bpr_numpy.datasets.synthetic, {csr.shape[0]:,} users x {csr.shape[1]:,} items, "
                 f"{csr.nnz:,} pairs (power law){' [--quick size]' if a.quick else ''}; factors {a.factors}, "
                 f"lr {a.learning_rate}, reg {a.regularization}, {session.repeats()} repeat(s)")
    return Section("synthetic", data_line, rows, table_notes(rows, session.adapters, quality=False))


def cmd_scaling(session: Session) -> Section:
    """samples/s vs nnz (same generator, scaled shape) and vs threads."""
    a = session.args
    sizes = a.sizes or (QUICK_SIZES if a.quick else SCALING_SIZES)
    epochs = session.epochs(3)
    threads = session.threads([1, 2])
    recs: list[FitRecord] = []
    for nnz in sizes:
        recs += session.group(session.synthetic(nnz), f"synthetic {nnz:,}", threads, epochs)
    rows = summarize(recs)
    shapes = "; ".join(f"{n:,}: {u:,} x {i:,}" for u, i, n in map(synthetic_shape, sizes))
    data_line = (f"data: bpr_numpy.datasets.synthetic at each size, shape scaled from 200,000 x 50,000 ({shapes}); "
                 f"factors {a.factors}, lr {a.learning_rate}, reg {a.regularization}, {session.repeats()} repeat(s)")
    return Section("scaling", data_line, rows, table_notes(rows, session.adapters, quality=False), with_nnz=True)


# --------------------------------------------------------------------------- recommend


@dataclass
class RecommendRecord:
    """One timed ``recommend`` call for every user."""

    library: str
    init: str
    threads: int
    repeat: int
    users: int
    seconds: float
    cpu_s: float

    @property
    def users_per_s(self) -> float:
        return self.users / self.seconds if self.seconds > 0 else math.inf


def recommend_factors(csr: sp.csr_matrix, init: str, factors: int, epochs: int, seed: int,
                      log: TextIO) -> Factors:
    """float32 factors for the recommend benchmark.

    ``random``: N(0, 0.1^2) factors and biases, no structure (every item is a contender for
    every user, the worst case for bpr_numpy's early stop). ``trained``: bpr_numpy ``BPR``
    fitted for ``epochs`` epochs on ``csr`` (item norms and biases follow popularity).
    """
    if init == "random":
        rng = np.random.default_rng(seed)
        n_users, n_items = csr.shape
        return Factors((rng.standard_normal((n_users, factors)) * 0.1).astype(np.float32),
                       (rng.standard_normal((n_items, factors)) * 0.1).astype(np.float32),
                       (rng.standard_normal(n_items) * 0.1).astype(np.float32))
    from bpr_numpy import BPR

    t0 = time.perf_counter()
    model = BPR(factors=factors, epochs=epochs, threads=0, random_state=seed).fit(csr, show_progress=False)
    print(f"trained bpr_numpy for {epochs} epochs in {time.perf_counter() - t0:.1f} s (not timed)",
          file=log, flush=True)
    return Factors(model.user_factors, model.item_factors, model.item_biases)


class RecommendRunner:
    """The two libraries' batch ``recommend`` over the same factors and the same liked items.

    bpr_numpy: a ``BPR`` holding the factors, ``recommend(users, n, filter_liked=True,
    user_items=csr)`` (the matrix is validated inside the timed call). implicit 0.7:
    ``implicit.cpu.bpr.BayesianPersonalizedRanking`` with ``user_factors = [U, 1]`` and
    ``item_factors = [V, b]`` (its bias column, see :class:`ImplicitAdapter`), so it scores
    ``U V^T + b`` too, in one sgemm (float32 rounding differs in the last bits);
    ``recommend(userids, user_items[userids], N=n, filter_already_liked_items=True)``, the
    row slice taken before the timer.
    """

    def __init__(self, csr: sp.csr_matrix, f: Factors, with_implicit: bool) -> None:
        from bpr_numpy import BPR

        self.csr = csr
        self.users = np.arange(csr.shape[0])
        self.ours = BPR(factors=f.user_factors.shape[1], threads=1)
        self.ours.user_factors, self.ours.item_factors, self.ours.item_biases = (
            f.user_factors, f.item_factors, f.item_bias)
        self.theirs = None
        if with_implicit:
            from implicit.cpu.bpr import BayesianPersonalizedRanking

            ones = np.ones((csr.shape[0], 1), np.float32)
            self.theirs = BayesianPersonalizedRanking(factors=f.user_factors.shape[1], dtype=np.float32)
            self.theirs.user_factors = np.ascontiguousarray(np.hstack([f.user_factors, ones]))
            self.theirs.item_factors = np.ascontiguousarray(np.hstack([f.item_factors, f.item_bias[:, None]]))
            self.liked_rows = sp.csr_matrix(csr)[self.users]

    def run(self, library: str, threads: int, n: int,
            users: np.ndarray | None = None) -> tuple[np.ndarray, float, float]:
        """Top-n for ``users`` (default all): (items, wall s, CPU s); BLAS held to ``threads``."""
        from threadpoolctl import threadpool_limits

        users = self.users if users is None else users
        with threadpool_limits(threads):
            c0, t0 = time.process_time(), time.perf_counter()
            if library == "bpr_numpy":
                self.ours.threads = threads
                items, _ = self.ours.recommend(users, n=n, filter_liked=True, user_items=self.csr)
            else:
                self.theirs.num_threads = threads
                liked = self.liked_rows if users is self.users else sp.csr_matrix(self.csr)[users]
                items, _ = self.theirs.recommend(users, liked, N=n, filter_already_liked_items=True)
            return np.asarray(items), time.perf_counter() - t0, time.process_time() - c0


def check_same_top_n(f: Factors, csr: sp.csr_matrix, users: np.ndarray, ours: np.ndarray,
                     theirs: np.ndarray) -> tuple[int, int]:
    """How many users get identical lists, and how many get lists equal up to ties.

    Up to ties: position by position, the exact (float64) scores of the two lists differ
    by at most 1e-5 of the user's largest |score| (float32 rounding), and neither list holds
    a liked item.
    """
    identical = tied = 0
    s_all = f.user_factors[users].astype(np.float64) @ f.item_factors.T.astype(np.float64) + f.item_bias
    for a, u in enumerate(users):
        s = s_all[a]
        liked = set(csr.indices[csr.indptr[u]:csr.indptr[u + 1]].tolist())
        if np.array_equal(ours[a], theirs[a]):
            identical += 1
        tol = 1e-5 * np.abs(s).max()
        if not (liked & set(ours[a].tolist()) or liked & set(theirs[a].tolist())) and \
                np.all(np.abs(s[ours[a]] - s[theirs[a]]) <= tol):
            tied += 1
    return identical, tied


def cmd_recommend(session: Session) -> Section:
    """Batch ``recommend`` for every user of the 200k x 50k set (n=10, liked items filtered)."""
    a = session.args
    nnz = max(QUICK_SIZES) if a.quick else SCALING_SIZES[-1]
    csr = session.synthetic(nnz)
    threads = session.threads([1, 2])
    repeats = session.repeats()
    n = 10
    names = [x.name for x in session.adapters if x.name in ("bpr_numpy", "implicit")]
    if "bpr_numpy" not in names:
        raise SystemExit("recommend needs bpr_numpy in --libs")
    log = session.log
    records: list[RecommendRecord] = []
    notes: list[str] = []
    lines: list[list[str]] = []
    for init in a.init:
        f = recommend_factors(csr, init, a.factors, session.epochs(3), a.seed, log)
        runner = RecommendRunner(csr, f, "implicit" in names)
        sample = np.random.default_rng(a.seed).choice(csr.shape[0], min(500, csr.shape[0]), replace=False)
        for t in threads:  # warm-up: numba compilation, thread pools
            for lib in names:
                runner.run(lib, t, n, sample[:50])
        if "implicit" in names:
            ours, _, _ = runner.run("bpr_numpy", 1, n, sample)
            theirs, _, _ = runner.run("implicit", 1, n, sample)
            same, tied = check_same_top_n(f, csr, sample, ours, theirs)
            notes.append(f"{init} factors: top-{n} lists of {len(sample)} random users: {same} identical, "
                         f"{tied} equal up to float32 ties")
        for r in range(repeats):
            for t in threads:
                for lib in names:
                    _, sec, cpu = runner.run(lib, t, n)
                    rec = RecommendRecord(lib, init, t, r, csr.shape[0], sec, cpu)
                    records.append(rec)
                    print(f"  [recommend {init} repeat {r + 1}/{repeats} threads {t}] {lib:<9s} {sec:8.2f} s  "
                          f"{rec.users_per_s:10,.0f} users/s  CPU/wall {cpu / sec:4.2f}", file=log, flush=True)
        del runner, f
        gc.collect()
        for t in threads:
            mine = {x.repeat: x for x in records if x.init == init and x.threads == t and x.library == "bpr_numpy"}
            for lib in names:
                recs = [x for x in records if x.init == init and x.threads == t and x.library == lib]
                sec = _mmm([x.seconds for x in recs])
                ratio = _mmm([x.seconds / mine[x.repeat].seconds for x in recs])
                lines.append([init, lib, str(t), _fmt_spread(sec, 2) if len(recs) > 1 else f"{sec[0]:.2f}",
                              f"{statistics.median(x.users_per_s for x in recs):,.0f}",
                              "1" if lib == "bpr_numpy" else (_fmt_spread(ratio, 2) if len(recs) > 1
                                                              else f"{ratio[0]:.2f}"),
                              f"{statistics.median(x.cpu_s / x.seconds for x in recs):.2f}"])
    head = ["factors", "library", "threads", "s (median, min-max)", "users/s", "peer s / bpr_numpy s", "CPU/wall"]
    data_line = (f"data: bpr_numpy.datasets.synthetic, {csr.shape[0]:,} users x {csr.shape[1]:,} items, "
                 f"{csr.nnz:,} liked pairs{' [--quick size]' if a.quick else ''}; recommend for all "
                 f"{csr.shape[0]:,} users, n={n}, liked items filtered; factors {a.factors}, float32; "
                 f"{repeats} repeat(s), libraries alternated, BLAS held to the thread count (threadpoolctl)")
    notes += [
        "s: wall time of one recommend call for every user, after an untimed warm-up call per library and "
        "thread count; peer s / bpr_numpy s from the same repeat, median (min-max): > 1 means bpr_numpy is faster",
        "random factors: N(0, 0.1^2), no item stands out, so bpr_numpy's early stop (Cauchy-Schwarz bound on "
        "the items left) settles almost no user: this is the full product; trained factors: bpr_numpy BPR, "
        f"{session.epochs(3)} epochs on the same pairs, not timed",
        "implicit: user_factors [U, 1], item_factors [V, b], num_threads = threads; its batches are 100 users, "
        "prange over batches with the GIL held around each batch's product and per-user filtering",
    ]
    return Section("recommend", data_line, [], notes, table=(head, lines))


COMMANDS: dict[str, Callable[[Session], Section]] = {
    "movielens": cmd_movielens,
    "synthetic": cmd_synthetic,
    "scaling": cmd_scaling,
    "recommend": cmd_recommend,
}
ALL = ("movielens", "synthetic", "scaling")  # what `all` runs (recommend is a separate, long run)


def build_parser() -> argparse.ArgumentParser:
    """The command-line parser."""
    p = argparse.ArgumentParser(
        prog="python benchmarks/peers.py",
        description="bpr_numpy against implicit, cornac and LightFM: speed, peak memory, quality.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Peers are optional; missing ones are skipped (`" + INSTALL_HINT + "` installs them).")
    p.add_argument("command", choices=[*COMMANDS, "all"])
    p.add_argument("--interactions", default=None, metavar="NPZ",
                   help="load the synthetic pairs from this scipy.sparse.save_npz file when its nnz matches "
                        "(e.g. a saved copy of the 20M set); written there after generating when missing")
    p.add_argument("--init", type=lambda s: [x.strip() for x in s.split(",") if x.strip()],
                   default=["random", "trained"], help="recommend: factors to rank with, random and/or trained "
                                                      "(default: random,trained)")
    p.add_argument("--data", default=str(DEFAULT_DATA), help="MovieLens 100k folder or zip (default: %(default)s)")
    p.add_argument("--repeats", type=int, default=None, help="repeats (default 3; 1 with --quick)")
    p.add_argument("--epochs", type=int, default=None,
                   help="epochs (default: movielens 100 (5 with --quick), synthetic and scaling 3)")
    p.add_argument("--threads", type=_int_list, default=None,
                   help="thread counts, e.g. 1,2 (default: movielens 2,1; synthetic and scaling 1,2)")
    p.add_argument("--factors", type=int, default=64)
    p.add_argument("--learning-rate", type=float, default=0.02)
    p.add_argument("--regularization", type=float, default=0.02)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--libs", type=_lib_list, default=list(LIBRARIES),
                   help="comma-separated, alternated in this order (default: " + ",".join(LIBRARIES) + ")")
    p.add_argument("--sizes", type=lambda s: [parse_size(x) for x in s.split(",") if x.strip()], default=None,
                   help="scaling sizes, e.g. 1M,5M,20M (default; --quick: 100k,200k,400k)")
    p.add_argument("--quick", action="store_true", help="small sizes, 1 repeat, 5 MovieLens epochs: a smoke run")
    p.add_argument("--markdown", default=None, metavar="PATH", help="append the tables as Markdown to PATH")
    p.add_argument("--plot", default=None, metavar="PATH", help="PNG of samples/s vs nnz and vs threads")
    return p


def main(argv: Sequence[str] | None = None, out: TextIO | None = None, log: TextIO | None = None) -> list[Section]:
    """Run a sub-command; print the machine, then one table per sub-command.

    Parameters
    ----------
    argv : sequence of str, optional
        Arguments (default: ``sys.argv[1:]``).
    out, log : file-like, optional
        Tables (default stdout) and progress/skip messages (default stderr).

    Returns
    -------
    list of Section
    """
    out = sys.stdout if out is None else out
    log = sys.stderr if log is None else log
    args = build_parser().parse_args(argv)
    for name in ("repeats", "epochs", "factors"):
        v = getattr(args, name)
        if v is not None and v < 1:
            raise SystemExit(f"--{name} must be >= 1")
    session = Session(args, out, log)
    header = machine_lines(session.adapters)
    for line in header:
        print(line, file=out)
    for msg in session.skipped:
        print(msg, file=out)
    if args.markdown:
        with open(args.markdown, "a", encoding="utf-8") as fh:
            fh.write(f"\n## peers.py {' '.join(sys.argv[1:] if argv is None else argv)}\n\n")
            fh.write("".join(f"- {line}\n" for line in header + session.skipped))
    names = list(ALL) if args.command == "all" else [args.command]
    sections = []
    for name in names:
        try:
            sections.append(COMMANDS[name](session))
        except DataMissing as exc:
            if args.command != "all":
                raise SystemExit(str(exc)) from None
            print(f"\nskipping {name}: {exc}", file=out)
            continue
        session.emit(sections[-1])
    # versions again: numba's threading layer is only known once a parallel kernel has run
    versions = "versions after the runs: " + "; ".join(f"{a.name} {a.version()}" for a in session.adapters)
    print("\n" + versions, file=out)
    if args.markdown:
        with open(args.markdown, "a", encoding="utf-8") as fh:
            fh.write(f"\n{versions}\n")
    if args.plot:
        plot(session.records, args.plot, log)
    return sections


if __name__ == "__main__":
    main()
