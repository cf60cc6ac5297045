"""The benchmark scripts' shared preamble and checkout helpers (the scripts are not a package).

Standard library only: a script imports it before numpy (see :func:`one_thread`).

Every script that uses this folder's private modules (``_*.py``) opens with the same two
lines, which make them importable however the script was started, then imports from them::

    if str(Path(__file__).resolve().parent) not in sys.path:  # loaded by path (a test): see _common.py
        sys.path.append(str(Path(__file__).resolve().parent))

Run as ``python benchmarks/x.py``, Python has put this folder first on ``sys.path`` already
and the lines do nothing. Loaded by path (the smoke tests use ``importlib``), they *append*
the folder, never prepend it: ``benchmarks/distributed.py`` must not shadow Dask's
``distributed`` package in a process that imports a script. (``distributed.py`` itself, run
as a script, moves the folder to the end of the path.)
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path

# What BLAS and OpenMP read for their thread counts (once, when numpy loads them).
BLAS_THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def one_thread(name: str, *, numba: bool = True) -> None:
    """As a script: BLAS, OpenMP and (with ``numba``) numba on one thread, unless the environment says otherwise.

    For the scripts that measure on one core: another process may be timing kernels on the
    other, and the evaluation's matrix products would otherwise use every core through BLAS.
    Must run before numpy is imported. Nothing happens unless ``name`` is ``"__main__"``: a
    test importing the script keeps its process's thread settings.

    Parameters
    ----------
    name : str
        The calling script's ``__name__``.
    numba : bool
        Also set ``NUMBA_NUM_THREADS`` (False where the script sets numba's count itself).
    """
    if name == "__main__":
        for var in BLAS_THREAD_VARIABLES + (("NUMBA_NUM_THREADS",) if numba else ()):
            os.environ.setdefault(var, "1")


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
