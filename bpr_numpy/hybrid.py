"""Side features (LightFM-style hybrid model): feature matrices, embeddings, cold start.

A user is represented by the weighted sum of its features' embeddings, an
item likewise, and an item's bias by the same sum of per-feature biases
(:mod:`bpr_numpy.objective`, "hybrid", has the math and its gradients).
With ``identity=True`` each user and each item also has a feature of its own
(an identity column, placed before the metadata columns), so the plain
model is the special case of no metadata; with ``identity=False`` a side that
has metadata is represented by its metadata only, which lets the model score
users and items it has never seen from their features alone (``"users"`` or
``"items"``: identities on that side only).

A side given no feature matrix is represented by identities only.
``normalize=True`` scales every row (identity included) to unit L1 norm, as
LightFM does, so that a row with many features does not get a larger
representation than a row with few (off by default in :class:`bpr_numpy.BPR`:
see its ``normalize_features``).

This module holds the state; :class:`bpr_numpy.BPR` drives it
(``fit(user_items, user_features=..., item_features=...)``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp

from ._kernel_args import FeatureMatrices, Parameters
from ._validation import _check_real_dtype, check_sparse_structure, csr_from_arrays, dense_matrix, is_sparse

__all__ = ["as_feature_matrix", "Features"]


def as_feature_matrix(features, n_rows: int | None, name: str) -> sp.csr_matrix:
    """Validate a feature matrix and return it as canonical CSR (float64, sorted, no stored zeros).

    Parameters
    ----------
    features : scipy sparse matrix/array, ndarray or nested list
        Rows (users or items) x features; any finite real values.
    n_rows : int or None
        Required number of rows (None: any, at least one).
    name : str
        Used in error messages.

    Raises
    ------
    TypeError
        Not numeric, or not a matrix.
    ValueError
        Not 2-D, NaN or infinite values, wrong number of rows, broken
        sparse structure.
    """
    if is_sparse(features):
        if features.ndim != 2:
            raise ValueError(f"{name} must be 2-D, got {features.ndim}-D")
        _check_real_dtype(features.dtype, name)
        check_sparse_structure(features, name)
        try:
            # Duplicate entries are summed as the input's dtype defines it (True + True = True, as
            # toarray() has it), except that integers are widened first (int8 100 + 100 = -56).
            if features.dtype.kind == "b":
                matrix = sp.csr_matrix(features, copy=True)
                matrix.sum_duplicates()
                matrix = matrix.astype(np.float64)
            else:
                widened = features.astype(np.float64) if features.dtype.kind in "iu" else features
                matrix = sp.csr_matrix(widened, dtype=np.float64, copy=True)
        except (ValueError, TypeError, IndexError) as exc:
            raise ValueError(f"{name} could not be converted to CSR: {exc}") from None
    else:
        matrix = sp.csr_matrix(dense_matrix(features, name, "rows x features").astype(np.float64))
    matrix.sum_duplicates()
    if not np.isfinite(matrix.data).all():
        raise ValueError(f"{name} holds NaN or infinite values")
    matrix.eliminate_zeros()
    if n_rows is not None and matrix.shape[0] != n_rows:
        raise ValueError(f"{name} has {matrix.shape[0]} rows; expected {n_rows}, one per row of user_items")
    if matrix.shape[0] == 0:
        raise ValueError(f"{name} has no rows")
    return csr_from_arrays(matrix.data, matrix.indices.astype(np.int32), matrix.indptr.astype(np.int64), matrix.shape)


def _normalized(matrix: sp.csr_matrix, name: str = "features") -> sp.csr_matrix:
    with np.errstate(over="ignore"):  # an overflowing norm is reported below
        norms = np.asarray(abs(matrix).sum(axis=1)).ravel()
    if not np.isfinite(norms).all():
        row = int(np.flatnonzero(~np.isfinite(norms))[0])
        raise ValueError(f"{name} row {row} has an L1 norm too large for float64: it cannot be normalised")
    scale = np.divide(1.0, norms, out=np.ones_like(norms), where=norms > 0)
    out = matrix.copy()
    out.data = out.data * np.repeat(scale, np.diff(out.indptr))
    return out


class _Side:
    """The features of one side (users or items): the training matrix and how new rows are built."""

    def __init__(self, metadata: sp.csr_matrix | None, n_rows: int, identity: bool, normalize: bool, name: str):
        if metadata is not None and metadata.shape[1] == 0:
            metadata = None  # no column: nothing but the identity can represent the rows
        self.n_rows = n_rows
        self.n_metadata = 0 if metadata is None else metadata.shape[1]
        # A side without metadata has identities whatever ``identity`` says: it needs a representation.
        self.identity = identity or metadata is None
        self.normalize = normalize
        parts = []
        if self.identity:
            parts.append(sp.identity(n_rows, format="csr", dtype=np.float64))
        if metadata is not None:
            parts.append(metadata)
        full = sp.hstack(parts, format="csr") if len(parts) > 1 else parts[0].tocsr()
        full.sort_indices()
        if normalize:
            full = _normalized(full, name)
        # Feature values stay float64 whatever the model's dtype (the kernels compute in
        # float64): no overflow or underflow of a user's values, and a model whose dtype
        # changes keeps the same feature matrices.
        self.matrix = csr_from_arrays(
            full.data.astype(np.float64), full.indices.astype(np.int32), full.indptr.astype(np.int64), full.shape
        )

    @property
    def n_features(self) -> int:
        return self.matrix.shape[1]

    def new_rows(self, metadata, name: str) -> sp.csr_matrix:
        """Feature rows of rows unseen in training, from their metadata alone (no identity)."""
        if self.n_metadata == 0:
            raise ValueError(f"the model was fitted without {name}: new rows cannot be represented from them")
        m = as_feature_matrix(metadata, None, name)
        if m.shape[1] != self.n_metadata:
            raise ValueError(f"{name} has {m.shape[1]} columns; the model was fitted with {self.n_metadata}")
        if self.normalize:
            m = _normalized(m, name)
        offset = self.n_rows if self.identity else 0
        return sp.csr_matrix((m.data, m.indices + offset, m.indptr), shape=(m.shape[0], self.n_features))


class Features:
    """Both sides' features and the embeddings trained on them.

    Attributes
    ----------
    users, items : _Side
    user_embeddings : ndarray, shape (n_user_features, factors)
    item_embeddings : ndarray, shape (n_item_features, factors)
    item_bias_embeddings : ndarray, shape (n_item_features,)
    """

    def __init__(self, users: _Side, items: _Side) -> None:
        self.users, self.items = users, items
        self.user_embeddings: np.ndarray | None = None
        self.item_embeddings: np.ndarray | None = None
        self.item_bias_embeddings: np.ndarray | None = None

    @classmethod
    def build(
        cls, shape: tuple[int, int], user_features, item_features, *, identity: bool | str, normalize: bool
    ) -> Features:
        """Validate both sides' metadata and lay out their feature matrices.

        ``identity``: True (both sides), False (neither), ``"users"`` or ``"items"`` (that side only);
        a side without metadata (None, or a matrix with no column) always has identities.
        """
        n_users, n_items = shape
        u = None if user_features is None else as_feature_matrix(user_features, n_users, "user_features")
        i = None if item_features is None else as_feature_matrix(item_features, n_items, "item_features")
        return cls(
            _Side(u, n_users, identity in (True, "users"), normalize, "user_features"),
            _Side(i, n_items, identity in (True, "items"), normalize, "item_features"),
        )

    def init_embeddings(self, normal) -> None:
        """Draw the embeddings: ``normal(rows)`` gives a ``rows x factors`` block of the model's initial law."""
        # Users first, then items, as the plain model draws its factors: with identities
        # only, the initial representations are the plain model's initial factors.
        self.user_embeddings = normal(self.users.n_features)
        self.item_embeddings = normal(self.items.n_features)
        self.item_bias_embeddings = np.zeros(self.items.n_features, dtype=self.item_embeddings.dtype)

    def embeddings(self) -> list[Any]:
        """The three embeddings as the attributes hold them (None before they are drawn)."""
        return [self.user_embeddings, self.item_embeddings, self.item_bias_embeddings]

    def drawn_embeddings(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The three embeddings once drawn (:meth:`init_embeddings`) or set, for the type checker."""
        E, F, c = self.user_embeddings, self.item_embeddings, self.item_bias_embeddings
        assert E is not None and F is not None and c is not None, "the embeddings are not drawn yet"
        return E, F, c

    def set_embeddings(self, arrays) -> None:
        self.user_embeddings, self.item_embeddings, self.item_bias_embeddings = arrays

    def representations(self, use_bias: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(X E, Y F, Y c)`` in the embeddings' dtype, C-contiguous (zeros for the bias without ``use_bias``)."""
        E, F, c = self.drawn_embeddings()
        dtype = E.dtype
        U = np.ascontiguousarray(self.users.matrix @ E, dtype=dtype)
        V = np.ascontiguousarray(self.items.matrix @ F, dtype=dtype)
        b = np.ascontiguousarray(self.items.matrix @ c, dtype=dtype) if use_bias else np.zeros(V.shape[0], dtype=dtype)
        return U, V, b

    def kernel_args(self) -> tuple[Parameters, FeatureMatrices]:
        """The embeddings and the feature matrices as the hybrid kernels take them."""
        X, Y = self.users.matrix, self.items.matrix
        return (
            Parameters(*self.drawn_embeddings()),
            FeatureMatrices(X.indptr, X.indices, X.data, Y.indptr, Y.indices, Y.data),
        )

    # ------------------------------------------------------------------ persistence
    #: Entries a model file holds for the features, besides the plain model's.
    ENTRIES = (
        "user_embeddings",
        "item_embeddings",
        "item_bias_embeddings",
        "user_features_indptr",
        "user_features_indices",
        "user_features_data",
        "item_features_indptr",
        "item_features_indices",
        "item_features_data",
    )

    def to_arrays(self) -> tuple[dict, dict]:
        """``(arrays, meta)`` for :meth:`bpr_numpy.BPR.save`."""
        arrays = {
            "user_embeddings": self.user_embeddings,
            "item_embeddings": self.item_embeddings,
            "item_bias_embeddings": self.item_bias_embeddings,
        }
        meta = {}
        for label, side in (("user", self.users), ("item", self.items)):
            for part in ("indptr", "indices", "data"):
                arrays[f"{label}_features_{part}"] = getattr(side.matrix, part)
            meta[label] = {"n_metadata": side.n_metadata, "identity": side.identity, "normalize": side.normalize}
        return arrays, meta

    @classmethod
    def from_arrays(cls, arrays: dict, meta, n_users: int, n_items: int, factors: int, dtype) -> Features:
        """Rebuild from a model file's entries; ValueError naming what is wrong."""
        if not isinstance(meta, dict):
            raise ValueError("the feature metadata is not a mapping")
        missing = [k for k in cls.ENTRIES if k not in arrays]
        if missing:
            raise ValueError(f"missing feature entries {missing}")
        sides = []
        for label, n_rows in (("user", n_users), ("item", n_items)):
            info = meta.get(label)
            if not isinstance(info, dict):
                raise ValueError(f"no {label} feature metadata")
            n_meta, identity, normalize = info.get("n_metadata"), info.get("identity"), info.get("normalize")
            if (
                isinstance(n_meta, bool)
                or not isinstance(n_meta, int)
                or n_meta < 0
                or not isinstance(identity, bool)
                or not isinstance(normalize, bool)
                or (n_meta == 0 and not identity)
            ):
                raise ValueError(f"invalid {label} feature metadata {info!r}")
            n_features = n_rows * identity + n_meta
            indptr, indices, data = (arrays[f"{label}_features_{p}"] for p in ("indptr", "indices", "data"))
            if (
                indptr.ndim != 1
                or indptr.dtype.kind not in "iu"
                or indices.ndim != 1
                or data.ndim != 1
                or data.dtype != np.float64
                or indptr.shape != (n_rows + 1,)
                or len(indices) != len(data)
            ):
                raise ValueError(f"the stored {label} features do not form a {n_rows}-row float64 matrix")
            matrix = csr_from_arrays(data, indices, indptr, (n_rows, n_features))
            if not check_sparse_structure(matrix, f"the stored {label} features"):
                raise ValueError(f"the stored {label} features are not sorted and unique")
            if not np.isfinite(data).all():
                raise ValueError(f"the stored {label} features hold NaN or infinite values")
            side = _Side.__new__(_Side)
            side.n_rows, side.n_metadata, side.identity, side.normalize = n_rows, n_meta, identity, normalize
            side.matrix = csr_from_arrays(data, indices.astype(np.int32), indptr.astype(np.int64), (n_rows, n_features))
            sides.append(side)
        features = cls(*sides)
        E, F, c = (arrays[k] for k in ("user_embeddings", "item_embeddings", "item_bias_embeddings"))
        expected = ((sides[0].n_features, factors), (sides[1].n_features, factors), (sides[1].n_features,))
        for name, a, shape in zip(
            ("user_embeddings", "item_embeddings", "item_bias_embeddings"), (E, F, c), expected, strict=True
        ):
            if a.shape != shape or a.dtype != dtype:
                raise ValueError(f"{name} has shape {a.shape} and dtype {a.dtype}; expected {shape} of {dtype}")
            if not np.isfinite(a).all():
                raise ValueError(f"{name} holds NaN or infinite values")
        features.set_embeddings([np.ascontiguousarray(a) for a in (E, F, c)])
        return features
