"""One run of ``peers.py``: its options, the libraries that import, the data sets and timed groups it
caches (``all`` measures a set once), and how each sub-command's section is printed and appended to
the Markdown file.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence, TextIO

import scipy.sparse as sp

from _adapters import FitSettings, resolve_adapters
from _data import canonical_csr, synthetic_data
from _measure import FitRecord, run_group, warm_up
from _tables import Row, _render, format_table


class DataMissing(Exception):
    """A sub-command's data is not there (``all`` skips it, a single sub-command stops)."""


@dataclass
class Section:
    """One sub-command's output."""

    title: str
    data_line: str
    rows: list[Row]
    notes: list[str]
    with_quality: bool = False
    with_nnz: bool = False
    table: tuple[list[str], list[list[str]]] | None = None  # head and body, instead of fit rows


class Session:
    """State of one invocation: options, libraries, cached data sets and measured groups."""

    def __init__(self, args: argparse.Namespace, out: TextIO, log: TextIO) -> None:
        self.args = args
        self.out = out
        self.log = log
        self.adapters, self.skipped = resolve_adapters(args.libs, log)
        if not self.adapters:
            raise SystemExit("no library to benchmark")
        self.records: list[FitRecord] = []
        self._data: dict[int, sp.csr_matrix] = {}
        self._groups: dict[tuple, list[FitRecord]] = {}
        self._warm: set[int] = set()

    def settings(self, epochs: int) -> FitSettings:
        a = self.args
        return FitSettings(factors=a.factors, epochs=epochs, learning_rate=a.learning_rate,
                           regularization=a.regularization, threads=1, seed=a.seed)

    def threads(self, default: Sequence[int]) -> list[int]:
        return list(self.args.threads) if self.args.threads else list(default)

    def epochs(self, default: int) -> int:
        return self.args.epochs if self.args.epochs else default

    def repeats(self) -> int:
        if self.args.repeats:
            return self.args.repeats
        return 1 if self.args.quick else 3

    def warm(self, threads: Sequence[int], settings: FitSettings) -> None:
        todo = [t for t in threads if t not in self._warm]
        if todo:
            warm_up(self.adapters, todo, settings, self.log)
            self._warm.update(todo)

    def synthetic(self, nnz: int) -> sp.csr_matrix:
        if nnz not in self._data:
            path = self.args.interactions
            if path and Path(path).exists() and sp.load_npz(path).nnz == nnz:
                self._data[nnz] = canonical_csr(sp.load_npz(path))
                print(f"loaded {nnz:,} pairs from {path}", file=self.log, flush=True)
            else:
                self._data[nnz] = synthetic_data(nnz, seed=0, log=self.log)
                if path and not Path(path).exists():
                    sp.save_npz(path, self._data[nnz])
        return self._data[nnz]

    def group(self, csr: sp.csr_matrix, dataset: str, threads: Sequence[int], epochs: int,
              test: sp.csr_matrix | None = None) -> list[FitRecord]:
        settings = self.settings(epochs)
        key = (dataset, tuple(threads), settings, self.repeats(), test is not None)
        if key not in self._groups:  # `all` measures the 20M set once for synthetic and scaling
            self.warm(threads, settings)
            recs = run_group(self.adapters, csr, dataset=dataset, threads=threads, repeats=self.repeats(),
                             settings=settings, test=test, log=self.log)
            self._groups[key] = recs
            self.records.extend(recs)
        return self._groups[key]

    def emit(self, section: Section) -> None:
        print(f"\n== {section.title} ==", file=self.out)
        print(section.data_line, file=self.out)
        if section.table:
            print(_render(*section.table), file=self.out)
        else:
            print(format_table(section.rows, with_quality=section.with_quality, with_nnz=section.with_nnz),
                  file=self.out)
        for line in section.notes:
            print(f"  * {line}", file=self.out)
        self.out.flush()
        if self.args.markdown:
            with open(self.args.markdown, "a", encoding="utf-8") as fh:
                fh.write(f"\n### {section.title}\n\n{section.data_line}\n\n")
                fh.write(_render(*section.table, markdown=True) if section.table else
                         format_table(section.rows, with_quality=section.with_quality,
                                      with_nnz=section.with_nnz, markdown=True))
                fh.write("\n\n" + "".join(f"- {line}\n" for line in section.notes))
