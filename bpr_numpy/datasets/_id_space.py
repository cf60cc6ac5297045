"""Moving Interactions into another id space: :meth:`Interactions.reindex` and :func:`align`.

Train and test must share ``user_ids``/``item_ids`` to be comparable. Splits
and paired loaders keep one id space by construction; for data loaded
separately, :func:`align` puts several Interactions into the sorted union of
their ids and :meth:`Interactions.reindex` into any given one, re-mapping the
stored pairs and the side tables (titles, features, per-user columns).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, overload

import numpy as np

from ._assemble import _check_choice
from ._csr import _make_csr
from ._ids import _as_id_array, _check_unique, _IdIndex, _union_ids
from ._interactions import Interactions

__all__ = ["align"]


def _reindex(x: Interactions, user_ids: Any, item_ids: Any, *, unknown: str) -> Interactions:
    """The work of :meth:`Interactions.reindex` (see there)."""
    _check_choice(unknown, "unknown", ("raise", "drop"))
    new_u = x.user_ids if user_ids is None else _as_id_array(user_ids, "user_ids")
    new_i = x.item_ids if item_ids is None else _as_id_array(item_ids, "item_ids")
    _check_unique(new_u, "user_ids")
    _check_unique(new_i, "item_ids")
    same_u = new_u is x.user_ids or (new_u.shape == x.user_ids.shape and np.array_equal(new_u, x.user_ids))
    same_i = new_i is x.item_ids or (new_i.shape == x.item_ids.shape and np.array_equal(new_i, x.item_ids))
    if same_u and same_i:
        return x
    umap = _IdIndex(new_u).codes(x.user_ids)  # old row -> new row (-1: absent)
    imap = _IdIndex(new_i).codes(x.item_ids)
    rows, cols = x.pairs()
    r, c = umap[rows], imap[cols]
    bad = (r < 0) | (c < 0)
    n_bad = int(bad.sum())
    if n_bad and unknown == "raise":
        k = int(np.argmax(bad))
        who = f"user {x.user_ids[rows[k]]!r}" if r[k] < 0 else f"item {x.item_ids[cols[k]]!r}"
        raise ValueError(f"{who} has stored pairs but is not in the target id space ({n_bad} pairs affected)")
    keep = ~bad
    r, c = r[keep], c[keep]
    rat = x.ratings[keep] if x.ratings is not None else None
    ts = x.timestamps[keep] if x.timestamps is not None else None
    data = x.matrix.data[keep]
    from ._csr_kernels import _order_by_row_col

    order = _order_by_row_col(r, c, new_u.size)
    r, c, data = r[order], c[order], data[order]
    indptr = np.concatenate(([0], np.cumsum(np.bincount(r, minlength=new_u.size), dtype=np.int64)))
    assert x.summary is not None  # Interactions.__post_init__ fills it in
    summary = dataclasses.replace(
        x.summary,
        stored=int(r.size),
        unknown_ids_dropped=x.summary.unknown_ids_dropped + n_bad,
        n_users=int(new_u.size),
        n_items=int(new_i.size),
    )
    return Interactions(
        matrix=_make_csr(data, c, indptr, (new_u.size, new_i.size)),
        user_ids=new_u,
        item_ids=new_i,
        ratings=rat[order] if rat is not None else None,
        timestamps=ts[order] if ts is not None else None,
        item_titles=_remap_side(x.item_titles, imap, new_i.size),
        item_features=_remap_side(x.item_features, imap, new_i.size),
        item_feature_names=x.item_feature_names if x.item_features is not None else (),
        item_info={k: _remap_side(v, imap, new_i.size) for k, v in x.item_info.items()},
        user_features={k: _remap_side(v, umap, new_u.size) for k, v in x.user_features.items()},
        summary=summary,
    )


@overload
def _remap_side(values: np.ndarray, old_to_new: np.ndarray, n_new: int) -> np.ndarray: ...
@overload
def _remap_side(values: None, old_to_new: np.ndarray, n_new: int) -> None: ...
@overload
def _remap_side(values: np.ndarray | None, old_to_new: np.ndarray, n_new: int) -> np.ndarray | None: ...
def _remap_side(values: np.ndarray | None, old_to_new: np.ndarray, n_new: int) -> np.ndarray | None:
    """Move a per-row side table to a new id space; rows new to it are empty."""
    if values is None:
        return None
    values = np.asarray(values)
    if values.dtype.kind in "US":
        out = np.zeros((n_new, *values.shape[1:]), dtype=values.dtype)
    elif values.dtype.kind == "O":
        out = np.full((n_new, *values.shape[1:]), "", dtype=object)
    elif values.dtype.kind in "iu" and values.ndim == 1:
        out = np.full(n_new, -1, dtype=values.dtype) if values.dtype.kind == "i" else np.zeros(n_new, values.dtype)
    else:
        out = np.zeros((n_new, *values.shape[1:]), dtype=values.dtype)
    ok = old_to_new >= 0
    out[old_to_new[ok]] = values[ok]
    return out


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
