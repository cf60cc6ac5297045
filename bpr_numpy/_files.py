"""Files written through a temporary file and a rename: the permissions they get, and small text files."""

from __future__ import annotations

import contextlib
import os
import tempfile
import threading

__all__: list[str] = []

_UMASK_LOCK = threading.Lock()


def _umask() -> int:
    """The process's umask, read without changing it where the system allows."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:  # Linux: no window where it is changed
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    with _UMASK_LOCK:  # elsewhere: set and put back (process-wide, hence the lock)
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def ordinary_mode(path: str | os.PathLike) -> int:
    """The permissions ``open(path, "w")`` would leave: an existing file's own, else 0o666 less the umask.

    ``tempfile.mkstemp`` creates its file 0o600 whatever the umask, so a file renamed over
    ``path`` would be readable by its owner only: a model saved for a serving process under
    another account could not be loaded there.
    """
    try:
        return os.stat(path).st_mode & 0o7777
    except OSError:
        return 0o666 & ~_umask()


def give_ordinary_mode(fd: int, path: str | os.PathLike) -> None:
    """Give the temporary file open as ``fd`` the mode :func:`ordinary_mode` says ``path`` should get."""
    if hasattr(os, "fchmod"):  # not on Windows, where mkstemp's file is not restricted anyway
        os.fchmod(fd, ordinary_mode(path))


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` through a temporary file beside it, synced, then renamed.

    A process killed at any point leaves ``path`` either as it was or complete, as model saves
    do (``model/_persistence.py``); the file gets the permissions an ordinary write would give it.
    """
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".bpr_numpy-", suffix=".tmp", dir=folder)
    try:
        give_ordinary_mode(fd, path)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
