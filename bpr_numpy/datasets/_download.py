"""Fetching the official MovieLens archives into a local cache, verified and atomically written."""

from __future__ import annotations

import hashlib
import os
import tempfile
import urllib.error
import zipfile
from pathlib import Path

from .._files import give_ordinary_mode

__all__ = ["fetch_movielens", "data_home", "MOVIELENS_ARCHIVES"]

_BASE = "https://files.grouplens.org/datasets/movielens/"

#: name -> (url, SHA-256 of the archive or None).
#: The pinned digests are those of the official GroupLens archives as
#: recorded by tensorflow/datasets (url_checksums/movielens.txt) and by
#: several independent projects; GroupLens itself publishes MD5s only.
#: ml-10m is not pinned (no published SHA-256 we could confirm) and the
#: "latest" archives change over time, so those are checked against the
#: digest recorded at their first download (trust on first use).
MOVIELENS_ARCHIVES: dict[str, tuple[str, str | None]] = {
    "ml-100k": (_BASE + "ml-100k.zip", "50d2a982c66986937beb9ffb3aa76efe955bf3d5c6b761f4e3a7cd717c6a3229"),
    "ml-1m": (_BASE + "ml-1m.zip", "a6898adb50b9ca05aa231689da44c217cb524e7ebd39d264c56e2832f2c54e20"),
    "ml-10m": (_BASE + "ml-10m.zip", None),
    "ml-20m": (_BASE + "ml-20m.zip", "96f243c338a8665f6bcc89c53edf6ee39162a846940de6b7c8c48aeada765ff3"),
    "ml-25m": (_BASE + "ml-25m.zip", "8b21cfb7eb1706b4ec0aac894368d90acf26ebdfb6aced3ebd4ad5bd1eb9c6aa"),
    "ml-latest-small": (_BASE + "ml-latest-small.zip", None),
    "ml-latest": (_BASE + "ml-latest.zip", None),
}

_ALIASES = {
    "100k": "ml-100k",
    "1m": "ml-1m",
    "10m": "ml-10m",
    "20m": "ml-20m",
    "25m": "ml-25m",
    "latest-small": "ml-latest-small",
    "latest": "ml-latest",
}

_CHUNK = 1 << 20


def _urlopen(url: str, timeout: float):
    """Indirection so tests can replace the network (they never reach it)."""
    import urllib.request  # lazy: it pulls in http.client and ssl

    return urllib.request.urlopen(url, timeout=timeout)


class DatasetDownloadError(OSError):
    """A data set could not be downloaded (no network, HTTP error, bad archive)."""


def data_home(cache_dir: str | os.PathLike | None = None) -> Path:
    """Folder where downloaded archives are kept.

    Parameters
    ----------
    cache_dir : str or os.PathLike, optional
        Explicit folder; wins over everything else.

    Returns
    -------
    pathlib.Path
        ``cache_dir``, else ``$BPR_NUMPY_DATA``, else
        ``$XDG_CACHE_HOME/bpr_numpy``, else ``~/.cache/bpr_numpy``. Not created.
    """
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    env = os.environ.get("BPR_NUMPY_DATA")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "bpr_numpy"


def _canonical_name(name: str) -> str:
    if not isinstance(name, str):
        raise TypeError(f"name must be a str, got {type(name).__name__}")
    key = name.lower().strip()
    key = _ALIASES.get(key, key)
    if key not in MOVIELENS_ARCHIVES:
        raise ValueError(f"unknown MovieLens data set {name!r}; choose from {', '.join(MOVIELENS_ARCHIVES)}")
    return key


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def _how_to_help(name: str, url: str, folder: Path) -> str:
    return (
        f"Download {url} yourself (any browser), then either pass its path, e.g. "
        f"load_movielens('/path/to/{name}.zip') (the .zip or the folder it unpacks to), or put "
        f"{name}.zip in {folder} (set BPR_NUMPY_DATA to use another folder)."
    )


def _check_archive(path: Path, url: str, key: str, folder: Path) -> None:
    """ValueError unless the zip directory of a download is readable and plausible.

    ``is_zipfile`` only finds the end-of-directory signature. An unpinned
    archive's digest is trusted from its first download on, so a crafted one
    (duplicated or NUL-cut names, a zip bomb) is refused before it is kept and
    its digest recorded, not only later when it is read.
    """
    from .._archives import check_zip_directory

    try:
        with zipfile.ZipFile(path) as archive:
            check_zip_directory(archive, lambda name: f"downloaded {url}:{name}")
    except (zipfile.BadZipFile, OSError) as exc:
        raise ValueError(
            f"downloaded {url} is not a readable zip archive ({exc}); not keeping it. " + _how_to_help(key, url, folder)
        ) from None
    except ValueError as exc:
        raise ValueError(f"{exc}; not keeping it. " + _how_to_help(key, url, folder)) from None


def fetch_movielens(
    name: str = "ml-100k",
    cache_dir: str | os.PathLike | None = None,
    *,
    timeout: float = 10.0,
    force: bool = False,
) -> Path:
    """Download an official MovieLens archive once and return its local path.

    The archive is streamed to a temporary file in the cache folder, its
    SHA-256 computed on the way, checked, and only then moved into place
    with ``os.replace`` (atomic: a crash never leaves a truncated archive
    under the final name).

    Checksums: ml-100k, ml-1m, ml-20m and ml-25m are checked against pinned
    SHA-256 digests. ml-10m, ml-latest-small and ml-latest are not pinned
    (the "latest" ones are updated by GroupLens); for those the digest of
    the first download is recorded next to the archive (``<name>.zip.sha256``)
    and later uses are checked against it (trust on first use). Delete that
    file to accept a new release.

    Parameters
    ----------
    name : str
        ``"ml-100k"``, ``"ml-1m"``, ``"ml-10m"``, ``"ml-20m"``, ``"ml-25m"``,
        ``"ml-latest-small"`` or ``"ml-latest"`` (``"100k"`` etc. also work).
    cache_dir : str or os.PathLike, optional
        Where to keep archives; see :func:`data_home`.
    timeout : float
        Seconds to wait for the server; kept short so that a machine without
        network fails at once.
    force : bool
        Download again even if a verified archive is present.

    Returns
    -------
    pathlib.Path
        Path of the verified ``<name>.zip``.

    Raises
    ------
    DatasetDownloadError
        No network, HTTP error, or ``BPR_NUMPY_OFFLINE=1`` in the environment;
        the message says how to pass a local copy instead.
    ValueError
        Checksum mismatch, or the download is not a zip archive (or one that
        :func:`bpr_numpy._archives.check_zip_directory` refuses).
    """
    key = _canonical_name(name)
    url, pinned = MOVIELENS_ARCHIVES[key]
    if not (isinstance(timeout, (int, float)) and timeout > 0):
        raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")
    folder = data_home(cache_dir)
    target = folder / f"{key}.zip"
    record = folder / f"{key}.zip.sha256"

    if target.exists() and not force:
        digest = _sha256(target)
        expected = pinned or (record.read_text().split()[0] if record.exists() else None)
        if expected is None:
            record.write_text(f"{digest}  {key}.zip\n")
            return target
        if digest != expected:
            raise ValueError(
                f"{target} has SHA-256 {digest}, expected {expected}: the file is corrupt or not the "
                f"official archive. Delete it (and {record.name} if present) or call "
                f"fetch_movielens({key!r}, force=True)."
            )
        return target

    if os.environ.get("BPR_NUMPY_OFFLINE", "").strip() not in ("", "0"):
        raise DatasetDownloadError(
            f"{key} is not in {folder} and BPR_NUMPY_OFFLINE is set. " + _how_to_help(key, url, folder)
        )
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{key}.", suffix=".part", dir=folder)
    tmp = Path(tmp_name)
    try:
        give_ordinary_mode(fd, target)  # a shared cache stays readable by the other accounts that use it
        h = hashlib.sha256()
        try:
            with os.fdopen(fd, "wb") as out, _urlopen(url, timeout) as response:
                while True:
                    block = response.read(_CHUNK)
                    if not block:
                        break
                    h.update(block)
                    out.write(block)
        except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise DatasetDownloadError(
                f"could not download {key} from {url} ({reason}). " + _how_to_help(key, url, folder)
            ) from exc
        digest = h.hexdigest()
        expected = pinned or (record.read_text().split()[0] if record.exists() else None)
        if expected is not None and digest != expected:
            raise ValueError(
                f"downloaded {url} has SHA-256 {digest}, expected {expected}; not keeping it "
                "(a proxy error page, a truncated transfer, or a changed archive). "
                + ("" if pinned else f"If GroupLens released a new version, delete {record}. ")
                + _how_to_help(key, url, folder)
            )
        if not zipfile.is_zipfile(tmp):
            raise ValueError(
                f"downloaded {url} is not a zip archive; not keeping it. " + _how_to_help(key, url, folder)
            )
        _check_archive(tmp, url, key, folder)
        os.replace(tmp, target)
        if expected is None:
            record.write_text(f"{digest}  {key}.zip\n")
    finally:
        if tmp.exists():
            tmp.unlink()
    return target
