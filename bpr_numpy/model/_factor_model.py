"""What every trained factor model answers: scores, recommendations, similar items, cold start.

:class:`FactorModel` holds the learned arrays (``user_factors``, ``item_factors``,
``item_biases`` and, with side features, the feature embeddings) and everything computed from
them alone, as implicit's ``MatrixFactorizationBase`` gives every model its ``recommend``.
How the arrays are learned is the subclass's business (:class:`~bpr_numpy.model.BPR`); the
subclass also sets the hyperparameters read here: ``factors``, ``threads`` and ``item_bias``.
Top-k retrieval is :mod:`bpr_numpy.model._retrieval`; see ``docs/architecture.md``.
"""

from __future__ import annotations

from typing import Any, cast

import numpy as np
import scipy.sparse as sp

from .._runtime import available_threads
from .._validation import as_user_items, check_index_array
from ..hybrid import Features
from ._reporting import TrainingDivergedError
from ._retrieval import top_k

__all__ = ["FactorModel"]

#: The trained arrays, in the order of ``BPR._parameters()`` (the embeddings only with side features).
PARAMETER_NAMES = (
    "user_factors",
    "item_factors",
    "item_biases",
    "user_embeddings",
    "item_embeddings",
    "item_bias_embeddings",
)


class FactorModel:
    """Learned factors and what they answer; subclassed by the estimators that learn them.

    Attributes
    ----------
    user_factors : ndarray, shape (n_users, factors)
    item_factors : ndarray, shape (n_items, factors)
    item_biases : ndarray, shape (n_items,)
    user_ids, item_ids, item_titles : ndarray or None
        Optional raw ids and titles of the rows and columns.

    Every public method checks that these arrays fit together before a kernel reads them
    (:meth:`_check_fitted`).
    """

    # The hyperparameters this class reads; the subclass's __init__ sets them.
    factors: int
    threads: int
    item_bias: bool

    def _reset_state(self) -> None:
        """No learned arrays yet (the state of a freshly constructed estimator)."""
        self.user_factors: np.ndarray | None = None
        self.item_factors: np.ndarray | None = None
        self.item_biases: np.ndarray | None = None
        self._user_items: sp.csr_matrix | None = None
        self._features: Features | None = None
        self._diverged: str | None = None
        self._item_norms: np.ndarray | None = None
        # Raw-id maps (row/column index -> the data's own id) and item titles: optional, set by
        # whoever knows them (the CLI's ``train`` does), saved with the model so a loaded model
        # can answer in the data's ids.
        self.user_ids: np.ndarray | None = None
        self.item_ids: np.ndarray | None = None
        self.item_titles: np.ndarray | None = None

    def _threads(self) -> int:
        return min(self.threads or available_threads(), available_threads())

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
        U = self.user_factors
        assert U is not None  # _check_trained
        return U.shape[0]

    @property
    def n_items(self) -> int:
        self._check_trained()
        return cast(np.ndarray, self.item_factors).shape[0]  # set with user_factors

    def _factors(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(user_factors, item_factors, item_biases)`` of a trained model, for the type checker.

        Call after :meth:`_check_trained` or :meth:`_check_fitted`: a trained model holds all three.
        """
        U, V, b = self.user_factors, self.item_factors, self.item_biases
        assert U is not None and V is not None and b is not None, "the model is not trained"
        return U, V, b

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
        arrays = dict(zip(PARAMETER_NAMES, self._parameters(), strict=False))
        for name, a in arrays.items():
            if not isinstance(a, np.ndarray):
                raise TypeError(f"model.{name} must be a numpy array, got {type(a).__name__}")
            if a.dtype not in (np.float32, np.float64):
                raise TypeError(f"model.{name} has dtype {a.dtype}; the model's arrays hold float32 or float64")
        U, V, b = self._factors()  # arrays: checked just above
        f = self.factors
        if U.ndim != 2 or U.shape[1] != f or U.shape[0] < 1:
            raise ValueError(f"model.user_factors has shape {U.shape}; expected (n_users, {f}) (factors={f})")
        if V.ndim != 2 or V.shape[1] != f or V.shape[0] < 1:
            raise ValueError(f"model.item_factors has shape {V.shape}; expected (n_items, {f}) (factors={f})")
        if b.shape != (V.shape[0],):
            raise ValueError(
                f"model.item_biases has shape {b.shape}; expected ({V.shape[0]},), one bias per row of item_factors"
            )
        shape = (U.shape[0], V.shape[0])
        if self._user_items is not None and self._user_items.shape != shape:
            raise ValueError(
                f"the model's factors are for {shape[0]} users x {shape[1]} items but its "
                f"interactions (model.user_items) are {self._user_items.shape}"
            )
        for name, expected in (("user_ids", shape[0]), ("item_ids", shape[1]), ("item_titles", shape[1])):
            value = getattr(self, name)
            if value is not None and np.shape(value) != (expected,):
                what = "users (rows of user_factors)" if name == "user_ids" else "items (rows of item_factors)"
                shape = np.shape(value)
                has = f"{shape[0]} entries" if len(shape) == 1 else f"shape {shape}"
                raise ValueError(f"{name} has {has} but the model has {expected} {what}")
        if self._features is not None:
            users, items = self._features.users, self._features.items
            for name, a, expected in (
                ("user_embeddings", arrays["user_embeddings"], (users.n_features, f)),
                ("item_embeddings", arrays["item_embeddings"], (items.n_features, f)),
                ("item_bias_embeddings", arrays["item_bias_embeddings"], (items.n_features,)),
            ):
                if a.shape != expected:
                    raise ValueError(f"model.{name} has shape {a.shape}; expected {expected}")
            if (users.n_rows, items.n_rows) != shape:
                raise ValueError(
                    f"the model's factors are for {shape[0]} users x {shape[1]} items but its side "
                    f"features are for {users.n_rows} x {items.n_rows}"
                )

    def _parameters(self) -> list[Any]:
        """Every trained array: the factors and biases, then (side features) the embeddings.

        As the attributes hold them: a user may have replaced one, and :meth:`_check_parameter_arrays`
        checks that they are arrays.
        """
        arrays = [self.user_factors, self.item_factors, self.item_biases]
        return arrays if self._features is None else arrays + self._features.embeddings()

    def _set_parameters(self, arrays) -> None:
        self.user_factors, self.item_factors, self.item_biases = arrays[:3]
        if self._features is not None:
            self._features.set_embeddings(arrays[3:])
        self._item_norms = None

    # The training loop lives in model/_training.py; these are the estimator's doors to it.

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
        U, V, b = self._factors()
        out = np.einsum("nf,nf->n", U[flat_u], V[flat_i])
        out += b[flat_i]
        return out.reshape(u.shape)

    def _user_items_for(self, user_items) -> sp.csr_matrix | None:
        if user_items is None:
            return self._user_items
        matrix = as_user_items(user_items, require_positive=False)
        if matrix.shape != (self.n_users, self.n_items):
            raise ValueError(f"user_items has shape {matrix.shape}; the model has {(self.n_users, self.n_items)}")
        return matrix

    def recommend(
        self,
        users=None,
        n: int = 10,
        *,
        filter_liked: bool = True,
        user_items=None,
        user_factors=None,
        as_frame: bool = False,
    ):
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
        as_frame : bool
            Return one pandas DataFrame instead (pandas needed): a row per
            recommendation with ``user`` (the row; -1 for ``user_factors``),
            ``rank`` (1 = best), ``item``, ``score``, and the raw ``user_id``,
            ``item_id`` and ``title`` where the model holds them. Padding is
            left out.

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
                    raise ValueError(
                        "filter_liked=True with user_factors needs user_items: the new users' rows "
                        "(or pass filter_liked=False)"
                    )
                liked = as_user_items(user_items, require_positive=False)
                if liked.shape != (len(query), self.n_items):
                    raise ValueError(
                        f"user_items has shape {liked.shape}; expected one row per vector, {(len(query), self.n_items)}"
                    )
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
            query, batch = self._factors()[0], np.atleast_1d(u)
        # Capped at the catalogue: a huge n must not allocate a huge padded array.
        k = min(int(n), self.n_items)
        threads = self._threads()
        _, V, b = self._factors()
        items, scores = top_k(query, V, b, k, rows=batch, exclude=liked, threads=threads)
        candidates = self.n_items - (np.diff(liked.indptr)[batch] if liked is not None else 0)
        self._check_ranking(items, scores, np.minimum(candidates, k), query[batch])
        if as_frame:
            from .._frames import recommendations_frame

            return recommendations_frame(
                self, batch if user_factors is None else np.full(len(batch), -1), items, scores
            )
        if single:
            valid = items[0] >= 0
            return items[0][valid], scores[0][valid]
        return items, scores

    def _nonfinite_parameter(self, query: np.ndarray | None = None) -> str | None:
        """The name of the first parameter array (or the query vectors) holding NaN or inf, else None."""
        named: list[tuple[str, np.ndarray | None]] = [("user_factors", query)] if query is not None else []
        named += [
            ("user_factors", self.user_factors),
            ("item_factors", self.item_factors),
            ("item_biases", self.item_biases),
        ]
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
            raise ValueError(
                f"model.{name} holds NaN or infinite values: its scores cannot be ranked. "
                "Refit, or replace the array with finite values"
            )

    # ------------------------------------------------------------------ cold start (side features)
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
        E, _, _ = features.drawn_embeddings()
        return np.ascontiguousarray(X @ E, dtype=self._factors()[0].dtype)

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
        dtype = self._factors()[1].dtype
        _, F, c = features.drawn_embeddings()
        bias = Y @ c if self.item_bias else np.zeros(Y.shape[0])
        return np.ascontiguousarray(Y @ F, dtype=dtype), np.asarray(bias, dtype=dtype)

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
        return self._factors()[0][u] @ factors.T + bias

    def _check_user_vectors(self, user_factors) -> np.ndarray:
        try:
            q = np.asarray(user_factors)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"user_factors could not be read as an array: {exc}") from None
        if q.dtype.kind not in "fiu" or q.dtype == np.bool_:
            raise TypeError(f"user_factors must hold real numbers, got dtype {q.dtype}")
        V = self._factors()[1]
        factors = V.shape[1]
        if q.ndim not in (1, 2) or q.shape[-1] != factors:
            raise ValueError(f"user_factors must have shape ({factors},) or (n, {factors}), got {q.shape}")
        with np.errstate(over="ignore"):  # checked just below, in the precision the scores use
            q = np.ascontiguousarray(np.atleast_2d(q), dtype=V.dtype)
        if not np.isfinite(q).all():
            raise ValueError(f"user_factors holds NaN or infinite values (in the model's {q.dtype.name})")
        return q

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
        V = self._factors()[1]
        if self._item_norms is None:
            norms = np.linalg.norm(V, axis=1)
            self._item_norms = np.where(norms > 0, norms, 1.0).astype(V.dtype)
        unit = V / self._item_norms[:, None]
        batch = np.atleast_1d(q)
        k = min(int(n), self.n_items - 1)
        # Row i of the identity excludes item i: the query is not its own neighbour.
        own = sp.csr_matrix(
            (np.ones(self.n_items), np.arange(self.n_items), np.arange(self.n_items + 1)),
            shape=(self.n_items, self.n_items),
        )
        threads = self._threads()
        # Unit vectors: every bound is 1, so reordering the items would settle nothing.
        nb, sc = top_k(
            unit,
            unit,
            np.zeros(self.n_items, dtype=unit.dtype),
            k,
            rows=batch,
            exclude=own,
            threads=threads,
            prune=False,
        )
        self._check_ranking(nb, sc, k, unit[batch])
        if np.ndim(q) == 0:
            return nb[0], sc[0]
        return nb, sc
