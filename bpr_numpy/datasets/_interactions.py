"""The :class:`Interactions` container, its load summary and id-space helpers."""

from __future__ import annotations

import dataclasses
import functools
import math
import numbers
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from ._ids import (
    _as_id_array,
    _check_unique,
    _describe_ids,
    _factorize,
    _IdIndex,
    _query_array,
    _union_ids,
)

if TYPE_CHECKING:  # scipy is imported lazily: `import bpr_numpy.datasets` stays cheap
    import scipy.sparse as sp

__all__ = ["Interactions", "LoadSummary", "align"]

DEDUPE_RULES = ("max", "sum", "last", "first", "error")
_CHECK_CHUNK = 1 << 20


@dataclass(frozen=True)
class LoadSummary:
    """What building an :class:`Interactions` did to its input; nothing is dropped uncounted.

    The counts satisfy, for every loader::

        rows_in == stored + duplicates_merged + below_min_rating
                   + unknown_ids_dropped + moved_to_other_split

    and, for line-oriented files with one pair per line (all but the
    LightGCN adjacency format, where one line holds many pairs)::

        lines_read == rows_in + header_lines + blank_lines + malformed_lines

    Attributes
    ----------
    source : str
        Where the pairs came from (file names, ``"arrays"``, ``"synthetic(...)"``).
    lines_read : int
        Physical lines in the source file(s); 0 for in-memory arrays.
    header_lines : int
        Header lines recognised and skipped.
    blank_lines : int
        Empty or whitespace-only lines skipped.
    malformed_lines : int
        Lines skipped because they could not be parsed (only with
        ``on_bad_line="skip"``; the default raises instead).
    malformed_examples : tuple of str
        The first few skipped lines, as ``"line N: what was wrong"``.
    rows_in : int
        (user, item) rows handed to the builder.
    unknown_ids_dropped : int
        Rows whose user or item id is not in a given id space (only with
        ``unknown="drop"``).
    duplicates_merged : int
        Rows removed by merging repeated (user, item) pairs (rule in ``dedupe``).
    below_min_rating : int
        Distinct pairs dropped because their (merged) rating < ``min_rating``.
    moved_to_other_split : int
        Pairs a split put into the other part (0 outside splits).
    stored : int
        Pairs stored in the matrix (its ``nnz``).
    n_users, n_items : int
        Shape of the matrix, i.e. of the id space.
    dedupe : str
        De-duplication rule used.
    min_rating : float or None
        Threshold used (pairs with rating >= it are kept).
    binarize : bool
        Whether stored values are 1.0 (True) or the ratings.
    notes : tuple of str
        Anything else worth knowing (encoding fallbacks, splits, variants).
    """

    source: str = "arrays"
    lines_read: int = 0
    header_lines: int = 0
    blank_lines: int = 0
    malformed_lines: int = 0
    malformed_examples: tuple[str, ...] = ()
    rows_in: int = 0
    unknown_ids_dropped: int = 0
    duplicates_merged: int = 0
    below_min_rating: int = 0
    moved_to_other_split: int = 0
    stored: int = 0
    n_users: int = 0
    n_items: int = 0
    dedupe: str = "max"
    min_rating: float | None = None
    binarize: bool = True
    notes: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        """The summary as a plain ``dict`` (for JSON, logging)."""
        return dataclasses.asdict(self)

    def __str__(self) -> str:
        parts = [f"{self.source}: {self.stored:,} pairs stored ({self.n_users:,} users x {self.n_items:,} items)"]
        if self.lines_read:
            parts.append(
                f"{self.lines_read:,} lines read ({self.header_lines} header, {self.blank_lines} blank, "
                f"{self.malformed_lines} malformed)"
            )
        parts.append(
            f"{self.rows_in:,} rows in: {self.duplicates_merged:,} duplicates merged ({self.dedupe}), "
            f"{self.below_min_rating:,} below min_rating={self.min_rating}, "
            f"{self.unknown_ids_dropped:,} unknown ids dropped, "
            f"{self.moved_to_other_split:,} moved to the other split"
        )
        parts.extend(self.notes)
        return "\n".join(parts)


def _csr_module():
    import scipy.sparse as sp

    return sp


def _index_dtype(n: int) -> type:
    return np.int32 if n < 2**31 - 1 else np.int64


def _make_csr(data: np.ndarray, indices: np.ndarray, indptr: np.ndarray, shape: tuple[int, int]):
    """A csr_matrix over our arrays, flagged canonical (we guarantee it)."""
    sp = _csr_module()
    idt = _index_dtype(max(shape[1], indices.size, 1))
    m = sp.csr_matrix(
        (data, indices.astype(idt, copy=False), indptr.astype(_index_dtype(max(indptr[-1], 1)), copy=False)),
        shape=shape,
        copy=False,
    )
    m.has_sorted_indices = True
    m.has_canonical_format = True
    return m


def _check_csr(matrix: Any) -> None:
    """Raise unless ``matrix`` is a CSR matrix with sorted unique indices and finite float data."""
    sp = _csr_module()
    if not sp.issparse(matrix) or matrix.format != "csr":
        raise TypeError(f"matrix must be a scipy.sparse CSR matrix, got {type(matrix).__name__}")
    if matrix.dtype not in (np.float32, np.float64):
        raise TypeError(f"matrix data must be float32 or float64, got {matrix.dtype}")
    n_rows, n_cols = matrix.shape
    indptr, indices = matrix.indptr, matrix.indices
    nnz = indices.size
    if indptr.size != n_rows + 1 or indptr[0] != 0 or indptr[-1] != nnz or matrix.data.size != nnz:
        raise ValueError("matrix has an inconsistent indptr/indices/data")
    if nnz:
        if np.any(np.diff(indptr) < 0):
            raise ValueError("matrix indptr is not non-decreasing")
        if indices.min() < 0 or indices.max() >= n_cols:
            raise ValueError(f"matrix has a column index outside [0, {n_cols})")
        row_starts = indptr[1:-1]
        row_starts = np.unique(row_starts[(row_starts > 0) & (row_starts < nnz)])
        # In slices, so that checking a 100M-pair matrix needs megabytes, not a
        # second copy of it.
        for s0 in range(0, nnz, _CHECK_CHUNK):
            s1 = min(nnz - 1, s0 + _CHECK_CHUNK)  # steps k -> k+1 for k in [s0, s1)
            if s1 > s0:
                step_ok = indices[s0 + 1 : s1 + 1] > indices[s0:s1]
                lo, hi = np.searchsorted(row_starts, [s0 + 1, s1 + 1])
                step_ok[row_starts[lo:hi] - 1 - s0] = True  # a new row may start anywhere
                if not step_ok.all():
                    raise ValueError("matrix column indices must be sorted and unique within each row")
            if not np.isfinite(matrix.data[s0 : s0 + _CHECK_CHUNK]).all():
                raise ValueError("matrix holds NaN or infinite values")


def _as_ratings(ratings: Any, n: int, where: Callable[[int], str]) -> np.ndarray | None:
    if ratings is None:
        return None
    r = np.asarray(ratings)
    if r.ndim != 1 or r.size != n:
        raise ValueError(f"ratings must be 1-D with one value per pair ({n}), got shape {r.shape}")
    if r.dtype.kind not in "iuf" or r.dtype.kind == "b":
        raise TypeError(f"ratings must be numbers, got dtype {r.dtype}")
    r = r.astype(np.float64, copy=False)
    bad = ~np.isfinite(r)
    if bad.any():
        k = int(np.argmax(bad))
        raise ValueError(f"rating {r[k]} at {where(k)} is not a finite number")
    big = np.abs(r) > np.finfo(np.float32).max  # ratings are kept in float32: it would become inf
    if big.any():
        k = int(np.argmax(big))
        raise ValueError(f"rating {r[k]} at {where(k)} is out of range (beyond float32, about 3.4e38)")
    return r


def _as_timestamps(timestamps: Any, n: int, where: Callable[[int], str]) -> np.ndarray | None:
    if timestamps is None:
        return None
    t = np.asarray(timestamps)
    if t.ndim != 1 or t.size != n:
        raise ValueError(f"timestamps must be 1-D with one value per pair ({n}), got shape {t.shape}")
    if t.dtype.kind == "M":
        return t.astype("datetime64[ns]").astype(np.int64)
    if t.dtype.kind in "iu":
        return t.astype(np.int64, copy=False)
    if t.dtype.kind != "f":
        raise TypeError(f"timestamps must be numbers or datetime64, got dtype {t.dtype}")
    bad = ~np.isfinite(t)
    if bad.any():
        k = int(np.argmax(bad))
        raise ValueError(f"timestamp {t[k]} at {where(k)} is not a finite number")
    # Whole-number floats (a column that went through float parsing) become
    # int64 again; 2**53 is where float64 stops holding every integer.
    if t.size and np.all(t == np.round(t)) and np.abs(t).max() < 2.0**53:
        return t.astype(np.int64)
    return t.astype(np.float64, copy=False)


def _position(k: int) -> str:
    return f"position {k}"


def _check_choice(value: Any, name: str, options: Sequence[str]) -> str:
    if not isinstance(value, str) or value not in options:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, options))}; got {value!r}")
    return value


def _check_min_rating(min_rating: Any) -> float | None:
    if min_rating is None:
        return None
    if isinstance(min_rating, bool) or not isinstance(min_rating, numbers.Real):
        raise TypeError(f"min_rating must be a number or None, got {type(min_rating).__name__}")
    if not math.isfinite(float(min_rating)):
        raise ValueError(f"min_rating must be finite, got {min_rating}")
    return float(min_rating)


def _coo_to_csr(
    rows: np.ndarray,
    cols: np.ndarray,
    n_rows: int,
    ratings: np.ndarray | None,
    timestamps: np.ndarray | None,
    dedupe: str,
    describe_pair: Callable[[int, int], str],
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None, np.ndarray | None, int]:
    """Sort COO entries by (row, col) and merge duplicates.

    Returns
    -------
    r, c : row and column of each distinct pair, sorted.
    rat : merged rating per pair (None without ratings).
    ts : timestamp per pair (None without timestamps).
    counts : occurrences per pair when ``dedupe == "sum"`` and there are no
        ratings (the implicit rating of each occurrence is 1), else None.
    n_dups : rows merged away.
    """
    from ._csr_kernels import _order_by_row_col

    n = rows.size
    order = _order_by_row_col(rows, cols, n_rows)
    r = rows[order]
    c = cols[order]
    rat = ratings[order] if ratings is not None else None
    ts = timestamps[order] if timestamps is not None else None
    if n == 0:
        return r, c, rat, ts, None, 0
    new = np.empty(n, dtype=bool)
    new[0] = True
    np.not_equal(r[1:], r[:-1], out=new[1:])
    new[1:] |= c[1:] != c[:-1]
    starts = np.flatnonzero(new)
    n_dups = n - starts.size
    if n_dups == 0:
        return r, c, rat, ts, None, 0
    if dedupe == "error":
        k = int(np.argmax(~new))
        raise ValueError(
            f"duplicate (user, item) pair {describe_pair(int(order[k - 1]), int(order[k]))}; "
            "pass dedupe='max', 'sum', 'last' or 'first' to merge repeated pairs"
        )
    sizes = np.diff(np.append(starts, n))
    counts = None
    if dedupe in ("max", "sum"):
        if rat is not None:
            rat = (np.maximum if dedupe == "max" else np.add).reduceat(rat, starts)
        elif dedupe == "sum":
            counts = sizes.astype(np.float64)
        if ts is not None:
            ts = np.maximum.reduceat(ts, starts)  # the pair's latest interaction
    else:
        pick = starts.copy()
        if ts is None:
            if dedupe == "last":
                pick += sizes - 1  # stable order: the last occurrence in input order
        else:
            # Only rows inside duplicate groups need the (timestamp, input
            # order) sort; usually a small share of the data.
            dup_groups = np.flatnonzero(sizes > 1)
            members = np.flatnonzero(np.repeat(sizes > 1, sizes))
            g = np.repeat(dup_groups, sizes[dup_groups])
            o2 = members[np.lexsort((members, ts[members], g))]
            gsizes = sizes[dup_groups]
            gstarts = np.concatenate(([0], np.cumsum(gsizes)[:-1]))
            pick[dup_groups] = o2[gstarts + gsizes - 1] if dedupe == "last" else o2[gstarts]
        if rat is not None:
            rat = rat[pick]
        ts = ts[pick] if ts is not None else None
    return r[starts], c[starts], rat, ts, counts, n_dups


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

    matrix: "sp.csr_matrix"
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
        return int(self._lookup_one(user, self._user_index, "user"))

    def item_index(self, item: Any) -> int:
        """Column index of one raw item id (see :meth:`user_index`)."""
        return int(self._lookup_one(item, self._item_index, "item"))

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
        return self._lookup_many(users, self._user_index, "user", missing)

    def item_indices(self, items: Iterable[Any], missing: str | int = "raise") -> np.ndarray:
        """Column indices of many raw item ids (see :meth:`user_indices`)."""
        return self._lookup_many(items, self._item_index, "item", missing)

    @staticmethod
    def _lookup_one(raw: Any, index: _IdIndex, what: str) -> int:
        if isinstance(raw, (list, tuple, np.ndarray)):
            raise TypeError(f"{what}_index takes one id; use {what}_indices for many")
        code = index.codes(_query_array(raw, what))[0]
        if code < 0:
            raise KeyError(_missing_message(what, [raw], index.ids))
        return int(code)

    @staticmethod
    def _lookup_many(raws: Any, index: _IdIndex, what: str, missing: str | int) -> np.ndarray:
        q = _query_array(raws, what)
        codes = index.codes(q)
        bad = codes < 0
        if bad.any():
            if isinstance(missing, str):
                if missing != "raise":
                    raise ValueError(f"missing must be 'raise' or an integer, got {missing!r}")
                raise KeyError(_missing_message(what, q[bad][:5].tolist(), index.ids, int(bad.sum())))
            if isinstance(missing, bool) or not isinstance(missing, numbers.Integral):
                raise TypeError(f"missing must be 'raise' or an integer, got {type(missing).__name__}")
            codes[bad] = int(missing)
        return codes

    # ------------------------------------------------------------------ pairs
    def pairs(self) -> tuple[np.ndarray, np.ndarray]:
        """Row and column index of every stored pair, in CSR order.

        Returns
        -------
        rows, cols : numpy.ndarray of int64
        """
        rows = np.repeat(np.arange(self.n_users, dtype=np.int64), np.diff(self.matrix.indptr))
        return rows, self.matrix.indices.astype(np.int64)

    def select_pairs(self, keep: np.ndarray, *, note: str | None = None, moved: int | None = None) -> "Interactions":
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
    ) -> "Interactions":
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
    ) -> "Interactions":
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

    def reindex(self, user_ids: Any = None, item_ids: Any = None, *, unknown: str = "raise") -> "Interactions":
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
        _check_choice(unknown, "unknown", ("raise", "drop"))
        new_u = self.user_ids if user_ids is None else _as_id_array(user_ids, "user_ids")
        new_i = self.item_ids if item_ids is None else _as_id_array(item_ids, "item_ids")
        _check_unique(new_u, "user_ids")
        _check_unique(new_i, "item_ids")
        same_u = new_u is self.user_ids or (new_u.shape == self.user_ids.shape and np.array_equal(new_u, self.user_ids))
        same_i = new_i is self.item_ids or (new_i.shape == self.item_ids.shape and np.array_equal(new_i, self.item_ids))
        if same_u and same_i:
            return self
        umap = _IdIndex(new_u).codes(self.user_ids)  # old row -> new row (-1: absent)
        imap = _IdIndex(new_i).codes(self.item_ids)
        rows, cols = self.pairs()
        r, c = umap[rows], imap[cols]
        bad = (r < 0) | (c < 0)
        n_bad = int(bad.sum())
        if n_bad and unknown == "raise":
            k = int(np.argmax(bad))
            who = (
                f"user {self.user_ids[rows[k]]!r}" if r[k] < 0 else f"item {self.item_ids[cols[k]]!r}"
            )
            raise ValueError(f"{who} has stored pairs but is not in the target id space ({n_bad} pairs affected)")
        keep = ~bad
        r, c = r[keep], c[keep]
        rat = self.ratings[keep] if self.ratings is not None else None
        ts = self.timestamps[keep] if self.timestamps is not None else None
        data = self.matrix.data[keep]
        from ._csr_kernels import _order_by_row_col

        order = _order_by_row_col(r, c, new_u.size)
        r, c, data = r[order], c[order], data[order]
        indptr = np.concatenate(([0], np.cumsum(np.bincount(r, minlength=new_u.size), dtype=np.int64)))
        summary = dataclasses.replace(
            self.summary,
            stored=int(r.size),
            unknown_ids_dropped=self.summary.unknown_ids_dropped + n_bad,
            n_users=int(new_u.size),
            n_items=int(new_i.size),
        )
        return Interactions(
            matrix=_make_csr(data, c, indptr, (new_u.size, new_i.size)),
            user_ids=new_u,
            item_ids=new_i,
            ratings=rat[order] if rat is not None else None,
            timestamps=ts[order] if ts is not None else None,
            item_titles=_remap_side(self.item_titles, imap, new_i.size),
            item_features=_remap_side(self.item_features, imap, new_i.size),
            item_feature_names=self.item_feature_names if self.item_features is not None else (),
            item_info={k: _remap_side(v, imap, new_i.size) for k, v in self.item_info.items()},
            user_features={k: _remap_side(v, umap, new_u.size) for k, v in self.user_features.items()},
            summary=summary,
        )

    def with_id_space_of(self, other: "Interactions", *, unknown: str = "raise") -> "Interactions":
        """:meth:`reindex` onto ``other``'s ``user_ids`` and ``item_ids``."""
        if not isinstance(other, Interactions):
            raise TypeError(f"other must be an Interactions, got {type(other).__name__}")
        return self.reindex(other.user_ids, other.item_ids, unknown=unknown)

    def same_id_space(self, other: "Interactions") -> bool:
        """True when rows and columns of both matrices mean the same users and items."""
        return (
            self.user_ids.dtype.kind == other.user_ids.dtype.kind
            and self.item_ids.dtype.kind == other.item_ids.dtype.kind
            and np.array_equal(self.user_ids, other.user_ids)
            and np.array_equal(self.item_ids, other.item_ids)
        )


def _remap_side(values: np.ndarray | None, old_to_new: np.ndarray, n_new: int) -> np.ndarray | None:
    """Move a per-row side table to a new id space; rows new to it are empty."""
    if values is None:
        return None
    values = np.asarray(values)
    if values.dtype.kind in "US":
        out = np.zeros((n_new,) + values.shape[1:], dtype=values.dtype)
    elif values.dtype.kind == "O":
        out = np.full((n_new,) + values.shape[1:], "", dtype=object)
    elif values.dtype.kind in "iu" and values.ndim == 1:
        out = np.full(n_new, -1, dtype=values.dtype) if values.dtype.kind == "i" else np.zeros(n_new, values.dtype)
    else:
        out = np.zeros((n_new,) + values.shape[1:], dtype=values.dtype)
    ok = old_to_new >= 0
    out[old_to_new[ok]] = values[ok]
    return out


def _missing_message(what: str, raws: list, ids: np.ndarray, n_missing: int | None = None) -> str:
    shown = ", ".join(repr(x) for x in raws[:5])
    head = f"{n_missing} {what} ids not found (first: {shown})" if n_missing and n_missing > 1 else f"{what} id {shown} not found"
    hint = ""
    kinds = {type(x) for x in raws}
    if ids.dtype.kind == "i" and str in kinds:
        hint = "; this data set's ids are integers: pass int, not str"
    elif ids.dtype.kind == "U" and any(issubclass(k, numbers.Integral) for k in kinds):
        hint = "; this data set's ids are strings: pass str, not int"
    elif any(issubclass(k, numbers.Real) and not issubclass(k, numbers.Integral) for k in kinds):
        hint = "; ids are integers or strings, not floats"
    return f"{head} among {_describe_ids(ids)}{hint}"


def _build(
    users: Any,
    items: Any,
    ratings: Any,
    timestamps: Any,
    *,
    min_rating: float | None,
    binarize: bool,
    dedupe: str,
    user_ids: Any,
    item_ids: Any,
    unknown: str,
    source: str,
) -> Interactions:
    """Map raw ids to rows/columns, then :func:`_assemble` (behind :meth:`Interactions.from_arrays`)."""
    _check_options(binarize, dedupe, unknown)
    u = _as_id_array(users, "users")
    i = _as_id_array(items, "items")
    n = u.size
    if i.size != n:
        raise ValueError(f"users and items must have the same length, got {n} and {i.size}")
    uids, rows = _map_ids(u, user_ids, "user_ids")
    iids, cols = _map_ids(i, item_ids, "item_ids")
    return _assemble(
        rows,
        cols,
        uids,
        iids,
        ratings,
        timestamps,
        user_of=lambda k: u[k].item(),
        item_of=lambda k: i[k].item(),
        fixed_space=user_ids is not None or item_ids is not None,
        min_rating=min_rating,
        binarize=binarize,
        dedupe=dedupe,
        unknown=unknown,
        source=source,
    )


def _check_options(binarize: Any, dedupe: Any, unknown: Any) -> None:
    if not isinstance(binarize, (bool, np.bool_)):
        raise TypeError(f"binarize must be True or False, got {binarize!r}")
    _check_choice(dedupe, "dedupe", DEDUPE_RULES)
    _check_choice(unknown, "unknown", ("raise", "drop"))


def _map_ids(values: np.ndarray, given: Any, what: str) -> tuple[np.ndarray, np.ndarray]:
    """(id space, code of each value): the sorted distinct values, or ``given`` (-1 = absent)."""
    if given is None:
        return _factorize(values)
    ids = _as_id_array(given, what)
    _check_unique(ids, what)
    return ids, _IdIndex(ids).codes(values)


def _assemble(
    rows: np.ndarray,
    cols: np.ndarray,
    uids: np.ndarray,
    iids: np.ndarray,
    ratings: Any,
    timestamps: Any,
    *,
    user_of: Callable[[int], Any],
    item_of: Callable[[int], Any],
    fixed_space: bool,
    min_rating: float | None,
    binarize: bool,
    dedupe: str,
    unknown: str,
    source: str,
    where: Callable[[int], str] = _position,
    summary_fields: Mapping[str, Any] | None = None,
    side: Mapping[str, Any] | None = None,
) -> Interactions:
    """Build an :class:`Interactions` from row/column codes (-1: id not in the space).

    Order: drop or refuse unknown ids, merge duplicates, threshold, binarise.
    ``where(k)`` names input row ``k`` in messages (loaders pass "file, line
    N"); ``summary_fields`` adds parse counts; ``side`` carries side tables
    aligned with ``uids``/``iids``.
    """
    _check_options(binarize, dedupe, unknown)
    min_rating = _check_min_rating(min_rating)
    n = rows.size
    rat = _as_ratings(ratings, n, where)
    ts = _as_timestamps(timestamps, n, where)
    if min_rating is not None and rat is None:
        raise ValueError("min_rating needs ratings: pass ratings=... or min_rating=None")

    n_unknown = 0
    kept_pos = None
    if fixed_space:
        bad = (rows < 0) | (cols < 0)
        n_unknown = int(bad.sum())
    if n_unknown:
        k = int(np.argmax(bad))
        if unknown == "raise":
            what, raw, space = ("user", user_of(k), uids) if rows[k] < 0 else ("item", item_of(k), iids)
            raise ValueError(
                f"{what} id {raw!r} at {where(k)} is not in the given {what}_ids "
                f"({_describe_ids(space)}); {n_unknown} rows affected. Pass unknown='drop' to drop them."
            )
        keep = ~bad
        kept_pos = np.flatnonzero(keep)
        rows, cols = rows[keep], cols[keep]
        rat = rat[keep] if rat is not None else None
        ts = ts[keep] if ts is not None else None

    def describe_pair(k1: int, k2: int) -> str:
        a = int(kept_pos[k1]) if kept_pos is not None else k1
        b = int(kept_pos[k2]) if kept_pos is not None else k2
        return f"(user {user_of(b)!r}, item {item_of(b)!r}) at {where(a)} and {where(b)}"

    r, c, rat, ts, counts, n_dups = _coo_to_csr(rows, cols, uids.size, rat, ts, dedupe, describe_pair)

    n_below = 0
    if min_rating is not None:
        keep = rat >= min_rating
        n_below = int(keep.size - np.count_nonzero(keep))
        if n_below:
            r, c, rat = r[keep], c[keep], rat[keep]
            ts = ts[keep] if ts is not None else None

    if rat is not None and rat.size and np.abs(rat).max() > np.finfo(np.float32).max:
        raise ValueError(f"{source}: ratings merged by dedupe={dedupe!r} exceed the float32 range (about 3.4e38)")
    if binarize:
        data = np.ones(r.size, dtype=np.float32)
    elif rat is not None:
        data = rat.astype(np.float32)
    elif counts is not None:
        data = counts.astype(np.float32)
    else:
        data = np.ones(r.size, dtype=np.float32)
    indptr = np.concatenate(([0], np.cumsum(np.bincount(r, minlength=uids.size), dtype=np.int64)))
    matrix = _make_csr(data, c, indptr, (uids.size, iids.size))
    summary = LoadSummary(
        source=source,
        rows_in=n,
        unknown_ids_dropped=n_unknown,
        duplicates_merged=n_dups,
        below_min_rating=n_below,
        stored=int(r.size),
        n_users=int(uids.size),
        n_items=int(iids.size),
        dedupe=dedupe,
        min_rating=min_rating,
        binarize=bool(binarize),
    )
    if summary_fields:
        summary = dataclasses.replace(summary, **summary_fields)
    return Interactions(
        matrix=matrix,
        user_ids=uids,
        item_ids=iids,
        ratings=rat.astype(np.float32) if rat is not None else None,
        timestamps=ts,
        summary=summary,
        **(side or {}),
    )


def align(*parts: Interactions, unknown: str = "raise") -> tuple[Interactions, ...]:
    """Put several Interactions into one shared id space (the sorted union of their ids).

    Use it for files loaded separately (train and test of some benchmark)
    so that their matrices line up.

    Parameters
    ----------
    *parts : Interactions
        Two or more (one is allowed and returned unchanged). Ids must be of
        one kind (all integers or all strings).
    unknown : {"raise", "drop"}
        Passed to :meth:`Interactions.reindex` (the union holds every id, so
        this only matters for inconsistent inputs).

    Returns
    -------
    tuple of Interactions
        Same order as ``parts``; all with identical ``user_ids``/``item_ids``.
    """
    if not parts:
        raise ValueError("align needs at least one Interactions")
    for p in parts:
        if not isinstance(p, Interactions):
            raise TypeError(f"align takes Interactions, got {type(p).__name__}")
    for attr in ("user_ids", "item_ids"):
        kinds = {getattr(p, attr).dtype.kind for p in parts if getattr(p, attr).size}
        if len(kinds) > 1:
            raise TypeError(f"cannot align: some {attr} are integers and some are strings")
    if all(p.same_id_space(parts[0]) for p in parts[1:]):
        return tuple(parts)
    uids = _union([p.user_ids for p in parts])
    iids = _union([p.item_ids for p in parts])
    return tuple(p.reindex(uids, iids, unknown=unknown) for p in parts)


def _union(arrays: Sequence[np.ndarray]) -> np.ndarray:
    nonempty = [a for a in arrays if a.size]
    if not nonempty:
        return arrays[0]
    return _union_ids(nonempty)
