"""What a data folder or zip archive holds, recognised from its files (``bpr-numpy train --data``)."""

from __future__ import annotations

import os

from ._sources import _Source

__all__ = ["RELEASES", "detect_release", "release_files"]

#: The kinds of data :func:`detect_release` recognises, and how messages describe them.
RELEASES = {
    "ml-100k": "MovieLens 100k (u.data)",
    "ml-1m": "MovieLens 1M (ratings.dat + users.dat)",
    "ml-10m": "MovieLens 10M (ratings.dat, no users.dat)",
    "ml-csv": "a CSV MovieLens release (ratings.csv: 20M, 25M or latest)",
    "lightgcn": "a LightGCN split (train.txt + test.txt or valid.txt)",
}

#: The files that identify each downloadable MovieLens release.
_RELEASE_FILES = {
    "ml-100k": "u.data",
    "ml-1m": "ratings.dat and users.dat",
    "ml-10m": "ratings.dat",
    "ml-20m": "ratings.csv",
    "ml-25m": "ratings.csv",
}


def _release_of(src: _Source) -> str | None:
    if src.has("u.data") or src.has("ua.base"):
        return "ml-100k"
    if src.has("ratings.dat"):
        return "ml-1m" if src.has("users.dat") else "ml-10m"
    if src.has("ratings.csv"):
        return "ml-csv"
    if src.has("train.txt") and (src.has("test.txt") or src.has("valid.txt")):
        return "lightgcn"  # valid.txt: a validation carve of the training file, as LightGCN++'s
    return None


def detect_release(path: str | os.PathLike) -> tuple[str | None, str]:
    """The kind of data a folder or zip holds (a key of :data:`RELEASES`, or None) and a listing of its files.

    Files are looked for at the top level and one folder down, as the loaders look for them.
    """
    with _Source(path) as src:
        return _release_of(src), src.listing()


def release_files(name: str) -> str:
    """The files that identify MovieLens release ``name`` (``"ml-1m"``: ``"ratings.dat and users.dat"``)."""
    return _RELEASE_FILES[name]
