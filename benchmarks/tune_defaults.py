"""How the default hyperparameters of bpr_numpy.BPR were chosen, as a script you can re-run.

MovieLens 100k, ``ua.base`` with ratings >= 4. A validation set is carved out of ``ua.base``
(10% of its positives, seeded); ``ua.test`` is never looked at during the search. Each
configuration is trained with ``threads=1`` for several seeds and scored by full AUC (P1)
and precision@10 on the validation set, at several epoch counts (via ``partial_fit``).
Finally the chosen defaults are scored on ``ua.test`` over more seeds, for the spread that
the regression tests in ``tests/test_movielens.py`` use as their margins.

    python benchmarks/tune_defaults.py [--data ../shared/data/ml-100k] [--quick | --final-only]
"""

from __future__ import annotations

import argparse
import itertools
import time
from pathlib import Path

import numpy as np

from bpr_numpy import BPR, metrics
from bpr_numpy.datasets import load_movielens_100k, split_random

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "ml-100k"


def score(model, train, test):
    r = metrics.evaluate(model, train, test, k=10, metrics=["full_auc", "precision"])
    return r["full_auc"], r["precision@10"]


def grid(fit_train, valid, configs, epochs_grid, seeds):
    rows = []
    for name, params in configs:
        per_epoch = {e: [] for e in epochs_grid}
        for seed in seeds:
            model = BPR(epochs=0, threads=1, random_state=seed, **params).fit(fit_train)
            for e in epochs_grid:
                model.partial_fit(fit_train, epochs=e - len(model.history_))
                per_epoch[e].append(score(model, fit_train, valid))
        for e in epochs_grid:
            p1, prec = np.mean(per_epoch[e], axis=0)
            rows.append((name, e, p1, prec))
            print(f"{name:<48s} epochs {e:4d}  validation P1 {p1:.4f}  precision@10 {prec:.4f}", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(DEFAULT_DATA), help="MovieLens 100k folder or zip")
    parser.add_argument("--quick", action="store_true", help="one seed, fewer configurations")
    parser.add_argument("--final-only", action="store_true", help="skip the search; score the defaults on ua.test")
    args = parser.parse_args()

    train, test = load_movielens_100k(args.data, split="ua", min_rating=4.0)
    fit_train, valid = split_random(train, test_fraction=0.1, random_state=0)
    seeds = [0] if args.quick else [0, 1]
    epochs_grid = [50, 100, 200]
    lrs = [0.02, 0.05] if args.quick else [0.02, 0.05, 0.1]
    regs = [0.01, 0.02] if args.quick else [0.003, 0.01, 0.02, 0.04]
    configs = [(f"lr {lr}, reg {reg}", dict(learning_rate=lr, regularization=reg))
               for lr, reg in itertools.product(lrs, regs)]
    # Per-role variants around the best uniform setting (docs/design.md, 'The mathematics': roles matter).
    configs += [
        ("lr 0.02, reg 0.02, no bias penalty",
         dict(learning_rate=0.02, regularization=dict(user=0.02, positive=0.02, negative=0.02, bias=0.0))),
        ("lr 0.02, reg 0.02, negative item 0.005",
         dict(learning_rate=0.02, regularization=dict(user=0.02, positive=0.02, negative=0.005, bias=0.02))),
        ("lr 0.02, reg 0.02, bias 0.1",
         dict(learning_rate=0.02, regularization=dict(user=0.02, positive=0.02, negative=0.02, bias=0.1))),
    ]
    start = time.perf_counter()
    if args.final_only:
        configs = []
    print(f"search on ua.base minus a 10% validation set ({fit_train.nnz} / {valid.nnz} positives)")
    grid(fit_train.matrix, valid.matrix, configs, epochs_grid, seeds)
    print(f"search took {time.perf_counter() - start:.0f} s")

    print("\nthe defaults on ua.test (threads=1):")
    results = np.array([score(BPR(threads=1, random_state=s).fit(train.matrix), train.matrix, test.matrix)
                        for s in range(5)])
    for name, col in (("P1 full AUC", 0), ("precision@10", 1)):
        v = results[:, col]
        print(f"  {name:<14s} mean {v.mean():.4f}  std {v.std(ddof=1):.4f}  min {v.min():.4f}  (5 seeds)")


if __name__ == "__main__":
    main()
