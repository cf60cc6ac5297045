"""The first result on a fresh machine: the time numba spends compiling before a newcomer's first model.

Each run is a new Python process with ``NUMBA_CACHE_DIR`` pointing at a new, empty folder (what a
fresh container, CI job or notebook kernel on a new machine meets), timing the steps of the
README's quick start one after the other:

``import bpr_numpy``; ``datasets.synthetic_small()``; the first ``BPR(threads=1).fit`` (20 epochs);
the same fit again in the now warm process; a ``threads=2`` fit; ``metrics.evaluate``;
``recommend``. Then a second process on the same, now filled cache (the cost of loading the
cached kernels: what every later process pays). Then the README's first command, ``bpr-numpy
train``, as a whole process, in a new empty cache and again on it filled: the difference is its
compile overhead. With ``--events`` the first process also records
numba's compile events and prints the functions whose compilation took longest.

Usage::

    python benchmarks/cold_start.py [--runs 3] [--events] [--markdown PATH]

``--markdown PATH`` replaces the ``## Cold start (first fit with an empty numba cache)`` section of
PATH. Run it on a quiet machine: the figures are wall-clock seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Sequence, TextIO

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import code_version, machine_line, write_markdown  # noqa: E402

SECTION_TITLE = "## Cold start (first fit with an empty numba cache)"
STEPS = ("import", "synthetic_small", "first fit", "warm fit", "threads=2 fit", "evaluate", "recommend")

# Runs in the child process: prints one JSON line of step -> seconds (and compile events if asked).
CHILD = r"""
import json, sys, time
events = []
if EVENTS:
    from numba.core import event

    starts = {}

    class Timer(event.Listener):
        def on_start(self, ev):
            starts[id(ev.data["dispatcher"]), str(ev.data["args"])] = time.perf_counter()

        def on_end(self, ev):
            key = id(ev.data["dispatcher"]), str(ev.data["args"])
            events.append((ev.data["dispatcher"].py_func.__qualname__, time.perf_counter() - starts.pop(key)))

    event.register("numba:compile", Timer())
t = {}
s = time.perf_counter(); import bpr_numpy; from bpr_numpy import BPR, datasets, metrics; t["import"] = time.perf_counter() - s
s = time.perf_counter(); data = datasets.synthetic_small(random_state=0); t["synthetic_small"] = time.perf_counter() - s
train, test = datasets.split_random(data, test_fraction=0.2, random_state=0)
s = time.perf_counter(); model = BPR(factors=32, epochs=20, threads=1, random_state=0).fit(train.matrix); t["first fit"] = time.perf_counter() - s
s = time.perf_counter(); BPR(factors=32, epochs=20, threads=1, random_state=0).fit(train.matrix); t["warm fit"] = time.perf_counter() - s
s = time.perf_counter(); BPR(factors=32, epochs=20, threads=2, random_state=0).fit(train.matrix); t["threads=2 fit"] = time.perf_counter() - s
s = time.perf_counter(); metrics.evaluate(model, train.matrix, test.matrix); t["evaluate"] = time.perf_counter() - s
s = time.perf_counter(); model.recommend(0, n=10); t["recommend"] = time.perf_counter() - s
print(json.dumps({"steps": t, "events": events}))
"""


def child(cache: str, events: bool) -> dict:
    env = dict(os.environ, NUMBA_CACHE_DIR=cache, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    out = subprocess.run([sys.executable, "-c", CHILD.replace("EVENTS", str(bool(events)))], env=env, check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def cli_train(cache: str) -> float:
    """Wall seconds of the README's first command, ``bpr-numpy train`` (as ``python -m bpr_numpy train``)."""
    env = dict(os.environ, NUMBA_CACHE_DIR=cache, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "bpr_numpy", "train"], env=env, check=True, capture_output=True)
    return time.perf_counter() - start


def spread(values: Sequence[float]) -> str:
    lo, hi = f"{min(values):.2f}", f"{max(values):.2f}"
    return lo if lo == hi else f"{lo}-{hi}"


def main(argv: Sequence[str] | None = None, out: TextIO = sys.stdout, log: TextIO = sys.stderr) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="fresh caches to measure (default 3)")
    parser.add_argument("--events", action="store_true", help="print the slowest compilations of the first run")
    parser.add_argument("--markdown", help="replace this script's section of a markdown file")
    args = parser.parse_args(argv)
    cold, cached, events = [], [], []
    for r in range(args.runs):
        with tempfile.TemporaryDirectory(prefix="bpr-numba-cache-") as cache:
            first = child(cache, args.events and r == 0)
            cold.append(first["steps"])
            events = events or first["events"]
            cached.append(child(cache, False)["steps"])
        print(f"  run {r + 1}/{args.runs}: first fit {cold[-1]['first fit']:.2f} s cold, "
              f"{cached[-1]['first fit']:.2f} s from the cache", file=log, flush=True)
    rows = ["| step | empty cache (s) | filled cache (s) |", "|---|---|---|"]
    for step in STEPS:
        rows.append(f"| {step} | {spread([c[step] for c in cold])} | {spread([c[step] for c in cached])} |")
    total = [sum(c[s] for s in STEPS if s != "warm fit") for c in cold]
    total_cached = [sum(c[s] for s in STEPS if s != "warm fit") for c in cached]
    rows.append(f"| all but the warm fit | {spread(total)} | {spread(total_cached)} |")
    # The README's first command on its own, in new caches: its compile overhead is the difference.
    cli_cold, cli_cached = [], []
    for _ in range(args.runs):
        with tempfile.TemporaryDirectory(prefix="bpr-numba-cache-") as cache:
            cli_cold.append(cli_train(cache))
            cli_cached.append(cli_train(cache))
    rows.append(f"| `bpr-numpy train` (whole process) | {spread(cli_cold)} | {spread(cli_cached)} |")
    overhead = [a - b for a, b in zip(cli_cold, cli_cached, strict=True)]
    command = "python benchmarks/cold_start.py" + "".join(f" {a}" for a in (sys.argv[1:] if argv is None else argv))
    text = "\n".join(rows) + f"\n\nThe README's first command's compile overhead (empty minus filled cache): {spread(overhead)} s."
    print(text, file=out)
    if events:
        slow = sorted(events, key=lambda e: -e[1])[:8]
        print("\nslowest compilations of the first run (numba:compile events, nested ones included):", file=out)
        for name, seconds in slow:
            print(f"  {seconds:6.2f} s  {name}", file=out)
    if args.markdown:
        md = [SECTION_TITLE, "",
              f"Each run a new process with a new, empty `NUMBA_CACHE_DIR`, then a second process on the same "
              f"filled cache; {args.runs} runs (min-max). Steps of the README's quick start in order; fits are "
              "`BPR(factors=32, epochs=20)` on `synthetic_small` (80% of its pairs).", "",
              f"- Command: `{command}`", f"- Machine: {machine_line()}", f"- Code: {code_version()}", "", text, ""]
        write_markdown(args.markdown, "\n".join(md), SECTION_TITLE)
    return {"cold": cold, "cached": cached, "events": events, "cli": (cli_cold, cli_cached)}


if __name__ == "__main__":
    main()
