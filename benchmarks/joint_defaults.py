"""Default hyperparameters weighed on MovieLens 100k and Gowalla at once (issue 18's defaults target).

Each setting (a JSON object of ``BPR`` arguments, optionally with ``"steps"``: the epoch counts to
score at, default 100 and 150) is trained on both data sets and scored at each epoch count,
continued with ``partial_fit``:

- MovieLens 100k: ``ua.base`` (ratings >= 4) minus a 10% validation split (seeded 0), validation
  precision@10, mean and std over seeds 0-2, ``threads=1``; ``ua.test`` is not looked at;
- Gowalla (the LightGCN carve): train -> valid recall@20, seed 0, ``threads=2``, with the fit
  seconds (the issue bounds a default's fit time at 1.5x today's).

One JSON line per setting and epoch count. Without settings, the grid of RESULTS.md's
"Defaults" table.

Usage::

    python benchmarks/joint_defaults.py ['{"learning_rate": 0.05, "regularization": 0.01}' ...]
        [--movielens DIR] [--gowalla DIR]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from bpr_numpy import BPR, datasets, metrics
from bpr_numpy.datasets import load_movielens_100k, split_random

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"

GRID = (
    {},
    {"learning_rate": 0.03, "regularization": 0.01},
    {"learning_rate": 0.05, "regularization": 0.02},
    {"learning_rate": 0.05, "regularization": 0.01},
    {"learning_rate": 0.05, "regularization": 0.005},
    {"learning_rate": 0.1, "regularization": 0.01},
    {"learning_rate": 0.1, "regularization": 0.005},
    {"learning_rate": 0.1, "regularization": 0.002},
    {"sampler": "dns", "dns_candidates": 2, "steps": [60]},
    {"sampler": "dns", "dns_candidates": 2, "learning_rate": 0.05, "regularization": 0.01, "steps": [40, 60]},
)


def scored_fits(matrix, holdout, params: dict, steps: list[int], seed: int, threads: int, k: int, metric: str):
    """``(epochs, score, fit seconds so far)`` at each of ``steps``, one model continued with ``partial_fit``."""
    model = BPR(epochs=0, threads=threads, random_state=seed, **params).fit(matrix)
    done, seconds = 0, 0.0
    for epochs in steps:
        start = time.perf_counter()
        model.partial_fit(matrix, epochs=epochs - done)
        seconds += time.perf_counter() - start
        done = epochs
        yield epochs, metrics.evaluate(model, matrix, holdout, k=k, metrics=[metric])[f"{metric}@{k}"], seconds


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("settings", nargs="*", type=json.loads, help="BPR arguments as JSON objects (default: the grid)")
    p.add_argument("--movielens", default=str(SHARED / "ml-100k"))
    p.add_argument("--gowalla", default=str(SHARED / "gowalla"))
    args = p.parse_args(argv)
    train, _ = load_movielens_100k(args.movielens, split="ua", min_rating=4.0)
    fit_part, valid_part = split_random(train, 0.1, random_state=0)
    ml_fit, ml_valid = fit_part.matrix, valid_part.matrix
    gowalla_train, gowalla_valid = datasets.load_lightgcn(args.gowalla, test_name="valid.txt")
    for setting in args.settings or GRID:
        params = dict(setting)
        steps = params.pop("steps", [100, 150])
        ml = np.array([[score for _, score, _ in scored_fits(ml_fit, ml_valid, params, steps, seed, 1, 10, "precision")]
                       for seed in range(3)])
        gowalla = list(scored_fits(gowalla_train.matrix, gowalla_valid.matrix, params, steps, 0, 2, 20, "recall"))
        for n, (epochs, recall, seconds) in enumerate(gowalla):
            print(json.dumps({**params, "epochs": epochs, "ml_precision@10": round(float(ml[:, n].mean()), 4),
                              "ml_std": round(float(ml[:, n].std()), 4), "gowalla_recall@20": round(recall, 4),
                              "gowalla_fit_s": round(seconds, 1)}), flush=True)


if __name__ == "__main__":
    main()
