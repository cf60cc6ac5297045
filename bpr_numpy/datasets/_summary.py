"""What building an :class:`~bpr_numpy.datasets.Interactions` did to its input: :class:`LoadSummary`."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

__all__ = ["LoadSummary"]


@dataclass(frozen=True)
class LoadSummary:
    """What building an :class:`Interactions` did to its input; nothing is dropped uncounted.

    The counts satisfy, for every loader::

        rows_in == stored + duplicates_merged + below_min_rating
                   + unknown_ids_dropped + moved_to_other_split

    and, for line-oriented files with one pair per line (all but the
    LightGCN adjacency format, where one line holds many pairs)::

        lines_read == rows_in + header_lines + blank_lines + malformed_lines

    Attributes
    ----------
    source : str
        Where the pairs came from (file names, ``"arrays"``, ``"synthetic(...)"``).
    lines_read : int
        Physical lines in the source file(s); 0 for in-memory arrays.
    header_lines : int
        Header lines recognised and skipped.
    blank_lines : int
        Empty or whitespace-only lines skipped.
    malformed_lines : int
        Lines skipped because they could not be parsed (only with
        ``on_bad_line="skip"``; the default raises instead).
    malformed_examples : tuple of str
        The first few skipped lines, as ``"line N: what was wrong"``.
    rows_in : int
        (user, item) rows handed to the builder.
    unknown_ids_dropped : int
        Rows whose user or item id is not in a given id space (only with
        ``unknown="drop"``).
    duplicates_merged : int
        Rows removed by merging repeated (user, item) pairs (rule in ``dedupe``).
    below_min_rating : int
        Distinct pairs dropped because their (merged) rating < ``min_rating``.
    moved_to_other_split : int
        Pairs a split put into the other part (0 outside splits).
    stored : int
        Pairs stored in the matrix (its ``nnz``).
    n_users, n_items : int
        Shape of the matrix, i.e. of the id space.
    dedupe : str
        De-duplication rule used.
    min_rating : float or None
        Threshold used (pairs with rating >= it are kept).
    binarize : bool
        Whether stored values are 1.0 (True) or the ratings.
    notes : tuple of str
        Anything else worth knowing (encoding fallbacks, splits, variants).
    """

    source: str = "arrays"
    lines_read: int = 0
    header_lines: int = 0
    blank_lines: int = 0
    malformed_lines: int = 0
    malformed_examples: tuple[str, ...] = ()
    rows_in: int = 0
    unknown_ids_dropped: int = 0
    duplicates_merged: int = 0
    below_min_rating: int = 0
    moved_to_other_split: int = 0
    stored: int = 0
    n_users: int = 0
    n_items: int = 0
    dedupe: str = "max"
    min_rating: float | None = None
    binarize: bool = True
    notes: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        """The summary as a plain ``dict`` (for JSON, logging)."""
        return dataclasses.asdict(self)

    def __str__(self) -> str:
        parts = [f"{self.source}: {self.stored:,} pairs stored ({self.n_users:,} users x {self.n_items:,} items)"]
        if self.lines_read:
            parts.append(
                f"{self.lines_read:,} lines read ({self.header_lines} header, {self.blank_lines} blank, "
                f"{self.malformed_lines} malformed)"
            )
        parts.append(
            f"{self.rows_in:,} rows in: {self.duplicates_merged:,} duplicates merged ({self.dedupe}), "
            f"{self.below_min_rating:,} below min_rating={self.min_rating}, "
            f"{self.unknown_ids_dropped:,} unknown ids dropped, "
            f"{self.moved_to_other_split:,} moved to the other split"
        )
        parts.extend(self.notes)
        return "\n".join(parts)
