"""Results as pandas DataFrames, when asked (``as_frame=True``); pandas is imported only here, then.

Rows and columns keep the library's indices (``user``, ``item``) and add the raw ids a model
knows (``user_id``, ``item_id``, ``title``), so a frame can be joined back to the caller's data.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__: list[str] = []


def _pandas():
    try:
        import pandas as pd
    except ImportError:  # pragma: no cover - pandas is optional
        raise ImportError("as_frame=True needs pandas (pip install pandas)") from None
    return pd


def recommendations_frame(model: Any, users: np.ndarray, items: np.ndarray, scores: np.ndarray) -> Any:
    """One row per recommendation: ``user``, ``rank`` (1 = best), ``item``, ``score`` and the raw ids.

    ``users`` has one entry per row of ``items``/``scores`` (2-D, padded with item -1, which
    is left out); ``users`` may be -1 for vectors that are not rows of the model (fold-in).
    """
    pd = _pandas()
    items, scores = np.atleast_2d(items), np.atleast_2d(scores)
    keep = items >= 0
    row = np.repeat(np.arange(items.shape[0]), keep.sum(axis=1))
    frame = pd.DataFrame(
        {
            "user": np.asarray(users, dtype=np.int64)[row],
            "rank": (np.cumsum(keep, axis=1)[keep]).astype(np.int64),
            "item": items[keep].astype(np.int64),
            "score": scores[keep],
        }
    )
    user_ids, item_ids, titles = (getattr(model, name, None) for name in ("user_ids", "item_ids", "item_titles"))
    if user_ids is not None:
        known = frame["user"].to_numpy() >= 0
        frame.insert(
            1, "user_id", pd.Series(np.asarray(user_ids, dtype=object)[np.where(known, frame["user"], 0)]).where(known)
        )
    if item_ids is not None:
        frame.insert(frame.columns.get_loc("item") + 1, "item_id", np.asarray(item_ids, dtype=object)[frame["item"]])
    if titles is not None:
        frame.insert(frame.columns.get_loc("score"), "title", np.asarray(titles, dtype=object)[frame["item"]])
    return frame


def per_user_frame(users: np.ndarray, per_user: dict[str, np.ndarray]) -> Any:
    """The per-user metrics of :func:`bpr_numpy.metrics.evaluate`: indexed by ``user``, a column per metric."""
    pd = _pandas()
    return pd.DataFrame(per_user, index=pd.Index(np.asarray(users, dtype=np.int64), name="user"))
