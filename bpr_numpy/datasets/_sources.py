"""Where data files come from: a directory, or a zip archive read without extracting."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path, PurePosixPath

from .._archives import check_zip_directory, read_zip_member

__all__: list[str] = []


class _Source:
    """A directory or a zip archive holding data files.

    A zip archive is the one door through which every dataset reader takes a
    member, so its checks live here: its directory must pass
    :func:`bpr_numpy._archives.check_zip_directory` (no duplicated,
    NUL-cut, absolute or ``..`` names, no impossible sizes) when it is
    opened, and members are read by :meth:`read` (held to their declared
    size).

    Files are found at the top level or one folder down (the official
    archives unpack to ``ml-100k/u.data``, ``ml-1m/ratings.dat``,
    ``ml-10M100K/ratings.dat``, ...), so a user may pass the archive, the
    folder it unpacked to, or the folder that folder is in.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        if isinstance(path, bytes) or not isinstance(path, (str, os.PathLike)):
            raise TypeError(f"path must be a str or os.PathLike, got {type(path).__name__}")
        self.path = Path(path).expanduser()
        if not self.path.exists():
            raise FileNotFoundError(f"{self.path} does not exist")
        self._zip: zipfile.ZipFile | None = None
        self._names: list[str] = []
        if self.path.is_file():
            if not zipfile.is_zipfile(self.path):
                raise ValueError(
                    f"{self.path} is a file but not a zip archive; pass the directory holding the data "
                    "files or the official .zip archive"
                )
            try:
                self._zip = zipfile.ZipFile(self.path)
            except (zipfile.BadZipFile, OSError) as exc:
                raise ValueError(f"{self.path} is not a readable zip archive ({exc})") from None
            try:
                # Before any member is looked up: a duplicated or NUL-cut name would be misread.
                check_zip_directory(self._zip, self.label)
            except ValueError:
                self.close()
                raise
            self._names = [n for n in self._zip.namelist() if not n.endswith("/")]

    @property
    def is_zip(self) -> bool:
        return self._zip is not None

    def close(self) -> None:
        if self._zip is not None:
            self._zip.close()

    def __enter__(self) -> _Source:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def find(self, name: str) -> str | None:
        """Member (zip) or path (directory) of ``name``, top level first, else one folder down."""
        if self._zip is not None:
            if name in self._names:
                return name
            hits = sorted(n for n in self._names if PurePosixPath(n).name == name and n.count("/") == 1)
            return hits[0] if hits else None
        top = self.path / name
        if top.is_file():
            return str(top)
        paths = sorted(p for p in self.path.glob(f"*/{name}") if p.is_file())
        return str(paths[0]) if paths else None

    def has(self, name: str) -> bool:
        return self.find(name) is not None

    def require(self, name: str, why: str = "") -> str:
        """Like :meth:`find` but raise ``FileNotFoundError`` naming what was expected."""
        where = self.find(name)
        if where is None:
            kind = "zip archive" if self._zip is not None else "directory"
            listing = self.listing()
            raise FileNotFoundError(
                f"{self.path}: this {kind} has no {name!r} (looked at the top level and one folder down)"
                f"{' ' + why if why else ''}; it holds: {listing}"
            )
        return where

    @property
    def members(self) -> list[str]:
        """Files in a zip archive (empty for a directory)."""
        return list(self._names)

    def listing(self) -> str:
        """A short list of the files present, for error messages."""
        if self._zip is not None:
            names = self._names
        else:
            names = sorted(
                str(p.relative_to(self.path))
                for p in list(self.path.iterdir()) + list(self.path.glob("*/*"))
                if p.is_file()
            )
        shown = ", ".join(names[:12])
        return (shown + (f", ... ({len(names)} files)" if len(names) > 12 else "")) or "nothing"

    def read(self, where: str) -> bytes | bytearray:
        """Bytes of a member/path returned by :meth:`find`.

        A zip member is inflated in chunks into a buffer of its declared size
        (a bytearray, never copied), refused with a ValueError naming it when
        that size is implausible (beyond deflate's ratio or this machine's
        memory) or is not the size it inflates to; see
        :func:`bpr_numpy._archives.read_zip_member`. A plain file is read
        whole: its size on disk is real.
        """
        if self._zip is not None:
            return read_zip_member(self._zip, self._zip.getinfo(where), self.label)
        return Path(where).read_bytes()

    def label(self, where: str) -> str:
        """How error messages name a file."""
        if self._zip is not None:
            return f"{self.path}:{where}"
        return str(where)
