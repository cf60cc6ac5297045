"""The side tables of the MovieLens releases: items (titles, genres) and users (age, gender, occupation).

Read from a release's folder or zip (:class:`._sources._Source`) with the errors of
:mod:`._parsing` (file and line named); :mod:`._movielens` aligns them with the ratings.
"""

from __future__ import annotations

import csv
import io

import numpy as np

from ._sources import _Source

#: Column order of the 19 genre flags in u.item (also listed in u.genre).
ML100K_GENRES = (
    "unknown",
    "Action",
    "Adventure",
    "Animation",
    "Children's",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Fantasy",
    "Film-Noir",
    "Horror",
    "Musical",
    "Mystery",
    "Romance",
    "Sci-Fi",
    "Thriller",
    "War",
    "Western",
)

_NO_GENRE = "(no genres listed)"


def _text_lines(data: bytes | bytearray, label: str, encodings: tuple[str, ...]) -> tuple[list[str], str]:
    """Decode a small side file, trying encodings in order; returns (lines, encoding used)."""
    last = None
    for enc in encodings:
        try:
            text = data.decode(enc)
            return text.lstrip("\ufeff").splitlines(), enc
        except UnicodeDecodeError as exc:
            last = exc
    assert last is not None, "no encoding to try"
    ln = data[: last.start].count(b"\n") + 1
    raise ValueError(f"{label}, line {ln}: bytes that are not valid {' or '.join(encodings)} ({last.reason})")


def _int_field(value: str, label: str, ln: int, what: str) -> int:
    try:
        v = int(value)
    except ValueError:
        raise ValueError(f"{label}, line {ln}: {what} is not an integer: {value!r}") from None
    if v < 0:
        raise ValueError(f"{label}, line {ln}: {what} is negative: {value!r}")
    return v


def _split_fixed(lines: list[str], sep: str, n_fields: int, label: str, what: str):
    """Yield (line number, fields) of non-blank lines, checking the field count."""
    for ln, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        fields = line.split(sep)
        if len(fields) != n_fields:
            raise ValueError(
                f"{label}, line {ln}: expected {n_fields} fields separated by {sep!r} in {what}, "
                f"found {len(fields)} (line: {line[:200]!r})"
            )
        yield ln, fields


# ---------------------------------------------------------------- 100k
def _ml100k_items(src: _Source):
    where = src.find("u.item")
    if where is None:
        return None
    label = src.label(where)
    # u.item is Latin-1 (accented titles such as "Misérables"); UTF-8 would fail.
    lines, _ = _text_lines(src.read(where), label, ("latin-1",))
    genre_names = list(ML100K_GENRES)
    gwhere = src.find("u.genre")
    if gwhere is not None:
        glines, _ = _text_lines(src.read(gwhere), src.label(gwhere), ("latin-1",))
        pairs = [g.split("|") for g in glines if g.strip()]
        if len(pairs) == 19 and all(len(p) == 2 for p in pairs):
            order = sorted(pairs, key=lambda p: int(p[1]))
            genre_names = [p[0] for p in order]
    ids, titles, rel, vrel, url, flags = [], [], [], [], [], []
    for ln, f in _split_fixed(
        lines, "|", 24, label, "u.item (id|title|release date|video release date|URL|19 genre flags)"
    ):
        ids.append(_int_field(f[0], label, ln, "movie id"))
        titles.append(f[1])
        rel.append(f[2])
        vrel.append(f[3])
        url.append(f[4])
        row = []
        for g, v in enumerate(f[5:]):
            if v not in ("0", "1"):
                raise ValueError(f"{label}, line {ln}: genre flag {g + 1} ({genre_names[g]}) is {v!r}, expected 0 or 1")
            row.append(v == "1")
        flags.append(row)
    return ids, titles, rel, vrel, url, np.array(flags, dtype=np.uint8).reshape(-1, 19), tuple(genre_names)


def _ml100k_users(src: _Source):
    where = src.find("u.user")
    if where is None:
        return None
    label = src.label(where)
    lines, _ = _text_lines(src.read(where), label, ("utf-8", "latin-1"))
    ids, age, gender, occ, zips = [], [], [], [], []
    for ln, f in _split_fixed(lines, "|", 5, label, "u.user (id|age|gender|occupation|zip code)"):
        ids.append(_int_field(f[0], label, ln, "user id"))
        age.append(_int_field(f[1], label, ln, "age"))
        gender.append(f[2])
        occ.append(f[3])
        zips.append(f[4])
    return ids, age, gender, occ, zips


# ---------------------------------------------------------------- 1M / 10M / 20M / 25M / latest
def _genre_matrix(genres: list[str]) -> tuple[np.ndarray, tuple[str, ...]]:
    vocab = sorted({g for s in genres for g in s.split("|") if g and g != _NO_GENRE})
    col = {g: j for j, g in enumerate(vocab)}
    out = np.zeros((len(genres), len(vocab)), dtype=np.uint8)
    for r, s in enumerate(genres):
        for g in s.split("|"):
            j = col.get(g)
            if j is not None:
                out[r, j] = 1
    return out, tuple(vocab)


def _movie_columns(rows, label: str) -> tuple[list[int], list[str], list[str]]:
    """(ids, titles, genres) from ``(line number, [id, title, genres])`` rows.

    movies.dat and movies.csv differ only in how a line becomes three fields;
    what the fields mean and how the id is checked is this one rule. ``rows``
    is consumed lazily, so a malformed line and a bad id still raise in the
    order they appear in the file.
    """
    ids, titles, genres = [], [], []
    for ln, f in rows:
        ids.append(_int_field(f[0], label, ln, "movie id"))
        titles.append(f[1])
        genres.append(f[2])
    return ids, titles, genres


def _movies_dat_rows(lines: list[str], label: str):
    """Yield (line number, fields) of movies.dat (``MovieID::Title::Genres``), skipping blank lines."""
    for ln, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        f = line.split("::")
        if len(f) != 3:
            raise ValueError(
                f"{label}, line {ln}: expected 3 fields separated by '::' (MovieID::Title::Genres), "
                f"found {len(f)} (line: {line[:200]!r})"
            )
        yield ln, f


def _movies_csv_rows(lines: list[str], label: str):
    """Yield (line number, fields) of movies.csv after checking its header, skipping empty records."""
    reader = csv.reader(io.StringIO("\n".join(lines)))
    for k, f in enumerate(reader):
        ln = reader.line_num
        if k == 0:
            if [x.strip().lower() for x in f] != ["movieid", "title", "genres"]:
                raise ValueError(f"{label}, line 1: expected the header movieId,title,genres, found {f!r}")
            continue
        if not f:
            continue
        if len(f) != 3:
            raise ValueError(f"{label}, line {ln}: expected 3 CSV fields (movieId,title,genres), found {len(f)}: {f!r}")
        yield ln, f


def _movies_dat(src: _Source, where: str):
    label = src.label(where)
    # ml-1m's movies.dat is Latin-1; newer files are UTF-8. Try UTF-8 first:
    # Latin-1 decodes anything, so it must come last.
    lines, enc = _text_lines(src.read(where), label, ("utf-8", "latin-1"))
    return (*_movie_columns(_movies_dat_rows(lines, label), label), enc)


def _movies_csv(src: _Source, where: str):
    label = src.label(where)
    lines, enc = _text_lines(src.read(where), label, ("utf-8",))
    return (*_movie_columns(_movies_csv_rows(lines, label), label), enc)


def _users_dat(src: _Source, where: str):
    label = src.label(where)
    lines, _ = _text_lines(src.read(where), label, ("utf-8", "latin-1"))
    ids, gender, age, occ, zips = [], [], [], [], []
    for ln, f in _split_fixed(lines, "::", 5, label, "users.dat (UserID::Gender::Age::Occupation::Zip-code)"):
        ids.append(_int_field(f[0], label, ln, "user id"))
        gender.append(f[1])
        age.append(_int_field(f[2], label, ln, "age group"))
        occ.append(_int_field(f[3], label, ln, "occupation code"))
        zips.append(f[4])
    return ids, gender, age, occ, zips
