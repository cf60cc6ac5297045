"""MovieLens loaders: 100k (with its official splits), 1M, 10M, 20M, 25M and latest."""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath
from typing import Any, overload

import numpy as np

from ._assemble import _assemble, _check_options
from ._download import _canonical_name, data_home, fetch_movielens
from ._ids import _IdIndex, _union_ids
from ._interactions import Interactions
from ._movielens_tables import (
    ML100K_GENRES,
    _genre_matrix,
    _ml100k_items,
    _ml100k_users,
    _movies_csv,
    _movies_dat,
    _users_dat,
)
from ._parsing import _read_table
from ._sources import _Source

__all__ = ["load_movielens", "load_movielens_100k", "ML100K_SPLITS", "ML100K_GENRES"]

#: The official train/test splits of MovieLens 100k (``u1.base``/``u1.test`` ... ``ub.test``).
ML100K_SPLITS = ("u1", "u2", "u3", "u4", "u5", "ua", "ub")

_RATING_COLUMNS = [("user", "int"), ("item", "int"), ("rating", "float"), ("timestamp", "int")]
_CSV_HEADER = ["userid", "movieid", "rating", "timestamp"]


def _resolve(path: str | os.PathLike | None, name: str | None, download: bool, cache_dir) -> Path:
    """Local path of the data: ``path`` itself, or the cached/downloaded archive of ``name``."""
    if path is not None:
        return Path(path).expanduser()
    if name is None:
        raise ValueError("pass the path of a MovieLens folder or .zip archive, or name='ml-100k' (etc.)")
    key = _canonical_name(name)
    cached = data_home(cache_dir) / f"{key}.zip"
    if download or cached.exists():
        return fetch_movielens(key, cache_dir)
    raise FileNotFoundError(
        f"{key} is not in {cached.parent}; pass path='/path/to/{key}.zip' (or the folder it unpacks to), "
        f"or download=True to fetch it from GroupLens"
    )


def _parse_ratings(src: _Source, name: str, sep: bytes, header: bool = False):
    where = src.require(name)
    label = src.label(where)
    table = _read_table(src.read(where), label, sep=sep, columns=_RATING_COLUMNS, skip_header=header)
    table.buf = None  # every column is numeric: the file's bytes can go
    return table


def _build_from_table(table, uids, iids, *, min_rating, binarize, dedupe, side, notes) -> Interactions:
    users, items = table.ints["user"], table.ints["item"]
    return _assemble(
        _IdIndex(uids).codes(users),
        _IdIndex(iids).codes(items),
        uids,
        iids,
        table.floats["rating"],
        table.ints["timestamp"],
        user_of=lambda k: int(users[k]),
        item_of=lambda k: int(items[k]),
        fixed_space=True,
        min_rating=min_rating,
        binarize=binarize,
        dedupe=dedupe,
        unknown="raise",
        source=table.label,
        where=table.where,
        summary_fields=table.summary_fields(tuple(notes) + tuple(table.notes)),
        side=side,
    )


def _place(ids_in_file: list[int], values: np.ndarray, space: np.ndarray, fill) -> np.ndarray:
    """Put per-id values from a side file at the positions of ``space``."""
    out = np.empty((space.size, *values.shape[1:]), dtype=values.dtype)
    out[...] = fill
    codes = _IdIndex(space).codes(np.asarray(ids_in_file, dtype=np.int64))
    ok = codes >= 0
    out[codes[ok]] = values[ok]
    return out


# The return type follows ``split`` (the overloads say so to type checkers).
@overload
def load_movielens_100k(
    path: str | os.PathLike | None = None,
    split: None = None,
    *,
    min_rating: float | None = 4.0,
    binarize: bool = True,
    dedupe: str = "max",
    download: bool = False,
    cache_dir: str | os.PathLike | None = None,
) -> Interactions: ...
@overload
def load_movielens_100k(
    path: str | os.PathLike | None,
    split: str,
    *,
    min_rating: float | None = 4.0,
    binarize: bool = True,
    dedupe: str = "max",
    download: bool = False,
    cache_dir: str | os.PathLike | None = None,
) -> tuple[Interactions, Interactions]: ...
@overload
def load_movielens_100k(
    path: str | os.PathLike | None = None,
    *,
    split: str,
    min_rating: float | None = 4.0,
    binarize: bool = True,
    dedupe: str = "max",
    download: bool = False,
    cache_dir: str | os.PathLike | None = None,
) -> tuple[Interactions, Interactions]: ...
@overload
def load_movielens_100k(
    path: str | os.PathLike | None = None,
    split: str | None = None,
    *,
    min_rating: float | None = 4.0,
    binarize: bool = True,
    dedupe: str = "max",
    download: bool = False,
    cache_dir: str | os.PathLike | None = None,
) -> Interactions | tuple[Interactions, Interactions]: ...
def load_movielens_100k(
    path: str | os.PathLike | None = None,
    split: str | None = None,
    *,
    min_rating: float | None = 4.0,
    binarize: bool = True,
    dedupe: str = "max",
    download: bool = False,
    cache_dir: str | os.PathLike | None = None,
) -> Interactions | tuple[Interactions, Interactions]:
    """Load MovieLens 100k, optionally as one of its official train/test splits.

    Parameters
    ----------
    path : str or os.PathLike, optional
        The ``ml-100k`` folder, the folder holding it, or ``ml-100k.zip``
        (read without extracting). Default: the cached archive (see
        ``download``).
    split : {None, "u1", ..., "u5", "ua", "ub"}
        ``None``: all of ``u.data``. Otherwise ``(train, test)`` from
        ``<split>.base`` and ``<split>.test``.
    min_rating : float or None
        Ratings ``>= min_rating`` are positives (default 4, the convention
        of the Keras example and of most BPR papers on this data); ``None``
        keeps every rating.
    binarize : bool
        Store 1.0 (True) or the rating (False) for kept pairs.
    dedupe : str
        Rule for repeated pairs (the official files have none).
    download : bool
        Fetch the official archive into the cache if it is not there
        (see :func:`fetch_movielens`); only used when ``path`` is None.
    cache_dir : str or os.PathLike, optional
        Cache folder (default ``$BPR_NUMPY_DATA`` or ``~/.cache/bpr_numpy``).

    Returns
    -------
    Interactions or (Interactions, Interactions)
        Shape 943 x 1682 always: the id space is every user of ``u.user``
        and ``u.data`` and every movie of ``u.item`` and ``u.data``, so
        train and test of a split are aligned. Side tables: ``item_titles``,
        ``item_features`` (19 genre flags, names in ``item_feature_names``),
        ``item_info`` (``release_date``, ``video_release_date``,
        ``imdb_url``), ``user_features`` (``age``, ``gender``,
        ``occupation``, ``zip_code``).

    Raises
    ------
    FileNotFoundError
        A needed file is missing (the message lists what the folder/archive holds).
    ValueError
        Malformed content (file and line named), a bad zip, an unknown split.
    """
    _check_options(binarize, dedupe, "raise")
    if split is not None and split not in ML100K_SPLITS:
        raise ValueError(f"split must be None or one of {', '.join(ML100K_SPLITS)}; got {split!r}")
    root = _resolve(path, "ml-100k" if path is None else None, download, cache_dir)
    with _Source(root) as src:
        names = ["u.data"] if split is None else [f"{split}.base", f"{split}.test"]
        for nm in names:
            src.require(nm, "(expected the MovieLens 100k files: u.data, u.item, u.user, ua.base, ...)")
        tables = [_parse_ratings(src, nm, b"\t") for nm in names]
        full = tables[0] if split is None else (_parse_ratings(src, "u.data", b"\t") if src.has("u.data") else None)
        items = _ml100k_items(src)
        users = _ml100k_users(src)

    user_sets = [t.ints["user"] for t in tables] + ([full.ints["user"]] if full is not None else [])
    item_sets = [t.ints["item"] for t in tables] + ([full.ints["item"]] if full is not None else [])
    if users is not None:
        user_sets.append(np.asarray(users[0], dtype=np.int64))
    if items is not None:
        item_sets.append(np.asarray(items[0], dtype=np.int64))
    uids = _union_ids(user_sets)
    iids = _union_ids(item_sets)

    side: dict[str, Any] = {}
    notes = ["MovieLens 100k" + (f", official split {split}" if split else "")]
    if items is not None:
        ids, titles, rel, vrel, url, flags, genre_names = items
        side["item_titles"] = _place(ids, np.array(titles, dtype=str), iids, "")
        side["item_features"] = _place(ids, flags, iids, 0)
        side["item_feature_names"] = genre_names
        side["item_info"] = {
            "release_date": _place(ids, np.array(rel, dtype=str), iids, ""),
            "video_release_date": _place(ids, np.array(vrel, dtype=str), iids, ""),
            "imdb_url": _place(ids, np.array(url, dtype=str), iids, ""),
        }
    else:
        notes.append("u.item not found: no titles or genres")
    if users is not None:
        ids, age, gender, occ, zips = users
        side["user_features"] = {
            "age": _place(ids, np.array(age, dtype=np.int64), uids, -1),
            "gender": _place(ids, np.array(gender, dtype=str), uids, ""),
            "occupation": _place(ids, np.array(occ, dtype=str), uids, ""),
            "zip_code": _place(ids, np.array(zips, dtype=str), uids, ""),
        }
    else:
        notes.append("u.user not found: no demographics")
    parts = tuple(
        _build_from_table(
            t, uids, iids, min_rating=min_rating, binarize=binarize, dedupe=dedupe, side=side, notes=notes
        )
        for t in tables
    )
    return parts[0] if split is None else (parts[0], parts[1])  # a split: its base and test tables


def _variant_of(src: _Source, where: str, fallback: str) -> str:
    folder = PurePosixPath(str(where).replace(os.sep, "/")).parent.name.lower()
    for cand in ("ml-100k", "ml-1m", "ml-10m100k", "ml-10m", "ml-20m", "ml-25m", "ml-latest-small", "ml-latest"):
        if folder == cand or src.path.stem.lower() == cand:
            return "ml-10m" if cand == "ml-10m100k" else cand
    return fallback


@overload
def load_movielens(
    path: str | os.PathLike | None = None,
    *,
    name: str | None = None,
    split: None = None,
    min_rating: float | None = 4.0,
    binarize: bool = True,
    dedupe: str = "max",
    download: bool = False,
    cache_dir: str | os.PathLike | None = None,
) -> Interactions: ...
@overload
def load_movielens(
    path: str | os.PathLike | None = None,
    *,
    name: str | None = None,
    split: str,
    min_rating: float | None = 4.0,
    binarize: bool = True,
    dedupe: str = "max",
    download: bool = False,
    cache_dir: str | os.PathLike | None = None,
) -> tuple[Interactions, Interactions]: ...
@overload
def load_movielens(
    path: str | os.PathLike | None = None,
    *,
    name: str | None = None,
    split: str | None = None,
    min_rating: float | None = 4.0,
    binarize: bool = True,
    dedupe: str = "max",
    download: bool = False,
    cache_dir: str | os.PathLike | None = None,
) -> Interactions | tuple[Interactions, Interactions]: ...
def load_movielens(
    path: str | os.PathLike | None = None,
    *,
    name: str | None = None,
    split: str | None = None,
    min_rating: float | None = 4.0,
    binarize: bool = True,
    dedupe: str = "max",
    download: bool = False,
    cache_dir: str | os.PathLike | None = None,
) -> Interactions | tuple[Interactions, Interactions]:
    """Load any MovieLens release, detected from the files present.

    ============================  ======================================
    files found                   release
    ============================  ======================================
    ``u.data`` (``ua.base`` ...)  100k (see :func:`load_movielens_100k`)
    ``ratings.dat`` + users.dat   1M (``::``-separated; Latin-1 movies)
    ``ratings.dat`` only          10M (``ml-10M100K``)
    ``ratings.csv``               20M, 25M, latest(-small) (CSV + header)
    ============================  ======================================

    Parameters
    ----------
    path : str or os.PathLike, optional
        The release's folder, the folder holding it, or the official .zip
        (read without extracting). If None, ``name`` is looked up in the
        cache (and downloaded when ``download=True``).
    name : str, optional
        ``"ml-100k"``, ``"ml-1m"``, ``"ml-10m"``, ``"ml-20m"``, ``"ml-25m"``,
        ``"ml-latest-small"``, ``"ml-latest"``; used when ``path`` is None.
    split : str, optional
        Official split name; only MovieLens 100k ships splits.
    min_rating : float or None
        Ratings ``>= min_rating`` are positives (default 4); None keeps all.
    binarize : bool
        Store 1.0 (True) or the rating (False).
    dedupe : str
        Rule for repeated (user, movie) pairs (official files have none).
    download : bool
        Allow fetching the archive (see :func:`fetch_movielens`).
    cache_dir : str or os.PathLike, optional
        Cache folder.

    Returns
    -------
    Interactions, or (train, test) for a 100k split
        Users: every user in the ratings (and ``users.dat``); items: every
        movie in the ratings and the movies file. ``item_titles``,
        ``item_features`` (multi-hot genres; "(no genres listed)" is not a
        genre), ``item_info["genres"]`` (raw string) and, for 1M,
        ``user_features`` (``gender``, ``age`` group code, ``occupation``
        code, ``zip_code``). ``summary.notes`` names the detected release.

    Raises
    ------
    FileNotFoundError
        No MovieLens ratings file in the folder/archive.
    ValueError
        Malformed content (file and line named), bad zip, ``split`` for a
        release without official splits.
    """
    _check_options(binarize, dedupe, "raise")
    root = _resolve(path, name, download, cache_dir)
    with _Source(root) as src:
        if src.has("u.data") or any(src.has(f"{s}.base") for s in ML100K_SPLITS):
            is_100k = True
        else:
            is_100k = False
            if split is not None:
                raise ValueError("official splits exist only for MovieLens 100k; use split_random or split_leave_k_out")
            ratings_dat = src.find("ratings.dat")
            ratings_csv = src.find("ratings.csv")
            if ratings_dat is None and ratings_csv is None:
                raise FileNotFoundError(
                    f"{root}: no MovieLens ratings file (u.data, ratings.dat or ratings.csv) at the top level "
                    f"or one folder down; it holds: {src.listing()}"
                )
            notes: list[str] = []
            side: dict[str, Any] = {}
            if ratings_dat is not None:
                users_where = src.find("users.dat")
                variant = _variant_of(src, ratings_dat, "ml-1m" if users_where else "ml-10m")
                table = _read_table(
                    src.read(ratings_dat),
                    src.label(ratings_dat),
                    sep=b"::",
                    columns=_RATING_COLUMNS,
                    skip_header=False,
                )
                table.buf = None
                movies_where = src.find("movies.dat")
                movies = _movies_dat(src, movies_where) if movies_where else None
                users = _users_dat(src, users_where) if users_where else None
            else:
                assert ratings_csv is not None  # one of the two was found (checked above)
                variant = _variant_of(src, ratings_csv, "ml-csv")
                label = src.label(ratings_csv)
                data = src.read(ratings_csv)
                head = data[:200].split(b"\n", 1)[0].decode("utf-8", errors="replace").strip().lstrip("\ufeff")
                if [h.strip().lower() for h in head.split(",")] != _CSV_HEADER:
                    raise ValueError(
                        f"{label}, line 1: expected the header userId,movieId,rating,timestamp, found {head!r}"
                    )
                table = _read_table(data, label, sep=b",", columns=_RATING_COLUMNS, skip_header=True)
                table.buf = None
                del data
                movies_where = src.find("movies.csv")
                movies = _movies_csv(src, movies_where) if movies_where else None
                users = None
    if is_100k:
        return load_movielens_100k(root, split, min_rating=min_rating, binarize=binarize, dedupe=dedupe)

    notes.append(f"MovieLens release detected: {variant}")
    uid_sets = [table.ints["user"]] + ([np.asarray(users[0], dtype=np.int64)] if users else [])
    iid_sets = [table.ints["item"]] + ([np.asarray(movies[0], dtype=np.int64)] if movies else [])
    uids = _union_ids(uid_sets)
    iids = _union_ids(iid_sets)
    if movies is not None:
        ids, titles, genres, enc = movies
        if enc != "utf-8":
            notes.append(f"movies file decoded as {enc}")
        feats, vocab = _genre_matrix(genres)
        side["item_titles"] = _place(ids, np.array(titles, dtype=str), iids, "")
        side["item_features"] = _place(ids, feats, iids, 0)
        side["item_feature_names"] = vocab
        side["item_info"] = {"genres": _place(ids, np.array(genres, dtype=str), iids, "")}
    if users is not None:
        ids, gender, age, occ, zips = users
        side["user_features"] = {
            "gender": _place(ids, np.array(gender, dtype=str), uids, ""),
            "age": _place(ids, np.array(age, dtype=np.int64), uids, -1),
            "occupation": _place(ids, np.array(occ, dtype=np.int64), uids, -1),
            "zip_code": _place(ids, np.array(zips, dtype=str), uids, ""),
        }
    return _build_from_table(
        table, uids, iids, min_rating=min_rating, binarize=binarize, dedupe=dedupe, side=side, notes=notes
    )
