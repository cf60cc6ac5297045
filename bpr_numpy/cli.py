"""Command line: ``bpr-numpy`` (console script) and ``python -m bpr_numpy``.

Sub-commands:

* ``train``: fit BPR on the built-in synthetic data set (or a MovieLens 100k
  folder with ``--movielens``), print one line per epoch and the held-out
  metrics; ``--save`` writes the model.
* ``gradcheck``: run the finite-difference oracle on a random problem and print
  the max relative error per parameter block; exit status 1 above tolerance.

Exit status: 0 success, 1 failure, 2 usage error. No traceback unless ``--debug``.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Sequence

__all__ = ["main", "build_parser"]


class CLIError(Exception):
    """An error to report in one line, with exit status 1."""


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _nonneg_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``bpr-numpy``."""
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="bpr-numpy",
        description="Bayesian Personalized Ranking: train, check gradients.",
    )
    parser.add_argument("--version", action="version", version=f"bpr_numpy {__version__}")
    parser.add_argument("--debug", action="store_true", help="show Python tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    train = sub.add_parser("train", help="train a model and print per-epoch reports and held-out metrics")
    train.add_argument("--movielens", metavar="PATH",
                       help="a MovieLens 100k folder or zip (official ua split, ratings >= 4 are positives); "
                            "default: the built-in synthetic data set")
    train.add_argument("--factors", type=_positive_int, default=None)
    train.add_argument("--epochs", type=_nonneg_int, default=None)
    train.add_argument("--learning-rate", type=float, default=None)
    train.add_argument("--regularization", type=float, default=None)
    train.add_argument("--loss", choices=["bpr", "sigmoid"], default=None)
    train.add_argument("--no-item-bias", action="store_true")
    train.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    train.add_argument("--threads", type=_nonneg_int, default=0, help="0: all cores (default); 1: reproducible")
    train.add_argument("--seed", type=_nonneg_int, default=0)
    train.add_argument("-k", type=_positive_int, default=10, help="cut-off of the top-k metrics (default 10)")
    train.add_argument("--validate-every", type=_positive_int, default=None, metavar="N",
                       help="carve 10%% of the training positives out as a validation set and evaluate --metric "
                            "every N epochs; the best epoch's factors are kept")
    train.add_argument("--patience", type=_positive_int, default=None, metavar="P",
                       help="with validation: stop P epochs after the best one (implies --validate-every 1)")
    train.add_argument("--metric", default="ndcg@10", help="validation metric (default ndcg@10)")
    train.add_argument("--save", metavar="PATH", help="write the trained model to this .npz file")
    train.add_argument("--quiet", action="store_true", help="no per-epoch lines")

    grad = sub.add_parser("gradcheck", help="check the analytic gradients against finite differences")
    grad.add_argument("--users", type=_positive_int, default=7)
    grad.add_argument("--items", type=_positive_int, default=11)
    grad.add_argument("--factors", type=_positive_int, default=16)
    grad.add_argument("--batch", type=_positive_int, default=64)
    grad.add_argument("--loss", choices=["bpr", "sigmoid"], default="bpr")
    grad.add_argument("--no-item-bias", action="store_true")
    grad.add_argument("--scale", type=float, default=1.0, help="std of the random factors (|x_uij| grows with it)")
    grad.add_argument("--seed", type=_nonneg_int, default=0)
    grad.add_argument("--tolerance", type=float, default=None)
    return parser


def _load_training_data(args):
    """Return (name, train, test) as aligned CSR matrices."""
    from . import datasets

    if args.movielens:
        try:
            train, test = datasets.load_movielens_100k(args.movielens, split="ua", min_rating=4.0)
        except FileNotFoundError as exc:
            raise CLIError(f"MovieLens 100k not found: {exc}") from None
        return f"MovieLens 100k ua split ({args.movielens})", train.matrix, test.matrix
    data = datasets.synthetic_small(random_state=args.seed)
    train, test = datasets.split_random(data, test_fraction=0.2, random_state=args.seed)
    return (f"built-in synthetic data ({data.n_users} users x {data.n_items} items, {data.nnz} pairs)",
            train.matrix, test.matrix)


def _train(args) -> int:
    import numpy as np

    from . import metrics
    from .model import BPR

    name, train, test = _load_training_data(args)
    params = {k: v for k, v in dict(factors=args.factors, epochs=args.epochs, learning_rate=args.learning_rate,
                                    regularization=args.regularization, loss=args.loss).items() if v is not None}
    model = BPR(**params, item_bias=not args.no_item_bias, dtype=np.dtype(args.dtype).type,
                threads=args.threads, random_state=args.seed)
    print(f"data: {name}")
    print(f"train: {train.nnz} positives, held out: {test.nnz}; {model!r}", flush=True)
    start = time.perf_counter()

    def report(r):
        if not args.quiet:
            print(f"{r}  [{r.epoch}/{model.epochs if args.epochs is None else args.epochs}]", flush=True)

    fit_kwargs = {}
    if args.validate_every is not None or args.patience is not None:
        from .datasets import Interactions, split_random

        fit_part, valid = split_random(Interactions.from_csr(train), test_fraction=0.1, random_state=args.seed)
        train_for_fit = fit_part.matrix
        fit_kwargs = dict(validation=(train_for_fit, valid.matrix), metric=args.metric, patience=args.patience,
                          validate_every=args.validate_every or 1)
        print(f"validation: {valid.nnz} of the training positives held out; {args.metric} every "
              f"{fit_kwargs['validate_every']} epoch(s)" + (f", patience {args.patience}" if args.patience else ""))
    else:
        train_for_fit = train
    model.fit(train_for_fit, callback=report, show_progress=False, **fit_kwargs)
    seconds = time.perf_counter() - start
    kernel = sum(r.seconds for r in model.history_)
    print(f"trained {len(model.history_)} epochs in {seconds:.2f} s ({kernel:.2f} s in the SGD kernel; the rest is "
          "validation, and numba compilation on the very first run)")
    if model.best_epoch_ is not None:
        print(f"kept the factors of epoch {model.best_epoch_} ({args.metric} {model.best_score_:.4f} on validation)")
    result = metrics.evaluate(model, train, test, k=args.k)
    print(f"held-out metrics over {result['n_users']} users (train positives excluded from rankings):")
    for key, value in result.items():
        if key != "n_users" and isinstance(value, float):
            print(f"  {key:>14s}  {value:.4f}")
    if args.save:
        model.save(args.save)
        print(f"saved {args.save}")
    return 0


def _gradcheck(args) -> int:
    from .gradcheck import DEFAULT_TOLERANCE, gradcheck

    if args.items < 2:
        raise CLIError("--items must be at least 2 (a triplet needs two distinct items)")
    result = gradcheck(args.users, args.items, args.factors, args.batch, loss=args.loss,
                       item_bias=not args.no_item_bias, scale=args.scale, random_state=args.seed,
                       tolerance=DEFAULT_TOLERANCE if args.tolerance is None else args.tolerance)
    d = result.details
    print(f"finite-difference check: {d['n_users']} users, {d['n_items']} items, {d['factors']} factors, "
          f"batch {d['batch']}, loss {d['loss']}, item bias {'on' if d['item_bias'] else 'off'}, "
          f"max |x_uij| {d['max_abs_x']:.3g}")
    print(result)
    return 0 if result.passed else 1


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return {"train": _train, "gradcheck": _gradcheck}[args.command](args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (CLIError, ValueError, TypeError, OSError, FloatingPointError, RuntimeError) as exc:
        if args.debug:
            raise
        print(f"bpr-numpy {args.command}: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
