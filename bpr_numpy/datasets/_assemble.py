"""From raw id columns to an :class:`~bpr_numpy.datasets.Interactions`: the one path every loader takes.

The per-pair columns and options a caller hands in are checked here (ratings,
timestamps, ``dedupe``, ``unknown``, ``min_rating``); raw ids are mapped to
rows and columns (:func:`_map_ids`); :func:`_assemble` then drops or refuses
unknown ids, merges duplicates, applies the threshold, binarises and counts
every step in the :class:`~bpr_numpy.datasets.LoadSummary`.
:meth:`Interactions.from_arrays` and the file loaders all end here, so a row
is never dropped uncounted.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from ._csr import _coo_to_csr, _make_csr
from ._ids import _as_id_array, _check_unique, _describe_ids, _factorize, _IdIndex
from ._interactions import Interactions, LoadSummary

DEDUPE_RULES = ("max", "sum", "last", "first", "error")


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
        assert rat is not None  # checked above: min_rating needs ratings
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
