"""The BPR estimator: fit, continue, score, recommend, save and load."""

from __future__ import annotations

import json
import os
import sys
import tempfile
import threading
import time
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, replace
from typing import Callable, Mapping

import numpy as np
import scipy.sparse as sp

from .hybrid import Features
from ._files import give_ordinary_mode
from ._validation import as_user_items, check_index_array, csr_from_arrays, read_npz
from . import sampling
from .objective import LOSSES, OPTIMIZERS, OptimizerState, Regularization, loss_code
from .sampling import SAMPLERS
from ._parameters import INT64_MAX, check_allocation, check_parameters, check_random_state

__all__ = ["BPR", "EpochReport", "TrainingDivergedError", "FORMAT_NAME", "FORMAT_VERSION"]

FORMAT_NAME = "bpr_numpy.model"
FORMAT_VERSION = 1

# One parallel epoch at a time in the process: numba's workqueue layer aborts on concurrent
# parallel regions (two models fitted from two Python threads), and on a machine's few cores two
# Hogwild fits gain nothing from overlapping. Re-entrant: a callback may fit another model.
_PARALLEL_LOCK = threading.RLock()

# Every entry BPR.save may write into a model file.
_MODEL_ENTRIES = frozenset({"meta", "user_factors", "item_factors", "item_bias", "user_items_indptr",
                            "user_items_indices", "user_ids", "item_ids", "item_titles", *Features.ENTRIES})

#: The trained arrays, in the order of ``BPR._parameters()`` (the embeddings only with side features).
_PARAMETER_NAMES = ("user_factors", "item_factors", "item_bias", "user_embeddings", "item_embeddings",
                    "item_bias_embeddings")

#: Chunks per kernel call: about 0.1 s of work on one thread, so Ctrl-C is answered quickly.
_CHUNKS_PER_CALL = 64


class TrainingDivergedError(FloatingPointError):
    """Training produced NaN or infinite parameters."""


@dataclass(frozen=True)
class EpochReport:
    """What one epoch did; passed to ``fit``'s callback and kept in ``history_``.

    Attributes
    ----------
    epoch : int
        1-based count of epochs this model has trained, over all calls.
    loss : float
        Mean pair loss ``ell(x_uij)`` over the epoch's applied samples, each
        taken just before its update (the data term; regularisation excluded).
    ordered_fraction : float
        Fraction of applied samples with ``x_uij > 0``: a running estimate of
        the *training* AUC, not a test metric.
    skipped : int
        Samples drawn but not applied because no negative could be found
        (a user who holds every item, or ``MAX_NEGATIVE_TRIES`` misses).
    samples : int
        Samples drawn (applied + skipped).
    seconds : float
        Wall-clock time of the epoch's kernel.
    samples_per_second : float
    metric : str or None
        Name of the validation metric, when ``fit`` was given ``validation``.
    validation : float or None
        Its value after this epoch (None on epochs that were not evaluated).
    """

    epoch: int
    loss: float
    ordered_fraction: float
    skipped: int
    samples: int
    seconds: float
    samples_per_second: float
    metric: str | None = None
    validation: float | None = None

    def __str__(self) -> str:
        text = (f"epoch {self.epoch:4d}  loss {self.loss:.4f}  ordered {self.ordered_fraction:.4f}  "
                f"skipped {self.skipped}  {self.seconds:.3f} s  {self.samples_per_second / 1e6:.2f} M samples/s")
        if self.validation is not None:
            text += f"  {self.metric} {self.validation:.4f}"
        return text


class _Validation:
    """Per-epoch validation for ``fit``: scores, keeps the best factors, decides when to stop."""

    def __init__(self, validation, metric: str, patience: int | None, every: int, shape: tuple[int, int]):
        from . import metrics

        if not isinstance(validation, (tuple, list)) or len(validation) != 2:
            raise TypeError("validation must be a pair (train_positives, validation_positives)")
        self.train = as_user_items(validation[0], "validation[0] (train positives)", require_positive=False)
        self.valid = as_user_items(validation[1], "validation[1] (validation positives)")
        for name, m in (("validation[0]", self.train), ("validation[1]", self.valid)):
            if m.shape != shape:
                raise ValueError(f"{name} has shape {m.shape} but user_items has shape {shape}")
        if not isinstance(metric, str):
            raise TypeError(f"metric must be a string such as 'ndcg@10', got {type(metric).__name__}")
        name, at, k = metric.partition("@")
        top_k = name in ("precision", "recall", "ndcg", "map", "hit_rate", "coverage")
        if (name not in metrics.METRIC_NAMES or (at and not top_k)
                or (at and (not k.isdigit() or int(k) < 1))):
            raise ValueError(f"unknown validation metric {metric!r}; use one of {', '.join(metrics.METRIC_NAMES)}, "
                             "with @k for the top-k ones (e.g. 'ndcg@10')")
        self.name, self.k = name, int(k) if at else 10
        self.key = f"{name}@{self.k}" if top_k else name
        for label, value, low in (("patience", patience, 1), ("validate_every", every, 1)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, np.integer))
                                      or value < low):
                raise ValueError(f"{label} must be an integer >= {low}, got {value!r}")
        self.patience, self.every = patience, every
        self.best_score = -np.inf
        self.best_epoch: int | None = None
        self.best_params: tuple[np.ndarray, ...] | None = None
        self.seen = 0

    def after_epoch(self, model: "BPR", report: EpochReport) -> tuple[EpochReport, bool]:
        from . import metrics

        self.seen += 1
        if self.seen % self.every:
            return report, False
        value = float(metrics.evaluate(model, self.train, self.valid, k=self.k, metrics=[self.name])[self.key])
        report = replace(report, metric=self.key, validation=value)
        if value > self.best_score:  # NaN (no evaluable user) never counts as an improvement
            self.best_score, self.best_epoch = value, report.epoch
            self.best_params = [a.copy() for a in model._parameters()]
        stop = self.patience is not None and report.epoch - (self.best_epoch or 0) >= self.patience \
            and self.best_epoch is not None
        return report, stop

    def restore_best(self, model: "BPR") -> None:
        if self.best_params is not None:
            model._set_parameters(self.best_params)
        model.best_epoch_ = self.best_epoch
        model.best_score_ = None if self.best_epoch is None else self.best_score


class _Snapshot:
    """A copy of the parameters (and optimiser state) as the last completed epoch left them.

    Kept in preallocated buffers, so an interrupted epoch can be undone: the
    price of "Ctrl-C keeps the last completed epoch" is one more copy of the
    parameters in memory and one copy of them per epoch, which also checks
    that they are finite (one pass over memory instead of two).
    """

    def __init__(self, model: "BPR") -> None:
        self.model = model
        self.live = self._arrays()
        self.n_parameters = len(model._parameters())
        self.saved = [np.empty_like(a) for a in self.live]

    def _arrays(self) -> list[np.ndarray]:
        m = self.model
        state = m._optimizer_state
        extra = [a for a in state.kernel_args()[1:] if a.size] if state is not None and state.code else []
        return [*m._parameters(), *extra]

    def take(self) -> int:
        """Copy the live arrays; return the index of the first parameter array with NaN/inf, or -1."""
        from ._kernels import _copy_finite

        bad = -1
        for k, (src, dst) in enumerate(zip(self.live, self.saved)):
            if k < self.n_parameters and src.size:
                if not _copy_finite(src.reshape(-1), dst.reshape(-1)) and bad < 0:
                    bad = k
            else:
                np.copyto(dst, src)
        return bad

    def restore(self) -> None:
        for dst, src in zip(self.live, self.saved):
            np.copyto(dst, src)


def _resolve_seed(random_state) -> int:
    if random_state is None:
        return int(np.random.SeedSequence().generate_state(1, np.uint64)[0] >> np.uint64(1))
    if isinstance(random_state, np.random.Generator):
        return int(random_state.integers(0, 2**63 - 1))
    check_random_state("random_state", random_state)
    return int(random_state)


def _check_epochs(epochs) -> None:
    if isinstance(epochs, bool) or not isinstance(epochs, (int, np.integer)) or not 0 <= epochs <= INT64_MAX:
        raise ValueError(f"epochs must be a non-negative integer below 2**63, got {epochs!r}")


@contextmanager
def _numba_threads(threads: int):
    """Run this Python thread's numba parallel regions on ``threads`` threads (numba keeps the
    count per calling thread). The regions themselves take :data:`_PARALLEL_LOCK`."""
    import numba

    previous = numba.get_num_threads()
    numba.set_num_threads(threads)
    try:
        yield
    finally:
        numba.set_num_threads(previous)


_INIT_BLOCK = 16384  # rows per generator of the initial factors
_ALIGN = 64  # bytes: a cache line


def _aligned_empty(shape, dtype) -> np.ndarray:
    """An uninitialised C-contiguous array whose data starts on a cache line.

    numpy's allocations start 16 bytes past one, so every 256-byte factor row (64 float32)
    spans five lines instead of four, and the kernels' row prefetch (one per line) misses the
    fifth; two threads also share the line between neighbouring rows.
    """
    dtype = np.dtype(dtype)
    count = int(np.prod(shape, dtype=np.int64))
    buffer = np.empty(count * dtype.itemsize + _ALIGN, np.uint8)
    offset = -buffer.ctypes.data % _ALIGN
    return buffer[offset:offset + count * dtype.itemsize].view(dtype).reshape(shape)


def _kernel_ready(a: np.ndarray, dtype) -> np.ndarray:
    """``a`` itself when the kernels can train it in place (dtype, C order, writeable, line-aligned), else a copy."""
    if a.dtype == dtype and a.flags.c_contiguous and a.flags.writeable and a.ctypes.data % _ALIGN == 0:
        return a
    out = _aligned_empty(a.shape, dtype)
    out[...] = a
    return out


def _normal_rows(seed: int, stream: int, rows: int, factors: int, std: float, dtype, threads: int) -> np.ndarray:
    """``rows x factors`` normal draws of standard deviation ``std``, in ``dtype``, on ``threads`` threads.

    Blocks of :data:`_INIT_BLOCK` rows each have their own generator seeded by ``(seed, stream,
    block)``, so the values do not depend on the thread count; numpy fills them without the GIL.
    Drawn in the model's dtype (numpy's float32 ziggurat for float32): 16M float64 normals then a
    cast took 0.3 s on 20M pairs (a tenth of an epoch), this takes 0.1 s on two threads. (A numba
    Box-Muller fill was slower: 0.41 s on one thread.)
    """
    out = _aligned_empty((rows, factors), dtype)

    def fill(block: int) -> None:
        part = out[block * _INIT_BLOCK:(block + 1) * _INIT_BLOCK]
        np.random.default_rng([seed, stream, block]).standard_normal(part.shape, dtype=dtype, out=part)
        with np.errstate(over="ignore"):  # an overflow is reported by _init_factors, naming init_std
            part *= dtype.type(std)

    blocks = range((rows + _INIT_BLOCK - 1) // _INIT_BLOCK)
    if threads == 1 or len(blocks) == 1:
        for block in blocks:
            fill(block)
    else:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(fill, blocks))
    return out


def _membership_bitmap(indptr: np.ndarray, indices: np.ndarray, n_items: int) -> np.ndarray | None:
    """The samplers' bitmap of positives (:func:`bpr_numpy._kernels._membership_bitmap`), or None.

    A bit per (user, item) answers "is j a positive of u?" in one load where the binary search
    of u's row takes several dependent ones (18% of an epoch on MovieLens 100k). It is built
    only when it is no bigger than twice the CSR's index array (density >= 1/64 with int32
    indices): on sparse catalogues it would cost far more memory than the interactions.
    """
    from . import _kernels

    n_users = indptr.shape[0] - 1
    if n_users * ((n_items + 63) // 64) * 8 > 2 * indices.nbytes:
        return None
    return _kernels._membership_bitmap(indptr, indices, n_items)


#: Bytes of factor rows and interactions above which the kernels fetch each run's rows batches
#: ahead (``_kernels._prefetch_runs``): +18% on 20M pairs (230 MB), -2.5% on MovieLens 100k
#: (1 MB, all in cache). A few times the per-core caches of the machines we measure on.
_PREFETCH_RUNS_BYTES = 4 << 20


def _beyond_cache(*arrays: np.ndarray) -> bool:
    return sum(a.nbytes for a in arrays) > _PREFETCH_RUNS_BYTES


def _available_threads() -> int:
    import numba

    return int(numba.config.NUMBA_NUM_THREADS)


class BPR:
    """Matrix factorisation trained with Bayesian Personalized Ranking.

    Learns user factors ``w_u``, item factors ``h_i`` and (optionally) item
    biases ``b_i`` so that ``x_ui = w_u . h_i + b_i`` ranks each user's observed
    items above the others (Rendle et al., UAI 2009). SGD over sampled
    triplets ``(u, i, j)``, in numba, float32 by default, Hogwild over threads.
    The math is :mod:`bpr_numpy.objective`.

    Parameters
    ----------
    factors : int, default 64
        Latent dimensions.
    learning_rate : float, default 0.02
        SGD step size.
    regularization : float or mapping, default 0.02
        L2 strength (``lambda / 2`` convention). A float applies to all roles;
        a mapping may set ``user``, ``positive``, ``negative`` and ``bias``
        separately (missing roles are 0).
    epochs : int, default 100
        Epochs for :meth:`fit`; one epoch draws as many triplets as there
        are positives.
    loss : {"bpr", "sigmoid", "warp"}, default "bpr"
        ``"bpr"`` is BPR-Opt, ``-ln sigma(x)``; ``"sigmoid"`` is ``1 - sigma(x)``;
        ``"warp"`` is WARP as LightFM does it: negatives are drawn (by
        ``sampler``, ``"uniform"`` or ``"popularity"``) until one violates the
        margin ``x_uj > x_ui - 1`` or ``max_sampled`` draws are made; the
        hinge ``max(0, 1 - x_uij)`` is weighted by
        ``log(floor((n_items - 1) / draws))`` (:func:`bpr_numpy.objective.warp_weight`).
    sampler : str, default "uniform"
        Negative sampling, one of :data:`bpr_numpy.sampling.SAMPLERS`:
        ``"uniform"`` (j uniform, resampled while a known positive: the
        paper's), ``"uniform-skip"`` (cornac's), ``"popularity"`` and
        ``"popularity-skip"`` (j drawn in proportion to ``count(j) **
        popularity_exponent``; the skip variant with exponent 1 is
        implicit's), ``"dns"`` (best-scored of ``dns_candidates`` uniform
        negatives) and ``"aobpr"`` (Rendle & Freudenthaler's adaptive
        oversampling). Definitions in :mod:`bpr_numpy.sampling`.
    popularity_exponent : float, default 1.0
        ``alpha`` of the popularity samplers.
    dns_candidates : int, default 5
        Candidates per draw of ``"dns"``; at most 1024
        (:data:`bpr_numpy._parameters.MAX_CANDIDATES`), so that one kernel
        call stays short enough for Ctrl-C to be seen.
    aobpr_lambda : float, default 0.05
        Scale of AOBPR's geometric rank law, as a fraction of the number of
        items (``lambda = aobpr_lambda * n_items``); at most 1e6 (the law is
        uniform to 1e-6 there).
    max_sampled : int, default 10
        WARP's draws per positive before giving up (LightFM's default); at
        most 1024, as ``dns_candidates``.
    optimizer : {"sgd", "adagrad", "adam"}, default "sgd"
        Update rule (see :mod:`bpr_numpy.objective`): plain SGD, AdaGrad with
        per-element accumulators starting at 1 (LightFM's), or lazy Adam with
        per-row step counts.
    learning_rate_decay : float, default 1.0
        Epoch ``e`` (from 0) uses ``learning_rate * learning_rate_decay ** e``.
    user_run : int, default 16
        Consecutive samples drawn for the same user: a uniform observed pair
        (u, i), then ``user_run - 1`` more samples of u, each with its own
        positive (uniform over u's items) and negative. Every sample has the
        bootstrap's distribution (pair uniform over all positives) whatever
        the value; runs only keep u's factors in cache. 1 gives fully
        independent samples (Rendle's bootstrap). On 20M interactions 16 is
        1.7x faster than 1; on MovieLens 100k quality was the same within
        seed-to-seed spread (README). At most 32.
    item_bias : bool, default True
        Learn an item bias ``b_i``.
    init_std : float or None, default None
        Standard deviation of the normal initial factors; None means
        ``1 / sqrt(factors)``, so initial scores have the same spread
        whatever the number of factors.
    dtype : numpy float32 or float64, default float32
        Precision of the parameters and of the SGD arithmetic.
    threads : int, default 0
        Threads for training; 0 means all the cores numba may use. 1 runs a
        serial kernel whose results are bitwise reproducible for a given
        ``random_state``; more threads run Hogwild (lock-free), whose results
        vary slightly from run to run, as in every parallel BPR.
    random_state : int, numpy Generator or None
        Seed of the initialisation and of the triplet streams: an int in
        ``[0, 2**63)`` (larger ones are refused rather than reduced, which
        would give two seeds one stream).
    identity : bool or {"users", "items"}, default True
        With side features (``fit(..., user_features=, item_features=)``):
        give every user and item an identity feature besides its metadata, so
        the plain model is the special case of no metadata. False makes a side
        with metadata metadata-only (cold start: it can score rows never seen);
        ``"users"`` or ``"items"`` keeps identities on that side only.
    normalize_features : bool, default False
        Scale each feature row to unit L1 norm (identity included), as LightFM
        does. Off by default: on MovieLens 100k with the default
        regularisation it cost 0.07 validation AUC (the identity's weight
        drops to ``1 / (1 + features)`` while every touched feature row keeps
        its full penalty; ``benchmarks/stackexchange.py``). See
        :mod:`bpr_numpy.hybrid`.

    Attributes
    ----------
    user_factors : ndarray, shape (n_users, factors)
    item_factors : ndarray, shape (n_items, factors)
    user_ids, item_ids : ndarray or None
        Optional maps from row (user) / column (item) index to the data's raw
        id (int64 or str); saved and loaded with the model. None when unknown.
    item_titles : ndarray of str or None
        Optional item titles, aligned with the item columns.
    item_bias : ndarray, shape (n_items,)
        The learned item biases; zeros when constructed with
        ``item_bias=False`` (the flag itself is kept as ``use_item_bias``).

        These arrays may be replaced or edited; every method checks their
        shapes and dtypes (float32 or float64) before any kernel reads them
        and names the array that does not fit. ``save`` refuses NaN or
        infinite values, and ``recommend`` names the array they come from.
    history_ : list of EpochReport
        One report per epoch trained, across fit and partial_fit.
    user_embeddings, item_embeddings, item_bias_embeddings : ndarray or None
        With side features, the trained feature embeddings; ``user_factors``,
        ``item_factors`` and ``item_bias`` are then their sums over each row's
        features (kept up to date after every epoch). None without features.

    Notes
    -----
    Defaults were chosen on MovieLens 100k (``ua.base``, ratings >= 4) by a
    grid over learning rate, regularisation (per role) and epochs, scored by
    full AUC and precision@10 on a validation split carved out of ``ua.base``
    (never ``ua.test``); see the README.
    """

    def __init__(
        self,
        factors: int = 64,
        learning_rate: float = 0.02,
        regularization: "float | Mapping[str, float]" = 0.02,
        epochs: int = 100,
        loss: str = "bpr",
        sampler: str = "uniform",
        user_run: int = 16,
        popularity_exponent: float = 1.0,
        dns_candidates: int = 5,
        aobpr_lambda: float = 0.05,
        max_sampled: int = 10,
        optimizer: str = "sgd",
        learning_rate_decay: float = 1.0,
        item_bias: bool = True,
        init_std: float | None = None,
        dtype=np.float32,
        threads: int = 0,
        random_state=None,
        identity: "bool | str" = True,
        normalize_features: bool = False,
    ) -> None:
        self.factors = factors
        self.learning_rate = learning_rate
        self.regularization = regularization
        self.epochs = epochs
        self.loss = loss
        self.sampler = sampler
        self.user_run = user_run
        self.popularity_exponent = popularity_exponent
        self.dns_candidates = dns_candidates
        self.aobpr_lambda = aobpr_lambda
        self.max_sampled = max_sampled
        self.optimizer = optimizer
        self.learning_rate_decay = learning_rate_decay
        self.use_item_bias = item_bias
        self.init_std = init_std
        self.dtype = dtype
        self.threads = threads
        self.random_state = random_state
        self.identity = identity
        self.normalize_features = normalize_features
        self._check_params()
        self.user_factors: np.ndarray | None = None
        self.item_factors: np.ndarray | None = None
        self.item_bias: np.ndarray | None = None
        self.history_: list[EpochReport] = []
        self._user_items: sp.csr_matrix | None = None
        self._epochs_done = 0
        self._seed: int | None = None
        self._diverged: str | None = None
        self._item_norms: np.ndarray | None = None
        self._optimizer_state: OptimizerState | None = None
        self._features: Features | None = None
        self.interrupted_ = False
        self.best_epoch_: int | None = None
        self.best_score_: float | None = None
        # Raw-id maps (row/column index -> the data's own id) and item titles:
        # optional, set by whoever knows them (the CLI's ``train`` does), saved
        # with the model so a loaded model can answer in the data's ids.
        self.user_ids: np.ndarray | None = None
        self.item_ids: np.ndarray | None = None
        self.item_titles: np.ndarray | None = None

    # ------------------------------------------------------------------ parameters
    # Constructor argument -> attribute. ``item_bias`` the argument is stored as
    # ``use_item_bias`` because ``item_bias`` the attribute is the learned array.
    _PARAMS = {"factors": "factors", "learning_rate": "learning_rate", "regularization": "regularization",
               "epochs": "epochs", "loss": "loss", "sampler": "sampler", "user_run": "user_run",
               "popularity_exponent": "popularity_exponent", "dns_candidates": "dns_candidates",
               "aobpr_lambda": "aobpr_lambda", "max_sampled": "max_sampled", "optimizer": "optimizer",
               "learning_rate_decay": "learning_rate_decay", "item_bias": "use_item_bias",
               "init_std": "init_std", "dtype": "dtype", "threads": "threads", "random_state": "random_state",
               "identity": "identity", "normalize_features": "normalize_features"}

    def get_params(self, deep: bool = True) -> dict:
        """Hyperparameters as a dict of constructor arguments (scikit-learn convention)."""
        return {name: getattr(self, attr) for name, attr in self._PARAMS.items()}

    def set_params(self, **params) -> "BPR":
        """Set hyperparameters by constructor argument name; validated at once."""
        for name, value in params.items():
            if name not in self._PARAMS:
                raise ValueError(f"unknown parameter {name!r}; valid: {', '.join(self._PARAMS)}")
            setattr(self, self._PARAMS[name], value)
        self._check_params()
        return self

    def __repr__(self) -> str:
        defaults = BPR.__init__.__defaults__
        shown = []
        for (name, attr), default in zip(self._PARAMS.items(), defaults):
            value = getattr(self, attr)
            if value is not default and value != default:
                shown.append(f"{name}={value.__name__ if isinstance(value, type) else repr(value)}")
        return f"BPR({', '.join(shown)})"

    def _check_params(self) -> None:
        """Check every hyperparameter against :data:`bpr_numpy._parameters.CONSTRAINTS`, then the joint rules."""
        check_parameters(self.get_params())
        if self.loss == "warp" and self.sampler not in ("uniform", "popularity"):
            raise ValueError(f"loss='warp' draws its own negatives until one violates the margin: "
                             f"use sampler='uniform' or 'popularity', not {self.sampler!r}")

    # ------------------------------------------------------------------ state
    @property
    def user_embeddings(self) -> np.ndarray | None:
        return None if self._features is None else self._features.user_embeddings

    @property
    def item_embeddings(self) -> np.ndarray | None:
        return None if self._features is None else self._features.item_embeddings

    @property
    def item_bias_embeddings(self) -> np.ndarray | None:
        return None if self._features is None else self._features.item_bias_embeddings

    @property
    def n_users(self) -> int:
        self._check_fitted()
        return self.user_factors.shape[0]

    @property
    def n_items(self) -> int:
        self._check_fitted()
        return self.item_factors.shape[0]

    @property
    def user_items(self) -> sp.csr_matrix | None:
        """The interactions last trained on (or loaded with the model), as canonical CSR; None if unknown.

        ``recommend`` filters these by default. Treat the matrix as read-only:
        it may share memory with the matrix given to ``fit``.
        """
        return self._user_items

    @property
    def is_fitted(self) -> bool:
        """True once factors exist (after fit, partial_fit or load)."""
        return self.user_factors is not None

    def _check_fitted(self) -> None:
        if self.user_factors is None:
            raise RuntimeError("this BPR model is not fitted yet: call fit(user_items) first")
        if self._diverged:
            raise TrainingDivergedError(self._diverged)
        self._check_parameter_arrays()

    def _check_parameter_arrays(self) -> None:
        """Check that the learned arrays fit together before any kernel indexes them.

        Every public path reaches the arrays through :meth:`_check_fitted`, and a user may have
        replaced one (``model.item_bias = ...``) or reshaped it in place: a kernel trusts the
        shapes it is given, so a bias shorter than the catalogue would be read and written past
        its end. A few comparisons, so it runs on every call.
        """
        arrays = dict(zip(_PARAMETER_NAMES, self._parameters()))
        for name, a in arrays.items():
            if not isinstance(a, np.ndarray):
                raise TypeError(f"model.{name} must be a numpy array, got {type(a).__name__}")
            if a.dtype not in (np.float32, np.float64):
                raise TypeError(f"model.{name} has dtype {a.dtype}; the model's arrays hold float32 or float64")
        U, V, b = self.user_factors, self.item_factors, self.item_bias
        f = self.factors
        if U.ndim != 2 or U.shape[1] != f or U.shape[0] < 1:
            raise ValueError(f"model.user_factors has shape {U.shape}; expected (n_users, {f}) (factors={f})")
        if V.ndim != 2 or V.shape[1] != f or V.shape[0] < 1:
            raise ValueError(f"model.item_factors has shape {V.shape}; expected (n_items, {f}) (factors={f})")
        if b.shape != (V.shape[0],):
            raise ValueError(f"model.item_bias has shape {b.shape}; expected ({V.shape[0]},), "
                             "one bias per row of item_factors")
        shape = (U.shape[0], V.shape[0])
        if self._user_items is not None and self._user_items.shape != shape:
            raise ValueError(f"the model's factors are for {shape[0]} users x {shape[1]} items but its "
                             f"interactions (model.user_items) are {self._user_items.shape}")
        for name, expected in (("user_ids", shape[0]), ("item_ids", shape[1]), ("item_titles", shape[1])):
            value = getattr(self, name)
            if value is not None and np.shape(value) != (expected,):
                what = "users (rows of user_factors)" if name == "user_ids" else "items (rows of item_factors)"
                shape = np.shape(value)
                has = f"{shape[0]} entries" if len(shape) == 1 else f"shape {shape}"
                raise ValueError(f"{name} has {has} but the model has {expected} {what}")
        if self._features is not None:
            users, items = self._features.users, self._features.items
            for name, a, expected in (("user_embeddings", arrays["user_embeddings"], (users.n_features, f)),
                                      ("item_embeddings", arrays["item_embeddings"], (items.n_features, f)),
                                      ("item_bias_embeddings", arrays["item_bias_embeddings"], (items.n_features,))):
                if a.shape != expected:
                    raise ValueError(f"model.{name} has shape {a.shape}; expected {expected}")
            if (users.n_rows, items.n_rows) != shape:
                raise ValueError(f"the model's factors are for {shape[0]} users x {shape[1]} items but its side "
                                 f"features are for {users.n_rows} x {items.n_rows}")

    # ------------------------------------------------------------------ training
    def fit(
        self,
        user_items,
        epochs: int | None = None,
        callback: Callable[[EpochReport], object] | None = None,
        show_progress: bool | None = None,
        *,
        validation=None,
        metric: str = "ndcg@10",
        patience: int | None = None,
        validate_every: int = 1,
        user_features=None,
        item_features=None,
    ) -> "BPR":
        """Initialise the factors and train, optionally with validation and early stopping.

        Parameters
        ----------
        user_items : sparse matrix or array_like, shape (n_users, n_items)
            Interactions; stored values > 0 are positives.
        epochs : int, optional
            Overrides the ``epochs`` hyperparameter for this call.
        callback : callable, optional
            Called with each :class:`EpochReport`; returning ``False`` stops
            training after that epoch.
        show_progress : bool, optional
            Print one line per epoch to stderr. Default: when stderr is a
            terminal.
        validation : (train_positives, validation_positives), optional
            Evaluate ``metric`` on ``validation_positives`` (held out from
            ``user_items``), ranking without ``train_positives`` (usually
            ``user_items`` itself), every ``validate_every`` epochs. The
            factors of the best evaluated epoch are kept on the model at the
            end (``best_epoch_``, ``best_score_``), and each report carries the
            metric's value.
        metric : str
            A name of :data:`bpr_numpy.metrics.METRIC_NAMES`, with ``@k`` for
            the top-k ones: ``"ndcg@10"`` (default), ``"precision@10"``,
            ``"auc"``, ``"full_auc"``, ``"mrr"``...
        patience : int, optional
            Stop once this many epochs have passed since the best one. None
            trains all epochs (still keeping the best).
        validate_every : int
            Evaluate every this many epochs.
        user_features, item_features : sparse matrix or 2-D array, optional
            Side features: users x user features, items x item features (any
            finite real values; stored zeros are dropped). Given either, the
            model learns feature embeddings (:mod:`bpr_numpy.hybrid`); a side
            without a matrix is represented by identities. Supports the
            ``"bpr"`` and ``"sigmoid"`` losses, the uniform and popularity
            samplers, and every optimiser.

        Returns
        -------
        BPR
            ``self``.

        Notes
        -----
        After early stopping the factors are those of the best epoch, while
        the epoch counter (which seeds the triplet streams) keeps counting the
        epochs actually trained, so a later ``partial_fit`` draws fresh triplets.
        """
        self._check_params()
        matrix = as_user_items(user_items)
        features = self._build_features(matrix.shape, user_features, item_features)
        tracker = None if validation is None else _Validation(validation, metric, patience, validate_every,
                                                               matrix.shape)
        self._seed = _resolve_seed(self.random_state)
        self._features = features
        self._init_factors(*matrix.shape)
        return self._train(matrix, self.epochs if epochs is None else epochs, callback, show_progress, tracker)

    def partial_fit(
        self,
        user_items,
        epochs: int = 1,
        callback: Callable[[EpochReport], object] | None = None,
        show_progress: bool | None = None,
        *,
        user_features=None,
        item_features=None,
    ) -> "BPR":
        """Train more epochs from the current factors (initialising them if needed).

        ``fit(X, epochs=a)`` followed by ``partial_fit(X, epochs=b)`` draws the
        same triplets as ``fit(X, epochs=a + b)`` (bitwise the same result
        with ``threads=1``).

        Parameters
        ----------
        user_items : sparse matrix or array_like
            Same shape as the data the model was fitted on.
        epochs : int
        callback, show_progress
            As in :meth:`fit`.
        user_features, item_features : optional
            As in :meth:`fit`. A model fitted with features keeps training on
            the ones it was fitted with unless new ones (same columns) are given.

        Returns
        -------
        BPR
            ``self``.
        """
        self._check_params()
        _check_epochs(epochs)  # before anything changes on the model
        matrix = as_user_items(user_items)
        features = self._build_features(matrix.shape, user_features, item_features)
        if self.user_factors is None:
            self._seed = _resolve_seed(self.random_state)
            self._features = features
            self._init_factors(*matrix.shape)
        else:
            self._check_fitted()
            if matrix.shape != (self.n_users, self.n_items):
                raise ValueError(f"user_items has shape {matrix.shape} but the model was fitted on "
                                 f"{(self.n_users, self.n_items)}")
            if features is not None:
                if self._features is None:
                    raise ValueError("this model was fitted without side features: partial_fit takes none")
                # A side not given keeps the features it was fitted with.
                if user_features is None:
                    features.users = self._features.users
                if item_features is None:
                    features.items = self._features.items
                for label, new, old in (("user_features", features.users, self._features.users),
                                        ("item_features", features.items, self._features.items)):
                    if new.n_features != old.n_features:
                        raise ValueError(f"partial_fit's {label} lay out {new.n_features} feature columns "
                                         f"(identities included); the model was fitted with {old.n_features}")
                features.set_embeddings(self._features.embeddings())
                self._features = features
                # The factors follow the new features at once, whether or not an epoch runs.
                self.user_factors, self.item_factors, self.item_bias = features.representations(
                    bool(self.use_item_bias))
                self._item_norms = None
            if self._seed is None:  # a loaded model without its seed continues on a fresh stream
                self._seed = _resolve_seed(self.random_state)
        return self._train(matrix, epochs, callback, show_progress)

    def _check_feature_settings(self) -> None:
        if self.loss not in ("bpr", "sigmoid"):
            raise ValueError(f"side features support loss 'bpr' or 'sigmoid', not {self.loss!r}")
        if sampling.sampler_codes(self.sampler).adaptive:
            raise ValueError(f"side features support the uniform and popularity samplers, not {self.sampler!r}")

    def _build_features(self, shape, user_features, item_features) -> Features | None:
        if user_features is None and item_features is None:
            return None
        self._check_feature_settings()
        return Features.build(shape, user_features, item_features, identity=self.identity,
                              normalize=bool(self.normalize_features))

    def _init_factors(self, n_users: int, n_items: int) -> None:
        dtype = np.dtype(self.dtype)
        rows = (n_users + n_items) if self._features is None else \
            (self._features.users.n_features + self._features.items.n_features)
        factors = int(self.factors)  # a numpy int8 would overflow below, and its sqrt would be float16
        check_allocation(int(rows) * factors * dtype.itemsize, f"factors={factors} ({rows} rows of "
                         f"{dtype.name} factors)")
        std = 1.0 / np.sqrt(factors) if self.init_std is None else float(self.init_std)
        threads = min(self.threads or _available_threads(), _available_threads())
        streams = iter((0, 1))  # users, then items

        def normal(rows: int) -> np.ndarray:
            return _normal_rows(self._seed, next(streams), rows, factors, std, dtype, threads)

        if self._features is not None:
            self._features.init_embeddings(normal)
            self.user_factors, self.item_factors, self.item_bias = self._features.representations(
                bool(self.use_item_bias))
        else:
            self.user_factors = normal(n_users)
            self.item_factors = normal(n_items)
            self.item_bias = _aligned_empty(n_items, dtype)
            self.item_bias[:] = 0
        for name, a in zip(("user_factors", "item_factors"), self._parameters()):
            if not np.isfinite(a).all():  # std * a normal draw can overflow float32 while std itself does not
                raise ValueError(f"init_std={self.init_std} gives {name} infinite values in {dtype.name}; "
                                 "use a smaller init_std")
        self._optimizer_state = None
        self._epochs_done = 0
        self._diverged = None
        self._item_norms = None
        self.history_ = []

    def _train(self, matrix: sp.csr_matrix, epochs: int, callback, show_progress, validation=None) -> "BPR":
        _check_epochs(epochs)
        epochs = int(epochs)  # a numpy integer would make the epoch counter wrap at its width
        if self._epochs_done + epochs > INT64_MAX:  # the kernels seed each epoch's streams with its int64 number
            raise ValueError(f"epochs={epochs} after the {self._epochs_done} already trained would count past 2**63")
        if self._features is not None:  # loss or sampler may have been changed since the features were set
            self._check_feature_settings()
        if show_progress is None:
            show_progress = sys.stderr.isatty()
        self._user_items = matrix
        self._item_norms = None
        dtype = np.dtype(self.dtype)
        # Arrays a user replaced (read-only, strided, another dtype) are copied into what
        # the kernels take, rather than compiling a new kernel or failing inside numba.
        self._set_parameters([_kernel_ready(a, dtype) for a in self._parameters()])
        threads = min(self.threads or _available_threads(), _available_threads())
        user_of = np.repeat(np.arange(matrix.shape[0], dtype=np.int32), np.diff(matrix.indptr))
        state = self._optimizer_state
        # The trained rows: factor rows, or feature-embedding rows with side features.
        rows_u, rows_i = (self.user_factors.shape[0], self.item_factors.shape[0]) if self._features is None else \
            (self._features.users.n_features, self._features.items.n_features)
        if state is None or not state.fits(self.optimizer, rows_u, rows_i, self.user_factors.shape[1],
                                           self.user_factors.dtype):
            # Fresh accumulators: first training, a changed optimiser, or a loaded model (not saved).
            self._optimizer_state = OptimizerState(self.optimizer, rows_u, rows_i, self.user_factors.shape[1],
                                                   dtype=self.user_factors.dtype)
        alias = self._alias_table(matrix)
        # Only samplers that draw negatives ahead of the updates test them against the bitmap.
        draws_ahead = sampling.sampler_codes(self.sampler).adaptive != sampling.ADAPTIVE_AOBPR and \
            self.loss != "warp"
        bitmap = None
        if self._features is None and epochs and draws_ahead:
            bitmap = _membership_bitmap(matrix.indptr, matrix.indices, matrix.shape[1])
        if not epochs:
            if validation is not None:
                validation.restore_best(self)
            return self
        # The thread count is set once for the whole loop: per epoch it cost 1% of a MovieLens
        # 100k fit. The lock is taken per epoch (_run_epoch), so two fits interleave their epochs.
        with _numba_threads(threads) if threads > 1 else nullcontext():
            return self._epoch_loop(matrix, user_of, threads, alias, bitmap, epochs, callback, show_progress,
                                    validation)

    def _epoch_loop(self, matrix, user_of, threads, alias, bitmap, epochs, callback, show_progress,
                    validation) -> "BPR":
        """The epochs of :meth:`_train`, after its setup."""
        total = self._epochs_done + epochs
        # Compile (or load from the cache) outside the epoch timer: a call
        # with zero samples has the same types and does no work.
        # Coerced once: the checks cost 1.5% of a MovieLens 100k fit when done per epoch.
        reg = Regularization.coerce(self.regularization)
        self._run_epoch(matrix, user_of, threads, alias, bitmap, reg, n_samples=0)
        snapshot = _Snapshot(self)
        snapshot.take()
        # Ctrl-C may land anywhere in the loop. Inside an epoch's kernel calls (``completed``
        # false), the model puts back the last completed epoch; anywhere else the live arrays hold
        # a completed epoch, which it keeps. Either way it says so and lets the interrupt go on.
        report, done, completed = None, self._epochs_done, True
        try:
            for _ in range(epochs):
                done = self._epochs_done
                completed = False
                if any(a is not b for a, b in zip(self._parameters(), snapshot.live)):
                    # A callback replaced a parameter array: check it, copy it into what the kernels
                    # take, and snapshot that.
                    self._check_parameter_arrays()
                    self._set_parameters([_kernel_ready(a, self.user_factors.dtype) for a in self._parameters()])
                    snapshot = _Snapshot(self)
                    snapshot.take()
                elif any(a.shape != b.shape for a, b in zip(self._parameters(), snapshot.saved)):
                    self._check_parameter_arrays()  # reshaped in place: names the array
                report = self._run_epoch(matrix, user_of, threads, alias, bitmap, reg)
                completed = True
                self._check_finite(snapshot.take())
                stop = False
                if validation is not None:
                    report, stop = validation.after_epoch(self, report)
                self.history_.append(report)
                if show_progress:
                    print(f"{report}  [{report.epoch}/{total}]", file=sys.stderr, flush=True)
                if callback is not None and callback(report) is False:
                    break
                if stop:
                    break
        except KeyboardInterrupt:
            if not completed:
                snapshot.restore()
                self._epochs_done = done
            elif report is not None and report.epoch == self._epochs_done and \
                    (not self.history_ or self.history_[-1].epoch != report.epoch):
                self.history_.append(report)
            self.interrupted_ = True
            where = f"during epoch {done + 1}" if not completed else f"after epoch {self._epochs_done}"
            print(f"interrupted {where}: the model keeps the factors of epoch {self._epochs_done} "
                  f"(the last one completed)", file=sys.stderr, flush=True)
            raise
        if validation is not None:
            validation.restore_best(self)
        return self

    def _parameters(self) -> list[np.ndarray]:
        """Every trained array: the factors and biases, then (side features) the embeddings."""
        arrays = [self.user_factors, self.item_factors, self.item_bias]
        return arrays if self._features is None else arrays + self._features.embeddings()

    def _set_parameters(self, arrays) -> None:
        self.user_factors, self.item_factors, self.item_bias = arrays[:3]
        if self._features is not None:
            self._features.set_embeddings(arrays[3:])
        self._item_norms = None

    def _alias_table(self, matrix: sp.csr_matrix) -> tuple[np.ndarray, np.ndarray]:
        """The popularity samplers' alias table over ``matrix`` (empty arrays for the other samplers)."""
        if sampling.sampler_codes(self.sampler).candidate != sampling.CANDIDATE_POPULARITY:
            return np.empty(0), np.empty(0, np.int64)
        weights = sampling.popularity_weights(matrix, float(self.popularity_exponent))
        if not weights.sum() > 0:  # no positives at all: nothing is drawn anyway
            weights = np.ones_like(weights)
        return sampling.alias_table(weights)

    def _run_epoch(self, matrix: sp.csr_matrix, user_of: np.ndarray, threads: int,
                   alias: tuple[np.ndarray, np.ndarray], bitmap: np.ndarray | None, reg: Regularization,
                   n_samples: int | None = None) -> EpochReport | None:
        """One epoch of the kernel over ``matrix`` (``reg``: the coerced regularisation).

        ``n_samples=0`` only compiles the kernel and returns None.
        """
        from . import _kernels

        dtype = self.user_factors.dtype.type
        codes = sampling.sampler_codes(self.sampler)
        warm_up = n_samples == 0
        n_samples = matrix.nnz if n_samples is None else n_samples
        chunks = _kernels.n_chunks(n_samples)
        out_loss = np.zeros(chunks)
        out_ordered = np.zeros(chunks, np.int64)
        out_skipped = np.zeros(chunks, np.int64)
        n_items = self.item_factors.shape[0]
        aobpr = codes.adaptive == sampling.ADAPTIVE_AOBPR
        # The epoch runs as several kernel calls over groups of chunks: Ctrl-C is seen between
        # two calls (numba code cannot be interrupted), and AOBPR refreshes its rankings there,
        # every n ln n samples.
        group = sampling.aobpr_refresh_chunks(n_items, max(1, n_samples // max(chunks, 1))) if aobpr \
            else self._chunks_per_call()
        learning_rate = self._learning_rate(self._epochs_done)
        kernel = _kernels._epoch_serial if threads == 1 else _kernels._epoch_parallel
        hybrid = self._features is not None
        if hybrid:
            from . import _hybrid_kernels

            kernel = _hybrid_kernels._hybrid_epoch_serial if threads == 1 else _hybrid_kernels._hybrid_epoch_parallel
        popularity = alias if alias[0].size else None
        opt = self._optimizer_state.kernel_args() if self._optimizer_state.code else None
        adaptive_kind = int(codes.adaptive)
        warp_max_sampled = int(self.max_sampled) if self.loss == "warp" else 0
        no_ranks = (np.zeros((0, 0), np.int32), np.zeros(0))
        prefetch_runs = _beyond_cache(self.user_factors, self.item_factors, matrix.indices)

        def run(chunk_start: int, chunk_stop: int) -> None:
            if hybrid:
                kernel(*self._features.kernel_args(), matrix.indptr, matrix.indices, user_of, n_samples,
                       int(self.user_run), self._seed, self._epochs_done, chunk_start, chunk_stop,
                       dtype(learning_rate), dtype(reg.user), dtype(reg.positive), dtype(reg.negative),
                       dtype(reg.bias), loss_code(self.loss), bool(self.use_item_bias), bool(codes.skip_liked),
                       popularity, self._optimizer_state.kernel_args(), out_loss, out_ordered, out_skipped)
                return
            adaptive = None
            if adaptive_kind or warp_max_sampled:
                ranks, spread = no_ranks
                if aobpr and chunk_stop > chunk_start:
                    ranks, spread = sampling.aobpr_rankings(self.item_factors,
                                                            self.item_bias if self.use_item_bias else None)
                adaptive = (adaptive_kind, warp_max_sampled, int(self.dns_candidates),
                            float(self.aobpr_lambda * n_items), ranks, spread)
            kernel(self.user_factors, self.item_factors, self.item_bias, matrix.indptr, matrix.indices, user_of,
                   n_samples, int(self.user_run), self._seed, self._epochs_done, chunk_start, chunk_stop,
                   dtype(learning_rate), dtype(reg.user), dtype(reg.positive), dtype(reg.negative),
                   dtype(reg.bias), loss_code(self.loss), bool(self.use_item_bias), bool(codes.skip_liked),
                   popularity, adaptive, opt, None, out_loss, out_ordered, out_skipped, bitmap, prefetch_runs)

        start = time.perf_counter()
        with _PARALLEL_LOCK if threads > 1 else nullcontext():
            for c in range(0, max(chunks, 1), group):
                run(c, min(c + group, chunks))
        if hybrid:
            # In place: the epoch snapshot holds these very arrays.
            for live, fresh in zip(self._parameters(), self._features.representations(bool(self.use_item_bias))):
                np.copyto(live, fresh)
        seconds = time.perf_counter() - start
        if warm_up:
            return None
        self._epochs_done += 1
        skipped = int(out_skipped.sum())
        applied = n_samples - skipped
        return EpochReport(
            epoch=self._epochs_done,
            loss=float(out_loss.sum() / applied) if applied else float("nan"),
            ordered_fraction=float(out_ordered.sum() / applied) if applied else float("nan"),
            skipped=skipped,
            samples=n_samples,
            seconds=seconds,
            samples_per_second=n_samples / seconds if seconds > 0 else float("inf"),
        )

    def _learning_rate(self, epoch: int) -> float:
        """The step size of epoch ``epoch`` (from 0): ``learning_rate * learning_rate_decay ** epoch``.

        ValueError when it is not finite in the model's dtype (a decay above 1 grows it without
        bound), rather than training on an infinite step.
        """
        try:
            rate = self.learning_rate * self.learning_rate_decay ** epoch
        except OverflowError:
            rate = float("inf")
        if not abs(rate) <= float(np.finfo(np.dtype(self.dtype)).max):
            raise ValueError(f"the learning rate of epoch {epoch + 1} (learning_rate * learning_rate_decay ** {epoch}"
                             f" with learning_rate_decay={self.learning_rate_decay}) overflows "
                             f"{np.dtype(self.dtype).name}; use learning_rate_decay <= 1")
        return rate

    def _chunks_per_call(self) -> int:
        """Chunks per kernel call: about the work of :data:`_CHUNKS_PER_CALL` chunks of a default fit.

        numba code cannot be interrupted, so Ctrl-C is seen between two calls: a setting whose
        samples cost more (many candidates, wide factors, an adaptive optimiser, dense feature
        rows) runs fewer chunks per call. The chunks and their streams are the same either way.
        """
        candidates = self.dns_candidates if self.sampler == "dns" else self.max_sampled if self.loss == "warp" else 0
        # Python ints: a numpy int8 parameter would overflow in this product.
        work = int(self.factors) * (3 + int(candidates)) * (1 if self.optimizer == "sgd" else 10)
        if self._features is not None:  # a sample touches every feature row of its user and items
            users, items = self._features.users.matrix, self._features.items.matrix
            work *= (users.nnz / users.shape[0] + 2 * items.nnz / items.shape[0]) / 3
        default_work = 64 * 3  # per sample: 64 factors, three rows, plain SGD
        return int(max(1, min(_CHUNKS_PER_CALL, _CHUNKS_PER_CALL * default_work // work)))

    def _check_finite(self, bad: int) -> None:
        """Raise when the epoch just completed left NaN/inf in parameter array ``bad`` (-1: none did)."""
        if bad < 0:
            return
        name = _PARAMETER_NAMES[bad]
        self._diverged = (
            f"training diverged in epoch {self._epochs_done}: {name} holds NaN or infinite values. "
            f"Lower the learning rate (now {self.learning_rate}) or raise the regularization, then fit again."
        )
        raise TrainingDivergedError(self._diverged)

    # ------------------------------------------------------------------ inference
    def score(self, users, items) -> np.ndarray:
        """Scores ``x_ui = w_u . h_i + b_i`` for broadcast arrays of users and items.

        Parameters
        ----------
        users, items : int or array_like of int
            Broadcast against each other (e.g. ``users[:, None]`` with
            ``items[None, :]`` gives a users x items block).

        Returns
        -------
        numpy.ndarray
            Scores in the model's dtype, shaped like the broadcast of the inputs.
        """
        self._check_fitted()
        u = check_index_array(users, self.n_users, "user")
        i = check_index_array(items, self.n_items, "item")
        u, i = np.broadcast_arrays(u, i)
        flat_u, flat_i = u.reshape(-1), i.reshape(-1)
        out = np.einsum("nf,nf->n", self.user_factors[flat_u], self.item_factors[flat_i])
        out += self.item_bias[flat_i]
        return out.reshape(u.shape)

    def _user_items_for(self, user_items) -> sp.csr_matrix | None:
        if user_items is None:
            return self._user_items
        matrix = as_user_items(user_items, require_positive=False)
        if matrix.shape != (self.n_users, self.n_items):
            raise ValueError(f"user_items has shape {matrix.shape}; the model has {(self.n_users, self.n_items)}")
        return matrix

    def recommend(self, users=None, n: int = 10, *, filter_liked: bool = True, user_items=None,
                  user_factors=None):
        """Top-``n`` items for one user or a batch of users.

        Parameters
        ----------
        users : int or array_like of int, optional
            Row indices of trained users. Leave out when ``user_factors`` is given.
        n : int
            Items to return per user.
        filter_liked : bool
            Leave out the items the user interacted with (the training data,
            or ``user_items`` when given).
        user_items : sparse matrix, optional
            The interactions to filter; defaults to the matrix last trained on.
            With ``user_factors``, the new users' own rows, one per vector.
        user_factors : ndarray, shape (factors,) or (n_new, factors), optional
            Vectors of users that are not rows of the model, such as those
            :meth:`fold_in` returns; recommended for instead of ``users``.

        Returns
        -------
        items, scores : numpy.ndarray
            For a single user, 1-D arrays of length <= n, best first. For a
            batch, arrays of shape (len(users), min(n, n_items)); rows with
            fewer candidates are padded with item -1 and score -inf. Ties are
            broken by the lower item index.
        """
        self._check_fitted()
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise ValueError(f"n must be a positive integer, got {n!r}")
        if user_factors is not None:
            if users is not None:
                raise ValueError("pass users (trained rows) or user_factors (new vectors), not both")
            query = self._check_user_vectors(user_factors)
            single = np.ndim(user_factors) == 1
            batch = np.arange(len(query))
            liked = None
            if filter_liked:
                if user_items is None:
                    raise ValueError("filter_liked=True with user_factors needs user_items: the new users' rows "
                                     "(or pass filter_liked=False)")
                liked = as_user_items(user_items, require_positive=False)
                if liked.shape != (len(query), self.n_items):
                    raise ValueError(f"user_items has shape {liked.shape}; expected one row per vector, "
                                     f"{(len(query), self.n_items)}")
        else:
            if users is None:
                raise ValueError("recommend needs users (trained rows) or user_factors (new vectors)")
            u = check_index_array(users, self.n_users, "user")
            if np.ndim(u) > 1:
                raise ValueError(f"users must be an int or a 1-D array of ints, got shape {np.shape(u)}")
            single = np.ndim(u) == 0
            liked = self._user_items_for(user_items) if filter_liked else None
            if filter_liked and liked is None:
                raise ValueError("filter_liked=True needs user_items: this model holds no training interactions")
            query, batch = self.user_factors, np.atleast_1d(u)
        # Capped at the catalogue: a huge n must not allocate a huge padded array.
        k = min(int(n), self.n_items)
        threads = min(self.threads or _available_threads(), _available_threads())
        items, scores = _top_k(query, self.item_factors, self.item_bias, k, rows=batch,
                               exclude=liked, threads=threads)
        candidates = self.n_items - (np.diff(liked.indptr)[batch] if liked is not None else 0)
        self._check_ranking(items, scores, np.minimum(candidates, k), query[batch])
        if single:
            valid = items[0] >= 0
            return items[0][valid], scores[0][valid]
        return items, scores

    def _nonfinite_parameter(self, query: np.ndarray | None = None) -> str | None:
        """The name of the first parameter array (or the query vectors) holding NaN or inf, else None."""
        named = [("user_factors", query)] if query is not None else []
        named += [("user_factors", self.user_factors), ("item_factors", self.item_factors),
                  ("item_bias", self.item_bias)]
        for name, a in named:
            if a is not None and not np.isfinite(a).all():
                return name
        return None

    def _check_ranking(self, items: np.ndarray, scores: np.ndarray, expected, query: np.ndarray) -> None:
        """Raise when a ranking came out short or non-finite because the parameters hold NaN or inf.

        NaN scores are never candidates, so such a model would silently recommend nothing; this
        looks only at the output (free on a sound model) and searches the parameters when it is off.
        """
        returned = (items >= 0).sum(axis=1)
        if np.all(returned >= expected) and np.isfinite(scores[items >= 0]).all():
            return
        name = self._nonfinite_parameter(query)
        if name is not None:
            raise ValueError(f"model.{name} holds NaN or infinite values: its scores cannot be ranked. "
                             "Refit, or replace the array with finite values")

    def _fitted_features(self) -> Features:
        self._check_fitted()
        if self._features is None:
            raise ValueError("this model was fitted without side features (fit(..., user_features=, item_features=))")
        return self._features

    def user_representations(self, user_features) -> np.ndarray:
        """Factors of users never seen in training, from their features alone (cold start).

        Parameters
        ----------
        user_features : sparse matrix or 2-D array, shape (n_new, n_user_metadata)
            The same metadata columns as the ``user_features`` of :meth:`fit`
            (without identity columns: new users have none).

        Returns
        -------
        numpy.ndarray, shape (n_new, factors)
            Pass to :meth:`recommend` as ``user_factors``.
        """
        features = self._fitted_features()
        X = features.users.new_rows(user_features, "user_features")
        return np.ascontiguousarray(X @ features.user_embeddings, dtype=self.user_factors.dtype)

    def item_representations(self, item_features) -> tuple[np.ndarray, np.ndarray]:
        """Factors and biases of items never seen in training, from their features alone.

        Parameters
        ----------
        item_features : sparse matrix or 2-D array, shape (n_new, n_item_metadata)

        Returns
        -------
        factors : numpy.ndarray, shape (n_new, factors)
        bias : numpy.ndarray, shape (n_new,)
            Zeros for a model without item bias.
        """
        features = self._fitted_features()
        Y = features.items.new_rows(item_features, "item_features")
        dtype = self.item_factors.dtype
        bias = Y @ features.item_bias_embeddings if self.use_item_bias else np.zeros(Y.shape[0])
        return np.ascontiguousarray(Y @ features.item_embeddings, dtype=dtype), np.asarray(bias, dtype=dtype)

    def score_new_items(self, users, item_features) -> np.ndarray:
        """Scores of trained users for items known only by their features.

        Parameters
        ----------
        users : int or array_like of int
            Row indices of trained users.
        item_features : sparse matrix or 2-D array, shape (n_new, n_item_metadata)

        Returns
        -------
        numpy.ndarray, shape (n_new,) for one user, (len(users), n_new) for several
        """
        factors, bias = self.item_representations(item_features)
        u = check_index_array(users, self.n_users, "user")
        if np.ndim(u) > 1:
            raise ValueError(f"users must be an int or a 1-D array of ints, got shape {np.shape(u)}")
        return self.user_factors[u] @ factors.T + bias

    def _check_user_vectors(self, user_factors) -> np.ndarray:
        try:
            q = np.asarray(user_factors)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"user_factors could not be read as an array: {exc}") from None
        if q.dtype.kind not in "fiu" or q.dtype == np.bool_:
            raise TypeError(f"user_factors must hold real numbers, got dtype {q.dtype}")
        factors = self.item_factors.shape[1]
        if q.ndim not in (1, 2) or q.shape[-1] != factors:
            raise ValueError(f"user_factors must have shape ({factors},) or (n, {factors}), got {q.shape}")
        with np.errstate(over="ignore"):  # checked just below, in the precision the scores use
            q = np.ascontiguousarray(np.atleast_2d(q), dtype=self.item_factors.dtype)
        if not np.isfinite(q).all():
            raise ValueError(f"user_factors holds NaN or infinite values (in the model's {q.dtype.name})")
        return q

    def fold_in(self, user_items, *, regularization: float | None = None, max_iter: int = 200,
                tol: float = 1e-6, max_pairs: int = 1 << 20, random_state: int | None = 0) -> np.ndarray:
        """Factors of new users from their interactions, without touching the model.

        Each row's vector minimises the user's expected training objective
        with the item factors and biases frozen (:mod:`bpr_numpy.fold_in`):
        deterministic, milliseconds per user on MovieLens-sized catalogues.
        Pass the result to :meth:`recommend` as ``user_factors``.

        Parameters
        ----------
        user_items : sparse matrix or 2-D array, shape (n_new, n_items)
            The new users' interactions, one row each (a single user is a
            ``1 x n_items`` row).
        regularization : float, optional
            ``lambda_u``; defaults to the model's user regularisation.
        max_iter, tol, max_pairs, random_state
            See :func:`bpr_numpy.fold_in.fold_in_users`.

        Returns
        -------
        numpy.ndarray, shape (n_new, factors)
            In the model's dtype.
        """
        self._check_fitted()
        from .fold_in import fold_in_users

        if regularization is None:
            regularization = Regularization.coerce(self.regularization).user
        else:
            regularization = Regularization.coerce(regularization).user
        return fold_in_users(self.item_factors, self.item_bias if self.use_item_bias else None, user_items,
                             loss=self.loss, user_regularization=regularization, max_iter=max_iter, tol=tol,
                             max_pairs=max_pairs, random_state=random_state)

    def similar_items(self, items, n: int = 10):
        """Items most similar to the given ones by cosine of their factors.

        Parameters
        ----------
        items : int or array_like of int
        n : int
            Neighbours per item; the query item itself is left out.

        Returns
        -------
        neighbours, similarities : numpy.ndarray
            1-D for a single item, (len(items), n) for a batch; best first,
            ties by lower item index.
        """
        self._check_fitted()
        q = check_index_array(items, self.n_items, "item")
        if np.ndim(q) > 1:
            raise ValueError(f"items must be an int or a 1-D array of ints, got shape {np.shape(q)}")
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise ValueError(f"n must be a positive integer, got {n!r}")
        if self._item_norms is None:
            norms = np.linalg.norm(self.item_factors, axis=1)
            self._item_norms = np.where(norms > 0, norms, 1.0).astype(self.item_factors.dtype)
        unit = self.item_factors / self._item_norms[:, None]
        batch = np.atleast_1d(q)
        k = min(int(n), self.n_items - 1)
        # Row i of the identity excludes item i: the query is not its own neighbour.
        own = sp.csr_matrix((np.ones(self.n_items), np.arange(self.n_items), np.arange(self.n_items + 1)),
                            shape=(self.n_items, self.n_items))
        threads = min(self.threads or _available_threads(), _available_threads())
        # Unit vectors: every bound is 1, so reordering the items would settle nothing.
        nb, sc = _top_k(unit, unit, np.zeros(self.n_items, dtype=unit.dtype), k, rows=batch, exclude=own,
                        threads=threads, prune=False)
        self._check_ranking(nb, sc, k, unit[batch])
        if np.ndim(q) == 0:
            return nb[0], sc[0]
        return nb, sc

    # ------------------------------------------------------------------ persistence
    def save(self, path: "str | os.PathLike", *, include_interactions: bool = True) -> None:
        """Write the model to one ``.npz`` file, atomically.

        The file is written to a temporary file in the same folder and renamed
        over ``path`` only when complete, so an interrupted save leaves either
        the old file or the new one.

        Parameters
        ----------
        path : str or path-like
            Destination; ``.npz`` is not appended.
        include_interactions : bool
            Store the training interactions, so that a loaded model filters
            liked items in :meth:`recommend` without being given them.
        """
        self._check_fitted()
        for name, a in zip(_PARAMETER_NAMES, self._parameters()):
            if not np.isfinite(a).all():  # load would refuse the file: refuse to write it
                raise ValueError(f"cannot save: model.{name} holds NaN or infinite values")
        params = self.get_params()
        params["dtype"] = np.dtype(self.dtype).name
        for key in ("item_bias", "identity", "normalize_features"):
            if isinstance(params[key], np.bool_):  # json writes Python bools only
                params[key] = bool(params[key])
        rs = params["random_state"]
        params["random_state"] = rs if rs is None or isinstance(rs, (int, np.integer)) else None
        if params["random_state"] is not None:
            params["random_state"] = int(params["random_state"])
        meta = {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "params": params,
            "epochs_done": self._epochs_done,
            "seed": self._seed,
            "history": [asdict(r) for r in self.history_],
        }
        arrays = {
            "meta": np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8),
            "user_factors": self.user_factors,
            "item_factors": self.item_factors,
            "item_bias": self.item_bias,
        }
        if self._features is not None:
            feature_arrays, meta["features"] = self._features.to_arrays()
            arrays.update(feature_arrays)
        if include_interactions and self._user_items is not None:
            arrays["user_items_indptr"] = self._user_items.indptr
            arrays["user_items_indices"] = self._user_items.indices
        for key, expected in (("user_ids", self.n_users), ("item_ids", self.n_items), ("item_titles", self.n_items)):
            value = getattr(self, key)
            if value is not None:
                arrays[key] = _id_array(value, key, expected, titles=key == "item_titles")
        # The metadata lists the entries, so a load can tell an optional entry lost to damage
        # (a flipped length in the zip directory hides the entries after it) from one never written.
        meta["entries"] = sorted(arrays)
        arrays["meta"] = np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8)
        _atomic_savez(os.fspath(path), arrays)

    @classmethod
    def load(cls, path: "str | os.PathLike") -> "BPR":
        """Read a model written by :meth:`save`.

        Raises
        ------
        FileNotFoundError, IsADirectoryError, PermissionError
            The path cannot be opened.
        ValueError
            The file is not a complete bpr_numpy model of a supported format
            version (truncated, corrupt, foreign, or arrays of wrong shapes).
            Nothing is half-loaded: the model is built only once every part
            has been read and checked.
        """
        path = os.fspath(path)
        try:
            arrays = read_npz(path)  # checks each array's declared size before reading it
        except ValueError as exc:
            raise ValueError(f"{path} is not a readable bpr_numpy model file ({exc})") from None
        return cls._from_arrays(arrays, path)

    @classmethod
    def _from_arrays(cls, arrays: dict, path: str) -> "BPR":
        def bad(why: str) -> ValueError:
            return ValueError(f"{path} is not a valid bpr_numpy model file: {why}")

        if "meta" not in arrays:
            raise bad("no 'meta' entry (not written by BPR.save)")
        try:
            meta = json.loads(arrays["meta"].tobytes().decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
            raise bad(f"unreadable metadata ({type(exc).__name__}: {exc})") from None
        if not isinstance(meta, dict) or meta.get("format") != FORMAT_NAME:
            raise bad("its metadata does not name the bpr_numpy model format")
        version = meta.get("format_version")
        if version != FORMAT_VERSION:
            raise bad(f"format version {version!r}; this bpr_numpy reads version {FORMAT_VERSION}")
        for key in ("user_factors", "item_factors", "item_bias"):
            if key not in arrays:
                raise bad(f"missing array {key!r}")
        # An entry save never writes is damage (a flipped bit in an optional entry's name would
        # otherwise drop the titles or ids without a word), or another program's file.
        unknown = sorted(set(arrays) - _MODEL_ENTRIES)
        if unknown:
            raise bad(f"unexpected entries {unknown}")
        listed = meta.get("entries")  # absent in files written before it was recorded
        if listed is not None and (not isinstance(listed, list) or set(map(str, listed)) != set(arrays)):
            missing = sorted(set(map(str, listed)) - set(arrays)) if isinstance(listed, list) else listed
            raise bad(f"its entries do not match the ones it lists (missing: {missing})")
        params = meta.get("params", {})
        if not isinstance(params, dict):
            raise bad(f"invalid hyperparameters (a {type(params).__name__}, not a mapping)")
        params = dict(params)
        try:
            params["dtype"] = np.dtype(params.get("dtype", "float32")).type
            model = cls(**params)
        except (TypeError, ValueError) as exc:
            raise bad(f"invalid hyperparameters ({exc})") from None
        U, V, b = arrays["user_factors"], arrays["item_factors"], arrays["item_bias"]
        dtype = np.dtype(model.dtype)
        if U.ndim != 2 or V.ndim != 2 or U.shape[1] != model.factors or V.shape[1] != model.factors:
            raise bad(f"factor arrays of shapes {U.shape} and {V.shape} do not match factors={model.factors}")
        if U.shape[0] == 0 or V.shape[0] == 0:
            raise bad(f"factor arrays of shapes {U.shape} and {V.shape}: no user or no item")
        if b.shape != (V.shape[0],):
            raise bad(f"item_bias has shape {b.shape}, expected ({V.shape[0]},)")
        if U.dtype != dtype or V.dtype != dtype or b.dtype != dtype:
            raise bad(f"arrays are not of the model's dtype {dtype}")
        if not (np.isfinite(U).all() and np.isfinite(V).all() and np.isfinite(b).all()):
            raise bad("parameters hold NaN or infinite values")
        # An array saved in Fortran order loads in Fortran order: the kernels take C order.
        U, V, b = np.ascontiguousarray(U), np.ascontiguousarray(V), np.ascontiguousarray(b)
        user_items = None
        if "user_items_indptr" in arrays or "user_items_indices" in arrays:
            if "user_items_indptr" not in arrays or "user_items_indices" not in arrays:
                raise bad("the stored interactions lack their indptr or their indices")
            indptr, indices = arrays["user_items_indptr"], arrays["user_items_indices"]
            if (indptr.ndim != 1 or indices.ndim != 1 or indptr.dtype.kind not in "iu"
                    or indices.dtype.kind not in "iu" or indptr.shape != (U.shape[0] + 1,)
                    or indptr[-1] != len(indices)):
                raise bad("the stored interactions do not match the factor shapes")
            try:  # checks every index against the shapes before anything reads them
                user_items = as_user_items(
                    csr_from_arrays(np.ones(len(indices), np.float32), indices, indptr, (U.shape[0], V.shape[0])),
                    "the stored interactions", require_positive=False)
            except (TypeError, ValueError) as exc:
                raise bad(str(exc)) from None
        # The id maps are optional: files written before they existed load with None.
        ids = {}
        for key, expected in (("user_ids", U.shape[0]), ("item_ids", V.shape[0]), ("item_titles", V.shape[0])):
            if key in arrays:
                try:
                    ids[key] = _id_array(arrays[key], key, expected, titles=key == "item_titles")
                except (TypeError, ValueError) as exc:
                    raise bad(str(exc)) from None
        epochs_done, seed, history = meta.get("epochs_done", 0), meta.get("seed"), meta.get("history", [])
        if isinstance(epochs_done, bool) or not isinstance(epochs_done, int) or not 0 <= epochs_done <= INT64_MAX:
            raise bad(f"epochs_done is {epochs_done!r}, not a count")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63):
            raise bad(f"seed is {seed!r}, not an integer in [0, 2**63)")
        try:
            if not isinstance(history, list) or not all(isinstance(r, dict) for r in history):
                raise TypeError("not a list of epoch records")
            reports = [EpochReport(**r) for r in history]
            for r in reports:
                str(r)  # every field of the right kind
        except (TypeError, ValueError) as exc:
            raise bad(f"unreadable training history ({exc})") from None
        features = None
        if "features" in meta or any(k in arrays for k in Features.ENTRIES):
            try:
                features = Features.from_arrays(arrays, meta.get("features"), U.shape[0], V.shape[0], model.factors,
                                                dtype)
            except (TypeError, ValueError) as exc:
                raise bad(str(exc)) from None
            for label, side in (("users", features.users), ("items", features.items)):
                if side.normalize != bool(model.normalize_features) or (
                        side.n_metadata and side.identity != (model.identity in (True, label))):
                    raise bad(f"its {label[:-1]} features do not follow its identity/normalize_features settings")
            # The factors are the embeddings' sums: a file whose two disagree is damaged.
            rebuilt = features.representations(bool(model.use_item_bias))
            tolerance = 1e-4 if dtype == np.float32 else 1e-10
            for name, stored, fresh in zip(("user_factors", "item_factors", "item_bias"), (U, V, b), rebuilt):
                if not np.allclose(stored, fresh, rtol=tolerance, atol=tolerance):
                    raise bad(f"its {name} are not the sums of its feature embeddings")
            U, V, b = rebuilt
        # Every part is read and checked: only now does the model take them.
        model.user_factors, model.item_factors, model.item_bias = U, V, b
        model._features = features
        model._user_items = user_items
        for key, value in ids.items():
            setattr(model, key, value)
        model._epochs_done, model._seed, model.history_ = epochs_done, seed, reports
        return model


def _id_array(values, name: str, expected: int, *, titles: bool = False) -> np.ndarray:
    """An id map or title array in a pickle-free form, with its length checked.

    Integers become int64 and everything else a fixed-width unicode array, so
    that ``np.load(..., allow_pickle=False)`` reads the file back.

    Parameters
    ----------
    values : array_like
        One entry per row (users) or column (items).
    name : str
        ``"user_ids"``, ``"item_ids"`` or ``"item_titles"``, for messages.
    expected : int
        Required length (the matching factor array's row count).
    titles : bool
        Titles are always stored as strings.

    Returns
    -------
    numpy.ndarray
        1-D int64 or ``<U..`` array.
    """
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    if len(arr) != expected:
        what = "users (rows of user_factors)" if name == "user_ids" else "items (rows of item_factors)"
        raise ValueError(f"{name} has {len(arr)} entries but the model has {expected} {what}")
    if not titles and arr.dtype.kind in "iu":
        if arr.dtype.kind == "u" and len(arr) and arr.max() > np.iinfo(np.int64).max:
            raise ValueError(f"{name} holds integers beyond int64")
        return arr.astype(np.int64)
    if arr.dtype.kind == "b" or (arr.dtype.kind == "f" and not titles):
        raise TypeError(f"{name} must hold integers or strings, got dtype {arr.dtype}")
    if not isinstance(values, np.ndarray) or arr.dtype.kind == "O":
        # numpy's fixed-width strings drop trailing NULs (already in np.asarray of a list): "a" and
        # "a\0" would be one id once saved, so the raw values are looked at.
        ends = [k for k, v in enumerate(values) if isinstance(v, str) and v.endswith("\0")]
        if ends:
            raise ValueError(f"{name}[{ends[0]}] ends with a NUL character, which a saved model cannot keep "
                             "(it would load as another id)")
    out = arr.astype(str) if arr.dtype.kind != "U" else arr
    if not titles and len(np.unique(out)) != len(out):
        values, counts = np.unique(out, return_counts=True)
        raise ValueError(f"{name} holds {str(values[counts > 1][0])!r} more than once: each id must name one row")
    return out


def _top_k(query: np.ndarray, item_factors: np.ndarray, item_bias: np.ndarray, k: int, *,
           rows: np.ndarray | None = None, exclude: sp.csr_matrix | None = None, threads: int = 1,
           block: int | None = None, tile: int | None = None,
           prune: bool | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Row-wise top-k of ``query[rows] @ item_factors.T + item_bias``, best first.

    Ranks exactly as :func:`bpr_numpy.metrics._top_k` (so recommendations and top-k
    metrics agree): score descending, equal scores by the lower item index; NaN scores
    and excluded items are not candidates; rows with fewer than k candidates are padded
    with item -1 and score -inf. The scores are those of ``query @ item_factors.T``
    plus ``item_bias`` in the factors' dtype.

    The full score block is never built. Rows go in blocks and items in tiles: one BLAS
    product per (block, tile), about 4 MiB so that it is read back from cache, fed to
    one small heap per row by numba kernels; ``threads`` workers take whole blocks in
    turn. With ``prune``
    the items are visited in decreasing order of a score estimate, and a row stops as
    soon as no item left can reach its heap by the Cauchy-Schwarz bound
    ``|q| max|v| + max b`` (rounding included): exact, and on trained models, whose
    item norms and biases are skewed, most of the product is skipped.

    Parameters
    ----------
    query : numpy.ndarray
        (n_query, f) factors of the rows, same dtype as ``item_factors``.
    item_factors : numpy.ndarray
        (n_items, f).
    item_bias : numpy.ndarray
        (n_items,).
    k : int
        0 <= k <= n_items.
    rows : numpy.ndarray, optional
        Rows of ``query`` to rank, in output order (default: all).
    exclude : scipy.sparse.csr_matrix, optional
        Row ``rows[i]`` lists the items that are not candidates for output row ``i``.
    threads : int
        Worker threads, each ranking whole blocks of rows.
    block, tile : int, optional
        Rows per block and items per tile (defaults from the 4 MiB budget).
    prune : bool, optional
        Reorder the items and settle rows early (default: for 64 rows or more, where
        ordering the items, O(n_items log n_items), pays for itself).

    Returns
    -------
    items : numpy.ndarray
        (len(rows), k) int64.
    scores : numpy.ndarray
        (len(rows), k) in the factors' dtype.
    """
    import concurrent.futures
    import contextlib

    from . import _topk_kernels as kern

    dtype = item_factors.dtype
    rows = np.arange(query.shape[0], dtype=np.int64) if rows is None else np.asarray(rows, dtype=np.int64)
    n, (n_items, f) = len(rows), item_factors.shape
    items = np.full((n, k), -1, dtype=np.int64)
    scores = np.full((n, k), -np.inf, dtype=dtype)
    if n == 0 or k == 0:
        return items, scores
    if prune is None:
        prune = n >= 64
    tile = int(tile or (min(n_items, 4096) if prune else n_items))
    block = int(block or max(1, 2**22 // (dtype.itemsize * tile)))
    if prune:
        norms = np.sqrt(np.einsum("ij,ij->i", item_factors, item_factors, dtype=np.float64))
        sample = query[rows[:: max(1, n // 1024)]]
        typical = float(np.sqrt(np.einsum("ij,ij->i", sample, sample, dtype=np.float64)).mean())
        # Likely winners first: the score of a typical row if it were aligned with the item.
        order = np.argsort(-(typical * norms + item_bias), kind="stable")  # NaN keys last
        factors, bias = np.ascontiguousarray(item_factors[order]), item_bias[order]
        # Largest norm and bias of the items from each tile on (NaN, from a diverged
        # model, propagates and disables the early stop: slower, still exact).
        max_norm = np.maximum.accumulate(norms[order][::-1])[::-1][::tile]
        max_bias = np.maximum.accumulate(bias.astype(np.float64)[::-1])[::-1][::tile]
    else:
        order = np.arange(n_items, dtype=np.int64)
        factors, bias = np.ascontiguousarray(item_factors), np.ascontiguousarray(item_bias)
    eps = float(np.finfo(dtype).eps)
    # Rounding of a length-f dot product plus the bias add, with room to spare.
    slack, floor = 2 * (f + 2) * eps, (f + 2) * float(np.finfo(dtype).tiny)
    if exclude is None:
        indptr, indices = np.zeros(1, dtype=np.int64), np.zeros(0, dtype=np.int64)
    else:
        if not exclude.has_sorted_indices:  # the kernels binary-search each row
            exclude = exclude.copy()
            exclude.sort_indices()
        indptr, indices = exclude.indptr, exclude.indices

    def run(start: int) -> None:
        # One block of rows from start to finish: products, heaps and output rows are
        # the block's own, so blocks need no synchronisation between them.
        r = rows[start:start + block]
        m = len(r)
        ub = np.ascontiguousarray(query[r])
        buf = np.empty(m * tile, dtype=dtype)
        heap_s, heap_i = np.empty((m, k), dtype=dtype), np.empty((m, k), dtype=np.int64)
        sizes = np.zeros(m, dtype=np.int64)
        active, n_active = np.arange(m, dtype=np.int64), m
        q_norms = np.sqrt(np.einsum("ij,ij->i", ub, ub, dtype=np.float64)) if prune else None
        for t, t0 in enumerate(range(0, n_items, tile)):
            if prune and t:
                n_active = kern._drop_settled(active, n_active, heap_s, sizes, q_norms, max_norm[t], max_bias[t],
                                              slack, floor, ub)
                if not n_active:
                    break
            w = min(tile, n_items - t0)
            s = buf[:n_active * w].reshape(n_active, w)
            np.matmul(ub[:n_active], factors[t0:t0 + w].T, out=s)
            kern._offer_tile(s, bias, order, t0, active, n_active, r, indptr, indices, exclude is not None,
                             heap_s, heap_i, sizes)
        kern._heaps_to_rows(heap_s, heap_i, sizes, items[start:start + m], scores[start:start + m])

    starts = range(0, n, block)
    limit = contextlib.nullcontext()
    if len(starts) > 1:
        # Bulk calls run on exactly ``threads`` threads: one single-threaded product per
        # worker. (threadpoolctl is optional; without it BLAS keeps its own threads.)
        try:
            from threadpoolctl import threadpool_limits
        except ImportError:
            pass
        else:
            limit = threadpool_limits(1, user_api="blas")
    with limit:
        # Parallel over whole blocks rather than within each tile: a per-tile barrier
        # (threaded BLAS, then threaded heaps) waits for the slower core thousands of
        # times, and lost to one thread when the other core was busy. The products
        # release the GIL and the kernels are nogil.
        if threads > 1 and len(starts) > 1:
            with concurrent.futures.ThreadPoolExecutor(min(threads, len(starts))) as pool:
                for _ in pool.map(run, starts):  # handed out in turn: a faster core takes more blocks
                    pass
        else:
            for start in starts:
                run(start)
    return items, scores


def _atomic_savez(path: str, arrays: dict) -> None:
    """``np.savez`` to a temporary file beside ``path``, synced, then renamed over it.

    A process killed at any point (even by SIGKILL) leaves ``path`` either as it
    was or complete; at worst a stray ``.bpr_numpy-*.tmp`` file remains beside it.
    The file gets the permissions an ordinary write would give it (:mod:`bpr_numpy._files`).
    """
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".bpr_numpy-", suffix=".tmp", dir=folder)
    try:
        give_ordinary_mode(fd, path)
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, **arrays)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    try:  # make the rename itself durable (a power cut, not only a killed process)
        dir_fd = os.open(folder, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory handles
        return
    try:
        os.fsync(dir_fd)
    except OSError:  # pragma: no cover - file systems that cannot sync a folder
        pass
    finally:
        os.close(dir_fd)
