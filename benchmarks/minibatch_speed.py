"""Samples per second of the NumPy minibatch trainer at several batch sizes, beside the numba kernel's.

MovieLens 100k ``ua.base`` (ratings >= 4), 64 factors, float32, uniform negatives (rejected),
loss ``"bpr"``, SGD; every configuration trains ``--epochs`` epochs per round in one process,
the configurations alternated round by round (the kernel compiled beforehand), and the table
gives the median (min-max) of samples/s over rounds, from the epochs' own timers
(``EpochReport.seconds``: sampling and updates, no evaluation).

Run: ``python benchmarks/minibatch_speed.py [--rounds 3] [--epochs 3] [--batches 64,1024,16384]``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

if str(Path(__file__).resolve().parent) not in sys.path:  # loaded by path (a test): see _common.py
    sys.path.append(str(Path(__file__).resolve().parent))
from _common import one_thread  # noqa: E402

one_thread(__name__)

from _data import DEFAULT_DATA  # noqa: E402  (after one_thread: it imports numpy)

import numpy as np  # noqa: E402

from bpr_numpy import BPR  # noqa: E402
from bpr_numpy.datasets import load_movielens_100k  # noqa: E402

COMMON = dict(factors=64, learning_rate=0.05, regularization=0.01, dtype=np.float32, threads=1)


def samples_per_second(train, params: dict, epochs: int, seed: int) -> float:
    model = BPR(**COMMON, **params, epochs=epochs, random_state=seed).fit(train, show_progress=False)
    return sum(r.samples for r in model.history_) / sum(r.seconds for r in model.history_)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batches", default="64,1024,16384")
    args = parser.parse_args(argv)
    train = load_movielens_100k(args.data, split="ua", min_rating=4)[0].matrix
    configs = {"numba kernel (threads=1)": {}}
    configs.update({f"minibatch, batch {int(b):,}": {"solver": "minibatch", "batch_size": int(b)}
                    for b in args.batches.split(",")})
    samples_per_second(train, {}, 1, 0)  # compile the kernel outside the rounds
    measured: dict[str, list[float]] = {label: [] for label in configs}
    for r in range(args.rounds):
        order = list(configs) if r % 2 == 0 else list(reversed(configs))
        for label in order:
            measured[label].append(samples_per_second(train, configs[label], args.epochs, r))
    kernel = np.median(measured["numba kernel (threads=1)"])
    print(f"MovieLens 100k ua.base, {train.nnz:,} pairs, {args.epochs} epochs x {args.rounds} rounds, "
          "64 factors, float32, SGD, uniform negatives, one thread")
    print("| trainer | M samples/s (median, min-max) | vs kernel |")
    print("|---|---|---|")
    for label, values in measured.items():
        v = np.array(values) / 1e6
        print(f"| {label} | {np.median(v):.3f} ({v.min():.3f}-{v.max():.3f}) | {np.median(values) / kernel:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
