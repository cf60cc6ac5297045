"""Where a result came from and where it goes: the machine line and the code's version that every
MovieLens-based section states, and writing a section into a Markdown file without touching the others.
"""

from __future__ import annotations

import os
import platform
import re
import subprocess
from pathlib import Path

import numpy as np

from _common import cpu_model


def machine_line() -> str:
    """CPU, core count and library versions, one line."""
    import numba
    import scipy

    return (f"{cpu_model()}, {os.cpu_count()} cores (this run: 1 thread); Python {platform.python_version()}, "
            f"numpy {np.__version__}, scipy {scipy.__version__}, numba {numba.__version__}")


def code_version() -> str:
    """bpr_numpy's version and commit, flagged when ``bpr_numpy/`` has uncommitted changes.

    The library changes under active development; the results are only meaningful with the code
    that produced them.
    """
    import bpr_numpy

    text = f"bpr_numpy {bpr_numpy.__version__}"
    repo = Path(__file__).resolve().parents[1]
    try:
        def git(*cmd: str) -> str:
            return subprocess.run(["git", "-C", str(repo), *cmd], capture_output=True, text=True, check=True,
                                  timeout=10).stdout.strip()

        text += f" at commit {git('rev-parse', '--short', 'HEAD')}"
        if git("status", "--porcelain", "--", "bpr_numpy"):
            text += " (with uncommitted changes in bpr_numpy/)"
    except (OSError, subprocess.SubprocessError):
        pass  # not a git checkout, or no git: the version alone
    return text


def replace_section(document: str, section: str, title: str) -> str:
    """Replace the section headed ``title`` in a Markdown document, or append it.

    The section runs from its heading to the next level-1 or level-2 heading outside code
    fences; everything else is kept byte for byte.

    Parameters
    ----------
    document : str
        Existing file content ("" for a new file).
    section : str
        The new section, starting with ``title``.
    title : str

    Returns
    -------
    str
    """
    if not section.endswith("\n"):
        section += "\n"
    if not document.strip():
        return "# Benchmark results\n\n" + section
    lines = document.splitlines(keepends=True)
    start, end, fenced = None, len(lines), False
    for i, line in enumerate(lines):
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        if fenced:
            continue
        if start is None and line.rstrip() == title:
            start = i
        elif start is not None and re.match(r"#{1,2} ", line):
            end = i
            break
    if start is None:
        return document.rstrip("\n") + "\n\n" + section
    tail = "".join(lines[end:])
    return "".join(lines[:start]) + section + ("\n" + tail if tail else "")


def write_markdown(path: str | os.PathLike, section: str, title: str) -> None:
    """Write ``section`` into ``path``, replacing only the section headed ``title`` when the file exists.

    Written to a temporary file, then renamed over ``path``; read and rename happen right after
    one another, so a concurrent editor of the file's other sections loses nothing unless it
    writes within that instant. Every benchmark script writes its section through this.

    Parameters
    ----------
    path : path-like
    section : str
    title : str
        The section's heading, e.g. ``"## MovieLens 100k reproduction"``.
    """
    target = Path(path)
    old = target.read_text(encoding="utf-8") if target.exists() else ""
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    tmp.write_text(replace_section(old, section, title=title), encoding="utf-8")
    os.replace(tmp, target)
