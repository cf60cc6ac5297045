"""What the timed fits are shown as: rows summarised over repeats, plain-text and Markdown tables, the
notes under them, the machine and version lines, and the throughput plot (``peers.py``, ``ab_speed.py``).
"""

from __future__ import annotations

import os
import platform
import statistics
import sys
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Sequence, TextIO

import numpy as np

from _adapters import INSTALL_HINT, Adapter
from _common import cpu_model
from _measure import QUALITY_KEYS, FitRecord, memory_method


@dataclass
class Row:
    """One line of a table: a library at a thread count on one data set, over repeats."""

    dataset: str
    library: str
    threads: int
    threads_used: int
    epochs: int
    nnz: int
    repeats: int
    fit_s: tuple[float, float, float]  # median, min, max
    samples_per_s: float  # median
    ratio: tuple[float, float, float] | None  # bpr_numpy/peer samples/s in the same repeat
    peak_rss_mib: float
    prep_s: float
    cpu_per_wall: float
    kernel_samples_per_s: float | None = None
    quality: dict[str, float] = field(default_factory=dict)


def _mmm(values: Sequence[float]) -> tuple[float, float, float]:
    return float(statistics.median(values)), float(min(values)), float(max(values))


def summarize(records: Sequence[FitRecord]) -> list[Row]:
    """Group records by (data set, library, threads); medians, spreads and same-repeat ratios.

    Parameters
    ----------
    records : sequence of FitRecord

    Returns
    -------
    list of Row
        In first-seen order of data set, then threads, then library.
    """
    order = {name: k for k, name in enumerate(dict.fromkeys(x.dataset for x in records))}
    groups: OrderedDict[tuple[str, int, str], list[FitRecord]] = OrderedDict()
    for rec in sorted(records, key=lambda x: (order[x.dataset], x.threads)):  # stable: library order kept
        groups.setdefault((rec.dataset, rec.threads, rec.library), []).append(rec)
    ours = {(x.dataset, x.threads, x.repeat, x.epochs): x for x in records if x.library == "bpr_numpy"}
    rows = []
    for (dataset, threads, library), recs in groups.items():
        ratios = [ours[(x.dataset, x.threads, x.repeat, x.epochs)].samples_per_s / x.samples_per_s
                  for x in recs if (x.dataset, x.threads, x.repeat, x.epochs) in ours]
        quality = {}
        if all(x.quality for x in recs):
            quality = {k: float(statistics.median(x.quality[k] for x in recs)) for k, _ in QUALITY_KEYS}
        kernel = None
        if all(x.kernel_s for x in recs):
            kernel = float(statistics.median(x.nnz * x.epochs / x.kernel_s for x in recs))
        rows.append(Row(
            dataset=dataset, library=library, threads=threads, threads_used=recs[0].threads_used,
            epochs=recs[0].epochs, nnz=recs[0].nnz, repeats=len(recs), fit_s=_mmm([x.fit_s for x in recs]),
            samples_per_s=float(statistics.median(x.samples_per_s for x in recs)),
            ratio=_mmm(ratios) if ratios else None,
            peak_rss_mib=float(statistics.median(x.peak_rss_mib for x in recs)),
            prep_s=float(statistics.median(x.prep_s for x in recs)),
            cpu_per_wall=float(statistics.median(x.cpu_s / x.fit_s for x in recs)),
            kernel_samples_per_s=kernel, quality=quality))
    return rows


def _fmt_spread(m: tuple[float, float, float], digits: int) -> str:
    return f"{m[0]:.{digits}f} ({m[1]:.{digits}f}-{m[2]:.{digits}f})"


def _table_cells(rows: Sequence[Row], *, with_quality: bool, with_nnz: bool) -> tuple[list[str], list[list[str]]]:
    head = (["nnz"] if with_nnz else []) + ["library", "threads", "epochs", "fit s (median, min-max)",
                                            "samples/s (M)", "bpr_numpy/peer", "peak ΔRSS MiB", "prep s",
                                            "CPU/wall"]
    if with_quality:
        head += [label for _, label in QUALITY_KEYS]
    body = []
    for row in rows:
        digits = 3 if row.fit_s[0] < 10 else 1
        threads = str(row.threads) if row.threads_used == row.threads else f"{row.threads} (ran {row.threads_used})"
        if row.library == "bpr_numpy":
            ratio = "1"
        elif row.ratio is None:
            ratio = "n/a"
        else:
            ratio = _fmt_spread(row.ratio, 2) if row.ratio[1] != row.ratio[2] else f"{row.ratio[0]:.2f}"
        fit = _fmt_spread(row.fit_s, digits) if row.repeats > 1 else f"{row.fit_s[0]:.{digits}f}"
        cells = ([f"{row.nnz:,}"] if with_nnz else []) + [
            row.library, threads, str(row.epochs), fit, f"{row.samples_per_s / 1e6:.2f}", ratio,
            f"{row.peak_rss_mib:.1f}", f"{row.prep_s:.3f}", f"{row.cpu_per_wall:.2f}"]
        if with_quality:
            cells += [f"{row.quality[k]:.4f}" if row.quality else "" for k, _ in QUALITY_KEYS]
        body.append(cells)
    return head, body


def format_table(rows: Sequence[Row], *, with_quality: bool = False, with_nnz: bool = False,
                 markdown: bool = False) -> str:
    """Render rows as an aligned plain-text table, or as a Markdown table.

    Parameters
    ----------
    rows : sequence of Row
    with_quality : bool
        Add the P1/P2 AUC, precision@10 and NDCG@10 columns.
    with_nnz : bool
        Add an nnz column (scaling).
    markdown : bool
        Markdown pipes instead of aligned columns.

    Returns
    -------
    str
    """
    head, body = _table_cells(rows, with_quality=with_quality, with_nnz=with_nnz)
    return _render(head, body, markdown=markdown)


def _render(head: Sequence[str], body: Sequence[Sequence[str]], *, markdown: bool = False) -> str:
    """Cells as an aligned plain-text table or a Markdown table (text columns left-aligned)."""
    left = ("library", "factors")
    if markdown:
        right = [h not in left for h in head]
        lines = ["| " + " | ".join(head) + " |",
                 "|" + "|".join("---:" if r else "---" for r in right) + "|"]
        lines += ["| " + " | ".join(c) + " |" for c in body]
        return "\n".join(lines)
    widths = [max(len(h), *(len(c[i]) for c in body)) if body else len(h) for i, h in enumerate(head)]
    lines = ["  ".join(h.ljust(w) if h in left else h.rjust(w) for h, w in zip(head, widths))]
    lines.append("  ".join("-" * w for w in widths))
    for c in body:
        lines.append("  ".join(x.ljust(w) if h in left else x.rjust(w) for x, h, w in zip(c, head, widths)))
    return "\n".join(lines)


def table_notes(rows: Sequence[Row], adapters: Sequence[Adapter], *, quality: bool) -> list[str]:
    """Lines printed under a table: what the columns mean, and the peers' quirks."""
    notes = [
        "fit s: wall time of the library's fit call only, after an untimed warm-up fit per library and "
        "thread count (no numba compilation or first-call cost); prep s: conversion to the library's "
        "input format, before the timer",
        "samples/s = nnz x epochs / fit s; bpr_numpy/peer = bpr_numpy samples/s / peer samples/s in the "
        "same repeat (libraries alternated), median (min-max); > 1 means bpr_numpy is faster",
        memory_method() + "; median over repeats",
        "CPU/wall: process CPU seconds / wall seconds during the fit (about the thread count when the cores "
        "were free)",
    ]
    kernels = [r for r in rows if r.kernel_samples_per_s]
    if kernels:
        notes.append("bpr_numpy epoch kernels alone (history_): " + ", ".join(
            f"{r.threads} thr{' ' + format(r.nnz, ',') if len({k.nnz for k in kernels}) > 1 else ''}: "
            f"{r.kernel_samples_per_s / 1e6:.2f} M/s" for r in kernels))
    if quality:
        notes.append("quality: bpr_numpy.metrics on ua.test (ratings >= 4), train positives excluded from "
                     "the top-k; median over repeats, repeat r seeded with seed + r")
    for a in adapters:
        notes.extend(a.notes())
    return notes


def machine_lines(adapters: Sequence[Adapter]) -> list[str]:
    """Lines describing the machine and the library versions."""
    cores = os.cpu_count() or 0
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = cores
    mem = ""
    total_kib = None
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemTotal:"):
                    total_kib = int(line.split()[1])
    except OSError:
        pass
    if total_kib:
        mem = f", {total_kib / 2**20:.1f} GiB RAM"
    load = ""
    if hasattr(os, "getloadavg"):
        load = "load average at start " + " ".join(f"{x:.2f}" for x in os.getloadavg())
    import scipy

    lines = [
        f"machine: {cpu_model()}, {cores} cores ({usable} usable){mem}; {platform.system()} "
        f"{platform.release()}; Python {platform.python_version()}",
        f"numpy {np.__version__}, scipy {scipy.__version__}; " + "; ".join(f"{a.name} {a.version()}" for a in adapters),
    ]
    if load:
        lines.append(load)
    return lines


def plot(records: Sequence[FitRecord], path: str | os.PathLike, log: TextIO | None = None) -> bool:
    """PNG: samples/s vs nnz and samples/s vs threads, one line per library.

    Parameters
    ----------
    records : sequence of FitRecord
    path : str or os.PathLike
    log : file-like, optional

    Returns
    -------
    bool
        False (with a message) when matplotlib is not installed.
    """
    log = sys.stderr if log is None else log
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print(f"--plot: matplotlib is not installed, no plot written (`{INSTALL_HINT}`)", file=log)
        return False
    rows = summarize(records)
    fig, (ax_n, ax_t) = plt.subplots(1, 2, figsize=(11, 4.2))
    libs = list(dict.fromkeys(r.library for r in rows))
    threads = sorted({r.threads for r in rows})
    styles = ["-", "--", ":", "-."]
    # vs nnz: synthetic sizes only (MovieLens is a different kind of data), every thread count
    synth = [r for r in rows if r.dataset.startswith("synthetic")]
    for li, lib in enumerate(libs):
        for ti, t in enumerate(threads):
            pts = sorted((r.nnz, r.samples_per_s) for r in synth if r.library == lib and r.threads == t)
            if pts:
                ax_n.plot([p[0] for p in pts], [p[1] / 1e6 for p in pts], styles[ti % 4], marker="o",
                          color=f"C{li}", label=f"{lib}, {t} thr")
    ax_n.set_xscale("log")
    ax_n.set_xlabel("pairs (nnz)")
    ax_n.set_ylabel("M samples/s")
    ax_n.set_title("throughput vs data size" if synth else "throughput vs data size (no synthetic runs)")
    if synth:
        ax_n.legend(fontsize=7)
    # vs threads: the largest data set that was run
    biggest = max(rows, key=lambda r: r.nnz).dataset if rows else None
    for li, lib in enumerate(libs):
        pts = sorted((r.threads, r.samples_per_s) for r in rows if r.dataset == biggest and r.library == lib)
        if pts:
            ax_t.plot([p[0] for p in pts], [p[1] / 1e6 for p in pts], marker="o", color=f"C{li}", label=lib)
    ax_t.set_xticks(threads)
    ax_t.set_xlabel("threads")
    ax_t.set_ylabel("M samples/s")
    ax_t.set_title(f"throughput vs threads ({biggest})")
    ax_t.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    print(f"plot written to {path}", file=log)
    return True
