"""Raw ids on the command line: a saved model's id maps, files of user ids, the note for files without maps.

``recommend`` and ``similar`` take and print the data's own ids (MovieLens
user 196, not row 195); :class:`_IdMap` turns them into rows/columns of the
model and back, suggesting near ids when one is unknown.
"""

from __future__ import annotations

import difflib
import os
import sys
from typing import Any

from ._errors import CLIError


class _IdMap:
    """Raw id <-> index for one side (users or items) of a loaded model."""

    def __init__(self, ids, n: int, role: str) -> None:
        import numpy as np

        self.role = role
        # Files written without maps: the raw id is the row/column index itself.
        self.fallback = ids is None
        self.ids = np.arange(n, dtype=np.int64) if ids is None else ids
        self.numeric = self.ids.dtype.kind in "iu"
        keys = self.ids.tolist() if self.numeric else [str(v) for v in self.ids]
        self.index = {key: pos for pos, key in enumerate(keys)}

    def lookup(self, text: str) -> int:
        """Index of a raw id given as text; CLIError with near ids when unknown."""
        text = text.strip()
        kind = "index" if self.fallback else "id"
        if self.numeric:
            try:
                key: Any = int(text)
            except ValueError:
                raise CLIError(f"{self.role} {kind} must be an integer, got {text!r}") from None
        else:
            key = text
        if key in self.index:
            return self.index[key]
        raise CLIError(
            f"unknown {self.role} {kind} {text!r} ({len(self.ids)} {self.role}s in the model)" + self._suggest(key)
        )

    def _suggest(self, key: Any) -> str:
        if self.numeric:
            import numpy as np

            order = np.argsort(np.abs(self.ids.astype(np.float64) - float(key)), kind="stable")[:3]
            near = [str(v) for v in self.ids[np.sort(order)]]
        else:
            near = difflib.get_close_matches(str(key), list(self.index), n=3, cutoff=0.5)
        return f"; did you mean {', '.join(near)}?" if near else ""

    def raw(self, index: int) -> Any:
        value = self.ids[index]
        return int(value) if self.numeric else str(value)


def _read_ids(path: str) -> list[str]:
    if not os.path.isfile(path):
        raise CLIError(f"users file not found: {path}")
    with open(path, encoding="utf-8") as fh:
        ids = [line.strip() for line in fh if line.strip() and not line.lstrip().startswith("#")]
    if not ids:
        raise CLIError(f"{path} holds no user ids (expected one per line)")
    return ids


def _fallback_note(maps: list[_IdMap]) -> None:
    for m in maps:
        if m.fallback:
            print(
                f"note: the model file has no {m.role} id map (saved without one); {m.role} ids are "
                f"{'row' if m.role == 'user' else 'column'} indices 0..{len(m.ids) - 1}",
                file=sys.stderr,
            )
