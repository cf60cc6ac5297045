"""The BPR estimator: fit, continue, score, recommend, save and load."""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
import zipfile
from dataclasses import asdict, dataclass, replace
from typing import Callable, Mapping

import numpy as np
import scipy.sparse as sp

from ._validation import as_user_items, check_index_array
from . import sampling
from .objective import LOSSES, OPTIMIZERS, OptimizerState, Regularization, loss_code
from .sampling import SAMPLERS

__all__ = ["BPR", "EpochReport", "TrainingDivergedError", "FORMAT_NAME", "FORMAT_VERSION"]

FORMAT_NAME = "bpr_numpy.model"
FORMAT_VERSION = 1

MAX_USER_RUN = 32  # = _kernels.BATCH: runs restart at each batch (checked in the tests)


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
            self.best_params = (model.user_factors.copy(), model.item_factors.copy(), model.item_bias.copy())
        stop = self.patience is not None and report.epoch - (self.best_epoch or 0) >= self.patience \
            and self.best_epoch is not None
        return report, stop

    def restore_best(self, model: "BPR") -> None:
        if self.best_params is not None:
            model.user_factors, model.item_factors, model.item_bias = self.best_params
            model._item_norms = None
        model.best_epoch_ = self.best_epoch
        model.best_score_ = None if self.best_epoch is None else self.best_score


def _resolve_seed(random_state) -> int:
    if random_state is None:
        return int(np.random.SeedSequence().generate_state(1, np.uint64)[0] >> np.uint64(1))
    if isinstance(random_state, np.random.Generator):
        return int(random_state.integers(0, 2**63 - 1))
    if isinstance(random_state, (int, np.integer)) and not isinstance(random_state, bool):
        if random_state < 0:
            raise ValueError(f"random_state must be >= 0, got {random_state}")
        return int(random_state) % 2**63
    raise TypeError(f"random_state must be None, an int or a numpy Generator, got {type(random_state).__name__}")


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
        Candidates per draw of ``"dns"``.
    aobpr_lambda : float, default 0.05
        Scale of AOBPR's geometric rank law, as a fraction of the number of
        items (``lambda = aobpr_lambda * n_items``).
    max_sampled : int, default 10
        WARP's draws per positive before giving up (LightFM's default).
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
        Seed of the initialisation and of the triplet streams.

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
    history_ : list of EpochReport
        One report per epoch trained, across fit and partial_fit.

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
               "init_std": "init_std", "dtype": "dtype", "threads": "threads", "random_state": "random_state"}

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
        def integer(name, low):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                raise TypeError(f"{name} must be an integer, got {type(value).__name__}")
            if value < low:
                raise ValueError(f"{name} must be >= {low}, got {value}")

        def real(name, positive):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
                raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
            if not np.isfinite(value) or value < 0 or (positive and value == 0):
                raise ValueError(f"{name} must be finite and {'>' if positive else '>='} 0, got {value}")

        integer("factors", 1)
        integer("epochs", 0)
        integer("threads", 0)
        integer("user_run", 1)
        integer("dns_candidates", 1)
        integer("max_sampled", 1)
        real("popularity_exponent", False)
        real("aobpr_lambda", True)
        real("learning_rate_decay", True)
        if self.user_run > MAX_USER_RUN:
            raise ValueError(f"user_run must be <= {MAX_USER_RUN}, got {self.user_run}")
        real("learning_rate", True)
        if self.init_std is not None:
            real("init_std", False)
        Regularization.coerce(self.regularization)
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {self.loss!r}")
        if self.sampler not in SAMPLERS:
            raise ValueError(f"sampler must be one of {SAMPLERS}, got {self.sampler!r}")
        if self.loss == "warp" and self.sampler not in ("uniform", "popularity"):
            raise ValueError(f"loss='warp' draws its own negatives until one violates the margin: "
                             f"use sampler='uniform' or 'popularity', not {self.sampler!r}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if not isinstance(self.use_item_bias, (bool, np.bool_)):
            raise TypeError(f"item_bias must be a bool, got {type(self.use_item_bias).__name__}")
        try:
            dtype = np.dtype(self.dtype)
        except TypeError:
            raise TypeError(f"dtype must be numpy.float32 or numpy.float64, got {self.dtype!r}") from None
        if dtype not in (np.dtype(np.float32), np.dtype(np.float64)):
            raise ValueError(f"dtype must be numpy.float32 or numpy.float64, got {dtype}")
        if not (self.random_state is None or isinstance(self.random_state, np.random.Generator)
                or (isinstance(self.random_state, (int, np.integer)) and not isinstance(self.random_state, bool))):
            raise TypeError("random_state must be None, an int or a numpy Generator, "
                            f"got {type(self.random_state).__name__}")

    # ------------------------------------------------------------------ state
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
        tracker = None if validation is None else _Validation(validation, metric, patience, validate_every,
                                                               matrix.shape)
        self._seed = _resolve_seed(self.random_state)
        self._init_factors(*matrix.shape)
        return self._train(matrix, self.epochs if epochs is None else epochs, callback, show_progress, tracker)

    def partial_fit(
        self,
        user_items,
        epochs: int = 1,
        callback: Callable[[EpochReport], object] | None = None,
        show_progress: bool | None = None,
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

        Returns
        -------
        BPR
            ``self``.
        """
        self._check_params()
        matrix = as_user_items(user_items)
        if self.user_factors is None:
            self._seed = _resolve_seed(self.random_state)
            self._init_factors(*matrix.shape)
        else:
            self._check_fitted()
            if matrix.shape != (self.n_users, self.n_items):
                raise ValueError(f"user_items has shape {matrix.shape} but the model was fitted on "
                                 f"{(self.n_users, self.n_items)}")
            if self._seed is None:  # a loaded model without its seed continues on a fresh stream
                self._seed = _resolve_seed(self.random_state)
        return self._train(matrix, epochs, callback, show_progress)

    def _init_factors(self, n_users: int, n_items: int) -> None:
        dtype = np.dtype(self.dtype)
        std = 1.0 / np.sqrt(self.factors) if self.init_std is None else float(self.init_std)
        rng = np.random.default_rng(self._seed)
        self.user_factors = rng.normal(0.0, std, (n_users, self.factors)).astype(dtype)
        self.item_factors = rng.normal(0.0, std, (n_items, self.factors)).astype(dtype)
        self.item_bias = np.zeros(n_items, dtype=dtype)
        self._optimizer_state = None
        self._epochs_done = 0
        self._diverged = None
        self._item_norms = None
        self.history_ = []

    def _train(self, matrix: sp.csr_matrix, epochs: int, callback, show_progress, validation=None) -> "BPR":
        if isinstance(epochs, bool) or not isinstance(epochs, (int, np.integer)) or epochs < 0:
            raise ValueError(f"epochs must be a non-negative integer, got {epochs!r}")
        if show_progress is None:
            show_progress = sys.stderr.isatty()
        self._user_items = matrix
        self._item_norms = None
        threads = min(self.threads or _available_threads(), _available_threads())
        user_of = np.repeat(np.arange(matrix.shape[0], dtype=np.int32), np.diff(matrix.indptr))
        total = self._epochs_done + epochs
        state = self._optimizer_state
        if state is None or state.optimizer != self.optimizer or state.user_second.dtype != self.user_factors.dtype:
            # Fresh accumulators: first training, a changed optimiser, or a loaded model (not saved).
            self._optimizer_state = OptimizerState(self.optimizer, self.user_factors.shape[0],
                                                   self.item_factors.shape[0], self.user_factors.shape[1],
                                                   dtype=self.user_factors.dtype)
        alias = self._alias_table(matrix)
        if epochs:
            # Compile (or load from the cache) outside the epoch timer: a call
            # with zero samples has the same types and does no work.
            self._run_epoch(matrix, user_of, threads, alias, n_samples=0)
        for _ in range(epochs):
            report = self._run_epoch(matrix, user_of, threads, alias)
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
        if validation is not None:
            validation.restore_best(self)
        return self

    def _alias_table(self, matrix: sp.csr_matrix) -> tuple[np.ndarray, np.ndarray]:
        """The popularity samplers' alias table over ``matrix`` (empty arrays for the other samplers)."""
        if sampling.sampler_codes(self.sampler).candidate != sampling.CANDIDATE_POPULARITY:
            return np.empty(0), np.empty(0, np.int64)
        weights = sampling.popularity_weights(matrix, float(self.popularity_exponent))
        if not weights.sum() > 0:  # no positives at all: nothing is drawn anyway
            weights = np.ones_like(weights)
        return sampling.alias_table(weights)

    def _run_epoch(self, matrix: sp.csr_matrix, user_of: np.ndarray, threads: int,
                   alias: tuple[np.ndarray, np.ndarray], n_samples: int | None = None) -> EpochReport | None:
        """One epoch of the kernel over ``matrix``; checks the result is finite.

        ``n_samples=0`` only compiles the kernel and returns None.
        """
        from . import _kernels

        dtype = self.user_factors.dtype.type
        reg = Regularization.coerce(self.regularization)
        codes = sampling.sampler_codes(self.sampler)
        warm_up = n_samples == 0
        n_samples = matrix.nnz if n_samples is None else n_samples
        chunks = _kernels.n_chunks(n_samples)
        out_loss = np.zeros(chunks)
        out_ordered = np.zeros(chunks, np.int64)
        out_skipped = np.zeros(chunks, np.int64)
        n_items = self.item_factors.shape[0]
        aobpr = codes.adaptive == sampling.ADAPTIVE_AOBPR
        # AOBPR refreshes its rankings every n ln n samples: the epoch runs in groups of chunks.
        group = sampling.aobpr_refresh_chunks(n_items, _kernels.CHUNK_SIZE) if aobpr else max(chunks, 1)
        learning_rate = self.learning_rate * self.learning_rate_decay ** self._epochs_done
        kernel = _kernels._epoch_serial if threads == 1 else _kernels._epoch_parallel
        popularity = alias if alias[0].size else None
        opt = self._optimizer_state.kernel_args() if self._optimizer_state.code else None
        adaptive_kind = int(codes.adaptive)
        warp_max_sampled = int(self.max_sampled) if self.loss == "warp" else 0
        no_ranks = (np.zeros((0, 0), np.int32), np.zeros(0))

        def run(chunk_start: int, chunk_stop: int) -> None:
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
                   popularity, adaptive, opt, None, out_loss, out_ordered, out_skipped)

        start = time.perf_counter()
        if threads == 1:
            for c in range(0, max(chunks, 1), group):
                run(c, min(c + group, chunks))
        else:
            import numba

            previous = numba.get_num_threads()
            numba.set_num_threads(threads)
            try:
                for c in range(0, max(chunks, 1), group):
                    run(c, min(c + group, chunks))
            finally:
                numba.set_num_threads(previous)
        seconds = time.perf_counter() - start
        if warm_up:
            return None
        self._epochs_done += 1
        self._check_finite(self._epochs_done)
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

    def _check_finite(self, epoch: int) -> None:
        for name, block in (("user_factors", self.user_factors), ("item_factors", self.item_factors),
                            ("item_bias", self.item_bias)):
            if not np.isfinite(block).all():
                self._diverged = (
                    f"training diverged in epoch {epoch}: {name} holds NaN or infinite values. "
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

    def recommend(self, users, n: int = 10, *, filter_liked: bool = True, user_items=None):
        """Top-``n`` items for one user or a batch of users.

        Parameters
        ----------
        users : int or array_like of int
            Row indices of the users.
        n : int
            Items to return per user.
        filter_liked : bool
            Leave out the items the user interacted with (the training data,
            or ``user_items`` when given).
        user_items : sparse matrix, optional
            The interactions to filter; defaults to the matrix last trained on.

        Returns
        -------
        items, scores : numpy.ndarray
            For a single user, 1-D arrays of length <= n, best first. For a
            batch, arrays of shape (len(users), n); rows with fewer than n
            candidates are padded with item -1 and score -inf. Ties are broken
            by the lower item index.
        """
        self._check_fitted()
        u = check_index_array(users, self.n_users, "user")
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise ValueError(f"n must be a positive integer, got {n!r}")
        liked = self._user_items_for(user_items) if filter_liked else None
        if filter_liked and liked is None:
            raise ValueError("filter_liked=True needs user_items: this model holds no training interactions")
        batch = np.atleast_1d(u)
        k = min(int(n), self.n_items)
        items = np.empty((len(batch), k), dtype=np.int64)
        scores = np.empty((len(batch), k), dtype=self.user_factors.dtype)
        block = max(1, int(2**24 // max(self.n_items, 1)))  # ~64 MiB of float32 scores per block
        for start in range(0, len(batch), block):
            rows = batch[start:start + block]
            s = self.user_factors[rows] @ self.item_factors.T
            s += self.item_bias
            if liked is not None:
                sub = liked[rows]
                s[np.repeat(np.arange(len(rows)), np.diff(sub.indptr)), sub.indices] = np.nan  # not a candidate
            items[start:start + block], scores[start:start + block] = _top_k(s, k)
        if k < n:
            pad = n - k
            items = np.concatenate([items, np.full((len(batch), pad), -1)], axis=1)
            scores = np.concatenate([scores, np.full((len(batch), pad), -np.inf, scores.dtype)], axis=1)
        if np.ndim(u) == 0:
            valid = items[0] >= 0
            return items[0][valid], scores[0][valid]
        return items, scores

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
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise ValueError(f"n must be a positive integer, got {n!r}")
        if self._item_norms is None:
            norms = np.linalg.norm(self.item_factors, axis=1)
            self._item_norms = np.where(norms > 0, norms, 1.0).astype(self.item_factors.dtype)
        unit = self.item_factors / self._item_norms[:, None]
        batch = np.atleast_1d(q)
        k = min(int(n), self.n_items - 1)
        sims = unit[batch] @ unit.T
        sims[np.arange(len(batch)), batch] = np.nan  # the query is not its own neighbour
        nb, sc = _top_k(sims, k)
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
        params = self.get_params()
        params["dtype"] = np.dtype(self.dtype).name
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
        if include_interactions and self._user_items is not None:
            arrays["user_items_indptr"] = self._user_items.indptr
            arrays["user_items_indices"] = self._user_items.indices
        for key, expected in (("user_ids", self.n_users), ("item_ids", self.n_items), ("item_titles", self.n_items)):
            value = getattr(self, key)
            if value is not None:
                arrays[key] = _id_array(value, key, expected, titles=key == "item_titles")
        _atomic_savez(os.fspath(path), arrays)

    @classmethod
    def load(cls, path: "str | os.PathLike") -> "BPR":
        """Read a model written by :meth:`save`.

        Raises
        ------
        FileNotFoundError
            No such file.
        ValueError
            The file is not a complete bpr_numpy model of a supported format
            version (truncated, corrupt, foreign, or arrays of wrong shapes).
        """
        path = os.fspath(path)
        try:
            with np.load(path, allow_pickle=False) as data:
                arrays = {key: data[key] for key in data.files}
        except FileNotFoundError:
            raise
        except (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError, zipfile.LargeZipFile) as exc:
            raise ValueError(f"{path} is not a readable bpr_numpy model file ({type(exc).__name__}: {exc})") from None
        return cls._from_arrays(arrays, path)

    @classmethod
    def _from_arrays(cls, arrays: dict, path: str) -> "BPR":
        def bad(why: str) -> ValueError:
            return ValueError(f"{path} is not a valid bpr_numpy model file: {why}")

        if "meta" not in arrays:
            raise bad("no 'meta' entry (not written by BPR.save)")
        try:
            meta = json.loads(arrays["meta"].tobytes().decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise bad(f"unreadable metadata ({exc})") from None
        if not isinstance(meta, dict) or meta.get("format") != FORMAT_NAME:
            raise bad("its metadata does not name the bpr_numpy model format")
        version = meta.get("format_version")
        if version != FORMAT_VERSION:
            raise bad(f"format version {version!r}; this bpr_numpy reads version {FORMAT_VERSION}")
        for key in ("user_factors", "item_factors", "item_bias"):
            if key not in arrays:
                raise bad(f"missing array {key!r}")
        params = dict(meta.get("params", {}))
        try:
            params["dtype"] = np.dtype(params.get("dtype", "float32")).type
            model = cls(**params)
        except (TypeError, ValueError) as exc:
            raise bad(f"invalid hyperparameters ({exc})") from None
        U, V, b = arrays["user_factors"], arrays["item_factors"], arrays["item_bias"]
        dtype = np.dtype(model.dtype)
        if U.ndim != 2 or V.ndim != 2 or U.shape[1] != model.factors or V.shape[1] != model.factors:
            raise bad(f"factor arrays of shapes {U.shape} and {V.shape} do not match factors={model.factors}")
        if b.shape != (V.shape[0],):
            raise bad(f"item_bias has shape {b.shape}, expected ({V.shape[0]},)")
        if U.dtype != dtype or V.dtype != dtype or b.dtype != dtype:
            raise bad(f"arrays are not of the model's dtype {dtype}")
        if not (np.isfinite(U).all() and np.isfinite(V).all() and np.isfinite(b).all()):
            raise bad("parameters hold NaN or infinite values")
        user_items = None
        if "user_items_indptr" in arrays:
            indptr, indices = arrays["user_items_indptr"], arrays["user_items_indices"]
            if (indptr.shape != (U.shape[0] + 1,) or indptr[0] != 0 or np.any(np.diff(indptr) < 0)
                    or indptr[-1] != len(indices) or (len(indices) and (indices.min() < 0 or indices.max() >= V.shape[0]))):
                raise bad("the stored interactions do not match the factor shapes")
            user_items = as_user_items(
                sp.csr_matrix((np.ones(len(indices), np.float32), indices, indptr), shape=(U.shape[0], V.shape[0])),
                require_positive=False)
        model.user_factors, model.item_factors, model.item_bias = U, V, b
        model._user_items = user_items
        # The id maps are optional: files written before they existed load with None.
        for key, expected in (("user_ids", U.shape[0]), ("item_ids", V.shape[0]), ("item_titles", V.shape[0])):
            if key in arrays:
                try:
                    setattr(model, key, _id_array(arrays[key], key, expected, titles=key == "item_titles"))
                except (TypeError, ValueError) as exc:
                    raise bad(str(exc)) from None
        model._epochs_done = int(meta.get("epochs_done", 0))
        model._seed = meta.get("seed")
        try:
            model.history_ = [EpochReport(**r) for r in meta.get("history", [])]
        except TypeError as exc:
            raise bad(f"unreadable training history ({exc})") from None
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
    return arr.astype(str) if arr.dtype.kind != "U" else arr


def _top_k(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Row-wise top-k of a score block, best first, ties by the lower column index.

    NaN entries are not candidates; rows with fewer than k candidates are padded
    with index -1 and score -inf. The ranking is the metrics' own
    (:func:`bpr_numpy.metrics._top_k`), so recommendations and top-k metrics agree.
    """
    from .metrics import _top_k_rows

    top = np.full((scores.shape[0], k), -1, dtype=np.int64)
    counts = np.empty(scores.shape[0], dtype=np.int64)
    if k > 0:
        _top_k_rows(np.ascontiguousarray(scores), k, top, counts)
    values = np.take_along_axis(scores, np.maximum(top, 0), axis=1)
    values[top < 0] = -np.inf
    return top, values


def _atomic_savez(path: str, arrays: dict) -> None:
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".bpr_numpy-", suffix=".tmp", dir=folder)
    try:
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
