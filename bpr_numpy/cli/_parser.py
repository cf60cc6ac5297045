"""The argument parser of ``bpr-numpy``: every sub-command's options, defaults, help and argparse types.

Building it imports only NumPy-level modules (the registries' names), so that
``--help`` and usage errors stay fast; the sub-commands themselves are in
:mod:`._commands`.
"""

from __future__ import annotations

import argparse

# NumPy-only modules (no scipy, no numba): the parser stays cheap to build.
from .. import sampling
from .._parameters import SOLVERS
from ..objective import LOSSES, OPTIMIZERS
from ._data import _DATASETS, _DELIMITERS, _SPLITS


def _int_at_least(low: int, description: str):
    """An argparse type: an integer >= ``low``, with a message naming what was expected."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {description}, got {text!r}") from None
        if not low <= value < 2**63:  # the library's sizes and counts are int64
            raise argparse.ArgumentTypeError(f"expected {description} below 2**63, got {value}")
        return value

    return parse


_positive_int = _int_at_least(1, "a positive integer")
_nonneg_int = _int_at_least(0, "an integer >= 0")


def _number_at_least(low: float, strict: bool, description: str):
    """An argparse type: a finite number above ``low`` (or at least ``low``), with a message."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {description}, got {text!r}") from None
        if not (value > low if strict else value >= low) or value == float("inf"):
            raise argparse.ArgumentTypeError(f"expected {description}, got {text}")
        return value

    return parse


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``bpr-numpy``."""
    from .. import __version__

    parser = argparse.ArgumentParser(
        prog="bpr-numpy",
        description="Bayesian Personalized Ranking: train, evaluate, recommend, tune, benchmark, check gradients.",
    )
    parser.add_argument("--version", action="version", version=f"bpr_numpy {__version__}")
    parser.add_argument("--debug", action="store_true", help="show Python tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    train = sub.add_parser("train", help="train a model and print per-epoch reports and held-out metrics")
    _add_data_options(train)
    hp = train.add_argument_group("model (BPR hyperparameters; defaults: BPR's)")
    hp.add_argument("--factors", type=_positive_int, default=None)
    hp.add_argument("--epochs", type=_nonneg_int, default=None)
    hp.add_argument("--learning-rate", "--lr", type=float, default=None)
    hp.add_argument(
        "--regularization",
        "--reg",
        type=float,
        default=None,
        help="L2 strength of every role (default 0.02); the --reg-* options override one role each",
    )
    hp.add_argument("--reg-user", type=float, default=None, help="lambda_u, on the user factors")
    hp.add_argument("--reg-positive", type=float, default=None, help="lambda_i, on the positive item's factors")
    hp.add_argument("--reg-negative", type=float, default=None, help="lambda_j, on the negative item's factors")
    hp.add_argument("--reg-bias", type=float, default=None, help="lambda_b, on the item biases")
    hp.add_argument("--loss", choices=LOSSES, default=None)
    hp.add_argument(
        "--sampler",
        choices=sampling.SAMPLERS,  # read now: register_sampler may add
        default=None,
        help="negative sampler (default uniform; see bpr_numpy.sampling)",
    )
    hp.add_argument(
        "--popularity-exponent",
        type=float,
        default=None,
        metavar="ALPHA",
        help="exponent of the popularity samplers (default 1)",
    )
    hp.add_argument(
        "--dns-candidates",
        type=_positive_int,
        default=None,
        metavar="K",
        help="candidates per draw of the dns sampler (default 5)",
    )
    hp.add_argument(
        "--n-negatives",
        type=_positive_int,
        default=None,
        metavar="K",
        help="negatives per positive, the step on the mean of their k triplet objectives (default 1)",
    )
    hp.add_argument(
        "--aobpr-lambda",
        type=float,
        default=None,
        metavar="FRACTION",
        help="aobpr's geometric rank scale, as a fraction of the items (default 0.05)",
    )
    hp.add_argument(
        "--max-sampled", type=_positive_int, default=None, metavar="N", help="WARP's draws per positive (default 10)"
    )
    hp.add_argument("--optimizer", choices=OPTIMIZERS, default=None)
    hp.add_argument(
        "--solver",
        choices=SOLVERS,
        default=None,
        help="kernel (numba SGD per sampled triplet, the default) or minibatch (vectorised NumPy)",
    )
    hp.add_argument(
        "--batch-size",
        type=_positive_int,
        default=None,
        metavar="N",
        help="triplets per step of --solver minibatch (default 64)",
    )
    hp.add_argument(
        "--init",
        choices=("normal", "uniform"),
        default=None,
        help="law of the initial factors, of standard deviation --init-std (default normal)",
    )
    hp.add_argument(
        "--lr-decay",
        type=float,
        default=None,
        metavar="GAMMA",
        help="learning rate multiplied by GAMMA after each epoch (default 1)",
    )
    hp.add_argument(
        "--user-run",
        type=_positive_int,
        default=None,
        metavar="N",
        help="consecutive samples drawn for one user (default 16)",
    )
    hp.add_argument(
        "--item-bias",
        dest="item_bias",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="learn an item bias (default on)",
    )
    hp.add_argument("--init-std", type=float, default=None, help="std of the initial factors (default 1/sqrt(factors))")
    hp.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    hp.add_argument("--threads", type=_nonneg_int, default=0, help="0: all cores (default); 1: reproducible")
    hp.add_argument("--seed", type=_nonneg_int, default=0, help="seeds the model and the data split (default 0)")
    train.add_argument("-k", type=_positive_int, default=10, help="cut-off of the top-k metrics (default 10)")
    train.add_argument(
        "--validate-every",
        type=_positive_int,
        default=None,
        metavar="N",
        help="carve 10%% of the training positives out as a validation set and evaluate --metric "
        "every N epochs; the best epoch's factors are kept",
    )
    train.add_argument(
        "--patience",
        type=_positive_int,
        default=None,
        metavar="P",
        help="with validation: stop P epochs after the best one (implies --validate-every 1)",
    )
    train.add_argument("--metric", default="ndcg@10", help="validation metric (default ndcg@10)")
    train.add_argument("--save", metavar="PATH", help="write the trained model to this .npz file")
    train.add_argument("--quiet", action="store_true", help="no per-epoch lines")

    evaluate = sub.add_parser("evaluate", help="held-out metrics of a saved model on the split it was trained against")
    evaluate.add_argument("model", help="a .npz file written by train --save or BPR.save")
    _add_data_options(evaluate, evaluate=True)
    evaluate.add_argument(
        "--seed",
        type=_nonneg_int,
        default=None,
        help="seed of the split (and of the synthetic data) "
        "(default: the model's random_state, as train --seed sets it, else 0)",
    )
    evaluate.add_argument("-k", type=_positive_int, default=10, help="cut-off of the top-k metrics (default 10)")
    evaluate.add_argument("--json", action="store_true", help="print one JSON object instead of the table")

    _add_tune(sub)

    formats = ["text", "csv", "json"]
    rec = sub.add_parser("recommend", help="top items for users, in the data's raw ids, liked items filtered")
    rec.add_argument("model", help="a .npz model file")
    who = rec.add_mutually_exclusive_group(required=True)
    who.add_argument("--user", metavar="ID", help="a raw user id (as in the data, e.g. MovieLens user 196)")
    who.add_argument("--users-file", metavar="FILE", help="a file of raw user ids, one per line")
    rec.add_argument("-n", type=_positive_int, default=10, help="items per user (default 10)")
    rec.add_argument("--format", choices=formats, default="text")
    rec.add_argument("--include-liked", action="store_true", help="do not filter the user's training items")

    sim = sub.add_parser("similar", help="items most similar to an item (cosine of item factors)")
    sim.add_argument("model", help="a .npz model file")
    sim.add_argument("--item", metavar="ID", required=True, help="a raw item id")
    sim.add_argument("-n", type=_positive_int, default=10, help="neighbours (default 10)")
    sim.add_argument("--format", choices=formats, default="text")

    bench = sub.add_parser("bench", help="local training throughput at 1 and --threads threads")
    bench.add_argument(
        "--nnz",
        type=_positive_int,
        default=None,
        metavar="N",
        help="train on N synthetic power-law pairs (datasets.synthetic) instead of the built-in set",
    )
    bench.add_argument("--epochs", type=_positive_int, default=3)
    bench.add_argument("--factors", type=_positive_int, default=64)
    bench.add_argument("--threads", type=_nonneg_int, default=0, help="the parallel run's threads (0: all cores)")
    bench.add_argument("--seed", type=_nonneg_int, default=0)

    grad = sub.add_parser("gradcheck", help="check the analytic gradients against finite differences")
    grad.add_argument("--users", type=_positive_int, default=7)
    grad.add_argument("--items", type=_positive_int, default=11)
    grad.add_argument("--factors", type=_positive_int, default=16)
    grad.add_argument("--batch", type=_positive_int, default=64)
    grad.add_argument("--loss", choices=LOSSES, default="bpr")
    grad.add_argument("--no-item-bias", action="store_true")
    grad.add_argument("--scale", type=float, default=1.0, help="std of the random factors (|x_uij| grows with it)")
    grad.add_argument("--seed", type=_nonneg_int, default=0)
    grad.add_argument("--tolerance", type=float, default=None)
    return parser


def _add_tune(sub) -> None:
    tune = sub.add_parser(
        "tune",
        help="search hyperparameters by successive halving within a time budget; prints the best as JSON",
        description="Successive halving over a search space (bpr_numpy.tune): arms are trained --min-epochs, "
        "scored on validation pairs, and the best 1/--eta continued to --eta times the epochs, up to "
        "--max-epochs. Validation pairs: a LightGCN folder's valid.txt (or --holdout-file), else "
        "--validation-fraction of the training part (the held-out test part is not looked at).",
    )
    _add_data_options(tune)
    tune.add_argument(
        "--budget",
        type=_number_at_least(0, True, "a number of seconds > 0"),
        default=900.0,
        metavar="SECONDS",
        help="wall-clock budget of the search (default 900); a step in progress finishes",
    )
    tune.add_argument("--metric", default="recall@20", help="validation metric to maximise (default recall@20)")
    tune.add_argument(
        "--space",
        metavar="FILE",
        help='a JSON search space: name -> list (a choice), {"log-uniform": [lo, hi]}, {"uniform": [lo, hi]}, '
        '{"int-log-uniform": [lo, hi]} or a fixed value (default: bpr_numpy.tuning.DEFAULT_SPACE)',
    )
    tune.add_argument(
        "--arms", type=_positive_int, default=None, metavar="N", help="settings to draw (default: sized from --budget)"
    )
    tune.add_argument("--min-epochs", type=_positive_int, default=5, metavar="E", help="epochs of rung 0 (default 5)")
    tune.add_argument(
        "--max-epochs", type=_positive_int, default=135, metavar="E", help="most epochs of any arm (default 135)"
    )
    tune.add_argument("--eta", type=_int_at_least(2, "an integer >= 2"), default=3, help="halving rate (default 3)")
    tune.add_argument(
        "--tolerance",
        type=_number_at_least(0, False, "a number >= 0"),
        default=0.0,
        metavar="R",
        help="pick the cheapest checkpoint within R (relative) of the best score (default 0: the best)",
    )
    tune.add_argument(
        "--screening-users",
        type=_nonneg_int,
        default=5000,
        metavar="N",
        help="rung 0 scores on a seeded sample of N validation users, later rungs on all (default 5000; 0: all)",
    )
    tune.add_argument(
        "--validation-fraction",
        type=_fraction,
        default=0.1,
        metavar="F",
        help="without a validation file: fraction of the training positives scored on (default 0.1)",
    )
    tune.add_argument("--seed", type=_nonneg_int, default=0, help="seeds the draws, the arms and the split (default 0)")
    tune.add_argument("--threads", type=_nonneg_int, default=0, help="0: all cores (default); 1: reproducible")
    tune.add_argument("--output", metavar="FILE", help="also write the best parameters (JSON) to FILE, atomically")
    tune.add_argument(
        "--top", type=_nonneg_int, default=20, metavar="N", help="rows of the result table (default 20; 0: all)"
    )
    tune.add_argument("--quiet", action="store_true", help="no progress lines on stderr")


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1), got {text!r}") from None
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1), got {value}")
    return value


def _columns(text: str) -> list:
    roles = [c.strip().lower() for c in text.split(",")]
    out: list[str | None] = []
    for role in roles:
        if role in ("", "-", "_", "skip", "none"):
            out.append(None)
        elif role in ("user", "item", "rating", "timestamp"):
            out.append(role)
        else:
            raise argparse.ArgumentTypeError(
                f"unknown column role {role!r}; use user, item, rating, timestamp or - (skip), e.g. user,item,rating"
            )
    if "user" not in out or "item" not in out:
        raise argparse.ArgumentTypeError(f"--columns needs a user and an item column, got {text!r}")
    return out


def _add_data_options(p: argparse.ArgumentParser, *, evaluate: bool = False) -> None:
    """Options choosing the data and its train/test split: shared by train and evaluate (same split)."""
    g = p.add_argument_group("data (the same options rebuild the same split in evaluate)")
    source = g.add_mutually_exclusive_group(required=evaluate)
    source.add_argument(
        "--data",
        metavar="PATH",
        help="a MovieLens folder or .zip (any release), a LightGCN folder with train.txt and test.txt or valid.txt, "
        "or a delimited file of user,item[,rating[,timestamp]] rows",
    )
    source.add_argument(
        "--dataset",
        choices=_DATASETS,
        help="a MovieLens release from the local cache ($BPR_NUMPY_DATA, else ~/.cache/bpr_numpy); "
        "--download fetches it",
    )
    source.add_argument(
        "--movielens", metavar="PATH", help="a MovieLens 100k folder or zip: the same as --data PATH --split ua"
    )
    if evaluate:
        source.add_argument(
            "--synthetic", action="store_true", help="the built-in synthetic data set and the seeded split train uses"
        )
    g.add_argument("--download", action="store_true", help="with --dataset: download it when not cached")
    g.add_argument(
        "--format",
        dest="data_format",
        choices=list(_DELIMITERS),
        default=None,
        help="delimited file format (default auto: detected from the first line)",
    )
    g.add_argument(
        "--columns",
        type=_columns,
        default=None,
        metavar="ROLES",
        help="roles of the fields of a delimited file, e.g. user,item,rating,timestamp (- skips one); "
        "default: from the header, else user,item[,rating[,timestamp]]",
    )
    g.add_argument(
        "--min-rating",
        type=float,
        default=None,
        metavar="R",
        help="ratings >= R are positives (default: 4 for MovieLens, every row for other files)",
    )
    g.add_argument(
        "--split",
        choices=_SPLITS,
        default=None,
        help="ua/ub/u1..u5: the official MovieLens 100k splits (default for ML-100k); random (default "
        "otherwise); leave-k-out; LightGCN folders use their own test.txt (or --holdout-file)",
    )
    g.add_argument(
        "--holdout-file",
        metavar="NAME",
        default=None,
        help="LightGCN folders: the file of held-out pairs (default test.txt, else valid.txt; tune: valid.txt first)",
    )
    g.add_argument(
        "--test-fraction",
        type=_fraction,
        default=0.2,
        metavar="F",
        help="--split random: fraction of pairs held out (default 0.2)",
    )
    g.add_argument(
        "--leave-k",
        type=_positive_int,
        default=1,
        metavar="K",
        help="--split leave-k-out: pairs held out per user (default 1)",
    )
    g.add_argument(
        "--leave-strategy",
        choices=["random", "latest"],
        default="random",
        help="--split leave-k-out: which pairs (latest needs timestamps)",
    )
