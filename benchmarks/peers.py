"""bpr_numpy side by side with implicit, cornac and LightFM: speed, peak memory and quality.

Every library gets the same users x items CSR matrix (float32 ones, sorted indices), the
same number of factors, epochs, learning rate, regularisation, threads and seed, mapped onto
its own parameters as documented in each adapter. Each fitted model is turned into plain
user factors, item factors and item biases (scores ``U @ V.T + b``) and scored with
:mod:`bpr_numpy.metrics`.

    python benchmarks/peers.py movielens [--data PATH] [--epochs 100] [--threads 2,1]
    python benchmarks/peers.py synthetic [--epochs 3] [--threads 1,2]
    python benchmarks/peers.py scaling   [--sizes 1M,5M,20M] [--threads 1,2]
    python benchmarks/peers.py all       [--markdown RESULTS.md] [--plot peers.png]
    python benchmarks/peers.py recommend [--init random,trained] [--threads 1,2] [--interactions syn20m.npz]
    python benchmarks/peers.py movielens --quick --repeats 1 --epochs 5     # a smoke run

Common options: ``--repeats 3``, ``--factors 64``, ``--learning-rate 0.02``,
``--regularization 0.02``, ``--seed 0``, ``--libs bpr_numpy,implicit,cornac,lightfm``,
``--quick`` (small synthetic sizes, 1 repeat and 5 MovieLens epochs unless given).

How it measures
---------------
* A warm-up fit on a tiny matrix runs first for every library and thread count, so numba
  compilation (bpr_numpy) and first-call costs (thread pools, imports) are not timed.
* The fit time is the wall time of the library's own fit call. Converting the CSR to the
  library's format happens before the timer and is reported as ``prep s``.
* samples/s = nnz x epochs / fit seconds (one epoch is nnz samples for all four).
* Repeats alternate the libraries (A B C D, A B C D, ...). The second core of the machines
  we measure on comes and goes, so the headline is ``bpr_numpy/peer``: bpr_numpy's samples/s
  divided by the peer's, both from the same repeat, median (min-max) over repeats.
* ``CPU/wall`` is the process CPU time over the wall time of the fit: close to the thread
  count when the cores were ours, lower when something else ran.
* Peak ΔRSS: see :class:`_measure.PeakRSS`.
* Quality (movielens only): P1 full AUC, P2 AUC, precision@10 and NDCG@10 on ``ua.test``,
  median over repeats; repeat ``r`` uses seed ``--seed + r``.
* ``recommend`` (not part of ``all``): bpr_numpy's and implicit's batch ``recommend`` for
  every user of the 20M set (n=10, liked items filtered) over the same factors, alternated,
  BLAS held to the thread count with threadpoolctl; the top-10 lists of a user sample are
  checked to agree. See :func:`_recommend.cmd_recommend`.

Peers are optional: one that does not import is skipped with a one-line message. Nothing
is installed by this script (``pip install -e .[bench]`` installs the peers).
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path
from typing import Callable, Sequence, TextIO

if str(Path(__file__).resolve().parent) not in sys.path:  # loaded by path (a test): see _common.py
    sys.path.append(str(Path(__file__).resolve().parent))
from _adapters import ADAPTERS, INSTALL_HINT, LIBRARIES, BprNumpyAdapter, FitSettings, resolve_adapters  # noqa: E402
from _data import (DEFAULT_DATA as ML100K, QUICK_SIZES, SCALING_SIZES, canonical_csr, load_movielens,  # noqa: E402
                   synthetic_data, synthetic_shape, tiny_matrix)
from _measure import QUALITY_KEYS, FitRecord, PeakRSS, measure_fit, run_group, warm_up  # noqa: E402
from _recommend import cmd_recommend  # noqa: E402
from _session import DataMissing, Section, Session  # noqa: E402
from _tables import _fmt_spread, _mmm, _render, format_table, machine_lines, plot, summarize, table_notes  # noqa: E402

# What the tests and ab_speed.py use from here: this script's own names, and the modules' they reach through it.
__all__ = [
    "DEFAULT_DATA", "parse_size", "_int_list", "build_parser", "main",
    "ADAPTERS", "LIBRARIES", "BprNumpyAdapter", "FitSettings", "resolve_adapters",
    "canonical_csr", "load_movielens", "synthetic_data", "tiny_matrix",
    "QUALITY_KEYS", "PeakRSS", "measure_fit", "run_group", "warm_up",
    "_fmt_spread", "_mmm", "_render", "format_table", "machine_lines", "summarize", "table_notes",
]

# --data's default: $BPR_NUMPY_ML100K, else the MovieLens 100k folder next to the checkout.
DEFAULT_DATA = Path(os.environ.get("BPR_NUMPY_ML100K", ML100K))


def parse_size(text: str) -> int:
    """``"20M"`` -> 20_000_000, ``"500k"`` -> 500_000, ``"12345"`` -> 12345."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([kKmM]?)\s*", text)
    if not m:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 500k, 5M)")
    mult = {"": 1, "k": 10**3, "m": 10**6}[m.group(2).lower()]
    return int(round(float(m.group(1)) * mult))


def _int_list(text: str) -> list[int]:
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def _lib_list(text: str) -> list[str]:
    names = [x.strip() for x in text.split(",") if x.strip()]
    bad = [n for n in names if n not in ADAPTERS]
    if bad or not names:
        raise argparse.ArgumentTypeError(f"unknown libraries {bad}; choose from {','.join(LIBRARIES)}")
    return names


def cmd_movielens(session: Session) -> Section:
    """ML-100k ua.base (ratings >= 4): speed, memory and quality."""
    a = session.args
    if not Path(a.data).exists():
        raise DataMissing(f"MovieLens 100k not found at {a.data}; pass --data PATH (the ml-100k folder or zip)")
    train, test = load_movielens(a.data)
    epochs = session.epochs(5 if a.quick else 100)
    threads = session.threads([2, 1])
    recs = session.group(train, "movielens", threads, epochs, test=test)
    rows = summarize(recs)
    data_line = (f"data: MovieLens 100k ua.base ratings >= 4: {train.shape[0]:,} users x {train.shape[1]:,} "
                 f"items, {train.nnz:,} pairs (test ua.test ratings >= 4: {test.nnz:,}); factors {a.factors}, "
                 f"lr {a.learning_rate}, reg {a.regularization}, {session.repeats()} repeat(s)")
    return Section("movielens", data_line, rows, table_notes(rows, session.adapters, quality=True),
                   with_quality=True)


def cmd_synthetic(session: Session) -> Section:
    """The 200k x 50k x 20M power-law set (a scaled-down one with --quick): speed and memory."""
    a = session.args
    nnz = max(QUICK_SIZES) if a.quick else SCALING_SIZES[-1]
    csr = session.synthetic(nnz)
    epochs = session.epochs(3)
    threads = session.threads([1, 2])
    recs = session.group(csr, f"synthetic {nnz:,}", threads, epochs)
    rows = summarize(recs)
    data_line = (f"data: bpr_numpy.datasets.synthetic, {csr.shape[0]:,} users x {csr.shape[1]:,} items, "
                 f"{csr.nnz:,} pairs (power law){' [--quick size]' if a.quick else ''}; factors {a.factors}, "
                 f"lr {a.learning_rate}, reg {a.regularization}, {session.repeats()} repeat(s)")
    return Section("synthetic", data_line, rows, table_notes(rows, session.adapters, quality=False))


def cmd_scaling(session: Session) -> Section:
    """samples/s vs nnz (same generator, scaled shape) and vs threads."""
    a = session.args
    sizes = a.sizes or (QUICK_SIZES if a.quick else SCALING_SIZES)
    epochs = session.epochs(3)
    threads = session.threads([1, 2])
    recs: list[FitRecord] = []
    for nnz in sizes:
        recs += session.group(session.synthetic(nnz), f"synthetic {nnz:,}", threads, epochs)
    rows = summarize(recs)
    shapes = "; ".join(f"{n:,}: {u:,} x {i:,}" for u, i, n in map(synthetic_shape, sizes))
    data_line = (f"data: bpr_numpy.datasets.synthetic at each size, shape scaled from 200,000 x 50,000 ({shapes}); "
                 f"factors {a.factors}, lr {a.learning_rate}, reg {a.regularization}, {session.repeats()} repeat(s)")
    return Section("scaling", data_line, rows, table_notes(rows, session.adapters, quality=False), with_nnz=True)


COMMANDS: dict[str, Callable[[Session], Section]] = {
    "movielens": cmd_movielens,
    "synthetic": cmd_synthetic,
    "scaling": cmd_scaling,
    "recommend": cmd_recommend,
}
ALL = ("movielens", "synthetic", "scaling")  # what `all` runs (recommend is a separate, long run)


def build_parser() -> argparse.ArgumentParser:
    """The command-line parser."""
    p = argparse.ArgumentParser(
        prog="python benchmarks/peers.py",
        description="bpr_numpy against implicit, cornac and LightFM: speed, peak memory, quality.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Peers are optional; missing ones are skipped (`" + INSTALL_HINT + "` installs them).")
    p.add_argument("command", choices=[*COMMANDS, "all"])
    p.add_argument("--interactions", default=None, metavar="NPZ",
                   help="load the synthetic pairs from this scipy.sparse.save_npz file when its nnz matches "
                        "(e.g. a saved copy of the 20M set); written there after generating when missing")
    p.add_argument("--init", type=lambda s: [x.strip() for x in s.split(",") if x.strip()],
                   default=["random", "trained"], help="recommend: factors to rank with, random and/or trained "
                                                      "(default: random,trained)")
    p.add_argument("--data", default=str(DEFAULT_DATA), help="MovieLens 100k folder or zip (default: %(default)s)")
    p.add_argument("--repeats", type=int, default=None, help="repeats (default 3; 1 with --quick)")
    p.add_argument("--epochs", type=int, default=None,
                   help="epochs (default: movielens 100 (5 with --quick), synthetic and scaling 3)")
    p.add_argument("--threads", type=_int_list, default=None,
                   help="thread counts, e.g. 1,2 (default: movielens 2,1; synthetic and scaling 1,2)")
    p.add_argument("--factors", type=int, default=64)
    p.add_argument("--learning-rate", type=float, default=0.02)
    p.add_argument("--regularization", type=float, default=0.02)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--libs", type=_lib_list, default=list(LIBRARIES),
                   help="comma-separated, alternated in this order (default: " + ",".join(LIBRARIES) + ")")
    p.add_argument("--sizes", type=lambda s: [parse_size(x) for x in s.split(",") if x.strip()], default=None,
                   help="scaling sizes, e.g. 1M,5M,20M (default; --quick: 100k,200k,400k)")
    p.add_argument("--quick", action="store_true", help="small sizes, 1 repeat, 5 MovieLens epochs: a smoke run")
    p.add_argument("--markdown", default=None, metavar="PATH", help="append the tables as Markdown to PATH")
    p.add_argument("--plot", default=None, metavar="PATH", help="PNG of samples/s vs nnz and vs threads")
    return p


def main(argv: Sequence[str] | None = None, out: TextIO | None = None, log: TextIO | None = None) -> list[Section]:
    """Run a sub-command; print the machine, then one table per sub-command.

    Parameters
    ----------
    argv : sequence of str, optional
        Arguments (default: ``sys.argv[1:]``).
    out, log : file-like, optional
        Tables (default stdout) and progress/skip messages (default stderr).

    Returns
    -------
    list of Section
    """
    out = sys.stdout if out is None else out
    log = sys.stderr if log is None else log
    args = build_parser().parse_args(argv)
    for name in ("repeats", "epochs", "factors"):
        v = getattr(args, name)
        if v is not None and v < 1:
            raise SystemExit(f"--{name} must be >= 1")
    session = Session(args, out, log)
    header = machine_lines(session.adapters)
    for line in header:
        print(line, file=out)
    for msg in session.skipped:
        print(msg, file=out)
    if args.markdown:
        with open(args.markdown, "a", encoding="utf-8") as fh:
            fh.write(f"\n## peers.py {' '.join(sys.argv[1:] if argv is None else argv)}\n\n")
            fh.write("".join(f"- {line}\n" for line in header + session.skipped))
    names = list(ALL) if args.command == "all" else [args.command]
    sections = []
    for name in names:
        try:
            sections.append(COMMANDS[name](session))
        except DataMissing as exc:
            if args.command != "all":
                raise SystemExit(str(exc)) from None
            print(f"\nskipping {name}: {exc}", file=out)
            continue
        session.emit(sections[-1])
    # versions again: numba's threading layer is only known once a parallel kernel has run
    versions = "versions after the runs: " + "; ".join(f"{a.name} {a.version()}" for a in session.adapters)
    print("\n" + versions, file=out)
    if args.markdown:
        with open(args.markdown, "a", encoding="utf-8") as fh:
            fh.write(f"\n{versions}\n")
    if args.plot:
        plot(session.records, args.plot, log)
    return sections


if __name__ == "__main__":
    main()
