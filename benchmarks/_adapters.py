"""The peer libraries behind one interface: what every library is asked to do, how each adapter maps it
onto the library's own parameters, and how a fitted model is read back as plain factors.

Used by ``peers.py`` (and, through it, ``ab_speed.py``); every mapping is documented on its adapter.
"""

from __future__ import annotations

import importlib
import sys
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Sequence, TextIO

import numpy as np
import scipy.sparse as sp

INSTALL_HINT = "pip install -e .[bench]"
LIBRARIES = ("bpr_numpy", "implicit", "cornac", "lightfm")


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
        # The array is ``item_biases`` since the redesign (``item_bias`` before, now the flag):
        # ab_speed.py runs this adapter on older checkouts too.
        biases = model.item_biases if hasattr(model, "item_biases") else model.item_bias
        return Factors(model.user_factors, model.item_factors, biases)

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
    #: LightFM's ``loss`` argument ("bpr" here; benchmarks/gowalla.py also runs "warp").
    loss = "bpr"

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
        return LightFM(no_components=settings.factors, loss=self.loss, learning_schedule="adagrad",
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
