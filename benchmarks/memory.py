"""Peak memory of a whole process that fits the 20M-pair synthetic set, bpr_numpy beside implicit.

Issue 20's measure: one fit of one epoch on 2 threads, 64 factors, each library in a process of
its own that imports it, loads the CSR (saved once by this script, so that no process counts
the generator's temporaries), compiles or loads its kernels on a tiny matrix, then fits. Two
figures per process, from ``/proc/self/status``:

- **whole-process peak**: ``VmHWM`` at the end, everything the process ever held at once
  (interpreter, libraries, data, fit);
- **fit increment**: ``VmHWM`` reset (``/proc/self/clear_refs``) just before the fit, minus the
  resident size at that moment: what the fit itself adds to the data it was given.

The processes alternate (bpr_numpy, implicit, bpr_numpy, ...) over ``--repeats`` rounds and the
medians are printed. Linux only (``/proc``).

Usage::

    python benchmarks/memory.py [--pairs 20000000] [--threads 2] [--repeats 3] [--libs bpr_numpy,implicit]
                                [--old CHECKOUT]

``--old CHECKOUT`` adds a row for the ``bpr_numpy`` of another checkout (an A/B of a change).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

# Runs in each child: prints one JSON line.
CHILD = r"""
import ctypes, json, sys
import numpy as np
import scipy.sparse as sp

def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024.0
    raise RuntimeError(key + " not in /proc/self/status")

lib, path, threads, factors = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
if lib == "bpr_numpy":
    from bpr_numpy import BPR
    def fit(m, epochs=1):
        BPR(factors=factors, epochs=epochs, threads=threads, random_state=0).fit(m)
elif lib == "implicit":
    from implicit.cpu.bpr import BayesianPersonalizedRanking
    def fit(m, epochs=1):
        BayesianPersonalizedRanking(factors=factors, iterations=epochs, num_threads=threads,
                                    random_state=0).fit(m, show_progress=False)
else:
    raise SystemExit("unknown library " + lib)
loaded = np.load(path)
matrix = sp.csr_matrix((loaded["data"], loaded["indices"], loaded["indptr"]), shape=tuple(loaded["shape"]))
del loaded
fit(matrix[:200].tocsr())  # compile, or load the compiled kernels, outside the measure
try:
    ctypes.CDLL("libc.so.6").malloc_trim(0)
except OSError:
    pass
before = status("VmRSS")
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")
fit(matrix)
import importlib
where = importlib.import_module(lib).__file__
print(json.dumps({"lib": lib, "module": where, "peak_mib": status("VmHWM"), "before_mib": before,
                  "fit_increment_mib": status("VmHWM") - before}))
"""


def save_matrix(pairs: int, folder: Path) -> Path:
    """The synthetic set of ``pairs`` pairs (:func:`_data.synthetic_data`) as an ``.npz`` of its CSR arrays."""
    import numpy as np

    from _data import synthetic_data

    m = synthetic_data(pairs)
    path = folder / f"synthetic-{pairs}.npz"
    np.savez(path, data=m.data, indices=m.indices, indptr=m.indptr, shape=np.array(m.shape))
    return path


def measure(lib: str, path: Path, threads: int, factors: int, code: str | None = None) -> dict:
    """One child process's figures (:data:`CHILD`); ``code``: a checkout whose bpr_numpy it imports."""
    env = dict(os.environ)
    if code:
        env["PYTHONPATH"] = os.pathsep.join([code, *filter(None, [env.get("PYTHONPATH")])])
    # Run from the data's folder: ``python -c`` puts the working directory first on sys.path,
    # which would shadow ``code`` when run from a checkout.
    out = subprocess.run([sys.executable, "-c", CHILD, lib, str(path), str(threads), str(factors)],
                         capture_output=True, text=True, env=env, cwd=path.parent, check=False)
    if out.returncode:
        raise SystemExit(f"{lib}: exit status {out.returncode}\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> dict[str, dict[str, float]]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pairs", type=int, default=20_000_000)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--factors", type=int, default=64)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--libs", default="bpr_numpy,implicit", help="comma-separated: bpr_numpy, implicit")
    p.add_argument("--old", default=None, metavar="CHECKOUT",
                   help="also measure the bpr_numpy of this checkout (row 'bpr_numpy@old'), alternated")
    args = p.parse_args(argv)
    libs = [x.strip() for x in args.libs.split(",") if x.strip()]
    if args.old:
        libs.append("bpr_numpy@old")
    if not Path("/proc/self/clear_refs").exists():
        raise SystemExit("needs Linux's /proc/self/status and /proc/self/clear_refs")
    with tempfile.TemporaryDirectory(prefix="bpr-memory-") as tmp:
        path = save_matrix(args.pairs, Path(tmp))
        runs: dict[str, list[dict]] = {lib: [] for lib in libs}
        for r in range(args.repeats):
            for lib in libs:
                name, _, old = lib.partition("@")
                runs[lib].append(measure(name, path, args.threads, args.factors, args.old if old else None))
                print(f"round {r + 1}: {json.dumps(runs[lib][-1])}", file=sys.stderr, flush=True)
    summary = {lib: {key: statistics.median(x[key] for x in rs) for key in ("peak_mib", "before_mib", "fit_increment_mib")}
               for lib, rs in runs.items()}
    print(f"{args.pairs:,} pairs, {args.threads} threads, {args.factors} factors, one epoch; median of {args.repeats}")
    print(f"{'library':14s} {'whole-process peak MiB':>24s} {'RSS before fit MiB':>20s} {'fit increment MiB':>19s}")
    for lib, s in summary.items():
        print(f"{lib:14s} {s['peak_mib']:24.0f} {s['before_mib']:20.0f} {s['fit_increment_mib']:19.0f}")
    return summary


if __name__ == "__main__":
    main()
