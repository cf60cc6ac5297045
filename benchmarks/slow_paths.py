"""Cost per sample of the paths off the default, against plain SGD, on MovieLens 100k.

``ua.base`` (ratings >= 4), 64 factors, ``threads=1``: each path is fitted once to compile, then
3 times for 20 epochs; its kernel seconds (the epochs' own timers, ``EpochReport.seconds``), best of
the 3, are divided by plain SGD's, measured the same way in the same process. Issue 20's targets:
AdaGrad and Adam <= 3x, DNS with 2 candidates <= 1.7x, side features with identities only <= 1.5x
and with the 19 genres <= 2.5x. Issue 18's options (several negatives per positive, alone and with
DNS) are listed too, per positive: ``n_negatives=k`` draws and scores k negatives for each.

Usage::

    python benchmarks/slow_paths.py [--data PATH]
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


def kernel_seconds(matrix, params: dict, features: dict) -> float:
    BPR(factors=64, epochs=1, threads=1, random_state=0, **params).fit(matrix, **features)  # compile
    fits = (BPR(factors=64, epochs=20, threads=1, random_state=r, **params).fit(matrix, **features) for r in range(3))
    return min(sum(report.seconds for report in model.history_) for model in fits)


def main(argv=None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=str(DEFAULT_DATA), help="MovieLens 100k folder or zip")
    args = parser.parse_args(argv)
    train, _ = load_movielens_100k(args.data, split="ua", min_rating=4.0)
    matrix = train.matrix
    features = {"plain": {}, "identities": dict(item_features=np.zeros((matrix.shape[1], 0))),
                "genres": dict(item_features=np.asarray(train.item_features, dtype=float))}
    sgd = kernel_seconds(matrix, {}, {})
    ratios = {name: kernel_seconds(matrix, params, features[kind]) / sgd for name, (params, kind) in PATHS.items()}
    print(f"plain SGD: {sgd / (20 * matrix.nnz) * 1e9:.0f} ns a sample")
    for name, ratio in ratios.items():
        print(f"{name:36s} {ratio:5.1f}x SGD")
    return ratios


if __name__ == "__main__":
    main()
