"""The BPR estimator: its hyperparameters, and the doors to training, fold-in and model files.

What a trained model answers (scores, recommendations, similar items, cold start) it inherits
from :class:`~bpr_numpy.model.FactorModel`; ``get_params`` and friends from
:class:`~bpr_numpy._parameters.ParameterMixin`. Training is :mod:`bpr_numpy.model._training`,
model files :mod:`bpr_numpy.model._persistence`; see ``docs/architecture.md``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

import numpy as np

from .._archives import read_npz
from .._parameters import ParameterMixin, check_combination, check_parameters
from ..objective import OptimizerState, Regularization
from . import _persistence, _training
from ._factor_model import FactorModel
from ._persistence import from_arrays
from ._reporting import EpochReport, _Validation
from ._training import _check_epochs

if TYPE_CHECKING:  # pragma: no cover
    from ..distributed import TrainingLog

__all__ = ["BPR"]


class BPR(ParameterMixin, FactorModel):
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
    loss : {"bpr", "sigmoid", "warp", "softmax"}, default "bpr"
        ``"bpr"`` is BPR-Opt, ``-ln sigma(x)``; ``"sigmoid"`` is ``1 - sigma(x)``;
        ``"warp"`` is WARP as LightFM does it: negatives are drawn (by
        ``sampler``, ``"uniform"`` or ``"popularity"``) until one violates the
        margin ``x_uj > x_ui - 1`` or ``max_sampled`` draws are made; the
        hinge ``max(0, 1 - x_uij)`` is weighted by
        ``log(floor((n_items - 1) / draws))`` (:func:`bpr_numpy.objective.warp_weight`).
        ``"softmax"`` is the sampled softmax over the ``n_negatives`` negatives of a positive,
        ``ln(1 + sum_m exp(-x_uij_m))`` (with one negative, BPR-Opt); ``solver="kernel"``,
        no side features or stratified training (:mod:`bpr_numpy.objective._negatives`).
    sampler : str, default "uniform"
        Negative sampling, one of :data:`bpr_numpy.sampling.SAMPLERS`:
        ``"uniform"`` (j uniform, resampled while a known positive: the
        paper's), ``"uniform-skip"`` (cornac's), ``"uniform-any"`` (positives kept
        as negatives, as the Keras example; ``solver="minibatch"`` only), ``"popularity"`` and
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
    optimizer : {"sgd", "adagrad", "adam", "adam-dense"}, default "sgd"
        Update rule (see :mod:`bpr_numpy.objective`): plain SGD, AdaGrad with
        per-element accumulators starting at 1 (LightFM's), lazy Adam with
        per-row step counts, or (``solver="minibatch"`` only) dense Adam as Keras 1
        applied it to embeddings: every row's moments decay and every row moves
        at every step.
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
        seed-to-seed spread (docs/guide/tuning.md). At most 32.
    item_bias : bool, default True
        Learn an item bias ``b_i``.
    init_std : float or None, default None
        Standard deviation of the initial factors (see ``init``); None means
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
    solver : {"kernel", "minibatch"}, default "kernel"
        ``"kernel"``: the numba kernels, one SGD step per sampled triplet (Rendle's bootstrap
        in user runs), Hogwild over ``threads``. ``"minibatch"``: the vectorised NumPy trainer
        (:mod:`bpr_numpy.model._minibatch`), no numba kernel: every training pair once per epoch in
        a seeded random order, in batches of ``batch_size`` whose step follows the mean of
        their triplets' objectives; the same math (:func:`bpr_numpy.objective.triplet_terms`),
        and with ``batch_size=1`` and SGD the kernels' per-sample step. It takes the samplers
        whose draw does not depend on the factors (not ``"dns"``, ``"aobpr"``; a registered
        sampler's own NumPy ``draw`` too), the losses ``"bpr"`` and ``"sigmoid"``, every
        optimiser, side features (the step moves their embeddings), and ignores ``threads``
        and ``user_run``.
    batch_size : int, default 64
        Triplets per step of ``solver="minibatch"`` (unused by the kernels).
    init : {"normal", "uniform"}, default "normal"
        Law of the initial factors, of standard deviation ``init_std`` either way:
        normal, or uniform on ``[-a, a)`` with ``a = sqrt(3) init_std`` (Keras's
        ``Embedding`` default is ``a = 0.05``, ``init_std = 0.05 / sqrt(3)``).
    n_negatives : int, default 1
        Negatives per sampled positive. With ``k > 1`` each step follows the mean of the
        positive's ``k`` triplet objectives, all gradients at the old values
        (:mod:`bpr_numpy.objective._negatives`); the first negative is the sampler's draw, the
        others are drawn the same way (``"dns"``: each the best of ``dns_candidates``). An epoch
        still draws as many positives as there are pairs, so it costs about ``(k + 2) / 3``
        one-negative epochs. With ``loss="softmax"`` the step follows the sampled softmax over
        the k negatives instead of their mean. ``solver="kernel"``, losses ``"bpr"``,
        ``"sigmoid"`` and ``"softmax"``, the samplers
        that redraw a known positive (``"uniform"``, ``"popularity"``, ``"dns"``), without side
        features or stratified training; ``n_negatives * dns_candidates`` at most 1024.

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
    (never ``ua.test``); see docs/guide/tuning.md, "How the defaults were chosen".
    """

    # Set by bpr_numpy.distributed.fit (the model's log of a distributed fit); declared for the type checker.
    distributed_log_: TrainingLog

    def __init__(
        self,
        factors: int = 64,
        learning_rate: float = 0.02,
        regularization: float | Mapping[str, float] = 0.02,
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
        identity: bool | str = True,
        normalize_features: bool = False,
        solver: str = "kernel",
        batch_size: int = 64,
        init: str = "normal",
        n_negatives: int = 1,
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
        self.solver = solver
        self.batch_size = batch_size
        self.init = init
        self.n_negatives = n_negatives
        self._check_params()
        self._reset_state()  # the learned arrays: none yet
        self.history_: list[EpochReport] = []
        self._epochs_done = 0
        self._seed: int | None = None
        self._optimizer_state: OptimizerState | None = None
        self.interrupted_ = False
        self.best_epoch_: int | None = None
        self.best_score_: float | None = None

    # ------------------------------------------------------------------ parameters
    def _check_params(self) -> None:
        """Check every hyperparameter against :data:`bpr_numpy._parameters.CONSTRAINTS`, then the joint rules."""
        if isinstance(self.item_bias, np.ndarray):
            raise TypeError(
                "item_bias is the flag (learn an item bias or not); the learned biases are model.item_biases"
            )
        params = self.get_params()
        check_parameters(params)
        check_combination(params)

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
    ) -> BPR:
        """Initialise the factors and train, optionally with validation and early stopping.

        Parameters
        ----------
        user_items : sparse matrix, array_like or Interactions, shape (n_users, n_items)
            Interactions; stored values > 0 are positives. Given a
            :class:`bpr_numpy.datasets.Interactions` (say from
            :func:`~bpr_numpy.datasets.from_dataframe`), the model also keeps
            its ``user_ids``, ``item_ids`` and ``item_titles``.
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
            ``"bpr"`` and ``"sigmoid"`` losses; with ``solver="kernel"`` the
            samplers and optimisers marked ``hybrid`` in their registries (the
            uniform and popularity samplers, SGD, AdaGrad and Adam), with
            ``solver="minibatch"`` everything that solver takes.

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
        matrix, maps = _training.interactions(user_items)
        features = _training.build_features(self, matrix.shape, user_features, item_features)
        tracker = (
            None if validation is None else _Validation(validation, metric, patience, validate_every, matrix.shape)
        )
        _training.start(self, matrix, features)
        if maps is not None:
            self.user_ids, self.item_ids, self.item_titles = maps
        return _training.train(
            self, matrix, self.epochs if epochs is None else epochs, callback, show_progress, tracker
        )

    def partial_fit(
        self,
        user_items,
        epochs: int = 1,
        callback: Callable[[EpochReport], object] | None = None,
        show_progress: bool | None = None,
        *,
        user_features=None,
        item_features=None,
    ) -> BPR:
        """Train more epochs from the current factors (initialising them if needed).

        ``fit(X, epochs=a)`` followed by ``partial_fit(X, epochs=b)`` draws the
        same triplets as ``fit(X, epochs=a + b)`` (bitwise the same result
        with ``threads=1``).

        Parameters
        ----------
        user_items : sparse matrix, array_like or Interactions
            Same shape as the data the model was fitted on; an Interactions'
            ids must be the model's, when it has some.
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
        matrix, maps = _training.interactions(user_items)
        if maps is not None and self.user_ids is not None:
            _training.check_same_ids(self, maps)
        features = _training.build_features(self, matrix.shape, user_features, item_features)
        if self.user_factors is None:
            _training.start(self, matrix, features)
        else:
            _training.resume(self, matrix, features, user_features, item_features)
        if maps is not None and self.user_ids is None:
            self.user_ids, self.item_ids, self.item_titles = maps
        return _training.train(self, matrix, epochs, callback, show_progress)

    # ------------------------------------------------------------------ inference (the rest: FactorModel)
    def fold_in(
        self,
        user_items,
        *,
        regularization: float | None = None,
        max_iter: int = 200,
        tol: float = 1e-6,
        max_pairs: int = 1 << 20,
        random_state: int | None = 0,
    ) -> np.ndarray:
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
        _, item_factors, item_biases = self._factors()
        return fold_in_users(
            item_factors,
            item_biases if self.item_bias else None,
            user_items,
            loss=self.loss,
            user_regularization=regularization,
            max_iter=max_iter,
            tol=tol,
            max_pairs=max_pairs,
            random_state=random_state,
        )

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | os.PathLike, *, include_interactions: bool = True) -> None:
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
    def load(cls, path: str | os.PathLike) -> BPR:
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
