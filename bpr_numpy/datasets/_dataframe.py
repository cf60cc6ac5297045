"""Interactions from a pandas DataFrame (pandas is optional: imported here, when this is called).

The library keeps two kinds of raw ids, non-negative integers and strings (see :mod:`._ids`,
which refuses floats and mixtures rather than guessing). A DataFrame brings more: categorical
columns, pandas' nullable integers and strings, UUIDs, dates, negative integers. Each id column
is turned into one of the two kinds here, or refused with the column and the row named:

- non-negative integers (numpy or nullable) stay integers;
- strings (``object`` or ``string`` dtype) stay strings;
- a categorical column takes its categories' values, then the rules above;
- floats are refused (a column of whole numbers turned float by missing values must be cast:
  the message says so), as are booleans and missing ids;
- any other values (UUIDs, dates, tuples, negative integers, a mix of ints and strings) become
  their ``str()``, provided two different ids never give the same string (``1`` and ``"1"`` in
  one column do, and are refused).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ._interactions import Interactions

__all__ = ["from_dataframe"]


def from_dataframe(
    frame: Any,
    user: str = "user",
    item: str = "item",
    rating: str | None = None,
    timestamp: str | None = None,
    *,
    min_rating: float | None = None,
    binarize: bool = True,
    dedupe: str = "max",
    user_ids: Any = None,
    item_ids: Any = None,
    unknown: str = "raise",
) -> Interactions:
    """Build :class:`Interactions` from the columns of a pandas DataFrame, one row per interaction.

    Parameters
    ----------
    frame : pandas.DataFrame
    user, item : str
        The id columns. Ids of any type: see the module's notes for how each kind is kept.
    rating : str, optional
        A numeric column (rating, count or weight per interaction), no missing values.
    timestamp : str, optional
        A numeric or datetime column (time zones are converted to UTC), no missing values;
        used by ``dedupe`` and :func:`split_leave_k_out` with ``strategy="latest"``.
    min_rating, binarize, dedupe, user_ids, item_ids, unknown
        As in :meth:`Interactions.from_arrays`.

    Returns
    -------
    Interactions
        ``user_ids``/``item_ids`` hold the raw ids (integers or strings), so
        ``interactions.user_index(some_id)`` finds a user's row.

    Raises
    ------
    TypeError
        ``frame`` is not a DataFrame; an id column holds floats or booleans; a rating or
        timestamp column is not numeric (or datetime).
    ValueError
        A named column is missing; a missing value (row named); ids that would merge as strings;
        and whatever :meth:`Interactions.from_arrays` refuses.

    Examples
    --------
    >>> import pandas as pd
    >>> from bpr_numpy.datasets import from_dataframe
    >>> clicks = pd.DataFrame({"user": ["ann", "bob", "ann"], "item": [10, 20, 20]})
    >>> data = from_dataframe(clicks)
    >>> data.shape, list(data.user_ids), list(data.item_ids)
    ((2, 2), ['ann', 'bob'], [10, 20])
    """
    import pandas as pd

    if not isinstance(frame, pd.DataFrame):
        raise TypeError(f"frame must be a pandas DataFrame, got {type(frame).__name__}")
    wanted = {"user": user, "item": item, "rating": rating, "timestamp": timestamp}
    missing = [f"{role}={name!r}" for role, name in wanted.items() if name is not None and name not in frame.columns]
    if missing:
        raise ValueError(
            f"the DataFrame has no column {', '.join(missing)}; its columns: {', '.join(map(repr, frame.columns))}"
        )
    users = _id_column(frame[user], user)
    items = _id_column(frame[item], item)
    ratings = None if rating is None else _number_column(frame[rating], rating)
    timestamps = None if timestamp is None else _time_column(frame[timestamp], timestamp)
    return Interactions.from_arrays(
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
        source=f"DataFrame ({len(frame)} rows)",
    )


def _first_missing(column: Any, name: str) -> None:
    """ValueError naming the first row (its index label) with a missing value."""
    na = column.isna().to_numpy()
    if na.any():
        k = int(np.argmax(na))
        label = column.index[k]
        label = label.item() if isinstance(label, np.generic) else label  # 11, not np.int64(11)
        raise ValueError(f"column {name!r} has a missing value at row {label!r} (position {k})")


def _id_column(column: Any, name: str) -> np.ndarray:
    """An id column as int64 (non-negative integers) or str, by the rules of the module's notes."""
    import pandas as pd

    _first_missing(column, name)
    if isinstance(column.dtype, pd.CategoricalDtype):
        column = pd.Series(np.asarray(column.cat.categories)[column.cat.codes.to_numpy()], index=column.index)
    dtype = column.dtype
    if pd.api.types.is_bool_dtype(dtype):
        raise TypeError(f"column {name!r} holds booleans; ids must be integers or strings")
    if pd.api.types.is_float_dtype(dtype):
        raise TypeError(
            f"column {name!r} holds floats ({dtype}); ids must be integers or strings. A column of whole "
            f"numbers becomes float when values are missing: drop those rows and cast, e.g. "
            f"frame[{name!r}].astype('int64')"
        )
    if pd.api.types.is_integer_dtype(dtype):
        values = column.to_numpy(dtype=np.int64)
        if not values.size or values.min() >= 0:
            return values
    elif pd.api.types.is_string_dtype(dtype):
        values = column.to_numpy(dtype=object)
        if all(isinstance(v, str) for v in values):
            return values.astype(str)
    # Anything else (negative integers, UUIDs, dates, tuples, mixtures): their strings, if that merges nothing.
    values = column.to_numpy(dtype=object)
    as_text = np.array([str(v) for v in values], dtype=str)
    distinct = len(pd.unique(column))
    if len(np.unique(as_text)) != distinct:
        raise ValueError(
            f"column {name!r} holds ids that are different values but the same string (such as 1 and "
            "'1'); make them one type first"
        )
    return as_text


def _number_column(column: Any, name: str) -> np.ndarray:
    import pandas as pd

    _first_missing(column, name)
    if not pd.api.types.is_numeric_dtype(column.dtype) or pd.api.types.is_bool_dtype(column.dtype):
        raise TypeError(f"column {name!r} must be numeric, got dtype {column.dtype}")
    return column.to_numpy(dtype=np.float64)


def _time_column(column: Any, name: str) -> np.ndarray:
    import pandas as pd

    _first_missing(column, name)
    dtype = column.dtype
    if isinstance(dtype, pd.DatetimeTZDtype):
        return column.dt.tz_convert("UTC").dt.tz_localize(None).to_numpy(dtype="datetime64[ns]")
    if pd.api.types.is_datetime64_dtype(dtype):
        return column.to_numpy(dtype="datetime64[ns]")
    if pd.api.types.is_numeric_dtype(dtype) and not pd.api.types.is_bool_dtype(dtype):
        return column.to_numpy(dtype=np.float64 if pd.api.types.is_float_dtype(dtype) else np.int64)
    raise TypeError(f"column {name!r} must hold numbers or datetimes, got dtype {dtype}")
