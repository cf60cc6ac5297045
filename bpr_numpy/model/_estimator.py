"""The BPR estimator: its parameters, and the doors to training, inference and model files.

Training is :mod:`bpr_numpy.model._training`, model files :mod:`bpr_numpy.model._persistence`, top-k
retrieval :mod:`bpr_numpy.model._retrieval`; see ``docs/architecture.md``.
"""

from __future__ import annotations

import inspect
import os
from typing import Callable, Mapping

import numpy as np
import scipy.sparse as sp

from .. import sampling
from .._parameters import check_parameters
from .._runtime import available_threads, resolve_seed
from .._archives import read_npz
from .._validation import as_user_items, check_index_array
from ..hybrid import Features
from ..objective import LOSS_REGISTRY, OPTIMIZER_REGISTRY, OptimizerState, Regularization
from . import _persistence, _training
from ._persistence import from_arrays
from ._retrieval import top_k
from ._training import _PARAMETER_NAMES, EpochReport, TrainingDivergedError, _check_epochs, _Validation

__all__ = ["BPR"]


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
    item_biases : ndarray, shape (n_items,)
        The learned item biases ``b_i``; zeros when constructed with
        ``item_bias=False``. (``item_bias`` is that flag, stored under its own
        name as scikit-learn's ``clone`` expects; bpr_numpy 0.1.0 named the array
        ``item_bias`` and the flag ``use_item_bias``.)

        These arrays may be replaced or edited; every method checks their
        shapes and dtypes (float32 or float64) before any kernel reads them
        and names the array that does not fit. ``save`` refuses NaN or
        infinite values, and ``recommend`` names the array they come from.
    history_ : list of EpochReport
        One report per epoch trained, across fit and partial_fit.
    user_embeddings, item_embeddings, item_bias_embeddings : ndarray or None
        With side features, the trained feature embeddings; ``user_factors``,
        ``item_factors`` and ``item_biases`` are then their sums over each row's
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
        self.item_bias = item_bias
        self.init_std = init_std
        self.dtype = dtype
        self.threads = threads
        self.random_state = random_state
        self.identity = identity
        self.normalize_features = normalize_features
        self._check_params()
        self.user_factors: np.ndarray | None = None
        self.item_factors: np.ndarray | None = None
        self.item_biases: np.ndarray | None = None
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
    # scikit-learn's convention: every __init__ argument is stored unchanged under its own
    # name, so the parameters are read from the signature (``sklearn.base.clone`` works).
    @classmethod
    def _get_param_names(cls) -> list[str]:
        return [name for name in inspect.signature(cls.__init__).parameters if name != "self"]

    def get_params(self, deep: bool = True) -> dict:
        """Hyperparameters as a dict of constructor arguments (scikit-learn convention)."""
        return {name: getattr(self, name) for name in self._get_param_names()}

    def set_params(self, **params) -> "BPR":
        """Set hyperparameters by constructor argument name; validated at once."""
        names = self._get_param_names()
        for name, value in params.items():
            if name not in names:
                raise ValueError(f"unknown parameter {name!r}; valid: {', '.join(names)}")
            setattr(self, name, value)
        self._check_params()
        return self

    def __repr__(self) -> str:
        shown = []
        for name, parameter in inspect.signature(type(self).__init__).parameters.items():
            value = getattr(self, name, parameter.default)
            if name != "self" and value is not parameter.default and value != parameter.default:
                shown.append(f"{name}={value.__name__ if isinstance(value, type) else repr(value)}")
        return f"{type(self).__name__}({', '.join(shown)})"

    def _check_params(self) -> None:
        """Check every hyperparameter against :data:`bpr_numpy._parameters.CONSTRAINTS`, then the joint rules."""
        if isinstance(self.item_bias, np.ndarray):
            raise TypeError("item_bias is the flag (learn an item bias or not); the learned biases are "
                            "model.item_biases")
        check_parameters(self.get_params())
        if LOSS_REGISTRY[self.loss].draws_negatives and not sampling.REGISTRY[self.sampler].warp:
            usable = " or ".join(repr(s.name) for s in sampling.REGISTRY.values() if s.warp)
            raise ValueError(f"loss={self.loss!r} draws its own negatives until one violates the margin: "
                             f"use sampler={usable}, not {self.sampler!r}")

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
        self._check_trained()
        return self.user_factors.shape[0]

    @property
    def n_items(self) -> int:
        self._check_trained()
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

    def _check_trained(self) -> None:
        if self.user_factors is None:
            raise RuntimeError("this BPR model is not fitted yet: call fit(user_items) first")
        if self._diverged:
            raise TrainingDivergedError(self._diverged)

    def _check_fitted(self) -> None:
        """The door of every public method: trained, and the arrays fit together (once per call)."""
        self._check_trained()
        self._check_parameter_arrays()

    def _check_parameter_arrays(self) -> None:
        """Check that the learned arrays fit together before any kernel indexes them.

        Every public path reaches the arrays through :meth:`_check_fitted`, and a user may have
        replaced one (``model.item_biases = ...``) or reshaped it in place: a kernel trusts the
        shapes it is given, so a bias shorter than the catalogue would be read and written past
        its end. A few comparisons, so it runs on every call.
        """
        arrays = dict(zip(_PARAMETER_NAMES, self._parameters()))
        for name, a in arrays.items():
            if not isinstance(a, np.ndarray):
                raise TypeError(f"model.{name} must be a numpy array, got {type(a).__name__}")
            if a.dtype not in (np.float32, np.float64):
                raise TypeError(f"model.{name} has dtype {a.dtype}; the model's arrays hold float32 or float64")
        U, V, b = self.user_factors, self.item_factors, self.item_biases
        f = self.factors
        if U.ndim != 2 or U.shape[1] != f or U.shape[0] < 1:
            raise ValueError(f"model.user_factors has shape {U.shape}; expected (n_users, {f}) (factors={f})")
        if V.ndim != 2 or V.shape[1] != f or V.shape[0] < 1:
            raise ValueError(f"model.item_factors has shape {V.shape}; expected (n_items, {f}) (factors={f})")
        if b.shape != (V.shape[0],):
            raise ValueError(f"model.item_biases has shape {b.shape}; expected ({V.shape[0]},), "
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
        self._seed = resolve_seed(self.random_state)
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
            self._seed = resolve_seed(self.random_state)
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
                self.user_factors, self.item_factors, self.item_biases = features.representations(
                    bool(self.item_bias))
                self._item_norms = None
            if self._seed is None:  # a loaded model without its seed continues on a fresh stream
                self._seed = resolve_seed(self.random_state)
        return self._train(matrix, epochs, callback, show_progress)

    def _check_feature_settings(self) -> None:
        if not LOSS_REGISTRY[self.loss].hybrid:
            usable = " or ".join(repr(loss.name) for loss in LOSS_REGISTRY.values() if loss.hybrid)
            raise ValueError(f"side features support loss {usable}, not {self.loss!r}")
        if not sampling.REGISTRY[self.sampler].hybrid:
            usable = ", ".join(s.name for s in sampling.REGISTRY.values() if s.hybrid)
            raise ValueError(f"side features support the uniform and popularity samplers ({usable}), not "
                             f"{self.sampler!r}")
        if not OPTIMIZER_REGISTRY[self.optimizer].hybrid:  # every optimiser today
            raise ValueError(f"side features do not support optimizer {self.optimizer!r}")

    def _build_features(self, shape, user_features, item_features) -> Features | None:
        if user_features is None and item_features is None:
            return None
        self._check_feature_settings()
        return Features.build(shape, user_features, item_features, identity=self.identity,
                              normalize=bool(self.normalize_features))




    def _parameters(self) -> list[np.ndarray]:
        """Every trained array: the factors and biases, then (side features) the embeddings."""
        arrays = [self.user_factors, self.item_factors, self.item_biases]
        return arrays if self._features is None else arrays + self._features.embeddings()

    def _set_parameters(self, arrays) -> None:
        self.user_factors, self.item_factors, self.item_biases = arrays[:3]
        if self._features is not None:
            self._features.set_embeddings(arrays[3:])
        self._item_norms = None






    # The training loop lives in model/_training.py; these are the estimator's doors to it.
    def _init_factors(self, n_users: int, n_items: int) -> None:
        _training.init_factors(self, n_users, n_items)

    def _train(self, matrix: sp.csr_matrix, epochs: int, callback, show_progress, validation=None) -> "BPR":
        return _training.train(self, matrix, epochs, callback, show_progress, validation)

    def _learning_rate(self, epoch: int) -> float:
        return _training.epoch_learning_rate(self, epoch)

    def _check_finite(self, bad: int) -> None:
        _training.check_finite(self, bad)

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
        out += self.item_biases[flat_i]
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
        threads = min(self.threads or available_threads(), available_threads())
        items, scores = top_k(query, self.item_factors, self.item_biases, k, rows=batch,
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
                  ("item_biases", self.item_biases)]
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
        bias = Y @ features.item_bias_embeddings if self.item_bias else np.zeros(Y.shape[0])
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
        from ..fold_in import fold_in_users

        if regularization is None:
            regularization = Regularization.coerce(self.regularization).user
        else:
            regularization = Regularization.coerce(regularization).user
        return fold_in_users(self.item_factors, self.item_biases if self.item_bias else None, user_items,
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
        threads = min(self.threads or available_threads(), available_threads())
        # Unit vectors: every bound is 1, so reordering the items would settle nothing.
        nb, sc = top_k(unit, unit, np.zeros(self.n_items, dtype=unit.dtype), k, rows=batch, exclude=own,
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
        _persistence.save(self, path, include_interactions=include_interactions)

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
        return from_arrays(cls, arrays, path)


