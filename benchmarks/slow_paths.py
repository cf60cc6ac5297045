"""Cost per sample of the paths off the default, against plain SGD, on MovieLens 100k.

``ua.base`` (ratings >= 4), 64 factors, ``threads=1``: each path is fitted once to compile, then
3 times for 20 epochs; its kernel seconds (the epochs' own timers, ``EpochReport.seconds``), best of
the 3, are divided by plain SGD's, measured the same way in the same process. Issue 20's targets:
AdaGrad and Adam <= 3x, DNS with 2 candidates <= 1.7x, side features with identities only <= 1.5x
and with the 19 genres <= 2.5x. Issue 18's options (several negatives per positive, alone and with
DNS) are listed too, per positive: ``n_negatives=k`` draws and scores k negatives for each.

Usage::

    python benchmarks/slow_paths.py [--data PATH] [--epochs 20] [--fits 3] [--rounds 1]

With ``--rounds R`` each path is measured R times, each time right after a measurement of SGD,
and the ratio's median and range are printed.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import one_thread  # noqa: E402 - standard library only

one_thread(__name__)  # one core only; before numpy is imported

import numpy as np  # noqa: E402

from bpr_numpy import BPR  # noqa: E402
from bpr_numpy.datasets import load_movielens_100k  # noqa: E402

from _data import DEFAULT_DATA  # noqa: E402

PATHS = {
    "AdaGrad": (dict(optimizer="adagrad"), "plain"),
    "Adam": (dict(optimizer="adam"), "plain"),
    "DNS, 2 candidates": (dict(sampler="dns", dns_candidates=2), "plain"),
    "side features, identities only": ({}, "identities"),
    "side features, 19 genres": ({}, "genres"),
    "side features, identities, AdaGrad": (dict(optimizer="adagrad"), "identities"),
    "side features, 19 genres, AdaGrad": (dict(optimizer="adagrad"), "genres"),
    # issue 18's options: a "sample" is one positive with its k negatives
    "4 negatives per positive": (dict(n_negatives=4), "plain"),
    "DNS-5": (dict(sampler="dns", dns_candidates=5), "plain"),
    "DNS-5, 4 negatives per positive": (dict(sampler="dns", dns_candidates=5, n_negatives=4), "plain"),
}


def kernel_seconds(matrix, params: dict, features: dict, epochs: int = 20, fits: int = 3) -> float:
    """Best of ``fits`` fits' kernel seconds (``epochs`` epochs each), after a fit that compiles."""
    BPR(factors=64, epochs=1, threads=1, random_state=0, **params).fit(matrix, **features)  # compile
    runs = (BPR(factors=64, epochs=epochs, threads=1, random_state=r, **params).fit(matrix, **features)
            for r in range(fits))  # fmt: skip
    return min(sum(report.seconds for report in model.history_) for model in runs)


def main(argv=None) -> dict[str, list[float]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=str(DEFAULT_DATA), help="MovieLens 100k folder or zip")
    parser.add_argument("--epochs", type=int, default=20, help="epochs a fit (default 20)")
    parser.add_argument("--fits", type=int, default=3, help="fits a measurement, the best kept (default 3)")
    parser.add_argument("--rounds", type=int, default=1,
                        help="rounds; each measures SGD again right before each path (default 1)")
    args = parser.parse_args(argv)
    train, _ = load_movielens_100k(args.data, split="ua", min_rating=4.0)
    matrix = train.matrix
    features = {"plain": {}, "identities": dict(item_features=np.zeros((matrix.shape[1], 0))),
                "genres": dict(item_features=np.asarray(train.item_features, dtype=float))}
    ratios: dict[str, list[float]] = {name: [] for name in PATHS}
    sgd_ns = []
    for _ in range(args.rounds):
        for name, (params, kind) in PATHS.items():
            # SGD measured next to each path: a drift of the shared machine falls on both.
            sgd = kernel_seconds(matrix, {}, {}, args.epochs, args.fits)
            sgd_ns.append(sgd / (args.epochs * matrix.nnz) * 1e9)
            ratios[name].append(kernel_seconds(matrix, params, features[kind], args.epochs, args.fits) / sgd)
    print(f"plain SGD: {np.median(sgd_ns):.0f} ns a sample (median; {min(sgd_ns):.0f}-{max(sgd_ns):.0f})")
    for name, values in ratios.items():
        spread = f" ({min(values):.2f}-{max(values):.2f} over {len(values)} rounds)" if len(values) > 1 else ""
        print(f"{name:36s} {np.median(values):5.2f}x SGD{spread}")
    return ratios


if __name__ == "__main__":
    main()
