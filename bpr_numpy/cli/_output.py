"""What the command line prints: the per-epoch progress, the metrics table, JSON values, result rows.

The sub-commands of :mod:`._commands` decide what to print; this module how
(a live line on a terminal or a log line per epoch; text, CSV or JSON rows).
"""

from __future__ import annotations

import json
import math
import sys
import time
from typing import Any


def _print_metrics(result: dict) -> None:
    print(f"held-out metrics over {result['n_users']} users (train positives excluded from rankings):")
    for key, value in result.items():
        if key != "n_users" and isinstance(value, float):
            print(f"  {key:>14s}  {value:.4f}")


def _format_duration(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    h, rest = divmod(seconds, 3600)
    m, sec = divmod(rest, 60)
    return f"{h}:{m:02d}:{sec:02d}" if h else f"{m}:{sec:02d}"


def format_progress(report, total: int, elapsed: float) -> str:
    """The live progress line of a terminal: epoch/total, loss, ordered fraction, validation metric when
    present, samples/s, and the ETA from the mean epoch time so far (``elapsed`` seconds over ``report.epoch``)."""
    parts = [f"epoch {report.epoch}/{total}", f"loss {report.loss:.4f}", f"ordered {report.ordered_fraction:.4f}"]
    if report.validation is not None:
        parts.append(f"{report.metric} {report.validation:.4f}")
    parts.append(f"{report.samples_per_second / 1e6:.2f} M samples/s")
    remaining = max(0, total - report.epoch)
    eta = elapsed / max(1, report.epoch) * remaining
    parts.append(f"ETA {_format_duration(eta)}" if remaining else f"done in {_format_duration(elapsed)}")
    return "  ".join(parts)


class _Progress:
    """Per-epoch output: one line rewritten in place on a terminal, one log line per epoch otherwise."""

    def __init__(self, total: int, quiet: bool, stream=None) -> None:
        self.stream = sys.stdout if stream is None else stream
        self.total, self.quiet = total, quiet
        self.live = not quiet and _isatty(self.stream)
        self.start = time.perf_counter()
        self.width = 0
        self.open = False

    def __call__(self, report) -> None:
        if self.quiet:
            return
        if not self.live:
            print(f"{report}  [{report.epoch}/{self.total}]", file=self.stream, flush=True)
            return
        line = format_progress(report, self.total, time.perf_counter() - self.start)
        pad = " " * max(0, self.width - len(line))
        self.width = len(line)
        self.stream.write("\r" + line + pad)
        self.open = True
        if report.epoch >= self.total:
            self.finish()
        self.stream.flush()

    def finish(self) -> None:
        """End the live line (after the last epoch, early stopping or an interruption)."""
        if self.open:
            self.stream.write("\n")
            self.stream.flush()
            self.open = False


def _isatty(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def _json_value(value: Any) -> Any:
    """Plain JSON (no NaN/inf tokens, which strict parsers reject): non-finite floats become null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _emit(rows: list[dict], key: str, fmt: str, titles: bool, header=None) -> None:
    """Print result rows grouped by ``key`` (the query id) in the chosen format."""
    import csv

    if fmt == "json":
        groups: dict = {}
        for row in rows:
            groups.setdefault(row[key], []).append({k: v for k, v in row.items() if k != key})
        print(json.dumps([{key: q, "results": items} for q, items in groups.items()], indent=2, ensure_ascii=False))
    elif fmt == "csv":
        fields = [key, "rank", "item", "score"] + (["title"] if titles else [])
        writer = csv.DictWriter(sys.stdout, fieldnames=fields, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    else:
        current = object()
        for row in rows:
            if row[key] != current:
                current = row[key]
                print(f"{key} {current}:" if header is None else header(current))
            line = f"  {row['rank']:3d}  {row['item']!s:>10s}  {row['score']:9.4f}"
            print(line + (f"  {row['title']}" if titles else ""))
