"""Raw ids: normalising id sequences, factorising them, looking them up.

Raw ids are whatever the data file or the caller uses to name a user or an
item. We keep exactly two kinds, so that lookups stay vectorised and
unambiguous: non-negative integers (``int64`` arrays) and strings (numpy
``str`` arrays). Floats, booleans and mixtures are refused rather than
guessed at: ``1.0`` and ``"1"`` and ``1`` silently becoming the same user is
the kind of bug this module exists to prevent.
"""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np

__all__: list[str] = []

# A dense lookup table costs 8 bytes per value in [min, max]; below this span
# (or a few times the number of ids) it beats sorting / binary search.
_DENSE_SPAN = 1 << 22


def _as_id_array(values: Any, what: str) -> np.ndarray:
    """Return raw ids as a 1-D ``int64`` array or a numpy ``str`` array.

    Parameters
    ----------
    values : array_like
        Integers (non-negative) or strings, not a mixture.
    what : str
        Name used in error messages ("users", "item_ids", ...).

    Returns
    -------
    numpy.ndarray
        ``int64`` or ``<U`` array, 1-D.

    Raises
    ------
    TypeError
        Floats, booleans, ``None``, bytes that are not UTF-8, or a mixture of
        integers and strings.
    ValueError
        Not 1-D, negative integers, empty strings.
    """
    if isinstance(values, (str, bytes)) or values is None or np.isscalar(values):
        raise TypeError(f"{what} must be a sequence of ids, got a single {type(values).__name__}")
    if isinstance(values, np.ndarray):
        arr = values
    elif hasattr(values, "__array__"):
        arr = np.asarray(values)
    else:
        # Going through object dtype stops numpy from turning [1, "a"] into
        # ["1", "a"], which would merge the int 1 and the string "1".
        try:
            seq = list(values)
        except TypeError:
            raise TypeError(f"{what} must be a sequence of ids, got {type(values).__name__}") from None
        if seq and isinstance(seq[0], (list, tuple, np.ndarray)):
            raise ValueError(f"{what} must be 1-D: its first element is a {type(seq[0]).__name__}")
        arr = np.empty(len(seq), dtype=object)
        for k, v in enumerate(seq):  # element-wise: numpy would try to broadcast nested sequences
            arr[k] = v
    if arr.ndim != 1:
        raise ValueError(f"{what} must be 1-D, got shape {arr.shape}")
    kind = arr.dtype.kind
    if kind == "O":
        arr = _narrow_object(arr, what)
        kind = arr.dtype.kind
    if kind == "b":
        raise TypeError(f"{what} are booleans; ids must be integers or strings")
    if kind in "iu":
        if kind == "u" and arr.size and int(arr.max()) > np.iinfo(np.int64).max:
            raise ValueError(f"{what} holds an id above 2**63 - 1, which int64 cannot hold")
        out = arr.astype(np.int64, copy=False)
        if out.size:
            lo = int(out.min())
            if lo < 0:
                k = int(np.argmax(out < 0))
                raise ValueError(
                    f"{what} must be non-negative integers (or strings): got {lo} at position {k}; "
                    "pass ids as strings if negative values are meant as labels"
                )
        return out
    if kind in "fc":
        raise TypeError(
            f"{what} have dtype {arr.dtype}; ids must be integers or strings. Whole-number floats "
            "(a pandas column with missing values becomes float) must be cast first, e.g. "
            "ids.astype(np.int64)"
        )
    if kind == "S":
        try:
            arr = np.char.decode(arr, "utf-8")
        except UnicodeDecodeError as exc:
            raise TypeError(f"{what} holds bytes that are not UTF-8 ({exc}); decode them first") from None
        kind = "U"
    if kind == "U":
        if arr.size and (arr == "").any():
            k = int(np.argmax(arr == ""))
            raise ValueError(f"{what} holds an empty string at position {k}; an id cannot be empty")
        return arr
    raise TypeError(f"{what} have dtype {arr.dtype}; ids must be integers or strings")


def _narrow_object(arr: np.ndarray, what: str) -> np.ndarray:
    """Turn an object array of ids into ``int64`` or ``str``, refusing mixtures."""
    if arr.size == 0:
        return np.zeros(0, dtype=np.int64)
    types = set(map(type, arr.tolist()))
    if all(issubclass(t, numbers.Integral) and not issubclass(t, (bool, np.bool_)) for t in types):
        try:
            return np.array(arr.tolist(), dtype=np.int64)
        except OverflowError:
            raise ValueError(f"{what} holds an integer outside the int64 range") from None
    if all(issubclass(t, str) for t in types):
        return np.array(arr.tolist(), dtype=str)
    if all(issubclass(t, numbers.Real) and not issubclass(t, (bool, np.bool_)) for t in types):
        raise TypeError(
            f"{what} hold floats; ids must be integers or strings. Whole-number floats must be cast "
            "first, e.g. np.asarray(ids).astype(np.int64)"
        )
    # Point at the first element that breaks the pattern set by the first one.
    first = arr[0]
    want_int = isinstance(first, numbers.Integral) and not isinstance(first, (bool, np.bool_))
    if not want_int and not isinstance(first, str):
        raise TypeError(f"{what}[0] is {first!r} ({type(first).__name__}); ids must be integers or strings")
    for k, v in enumerate(arr.tolist()):
        ok = (
            (isinstance(v, numbers.Integral) and not isinstance(v, (bool, np.bool_)))
            if want_int
            else isinstance(v, str)
        )
        if not ok:
            raise TypeError(
                f"{what}[{k}] is {v!r} ({type(v).__name__}) but {what}[0] is {first!r} "
                f"({type(first).__name__}); ids must be all integers or all strings"
            )
    raise TypeError(f"{what} must be all integers or all strings")  # pragma: no cover


def _factorize(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sorted unique ids and, for every value, the index of its id.

    Parameters
    ----------
    values : numpy.ndarray
        Output of :func:`_as_id_array`.

    Returns
    -------
    ids : numpy.ndarray
        Sorted unique values (same dtype as ``values``).
    codes : numpy.ndarray of int64
        ``ids[codes] == values``.
    """
    if values.dtype.kind == "i" and values.size:
        lo = int(values.min())
        span = int(values.max()) - lo + 1
        if span <= max(4 * values.size, _DENSE_SPAN):
            # O(n + span) instead of a sort: MovieLens ids are dense small ints.
            present = np.zeros(span, dtype=bool)
            shifted = values - lo
            present[shifted] = True
            lut = np.cumsum(present, dtype=np.int64) - 1
            ids = np.flatnonzero(present).astype(np.int64) + lo
            return ids, lut[shifted]
    ids, codes = np.unique(values, return_inverse=True)
    return ids, codes.reshape(-1).astype(np.int64, copy=False)


def _union_ids(arrays: list[np.ndarray]) -> np.ndarray:
    """Sorted distinct ids of several id arrays of one kind (a bitmap for dense integers)."""
    arrays = [a for a in arrays if a.size]
    if not arrays:
        return np.zeros(0, dtype=np.int64)
    if all(a.dtype.kind == "i" for a in arrays):
        lo = min(int(a.min()) for a in arrays)
        span = max(int(a.max()) for a in arrays) - lo + 1
        if span <= max(4 * sum(a.size for a in arrays), _DENSE_SPAN):
            # np.unique sorts or hashes every element: several seconds at 20M ids.
            present = np.zeros(span, dtype=bool)
            for a in arrays:
                present[a - lo] = True
            return np.flatnonzero(present).astype(np.int64) + lo
    return np.unique(np.concatenate(arrays))


def _check_unique(ids: np.ndarray, what: str) -> None:
    """Raise ``ValueError`` if an id occurs twice."""
    if ids.size < 2:
        return
    s = np.sort(ids, kind="stable")
    dup = s[1:] == s[:-1]
    if dup.any():
        raise ValueError(f"{what} must be unique; {s[1:][dup][0]!r} occurs more than once")


def _strictly_increasing(ids: np.ndarray) -> bool:
    return bool(ids.size < 2 or np.all(ids[1:] > ids[:-1]))


class _IdIndex:
    """Vectorised raw id -> index lookup over a fixed id array."""

    def __init__(self, ids: np.ndarray) -> None:
        self.ids = ids
        self._lut: np.ndarray | None = None
        self._lo = 0
        self._sorter: np.ndarray | None = None
        if ids.dtype.kind == "i" and ids.size:
            lo = int(ids.min())
            span = int(ids.max()) - lo + 1
            if span <= max(4 * ids.size, _DENSE_SPAN):
                lut = np.full(span, -1, dtype=np.int64)
                lut[ids - lo] = np.arange(ids.size, dtype=np.int64)
                self._lut, self._lo = lut, lo
                return
        if not _strictly_increasing(ids):
            self._sorter = np.argsort(ids, kind="stable")

    def codes(self, values: np.ndarray) -> np.ndarray:
        """Index of each value in ``ids``; -1 where a value is absent."""
        out = np.full(values.shape, -1, dtype=np.int64)
        if values.size == 0 or self.ids.size == 0:
            return out
        if values.dtype.kind != self.ids.dtype.kind:
            return out  # an int is never a str id and vice versa
        if self._lut is not None:
            shifted = values - self._lo
            ok = (shifted >= 0) & (shifted < self._lut.size)
            out[ok] = self._lut[shifted[ok]]
            return out
        pos = np.searchsorted(self.ids, values, sorter=self._sorter)
        pos = np.minimum(pos, self.ids.size - 1)
        if self._sorter is not None:
            pos = self._sorter[pos]
        hit = self.ids[pos] == values
        out[hit] = pos[hit]
        return out


def _query_array(values: Any, what: str) -> np.ndarray:
    """Raw ids a caller wants to look up, as int64 or str, without refusing anything.

    Unlike :func:`_as_id_array` this never raises on odd types: an id of the
    wrong type is simply not found, and the caller's ``KeyError`` says why.
    """
    if isinstance(values, np.ndarray) and values.dtype.kind in "iuU":
        return values.reshape(-1).astype(np.int64) if values.dtype.kind in "iu" else values.reshape(-1)
    if isinstance(values, (str, bytes)) or not hasattr(values, "__len__"):
        values = [values]
    items = list(values)
    if all(isinstance(v, numbers.Integral) and not isinstance(v, (bool, np.bool_)) for v in items):
        try:
            return np.array(items, dtype=np.int64)
        except OverflowError:
            pass
    if all(isinstance(v, str) for v in items):
        return np.array(items, dtype=str)
    return np.array(items, dtype=object)


def _describe_ids(ids: np.ndarray) -> str:
    """A short description of an id array for error messages."""
    kind = "integers" if ids.dtype.kind == "i" else "strings"
    head = ", ".join(repr(x) for x in ids[:3].tolist())
    more = ", ..." if ids.size > 3 else ""
    return f"{ids.size} ids, {kind} ({head}{more})"


def _lookup_one(raw: Any, index: _IdIndex, what: str) -> int:
    """Code of one raw id in ``index`` (``Interactions.user_index``/``item_index``); KeyError when absent."""
    if isinstance(raw, (list, tuple, np.ndarray)):
        raise TypeError(f"{what}_index takes one id; use {what}_indices for many")
    code = index.codes(_query_array(raw, what))[0]
    if code < 0:
        raise KeyError(_missing_message(what, [raw], index.ids))
    return int(code)


def _lookup_many(raws: Any, index: _IdIndex, what: str, missing: str | int) -> np.ndarray:
    """Codes of many raw ids in ``index``; unknown ones raise (``missing="raise"``) or become ``missing``."""
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


def _missing_message(what: str, raws: list, ids: np.ndarray, n_missing: int | None = None) -> str:
    """The KeyError message for ids not found, with a hint when their kind differs from the data's."""
    shown = ", ".join(repr(x) for x in raws[:5])
    head = (
        f"{n_missing} {what} ids not found (first: {shown})"
        if n_missing and n_missing > 1
        else f"{what} id {shown} not found"
    )
    hint = ""
    kinds = {type(x) for x in raws}
    if ids.dtype.kind == "i" and str in kinds:
        hint = "; this data set's ids are integers: pass int, not str"
    elif ids.dtype.kind == "U" and any(issubclass(k, numbers.Integral) for k in kinds):
        hint = "; this data set's ids are strings: pass str, not int"
    elif any(issubclass(k, numbers.Real) and not issubclass(k, numbers.Integral) for k in kinds):
        hint = "; ids are integers or strings, not floats"
    return f"{head} among {_describe_ids(ids)}{hint}"
