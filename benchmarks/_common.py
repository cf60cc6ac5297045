"""Helpers shared by the benchmark scripts (they are scripts, not a package)."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path


def cpu_model() -> str:
    """CPU model name from /proc/cpuinfo (``platform.processor()`` elsewhere)."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def checkout_commit(root: str | os.PathLike) -> tuple[str, bool]:
    """The commit a checkout of this repository is at, and whether its ``bpr_numpy/`` has uncommitted changes.

    The scripts that compare two versions of the code (``equivalence.py``, ``ab_speed.py``)
    name each side by its commit; a dirty ``bpr_numpy/`` means the figures belong to no commit.

    Parameters
    ----------
    root : path-like
        The checkout's top folder.

    Returns
    -------
    (str, bool)
        The full ``git rev-parse HEAD`` (``"unknown"`` when ``root`` is not a git checkout or git
        is missing) and the dirty flag (False when unknown).
    """
    def git(*cmd: str) -> str:
        return subprocess.run(["git", "-C", str(root), *cmd], capture_output=True, text=True, check=True,
                              timeout=10).stdout.strip()

    try:
        return git("rev-parse", "HEAD"), bool(git("status", "--porcelain", "--", "bpr_numpy"))
    except (OSError, subprocess.SubprocessError):
        return "unknown", False


def checkout_root(code: str | os.PathLike) -> Path:
    """A checkout's resolved top folder; SystemExit when it holds no ``bpr_numpy`` package."""
    root = Path(code).resolve()
    if not (root / "bpr_numpy" / "__init__.py").is_file():
        raise SystemExit(f"{code}: no bpr_numpy package there (give a checkout of this repository)")
    return root


def use_code(code: str | os.PathLike) -> Path:
    """Make ``import bpr_numpy`` load the checkout at ``code``; its resolved path.

    For the scripts that run two versions of the code side by side in subprocesses
    (``equivalence.py``, ``ab_speed.py``): each subprocess puts its checkout's root first on
    ``sys.path``, ahead of whatever is installed. A process that has imported ``bpr_numpy``
    already (a test importing the script) must have imported that checkout's.

    Parameters
    ----------
    code : path-like
        A checkout's top folder (the one holding ``bpr_numpy/``).

    Returns
    -------
    Path

    Raises
    ------
    SystemExit
        No ``bpr_numpy`` package there, or this process imported another one.
    """
    root = checkout_root(code)
    if "bpr_numpy" not in sys.modules and str(root) not in sys.path[:1]:
        sys.path.insert(0, str(root))
    import bpr_numpy

    if root not in Path(bpr_numpy.__file__).resolve().parents:
        raise SystemExit(f"this process imported bpr_numpy from {bpr_numpy.__file__}, not from {root}; "
                         "run the script in a fresh process")
    return root
