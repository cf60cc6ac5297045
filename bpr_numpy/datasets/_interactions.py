"""The :class:`Interactions` container.

An Interactions is a checked users x items CSR matrix plus the raw ids of its
rows and columns, optional per-pair ratings and timestamps, and side tables;
this module holds the class (its checks at construction, id lookups, pair
selection). What loading did is :mod:`._summary`'s :class:`LoadSummary`. Building one from raw id
columns is :mod:`._assemble`'s job, moving one to another id space
:mod:`._id_space`'s, and the canonical CSR it holds :mod:`._csr`'s.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ._csr import _check_csr, _csr_module, _make_csr
from ._ids import _as_id_array, _check_unique, _IdIndex, _lookup_many, _lookup_one
from ._summary import LoadSummary

if TYPE_CHECKING:  # scipy is imported lazily: `import bpr_numpy.datasets` stays cheap
    import scipy.sparse as sp

__all__ = ["Interactions", "LoadSummary"]


@dataclass(frozen=True, eq=False, repr=False)
class Interactions:
    """Implicit-feedback pairs as a users x items CSR matrix plus the id maps.

    Build one with :meth:`from_arrays`, :meth:`from_csr` or a loader
    (:func:`load_movielens`, :func:`load_delimited`, ...). Row ``u`` of
    ``matrix`` belongs to raw user id ``user_ids[u]``, column ``i`` to raw
    item id ``item_ids[i]``. Two Interactions with identical ``user_ids`` and
    ``item_ids`` (a train/test split, the parts of :func:`align`) have aligned
    matrices: same shape, same meaning of every row and column.

    Attributes
    ----------
    matrix : scipy.sparse.csr_matrix, shape (n_users, n_items)
        float32 (or float64) data, sorted unique column indices per row,
        int32 indices when they fit. Only kept pairs are stored: 1.0 when
        binarised, else the (merged) rating.
    user_ids, item_ids : numpy.ndarray
        Raw id of each row / column: ``int64`` for integer ids, ``str`` for
        string ids. Loaders and :meth:`from_arrays` sort them.
    ratings : numpy.ndarray of float32, optional
        The (merged) rating of each stored pair, in CSR order (aligned with
        ``matrix.indices``); kept even when ``matrix`` is binarised.
    timestamps : numpy.ndarray of int64 (or float64), optional
        Timestamp of each stored pair in CSR order (latest one for merged pairs
        under ``dedupe="max"``/``"sum"``).
    item_titles : numpy.ndarray of str, optional
        One title per item ("" where unknown).
    item_features : numpy.ndarray of uint8, optional, shape (n_items, n_features)
        Binary item features (MovieLens genres).
    item_feature_names : tuple of str
        Names of the ``item_features`` columns.
    item_info : mapping of str to numpy.ndarray
        Other per-item columns (release dates, URLs, raw genre strings).
    user_features : mapping of str to numpy.ndarray
        Per-user columns (MovieLens demographics: age, gender, occupation,
        zip_code); -1 or "" where unknown.
    summary : LoadSummary
        What loading did (counts of everything read, merged and dropped).
    """

    matrix: sp.csr_matrix
    user_ids: np.ndarray
    item_ids: np.ndarray
    ratings: np.ndarray | None = None
    timestamps: np.ndarray | None = None
    item_titles: np.ndarray | None = None
    item_features: np.ndarray | None = None
    item_feature_names: tuple[str, ...] = ()
    item_info: Mapping[str, np.ndarray] = field(default_factory=dict)
    user_features: Mapping[str, np.ndarray] = field(default_factory=dict)
    summary: LoadSummary | None = None

    def __post_init__(self) -> None:
        _check_csr(self.matrix)
        uids = _as_id_array(self.user_ids, "user_ids")
        iids = _as_id_array(self.item_ids, "item_ids")
        object.__setattr__(self, "user_ids", uids)
        object.__setattr__(self, "item_ids", iids)
        n_users, n_items = self.matrix.shape
        if uids.size != n_users or iids.size != n_items:
            raise ValueError(
                f"matrix has shape {self.matrix.shape} but there are {uids.size} user ids and {iids.size} item ids"
            )
        _check_unique(uids, "user_ids")
        _check_unique(iids, "item_ids")
        nnz = self.matrix.nnz
        for name in ("ratings", "timestamps"):
            v = getattr(self, name)
            if v is not None and (np.ndim(v) != 1 or len(v) != nnz):
                raise ValueError(f"{name} must hold one value per stored pair ({nnz}), got shape {np.shape(v)}")
        if self.item_titles is not None and len(self.item_titles) != n_items:
            raise ValueError(f"item_titles must have {n_items} entries, got {len(self.item_titles)}")
        if self.item_features is not None:
            f = self.item_features
            if f.ndim != 2 or f.shape[0] != n_items:
                raise ValueError(f"item_features must have shape ({n_items}, k), got {f.shape}")
            if len(self.item_feature_names) != f.shape[1]:
                raise ValueError("item_feature_names must name every item_features column")
        for table, n, what in ((self.item_info, n_items, "item_info"), (self.user_features, n_users, "user_features")):
            for key, col in table.items():
                if len(col) != n:
                    raise ValueError(f"{what}[{key!r}] must have {n} entries, got {len(col)}")
        if self.summary is None:
            object.__setattr__(
                self,
                "summary",
                LoadSummary(source="matrix", rows_in=nnz, stored=nnz, n_users=n_users, n_items=n_items),
            )

    # ------------------------------------------------------------------ shape
    @property
    def n_users(self) -> int:
        """Number of users (rows)."""
        return int(self.matrix.shape[0])

    @property
    def n_items(self) -> int:
        """Number of items (columns)."""
        return int(self.matrix.shape[1])

    @property
    def nnz(self) -> int:
        """Number of stored (user, item) pairs."""
        return int(self.matrix.nnz)

    @property
    def shape(self) -> tuple[int, int]:
        """``(n_users, n_items)``."""
        return (self.n_users, self.n_items)

    def __repr__(self) -> str:
        extra = [n for n in ("ratings", "timestamps", "item_titles", "item_features") if getattr(self, n) is not None]
        if self.user_features:
            extra.append("user_features")
        more = f", with {', '.join(extra)}" if extra else ""
        src = self.summary.source if self.summary is not None else "?"
        return f"<Interactions: {self.n_users:,} users x {self.n_items:,} items, {self.nnz:,} pairs{more}; from {src}>"

    # ------------------------------------------------------------------ lookups
    @functools.cached_property
    def _user_index(self) -> _IdIndex:
        return _IdIndex(self.user_ids)

    @functools.cached_property
    def _item_index(self) -> _IdIndex:
        return _IdIndex(self.item_ids)

    def user_index(self, user: Any) -> int:
        """Row index of one raw user id.

        Parameters
        ----------
        user : int or str
            A raw user id, as in the data file.

        Returns
        -------
        int

        Raises
        ------
        KeyError
            The id is not in this id space (the message says what ids look like).
        """
        return int(_lookup_one(user, self._user_index, "user"))

    def item_index(self, item: Any) -> int:
        """Column index of one raw item id (see :meth:`user_index`)."""
        return int(_lookup_one(item, self._item_index, "item"))

    def user_indices(self, users: Iterable[Any], missing: str | int = "raise") -> np.ndarray:
        """Row indices of many raw user ids, vectorised.

        Parameters
        ----------
        users : array_like
            Raw user ids.
        missing : "raise" or int
            ``"raise"`` raises ``KeyError`` naming the first unknown ids; an
            integer (e.g. -1) is returned for unknown ids instead.

        Returns
        -------
        numpy.ndarray of int64
        """
        return _lookup_many(users, self._user_index, "user", missing)

    def item_indices(self, items: Iterable[Any], missing: str | int = "raise") -> np.ndarray:
        """Column indices of many raw item ids (see :meth:`user_indices`)."""
        return _lookup_many(items, self._item_index, "item", missing)

    # ------------------------------------------------------------------ pairs
    def pairs(self) -> tuple[np.ndarray, np.ndarray]:
        """Row and column index of every stored pair, in CSR order.

        Returns
        -------
        rows, cols : numpy.ndarray of int64
        """
        rows = np.repeat(np.arange(self.n_users, dtype=np.int64), np.diff(self.matrix.indptr))
        return rows, self.matrix.indices.astype(np.int64)

    def select_pairs(self, keep: np.ndarray, *, note: str | None = None, moved: int | None = None) -> Interactions:
        """A new Interactions holding the stored pairs where ``keep`` is True.

        Same id space, side tables shared (not copied).

        Parameters
        ----------
        keep : numpy.ndarray of bool, shape (nnz,)
            One flag per stored pair, in CSR order.
        note : str, optional
            Appended to the summary's notes.
        moved : int, optional
            Added to ``summary.moved_to_other_split`` (splits use it); default
            counts the dropped pairs as moved.

        Returns
        -------
        Interactions
        """
        keep = np.asarray(keep)
        if keep.dtype != bool or keep.shape != (self.nnz,):
            raise ValueError(f"keep must be a boolean array of shape ({self.nnz},), got {keep.dtype} {keep.shape}")
        m = self.matrix
        cum = np.concatenate(([0], np.cumsum(keep, dtype=np.int64)))
        indptr = cum[m.indptr]
        new = _make_csr(m.data[keep], m.indices[keep], indptr, m.shape)
        n_dropped = self.nnz - int(indptr[-1])
        s = self.summary
        assert s is not None  # __post_init__ fills it in
        summary = dataclasses.replace(
            s,
            stored=new.nnz,
            moved_to_other_split=s.moved_to_other_split + (n_dropped if moved is None else moved),
            notes=s.notes + ((note,) if note else ()),
        )
        return dataclasses.replace(
            self,
            matrix=new,
            ratings=self.ratings[keep] if self.ratings is not None else None,
            timestamps=self.timestamps[keep] if self.timestamps is not None else None,
            summary=summary,
        )

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_arrays(
        cls,
        users: Any,
        items: Any,
        ratings: Any = None,
        timestamps: Any = None,
        *,
        min_rating: float | None = None,
        binarize: bool = True,
        dedupe: str = "max",
        user_ids: Any = None,
        item_ids: Any = None,
        unknown: str = "raise",
        source: str = "arrays",
    ) -> Interactions:
        """Build from parallel sequences of raw ids (one entry per interaction).

        Order of operations: map ids, merge duplicate pairs, then apply
        ``min_rating`` to the merged rating, then binarise.

        Parameters
        ----------
        users, items : array_like
            Raw user and item id of each interaction: non-negative integers or
            strings (not mixed, not floats).
        ratings : array_like of float, optional
            Rating (or count/weight) per interaction; finite.
        timestamps : array_like, optional
            Numbers or ``datetime64`` per interaction; used by ``dedupe`` and
            kept for :func:`split_leave_k_out` with ``strategy="latest"``.
        min_rating : float, optional
            Keep pairs whose (merged) rating is ``>= min_rating``. Needs
            ``ratings``.
        binarize : bool
            Store 1.0 for every kept pair (True) or the merged rating (False;
            the occurrence count when there are no ratings and ``dedupe="sum"``,
            else 1.0).
        dedupe : {"max", "sum", "last", "first", "error"}
            How repeated (user, item) pairs merge: ``"max"`` keeps the highest
            rating, ``"sum"`` adds ratings (counts without ratings); both keep
            the latest timestamp. ``"last"``/``"first"`` keep the interaction
            with the latest/earliest timestamp (ties, or no timestamps: the
            later/earlier one in input order) with its rating and timestamp.
            ``"error"`` raises ``ValueError`` on the first repeated pair.
        user_ids, item_ids : array_like, optional
            A fixed id space (e.g. ``train.user_ids``): rows/columns follow its
            order and ids absent from the data still get a row/column. Default:
            the sorted distinct ids of ``users``/``items``.
        unknown : {"raise", "drop"}
            With a fixed id space, what to do with ids outside it: raise
            ``ValueError``, or drop the rows (counted in
            ``summary.unknown_ids_dropped``).
        source : str
            Label stored in ``summary.source``.

        Returns
        -------
        Interactions

        Raises
        ------
        TypeError
            Ids of unsupported type; non-numeric ratings/timestamps.
        ValueError
            Mismatched lengths, NaN/inf ratings, negative integer ids,
            duplicates with ``dedupe="error"``, unknown ids with
            ``unknown="raise"``, ``min_rating`` without ratings.
        """
        from ._assemble import _build  # here, not at the top: _assemble imports this module

        return _build(
            users,
            items,
            ratings,
            timestamps,
            min_rating=min_rating,
            binarize=binarize,
            dedupe=dedupe,
            user_ids=user_ids,
            item_ids=item_ids,
            unknown=unknown,
            source=source,
        )

    @classmethod
    def from_csr(
        cls,
        matrix: Any,
        user_ids: Any = None,
        item_ids: Any = None,
        *,
        dtype: Any = np.float32,
        source: str = "matrix",
    ) -> Interactions:
        """Wrap an existing sparse users x items matrix.

        Stored entries are kept as they are (explicit zeros included);
        duplicate entries are summed and indices sorted, as scipy does.

        Parameters
        ----------
        matrix : scipy sparse matrix or array
            Users x items.
        user_ids, item_ids : array_like, optional
            Raw ids of rows and columns; default ``arange(n)``.
        dtype : float32 or float64
            Data type of the stored values.
        source : str
            Label for ``summary.source``.

        Returns
        -------
        Interactions
        """
        sp = _csr_module()
        if not sp.issparse(matrix):
            raise TypeError(f"matrix must be a scipy sparse matrix, got {type(matrix).__name__}")
        if matrix.ndim != 2:
            raise ValueError(f"matrix must be 2-D, got {matrix.ndim}-D")
        if np.dtype(dtype) not in (np.float32, np.float64):
            raise TypeError(f"dtype must be float32 or float64, got {np.dtype(dtype)}")
        n_before = int(matrix.nnz)  # before conversion: COO -> CSR already merges duplicates
        m = sp.csr_matrix(matrix, dtype=dtype, copy=True)
        m.sum_duplicates()
        n_users, n_items = m.shape
        uids = np.arange(n_users, dtype=np.int64) if user_ids is None else user_ids
        iids = np.arange(n_items, dtype=np.int64) if item_ids is None else item_ids
        csr = _make_csr(m.data, m.indices, m.indptr, m.shape)
        summary = LoadSummary(
            source=source,
            rows_in=n_before,
            duplicates_merged=n_before - csr.nnz,
            dedupe="sum",
            stored=csr.nnz,
            n_users=n_users,
            n_items=n_items,
            binarize=False,
        )
        return cls(matrix=csr, user_ids=uids, item_ids=iids, summary=summary)

    def reindex(self, user_ids: Any = None, item_ids: Any = None, *, unknown: str = "raise") -> Interactions:
        """The same pairs expressed in another id space (e.g. a superset).

        Parameters
        ----------
        user_ids, item_ids : array_like, optional
            Target id spaces; ``None`` keeps the current one.
        unknown : {"raise", "drop"}
            What to do with stored pairs whose id is not in the target space.

        Returns
        -------
        Interactions
            Side tables (titles, features) are re-mapped; rows/columns new to
            the target space get empty values ("" / -1 / 0).
        """
        from ._id_space import _reindex  # here, not at the top: _id_space imports this module

        return _reindex(self, user_ids, item_ids, unknown=unknown)

    def with_id_space_of(self, other: Interactions, *, unknown: str = "raise") -> Interactions:
        """:meth:`reindex` onto ``other``'s ``user_ids`` and ``item_ids``."""
        if not isinstance(other, Interactions):
            raise TypeError(f"other must be an Interactions, got {type(other).__name__}")
        return self.reindex(other.user_ids, other.item_ids, unknown=unknown)

    def same_id_space(self, other: Interactions) -> bool:
        """True when rows and columns of both matrices mean the same users and items."""
        return (
            self.user_ids.dtype.kind == other.user_ids.dtype.kind
            and self.item_ids.dtype.kind == other.item_ids.dtype.kind
            and np.array_equal(self.user_ids, other.user_ids)
            and np.array_equal(self.item_ids, other.item_ids)
        )
