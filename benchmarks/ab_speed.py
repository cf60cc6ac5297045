"""Fit speed of two checkouts of bpr_numpy, alternated so that both see the same machine.

Two versions of one package cannot be imported in one Python process, so each checkout gets
a long-lived worker process (``sys.executable`` running this file with the checkout's root
first on ``sys.path``). Both are warmed up (numba kernels compiled or loaded, thread pools
started: :func:`peers.warm_up`), then the timed fits alternate between them, one at a time,
over pipes: old, new, new, old, old, new, ... so that drifts in the machine's speed (the
second core of a shared machine comes and goes) fall on both sides alike.

    python benchmarks/ab_speed.py --old /tmp/old --new .            # MovieLens 100k + the 20M set
    python benchmarks/ab_speed.py --old /tmp/old --new . --quick    # the 2M set, fewer rounds
    python benchmarks/ab_speed.py --old A --new B --cases movielens --rounds 20 --markdown RESULTS.md

Cases:

* ``movielens``: MovieLens 100k ``ua.base``, ratings >= 4 (:func:`peers.load_movielens`),
  100 epochs per fit, threads 1 and 2;
* ``synthetic``: the 20M-pair power-law set of ``benchmarks/peers.py``
  (:func:`peers.synthetic_data`, 200,000 users x 50,000 items; ``--quick``: 2M pairs at the
  same shape ratio), 1 epoch per fit, threads 1 and 2.

Every fit is ``BPR(factors=64, lr 0.02, reg 0.02, float32, threads=T, random_state=r)``
(:class:`peers.BprNumpyAdapter`), round ``r`` seeded ``r`` on both sides, timed by
:func:`peers.measure_fit`: ``time.perf_counter`` around the whole ``fit`` call (input
checks, initialisation and epochs). The data are built once here and handed to both workers
as the same file. Each worker runs with ``NUMBA_NUM_THREADS`` = the largest thread count asked
for and BLAS held to one thread (unless the environment says otherwise), as the benchmarks do.

The table: per case and thread count, each side's median fit seconds (min-max over rounds),
and ``new/old``, the ratio of the two fits of the same round, median (min-max): below 1 the
new code is faster. "within spread" says whether 1 lies inside the ratios' min-max.
"""

from __future__ import annotations

import sys
from pathlib import Path

if str(Path(__file__).resolve().parent) not in sys.path:  # loaded by path (a test): see _common.py
    sys.path.append(str(Path(__file__).resolve().parent))
from _common import checkout_commit, checkout_root, one_thread, use_code  # noqa: E402 - standard library only

# BLAS on one thread in this process and (inherited) in the workers; numba's thread count is
# set per worker below. Not NUMBA_NUM_THREADS here: this process only builds the data, which
# may use every core.
one_thread(__name__, numba=False)

import argparse  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import shlex  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from typing import Any, Sequence, TextIO  # noqa: E402

import scipy.sparse as sp  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SECTION_TITLE = "## A/B fit speed (ab_speed.py)"
MARK = "@@ab "  # prefix of the protocol's lines on a worker's stdout; anything else there is passed on


@dataclass(frozen=True)
class Case:
    """One data set and its epochs per fit."""

    name: str
    label: str
    epochs: int
    rounds: int


# --------------------------------------------------------------------------- worker side


def serve(requests: TextIO, replies: TextIO) -> None:
    """Answer JSON requests, one a line, until ``quit`` or end of input (the worker's loop).

    Requests: ``info``; ``warm`` (threads, factors); ``load`` (name, path of a
    ``scipy.sparse.save_npz`` file); ``fit`` (data, threads, epochs, factors, seed). Replies are
    one JSON object a line, prefixed by :data:`MARK`; ``{"error": ...}`` on failure.
    """
    import peers

    adapter = peers.BprNumpyAdapter()
    data: dict[str, sp.csr_matrix] = {}
    for line in requests:
        req = json.loads(line)
        op = req["op"]
        try:
            if op == "quit":
                break
            if op == "info":
                import bpr_numpy

                reply: dict[str, Any] = {"file": bpr_numpy.__file__, "version": adapter.version()}
            elif op == "warm":
                log = io.StringIO()
                peers.warm_up([adapter], req["threads"], peers.FitSettings(factors=req["factors"]), log=log)
                reply = {"log": log.getvalue().strip()}
            elif op == "load":
                data[req["name"]] = sp.load_npz(req["path"]).tocsr()
                reply = {"nnz": int(data[req["name"]].nnz)}
            elif op == "fit":
                settings = peers.FitSettings(factors=req["factors"], epochs=req["epochs"], threads=req["threads"],
                                             seed=req["seed"])
                rec = peers.measure_fit(adapter, data[req["data"]], settings, dataset=req["data"])
                reply = {"fit_s": rec.fit_s, "cpu_s": rec.cpu_s, "threads_used": rec.threads_used}
            else:
                reply = {"error": f"unknown request {op!r}"}
        except Exception as exc:  # sent back: the parent stops with the worker's message
            reply = {"error": f"{type(exc).__name__}: {exc}"}
        replies.write(MARK + json.dumps(reply) + "\n")
        replies.flush()


def worker_main(code: str) -> int:
    """Entry point of ``ab_speed.py _worker --code PATH``."""
    use_code(code)
    replies = sys.stdout
    sys.stdout = sys.stderr  # a stray print must not land in the protocol
    serve(sys.stdin, replies)
    return 0


# --------------------------------------------------------------------------- parent side


class Worker:
    """A worker process for one checkout and the pipe to it.

    Parameters
    ----------
    side : str
        ``"old"`` or ``"new"``.
    code : Path
        The checkout.
    threads : int
        ``NUMBA_NUM_THREADS`` of the process.
    """

    def __init__(self, side: str, code: Path, threads: int) -> None:
        self.side = side
        self.code = code
        env = dict(os.environ)
        # Set, not defaulted: a smaller inherited value would clamp the threads asked for.
        env["NUMBA_NUM_THREADS"] = str(threads)
        for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            env.setdefault(var, "1")
        cmd = [sys.executable, str(Path(__file__).resolve()), "_worker", "--code", str(code)]
        self.proc = subprocess.Popen(cmd, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                     bufsize=1)

    def ask(self, op: str, **fields: Any) -> dict[str, Any]:
        """Send one request and wait for its reply; RuntimeError when the worker fails."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps({"op": op, **fields}) + "\n")
        self.proc.stdin.flush()
        for line in self.proc.stdout:
            if line.startswith(MARK):
                reply = json.loads(line[len(MARK):])
                if "error" in reply:
                    raise RuntimeError(f"{self.side} worker ({self.code}), {op}: {reply['error']}")
                return reply
            sys.stderr.write(line)  # not ours: someone printed to the worker's stdout
        raise RuntimeError(f"{self.side} worker ({self.code}) exited with status {self.proc.wait()} during {op}")

    def close(self) -> None:
        try:
            if self.proc.poll() is None:
                assert self.proc.stdin is not None
                self.proc.stdin.write(json.dumps({"op": "quit"}) + "\n")
                self.proc.stdin.close()
            self.proc.wait(timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()
            self.proc.wait()


@dataclass
class Fit:
    """One timed fit."""

    case: str
    threads: int
    round: int
    side: str
    fit_s: float
    cpu_s: float
    threads_used: int


@dataclass
class Summary:
    """One line of the table: a case at a thread count, both sides over the rounds."""

    case: Case
    nnz: int
    threads: int
    threads_used: dict[str, int]
    fit_s: dict[str, tuple[float, float, float]]  # side -> median, min, max
    cpu_per_wall: dict[str, float]
    ratio: tuple[float, float, float]  # new/old of the same round
    ratios: list[float] = field(default_factory=list)

    @property
    def within_spread(self) -> bool:
        return self.ratio[1] <= 1.0 <= self.ratio[2]


def order(r: int) -> tuple[str, str]:
    """Round ``r``'s order: old, new, then new, old, ... (ABBA: a linear drift cancels in pairs)."""
    return ("old", "new") if r % 2 == 0 else ("new", "old")


def summarize(case: Case, nnz: int, threads: int, fits: Sequence[Fit]) -> Summary:
    """The :class:`Summary` of one case and thread count."""
    import peers

    by = {(f.side, f.round): f for f in fits}
    rounds = sorted({f.round for f in fits})
    ratios = [by["new", r].fit_s / by["old", r].fit_s for r in rounds]
    return Summary(
        case=case, nnz=nnz, threads=threads,
        threads_used={s: by[s, rounds[0]].threads_used for s in ("old", "new")},
        fit_s={s: peers._mmm([by[s, r].fit_s for r in rounds]) for s in ("old", "new")},
        cpu_per_wall={s: statistics.median(by[s, r].cpu_s / by[s, r].fit_s for r in rounds) for s in ("old", "new")},
        ratio=peers._mmm(ratios), ratios=ratios)


def table(rows: Sequence[Summary], markdown: bool = False) -> str:
    """The summaries as an aligned text table or a Markdown one (``peers._render``)."""
    import peers

    head = ["case", "threads", "epochs", "nnz", "rounds", "old fit s (median, min-max)", "new fit s (median, min-max)",
            "new/old (median, min-max)", "CPU/wall old, new", "within spread"]
    body = []
    for s in rows:
        digits = 3 if s.fit_s["old"][0] < 10 else 2
        used = {s.threads_used["old"], s.threads_used["new"]}
        threads = str(s.threads) if used == {s.threads} else f"{s.threads} (ran {'/'.join(map(str, sorted(used)))})"
        body.append([s.case.label, threads, str(s.case.epochs), f"{s.nnz:,}", str(len(s.ratios)),
                     peers._fmt_spread(s.fit_s["old"], digits), peers._fmt_spread(s.fit_s["new"], digits),
                     peers._fmt_spread(s.ratio, 3), f"{s.cpu_per_wall['old']:.2f}, {s.cpu_per_wall['new']:.2f}",
                     "yes" if s.within_spread else "no"])
    return peers._render(head, body, markdown=markdown)


def side_line(side: str, code: Path, info: dict[str, Any]) -> str:
    commit, dirty = checkout_commit(code)
    return (f"{side}: {code} at {commit[:12]}{' (with uncommitted changes in bpr_numpy/)' if dirty else ''}, "
            f"bpr_numpy {info['version']}")


def build_cases(args: argparse.Namespace, log: TextIO) -> list[tuple[Case, sp.csr_matrix]]:
    """The cases asked for, with their data (a missing MovieLens folder skips its case with a line)."""
    import peers

    out = []
    if "movielens" in args.cases:
        if (Path(args.data) / "ua.base").is_file() or Path(args.data).suffix == ".zip":
            train, _ = peers.load_movielens(args.data)
            out.append((Case("ml100k", "MovieLens 100k ua.base", args.movielens_epochs, args.rounds or
                             (4 if args.quick else 10)), train))
        else:
            print(f"skipping movielens: MovieLens 100k not found at {args.data} (--data)", file=log)
    if "synthetic" in args.cases:
        nnz = args.size or (2_000_000 if args.quick else 20_000_000)
        csr = peers.synthetic_data(nnz, seed=0, log=log)
        label = f"synthetic {nnz / 1e6:g}M"
        out.append((Case(f"synthetic{nnz}", label, 1, args.rounds or (3 if args.quick else 5)), csr))
    return out


def run(args: argparse.Namespace, out: TextIO, log: TextIO) -> list[Summary]:
    """Build the data, start and warm both workers, alternate the timed fits, print the table."""
    import peers

    sides = {"old": checkout_root(args.old), "new": checkout_root(args.new)}
    # Now, not after the run: the load average at start says how busy the machine was.
    # machine_lines lists libraries' versions after numpy's and scipy's: none here, each side has its own line.
    machine = [line.rstrip("; ") for line in peers.machine_lines([])]
    cases = build_cases(args, log)
    if not cases:
        raise SystemExit("no case to run")
    workers: dict[str, Worker] = {}
    rows: list[Summary] = []
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bpr-ab-") as work:
        try:
            for side, code in sides.items():
                workers[side] = Worker(side, code, max(args.threads))
            for side, w in workers.items():
                print(f"[{side}] {w.ask('warm', threads=args.threads, factors=args.factors)['log']}", file=log,
                      flush=True)
            # After the warm-up: numba names its threading layer once a parallel kernel has run.
            infos = {side: w.ask("info") for side, w in workers.items()}
            for side in workers:
                if sides[side] not in Path(infos[side]["file"]).resolve().parents:
                    raise SystemExit(f"{side} worker imported {infos[side]['file']}, not {sides[side]}'s bpr_numpy")
            for case, csr in cases:
                path = Path(work) / f"{case.name}.npz"
                sp.save_npz(path, csr, compressed=False)
                for w in workers.values():
                    w.ask("load", name=case.name, path=str(path))
                path.unlink()  # the workers hold it now
            for case, csr in cases:
                for t in args.threads:
                    fits = []
                    for r in range(case.rounds):
                        for side in order(r):
                            rep = workers[side].ask("fit", data=case.name, threads=t, epochs=case.epochs,
                                                    factors=args.factors, seed=r)
                            fits.append(Fit(case.name, t, r, side, rep["fit_s"], rep["cpu_s"], rep["threads_used"]))
                            print(f"  [{case.label} threads {t} round {r + 1}/{case.rounds}] {side}: "
                                  f"{rep['fit_s']:.3f} s  CPU/wall {rep['cpu_s'] / rep['fit_s']:.2f}", file=log,
                                  flush=True)
                    rows.append(summarize(case, csr.nnz, t, fits))
        finally:
            for w in workers.values():
                w.close()
    total = time.perf_counter() - t_start
    header = machine + [side_line(s, sides[s], infos[s]) for s in sides]
    notes = [
        "fit s: perf_counter around the whole fit call (peers.measure_fit), after untimed warm-up fits per "
        "thread count in each worker; factors "
        f"{args.factors}, float32, lr 0.02, reg 0.02, round r seeded r on both sides",
        "order per round: old, new then new, old (alternating), one fit at a time; new/old is the ratio of the "
        "two fits of the same round, median (min-max) over rounds: < 1 means the new code is faster; within "
        "spread: 1 lies inside that min-max",
        "CPU/wall: process CPU seconds / wall seconds during the fit (about the thread count when the cores "
        "were free)",
    ]
    print("\n".join(header), file=out)
    print("\n" + table(rows), file=out)
    for n in notes:
        print(f"- {n}", file=out)
    print(f"whole run {total:.0f} s", file=out)
    if args.markdown:
        from _report import write_markdown

        command = "python benchmarks/ab_speed.py " + " ".join(shlex.quote(a) for a in args.argv)
        section = "\n".join([SECTION_TITLE, "", f"- Command: `{command}` (whole run {total / 60:.1f} min)",
                             *(f"- {line}" for line in header), "", table(rows, markdown=True), "",
                             *(f"- {n}" for n in notes), ""])
        write_markdown(args.markdown, section, title=SECTION_TITLE)
        print(f"wrote the '{SECTION_TITLE}' section to {args.markdown}", file=log)
    return rows


def build_parser() -> argparse.ArgumentParser:
    """The command-line parser."""
    import peers

    p = argparse.ArgumentParser(prog="python benchmarks/ab_speed.py", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--old", required=True, help="checkout of the old code")
    p.add_argument("--new", required=True, help="checkout of the new code")
    p.add_argument("--cases", type=lambda s: [x.strip() for x in s.split(",") if x.strip()],
                   default=["movielens", "synthetic"], help="movielens and/or synthetic (default: both)")
    p.add_argument("--threads", type=peers._int_list, default=[1, 2], help="thread counts (default: 1,2)")
    p.add_argument("--rounds", type=int, default=None,
                   help="rounds per case and thread count (default: movielens 10, synthetic 5; --quick 4 and 3)")
    p.add_argument("--quick", action="store_true", help="the 2M synthetic set instead of 20M, fewer rounds")
    p.add_argument("--size", type=peers.parse_size, default=None, help="synthetic pairs, e.g. 5M (overrides --quick)")
    p.add_argument("--movielens-epochs", type=int, default=100, help="epochs per MovieLens fit (default: 100)")
    p.add_argument("--factors", type=int, default=64)
    p.add_argument("--data", default=str(peers.DEFAULT_DATA),
                   help="MovieLens 100k folder or zip (default: %(default)s)")
    p.add_argument("--markdown", default=None, metavar="PATH",
                   help=f"write the table as the '{SECTION_TITLE}' section of PATH (other sections kept)")
    return p


def main(argv: Sequence[str] | None = None, out: TextIO | None = None, log: TextIO | None = None) -> list[Summary]:
    """Run the comparison; the table's rows.

    Parameters
    ----------
    argv : sequence of str, optional
        Arguments (default: ``sys.argv[1:]``).
    out, log : file-like, optional
        Table (default stdout) and progress (default stderr).

    Returns
    -------
    list of Summary
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["_worker"]:  # a subprocess of Worker, not for people
        p = argparse.ArgumentParser(prog="ab_speed.py _worker")
        p.add_argument("--code", required=True)
        sys.exit(worker_main(p.parse_args(argv[1:]).code))
    use_code(REPO)  # this process builds the data with this checkout's bpr_numpy
    args = build_parser().parse_args(argv)
    args.argv = argv
    bad = set(args.cases) - {"movielens", "synthetic"}
    if bad or not args.cases:
        raise SystemExit(f"--cases: choose from movielens, synthetic (got {','.join(args.cases)})")
    if (args.rounds is not None and args.rounds < 1) or args.factors < 1 or args.movielens_epochs < 1:
        raise SystemExit("--rounds, --factors and --movielens-epochs must be >= 1")
    return run(args, sys.stdout if out is None else out, sys.stderr if log is None else log)


if __name__ == "__main__":
    main()
