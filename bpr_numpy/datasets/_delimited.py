"""Loaders for generic delimited files and the LightGCN/NGCF adjacency-list format."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ._assemble import _assemble, _check_options, _map_ids
from ._ids import _union_ids
from ._interactions import Interactions
from ._parsing import (
    _HEADER_WORDS,
    _first_line,
    _is_ascii_compatible,
    _looks_numeric,
    _prepare_bytes,
    _read_adjacency,
    _read_table,
    _role_of,
    _split_line,
    _tokens_to_ids,
)
from ._sources import _Source

__all__ = ["load_delimited", "load_adjacency_list", "load_lightgcn"]

ROLES = ("user", "item", "rating", "timestamp")
_AUTO_DELIMITERS = (b"\t", b"::", b",", b";", b"|")


def _read_file(path: str | os.PathLike, member: str | None) -> tuple[bytes | bytearray, str]:
    """Bytes and display label of a plain file or of one member of a zip archive."""
    p = Path(path).expanduser() if isinstance(path, (str, os.PathLike)) else None
    if p is None:
        raise TypeError(f"path must be a str or os.PathLike, got {type(path).__name__}")
    if not p.exists():
        raise FileNotFoundError(f"{p} does not exist")
    if p.is_dir():
        raise IsADirectoryError(f"{p} is a directory; pass the data file (or a zip archive and member=)")
    import zipfile

    if zipfile.is_zipfile(p):
        with _Source(p) as src:
            if member is None:
                names = src.members
                if len(names) != 1:
                    raise ValueError(
                        f"{p} is a zip archive with {len(names)} files; pass member= naming one of: "
                        + ", ".join(names[:12])
                    )
                member = names[0]
            where = src.find(member)
            if where is None:
                raise FileNotFoundError(
                    f"{p}: no member {member!r} in this zip archive; it holds: " + ", ".join(src.members[:12])
                )
            return src.read(where), src.label(where)
    if member is not None:
        raise ValueError(f"member= is only for zip archives; {p} is not one")
    return p.read_bytes(), str(p)


def _parse_delimiter(delimiter: str | bytes | None, first: str) -> bytes | None:
    """Separator as bytes, ``None`` for runs of blanks."""
    if delimiter is None:
        raw = first.encode("utf-8")
        for cand in _AUTO_DELIMITERS:
            if cand in raw:
                return cand
        return None
    if isinstance(delimiter, bytes):
        delimiter = delimiter.decode("utf-8")
    if not isinstance(delimiter, str):
        raise TypeError(f"delimiter must be a str or None, got {type(delimiter).__name__}")
    if delimiter in ("", "\n", "\r", "\r\n"):
        raise ValueError(f"delimiter {delimiter!r} cannot separate fields")
    if delimiter in (" ", "whitespace") or (delimiter.strip(" \t") == "" and delimiter != "\t"):
        return None
    return delimiter.encode("utf-8")


def _check_columns(columns: Any) -> tuple[str | None, ...]:
    if isinstance(columns, str) or not isinstance(columns, (list, tuple)):
        raise TypeError(f"columns must be a tuple of column roles, got {type(columns).__name__}")
    out = tuple(None if c in (None, "", "_", "skip") else c for c in columns)
    for c in out:
        if c is not None and c not in ROLES:
            raise ValueError(f"unknown column role {c!r}; use {', '.join(ROLES)}, or None to skip a column")
    named = [c for c in out if c is not None]
    if len(set(named)) != len(named):
        raise ValueError(f"columns names a role twice: {columns!r}")
    if "user" not in named or "item" not in named:
        raise ValueError(f"columns must include 'user' and 'item', got {columns!r}")
    return out


def _detect_header(tokens: list[str], columns: tuple[str | None, ...] | None) -> bool:
    """Auto-detect a header: no field is a number and a name is recognised (or a number was due)."""
    if any(_looks_numeric(t) for t in tokens):
        return False
    if any(t.strip().strip('"').lower() in _HEADER_WORDS for t in tokens):
        return True
    if columns is not None:
        return any(c in ("rating", "timestamp") for c in columns[: len(tokens)])
    return len(tokens) >= 3  # a third column would be a rating: a word there is a name


def load_delimited(
    path: str | os.PathLike,
    *,
    delimiter: str | None = None,
    columns: Sequence[str | None] | None = None,
    header: bool | None = None,
    min_rating: float | None = None,
    binarize: bool = True,
    dedupe: str = "max",
    encoding: str = "utf-8",
    id_type: str = "auto",
    on_bad_line: str = "raise",
    user_ids: Any = None,
    item_ids: Any = None,
    unknown: str = "raise",
    member: str | None = None,
) -> Interactions:
    """Load (user, item[, rating][, timestamp]) rows from a delimited text file.

    Parameters
    ----------
    path : str or os.PathLike
        A text file, or a zip archive (then ``member`` names the file, unless
        the archive holds exactly one).
    delimiter : str, optional
        Field separator. Default: detected from the first line: tab, ``::``,
        comma, semicolon, ``|``, else runs of blanks. ``" "`` or
        ``"whitespace"`` mean runs of blanks. Quoted fields (CSV quoting) are
        not interpreted.
    columns : sequence of {"user", "item", "rating", "timestamp", None}, optional
        Role of each field on a line, in file order; ``None`` skips a field.
        Default: from the header names if there is a header, else by field
        count: 2 = (user, item), 3 = (+ rating), 4 = (+ timestamp).
        Ratings and timestamps must be numbers (timestamps are read as
        float64 and kept as int64 when all are whole numbers below 2**53;
        dates written as text are refused with their line number).
    header : bool, optional
        Whether the first non-blank line is a header. Default: detected (no
        field is a number and a name such as ``userId``/``rating`` is
        recognised, or a numeric column holds a word).
    min_rating : float, optional
        Keep pairs with rating ``>= min_rating`` (after merging duplicates).
    binarize : bool
        Store 1.0 (True) or the rating (False).
    dedupe : {"max", "sum", "last", "first", "error"}
        Rule for repeated (user, item) pairs, see :meth:`Interactions.from_arrays`.
    encoding : str
        Text encoding; UTF-8 is validated (bad bytes raise with their line).
        Use ``"latin-1"`` for old files such as MovieLens 1M ``movies.dat``.
    id_type : {"auto", "int", "str"}
        ``"auto"``: integer ids when every id is a canonical non-negative
        integer (no sign, no leading zero), else strings, so ``"007"`` is not
        ``7``. ``"int"`` requires integers; ``"str"`` keeps strings.
    on_bad_line : {"raise", "skip"}
        Raise ``ValueError`` at the first malformed line (default), or skip
        malformed lines and count them in ``summary.malformed_lines``.
    user_ids, item_ids : array_like, optional
        Load into this id space (e.g. ``train.user_ids``) so matrices align.
    unknown : {"raise", "drop"}
        With ``user_ids``/``item_ids``: ids outside them raise or are dropped
        (counted).
    member : str, optional
        File inside a zip archive.

    Returns
    -------
    Interactions
        Ids sorted (integers numerically, strings lexicographically).

    Raises
    ------
    ValueError
        Malformed content, naming the file and the 1-based line: wrong field
        count, non-numeric rating or timestamp, empty field, bytes invalid in
        ``encoding``, a header line in the middle, an empty file.
    FileNotFoundError
        Missing file or zip member.
    """
    _check_options(binarize, dedupe, unknown)
    if id_type not in ("auto", "int", "str"):
        raise ValueError(f"id_type must be 'auto', 'int' or 'str', got {id_type!r}")
    if header not in (None, True, False):
        raise TypeError(f"header must be True, False or None, got {header!r}")
    data, label = _read_file(path, member)
    prepared = _prepare_bytes(data, label, encoding)
    # UTF-16/32 files are transcoded to UTF-8 before parsing; ids decode from that.
    token_encoding = encoding if _is_ascii_compatible(encoding) else "utf-8"
    first, _, first_no, _ = _first_line(prepared[0], prepared[1])
    if first is None:
        raise ValueError(f"{label}: the file is empty (no data lines)")
    sep = _parse_delimiter(delimiter, first)
    tokens = _split_line(first, sep)
    cols = _check_columns(columns) if columns is not None else None
    has_header = _detect_header(tokens, cols) if header is None else header
    notes: list[str] = list(prepared[2])
    if cols is None:
        if has_header:
            roles = [_role_of(t) for t in tokens]
            seen: set[str] = set()
            cleaned: list[str | None] = []
            for t, r in zip(tokens, roles, strict=True):
                if r is None or r in seen:
                    if t:
                        notes.append(f"column {t!r} ignored")
                    cleaned.append(None)
                else:
                    seen.add(r)
                    cleaned.append(r)
            if "user" not in seen or "item" not in seen:
                raise ValueError(
                    f"{label}, line {first_no}: cannot tell the user and item columns from the header "
                    f"{tokens!r}; pass columns=(...) naming each field's role"
                )
            cols = tuple(cleaned)
        else:
            by_count = {2: ("user", "item"), 3: ("user", "item", "rating"), 4: ("user", "item", "rating", "timestamp")}
            if len(tokens) not in by_count:
                raise ValueError(
                    f"{label}, line {first_no}: {len(tokens)} fields and no header; pass columns=(...) "
                    "naming each field's role ('user', 'item', 'rating', 'timestamp' or None)"
                )
            cols = by_count[len(tokens)]
    id_kind = "int" if id_type == "int" else "str"
    spec = [
        (c or "_", {"user": id_kind, "item": id_kind, "rating": "float", "timestamp": "float", None: "skip"}[c])
        for c in cols
    ]
    table = _read_table(
        data,
        label,
        sep=sep,
        columns=spec,
        skip_header=has_header,
        encoding=encoding,
        on_bad_line=on_bad_line,
        prepared=prepared,
    )
    notes.extend(table.notes[len(prepared[2]) :])
    if has_header:
        notes.append(f"header: {first!r}")

    side_ids = {"user": user_ids, "item": item_ids}
    spaces = {}
    for role in ("user", "item"):
        if id_kind == "int":
            raw = table.ints[role]
            if raw.size and raw.min() < 0:
                k = int(np.argmax(raw < 0))
                raise ValueError(f"{table.where(k)}: {role} id {int(raw[k])} is negative; ids must be >= 0")
            ids, codes = _map_ids(raw, side_ids[role], f"{role}_ids")
        else:
            ids, codes = _tokens_to_ids(table, role, token_encoding, id_type)
            if side_ids[role] is not None:
                space, to_space = _map_ids(ids, side_ids[role], f"{role}_ids")
                ids, codes = space, to_space[codes]
        spaces[role] = (ids, codes)

    def raw_of(role: str):
        if id_kind == "int":
            return lambda k: int(table.ints[role][k])
        s, ln = table.strs[role]
        return lambda k: bytes(table.file_bytes()[s[k] : s[k] + ln[k]]).decode(token_encoding, errors="replace")

    return _assemble(
        spaces["user"][1],
        spaces["item"][1],
        spaces["user"][0],
        spaces["item"][0],
        table.floats.get("rating"),
        table.floats.get("timestamp"),
        user_of=raw_of("user"),
        item_of=raw_of("item"),
        fixed_space=user_ids is not None or item_ids is not None,
        min_rating=min_rating,
        binarize=binarize,
        dedupe=dedupe,
        unknown=unknown,
        source=label,
        where=table.where,
        summary_fields=table.summary_fields(notes),
    )


def load_adjacency_list(
    path: str | os.PathLike,
    *,
    user_ids: Any = None,
    item_ids: Any = None,
    unknown: str = "raise",
    dedupe: str = "max",
    member: str | None = None,
    encoding: str = "utf-8",
) -> Interactions:
    """Load one ``user item item ...`` file (the LightGCN/NGCF benchmark format).

    Each non-blank line holds a user id followed by the ids of that user's
    items, separated by blanks; a line with only a user id is allowed (the
    user gets an empty row). Ids are non-negative integers.

    Parameters
    ----------
    path : str or os.PathLike
        The file, or a zip archive with ``member``.
    user_ids, item_ids : array_like, optional
        Fixed id space; default: sorted ids found in the file.
    unknown : {"raise", "drop"}
        What to do with ids outside a fixed id space.
    dedupe : {"max", "sum", "last", "first", "error"}
        Rule for an item listed twice for a user.
    member : str, optional
        File inside a zip archive.
    encoding : str
        Text encoding (checked).

    Returns
    -------
    Interactions
        Binary matrix. ``summary.rows_in`` counts pairs (not lines).
    """
    _check_options(True, dedupe, unknown)
    data, label = _read_file(path, member)
    return _adjacency_interactions(_read_adjacency(data, label, encoding), label, user_ids, item_ids, unknown, dedupe)


def _adjacency_interactions(parsed, label, user_ids, item_ids, unknown, dedupe) -> Interactions:
    """Interactions from the output of :func:`_read_adjacency`."""
    users, ulines, items, owner, n_lines, n_blank = parsed
    fixed = user_ids is not None or item_ids is not None
    # Default user space: every user listed, so a line without items still gets a row.
    uspace, ucodes = _map_ids(users, _union_ids([users]) if user_ids is None else user_ids, "user_ids")
    ispace, icodes = _map_ids(items, item_ids, "item_ids")
    notes = []
    n_items_per_line = np.bincount(owner, minlength=users.size)
    n_empty = int(np.count_nonzero(n_items_per_line == 0))
    if n_empty:
        notes.append(f"{n_empty} user lines list no items (those users get empty rows)")
        outside = (ucodes < 0) & (n_items_per_line == 0)
        if outside.any():
            k = int(np.argmax(outside))
            if unknown == "raise":
                raise ValueError(
                    f"{label}, line {int(ulines[k])}: user id {int(users[k])} is not in the given user_ids"
                )
            notes.append(f"{int(outside.sum())} users without items are outside the id space (ignored)")
    return _assemble(
        ucodes[owner],
        icodes,
        uspace,
        ispace,
        None,
        None,
        user_of=lambda k: int(users[owner[k]]),
        item_of=lambda k: int(items[k]),
        fixed_space=fixed,
        min_rating=None,
        binarize=True,
        dedupe=dedupe,
        unknown=unknown,
        source=label,
        where=lambda k: f"{label}, line {int(ulines[owner[k]])}",
        summary_fields=dict(lines_read=n_lines, blank_lines=n_blank, notes=tuple(notes)),
    )


def load_lightgcn(
    path_or_dir: str | os.PathLike,
    *,
    train_name: str = "train.txt",
    test_name: str = "test.txt",
    dedupe: str = "max",
) -> tuple[Interactions, Interactions]:
    """Load a LightGCN/NGCF benchmark split (Gowalla, Yelp2018, Amazon-book).

    Parameters
    ----------
    path_or_dir : str or os.PathLike
        Directory (or zip archive) holding ``train.txt`` and ``test.txt``,
        at the top level or one folder down.
    train_name, test_name : str
        File names.
    dedupe : {"max", "sum", "last", "first", "error"}
        Rule for an item listed twice for one user.

    Returns
    -------
    (train, test) : tuple of Interactions
        One id space: the sorted union of the user and item ids of both
        files (users listed with no items included), so ``train.matrix`` and
        ``test.matrix`` have the same shape and meaning.
    """
    _check_options(True, dedupe, "raise")
    with _Source(path_or_dir) as src:
        tr_where = src.require(train_name, "(expected the LightGCN train file)")
        te_where = src.require(test_name, "(expected the LightGCN test file)")
        tr_data, tr_label = src.read(tr_where), src.label(tr_where)
        te_data, te_label = src.read(te_where), src.label(te_where)
    tr = _read_adjacency(tr_data, tr_label)
    te = _read_adjacency(te_data, te_label)
    all_users = _union_ids([tr[0], te[0]])
    all_items = _union_ids([tr[2], te[2]])
    train = _adjacency_interactions(tr, tr_label, all_users, all_items, "raise", dedupe)
    test = _adjacency_interactions(te, te_label, all_users, all_items, "raise", dedupe)
    return train, test
