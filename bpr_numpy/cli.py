"""Command line: ``bpr-numpy`` (console script) and ``python -m bpr_numpy``.

Sub-commands:

* ``train``: fit BPR on ``--data PATH`` (a MovieLens folder/zip of any
  release, a LightGCN folder, a delimited file), ``--dataset ml-100k`` etc.
  from the local cache (``--download`` to fetch), ``--movielens PATH``
  (``--data PATH --split ua``), or the built-in synthetic set; split it
  (``--split``); report each epoch (one live line on a terminal) and the
  held-out metrics; ``--save`` writes the model.
* ``gradcheck``: run the finite-difference oracle on a random problem and print
  the max relative error per parameter block; exit status 1 above tolerance.
* ``evaluate``: the held-out metrics of a saved model on the split it was
  trained against, rebuilt from the same data options (``--synthetic`` for
  the built-in set); ``--json``.
* ``recommend``: top items for users given by their raw ids (``--user`` or
  ``--users-file``), liked items filtered, with titles when the model has them.
* ``similar``: nearest items by cosine of the item factors.
* ``bench``: a short local throughput run at 1 and ``--threads`` threads.

Exit status: 0 success, 1 failure (including unknown ids and unreadable model
files), 2 usage error, 130 interrupted. No traceback unless ``--debug``.
"""

from __future__ import annotations

import argparse
import difflib
import json
import math
import os
import signal
import sys
import threading
import time
from contextlib import contextmanager
from typing import Any, Sequence

# NumPy-only modules (no scipy, no numba): the parser stays cheap to build.
from .objective import LOSSES, OPTIMIZERS
from .sampling import SAMPLERS

__all__ = ["main", "build_parser"]


class CLIError(Exception):
    """An error to report in one line, with exit status 1."""


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


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``bpr-numpy``."""
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="bpr-numpy",
        description="Bayesian Personalized Ranking: train, evaluate, recommend, benchmark, check gradients.",
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
    hp.add_argument("--regularization", "--reg", type=float, default=None,
                    help="L2 strength of every role (default 0.02); the --reg-* options override one role each")
    hp.add_argument("--reg-user", type=float, default=None, help="lambda_u, on the user factors")
    hp.add_argument("--reg-positive", type=float, default=None, help="lambda_i, on the positive item's factors")
    hp.add_argument("--reg-negative", type=float, default=None, help="lambda_j, on the negative item's factors")
    hp.add_argument("--reg-bias", type=float, default=None, help="lambda_b, on the item biases")
    hp.add_argument("--loss", choices=LOSSES, default=None)
    hp.add_argument("--sampler", choices=SAMPLERS,
                    default=None, help="negative sampler (default uniform; see bpr_numpy.sampling)")
    hp.add_argument("--popularity-exponent", type=float, default=None, metavar="ALPHA",
                    help="exponent of the popularity samplers (default 1)")
    hp.add_argument("--dns-candidates", type=_positive_int, default=None, metavar="K",
                    help="candidates per draw of the dns sampler (default 5)")
    hp.add_argument("--aobpr-lambda", type=float, default=None, metavar="FRACTION",
                    help="aobpr's geometric rank scale, as a fraction of the items (default 0.05)")
    hp.add_argument("--max-sampled", type=_positive_int, default=None, metavar="N",
                    help="WARP's draws per positive (default 10)")
    hp.add_argument("--optimizer", choices=OPTIMIZERS, default=None)
    hp.add_argument("--lr-decay", type=float, default=None, metavar="GAMMA",
                    help="learning rate multiplied by GAMMA after each epoch (default 1)")
    hp.add_argument("--user-run", type=_positive_int, default=None, metavar="N",
                    help="consecutive samples drawn for one user (default 16)")
    hp.add_argument("--item-bias", dest="item_bias", action=argparse.BooleanOptionalAction, default=True,
                    help="learn an item bias (default on)")
    hp.add_argument("--init-std", type=float, default=None, help="std of the initial factors (default 1/sqrt(factors))")
    hp.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    hp.add_argument("--threads", type=_nonneg_int, default=0, help="0: all cores (default); 1: reproducible")
    hp.add_argument("--seed", type=_nonneg_int, default=0, help="seeds the model and the data split (default 0)")
    train.add_argument("-k", type=_positive_int, default=10, help="cut-off of the top-k metrics (default 10)")
    train.add_argument("--validate-every", type=_positive_int, default=None, metavar="N",
                       help="carve 10%% of the training positives out as a validation set and evaluate --metric "
                            "every N epochs; the best epoch's factors are kept")
    train.add_argument("--patience", type=_positive_int, default=None, metavar="P",
                       help="with validation: stop P epochs after the best one (implies --validate-every 1)")
    train.add_argument("--metric", default="ndcg@10", help="validation metric (default ndcg@10)")
    train.add_argument("--save", metavar="PATH", help="write the trained model to this .npz file")
    train.add_argument("--quiet", action="store_true", help="no per-epoch lines")

    evaluate = sub.add_parser("evaluate", help="held-out metrics of a saved model on the split it was trained against")
    evaluate.add_argument("model", help="a .npz file written by train --save or BPR.save")
    _add_data_options(evaluate, evaluate=True)
    evaluate.add_argument("--seed", type=_nonneg_int, default=None,
                          help="seed of the split (and of the synthetic data) (default: the model's random_state, as train --seed sets it, else 0)")
    evaluate.add_argument("-k", type=_positive_int, default=10, help="cut-off of the top-k metrics (default 10)")
    evaluate.add_argument("--json", action="store_true", help="print one JSON object instead of the table")

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
    bench.add_argument("--nnz", type=_positive_int, default=None, metavar="N",
                       help="train on N synthetic power-law pairs (datasets.synthetic) instead of the built-in set")
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


_DATASETS = ("ml-100k", "ml-1m", "ml-10m", "ml-20m", "ml-25m")
_OFFICIAL_SPLITS = ("ua", "ub", "u1", "u2", "u3", "u4", "u5")
_SPLITS = _OFFICIAL_SPLITS + ("leave-k-out", "random")
_DELIMITERS = {"csv": ",", "tsv": "\t", "dat": "::", "auto": None}
_ML_FILES = ("u.data", "ratings.dat", "ratings.csv")


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
    out = []
    for role in roles:
        if role in ("", "-", "_", "skip", "none"):
            out.append(None)
        elif role in ("user", "item", "rating", "timestamp"):
            out.append(role)
        else:
            raise argparse.ArgumentTypeError(
                f"unknown column role {role!r}; use user, item, rating, timestamp or - (skip), e.g. user,item,rating")
    if "user" not in out or "item" not in out:
        raise argparse.ArgumentTypeError(f"--columns needs a user and an item column, got {text!r}")
    return out


def _add_data_options(p: argparse.ArgumentParser, *, evaluate: bool = False) -> None:
    """Options choosing the data and its train/test split: shared by train and evaluate (same split)."""
    g = p.add_argument_group("data (the same options rebuild the same split in evaluate)")
    source = g.add_mutually_exclusive_group(required=evaluate)
    source.add_argument("--data", metavar="PATH",
                        help="a MovieLens folder or .zip (any release), a LightGCN folder with train.txt/test.txt, "
                             "or a delimited file of user,item[,rating[,timestamp]] rows")
    source.add_argument("--dataset", choices=_DATASETS,
                        help="a MovieLens release from the local cache ($BPR_NUMPY_DATA, else ~/.cache/bpr_numpy); "
                             "--download fetches it")
    source.add_argument("--movielens", metavar="PATH",
                        help="a MovieLens 100k folder or zip: the same as --data PATH --split ua")
    if evaluate:
        source.add_argument("--synthetic", action="store_true",
                            help="the built-in synthetic data set and the seeded split train uses")
    g.add_argument("--download", action="store_true", help="with --dataset: download it when not cached")
    g.add_argument("--format", dest="data_format", choices=list(_DELIMITERS), default=None,
                   help="delimited file format (default auto: detected from the first line)")
    g.add_argument("--columns", type=_columns, default=None, metavar="ROLES",
                   help="roles of the fields of a delimited file, e.g. user,item,rating,timestamp (- skips one); "
                        "default: from the header, else user,item[,rating[,timestamp]]")
    g.add_argument("--min-rating", type=float, default=None, metavar="R",
                   help="ratings >= R are positives (default: 4 for MovieLens, every row for other files)")
    g.add_argument("--split", choices=_SPLITS, default=None,
                   help="ua/ub/u1..u5: the official MovieLens 100k splits (default for ML-100k); random (default "
                        "otherwise); leave-k-out; LightGCN folders use their own test.txt")
    g.add_argument("--test-fraction", type=_fraction, default=0.2, metavar="F",
                   help="--split random: fraction of pairs held out (default 0.2)")
    g.add_argument("--leave-k", type=_positive_int, default=1, metavar="K",
                   help="--split leave-k-out: pairs held out per user (default 1)")
    g.add_argument("--leave-strategy", choices=["random", "latest"], default="random",
                   help="--split leave-k-out: which pairs (latest needs timestamps)")


class _Data:
    """A loaded train/test split: ``name`` describes it; ``train``/``test`` are Interactions in one id space."""

    def __init__(self, name: str, train, test, seeded: bool) -> None:
        self.name, self.train, self.test, self.seeded = name, train, test, seeded


def _cached_dataset(name: str, download: bool) -> str:
    """Path of ``--dataset NAME`` in the cache (a .zip or an unpacked folder); downloads only with --download."""
    from . import datasets

    home = datasets.data_home()
    folders = [name] + (["ml-10M100K"] if name == "ml-10m" else [])
    for candidate in [home / f"{name}.zip"] + [home / f for f in folders]:
        if candidate.exists():
            return str(candidate)
    if not download:
        raise CLIError(f"{name} is not in the data cache {home} (no {name}.zip or {name}/ there): run again with "
                       f"--download to fetch it from GroupLens, or pass --data /path/to/{name} (the folder or .zip); "
                       f"set BPR_NUMPY_DATA to use another cache folder")
    print(f"downloading {name} into {home} ...", file=sys.stderr, flush=True)
    return str(datasets.fetch_movielens(name))


def _split(data, args, seed: int, what: str):
    """Split one Interactions by --split (random/leave-k-out); official names are refused."""
    from . import datasets

    split = args.split or "random"
    if split in _OFFICIAL_SPLITS:
        raise CLIError(f"--split {split} is an official MovieLens 100k split, and {what} has none: "
                       "use --split random or --split leave-k-out")
    if split == "random":
        train, test = datasets.split_random(data, test_fraction=args.test_fraction, random_state=seed)
        how = f"random split, {args.test_fraction:g} held out, seed {seed}"
    else:
        train, test = datasets.split_leave_k_out(data, k=args.leave_k, strategy=args.leave_strategy,
                                                 random_state=seed)
        how = f"leave-{args.leave_k}-out split ({args.leave_strategy}), seed {seed}"
    return train, test, how


def _load_data(args, seed: int) -> _Data:
    """Load the data and build the train/test split the options describe.

    ``train`` and ``evaluate`` both call this, so ``evaluate`` rebuilds exactly the split ``train`` used.
    """
    from . import datasets

    path = getattr(args, "data", None)
    split = args.split
    expected = None
    if getattr(args, "movielens", None):
        path, split, expected = args.movielens, split or "ua", "ml-100k"
    elif getattr(args, "dataset", None):
        path, expected = _cached_dataset(args.dataset, args.download), args.dataset
    elif args.download:
        raise CLIError("--download needs --dataset NAME (one of " + ", ".join(_DATASETS) + ")")
    delimited_opts = args.data_format is not None or args.columns is not None
    if path is None:
        if delimited_opts:
            raise CLIError("--format/--columns describe a delimited file: pass it with --data PATH")
        data = datasets.synthetic_small(random_state=seed)
        train, test, how = _split(data, args, seed, "the built-in synthetic data")
        return _Data(f"built-in synthetic data ({data.n_users} users x {data.n_items} items, {data.nnz} pairs); "
                     f"{how}", train, test, True)

    if not os.path.exists(path):
        raise CLIError(f"{path} does not exist" + (" (expected a MovieLens 100k folder or zip)" if expected else ""))
    import zipfile

    is_container = os.path.isdir(path) or zipfile.is_zipfile(path)
    release = None
    if is_container:
        release, listing = datasets.detect_release(path)
    if expected is not None:
        found = release if release != "ml-csv" or expected not in ("ml-20m", "ml-25m") else expected
        if found != expected:
            what = datasets.RELEASES.get(release, f"no MovieLens or LightGCN files (it holds: {listing})"
                                      if is_container else "a single file, not a folder or .zip")
            raise CLIError(f"{path} is not {expected}: expected {datasets.release_files(expected)} in the folder or zip "
                           f"(top level or one folder down), found {what}")
    if is_container and release is None:
        if zipfile.is_zipfile(path) and not os.path.isdir(path) and delimited_opts:
            release = "delimited"
        else:
            raise CLIError(f"{path}: expected a MovieLens folder or zip (u.data, ratings.dat or ratings.csv) or a "
                           f"LightGCN folder (train.txt and test.txt), top level or one folder down; "
                           f"it holds: {listing}")
    if release in ("lightgcn", "ml-100k", "ml-1m", "ml-10m", "ml-csv") and delimited_opts:
        raise CLIError(f"--format/--columns describe a delimited file, but {path} holds "
                       f"{datasets.RELEASES[release]}: drop them")
    min_rating = args.min_rating

    if release == "lightgcn":
        if split is not None:
            raise CLIError(f"{path} is a LightGCN folder: it brings its own train/test split (test.txt); "
                           f"drop --split {split}")
        if min_rating is not None:
            raise CLIError("--min-rating does not apply to LightGCN data (no ratings)")
        train, test = datasets.load_lightgcn(path)
        return _Data(f"LightGCN split ({path}: train.txt/test.txt)", train, test, False)
    if release is None or release == "delimited":
        data = datasets.load_delimited(path, delimiter=_DELIMITERS[args.data_format or "auto"],
                                       columns=args.columns, min_rating=min_rating)
        train, test, how = _split(data, args, seed, f"the delimited file {path}")
        return _Data(f"{path} ({data.n_users} users x {data.n_items} items, {data.nnz} pairs); {how}",
                     train, test, True)
    min_rating = 4.0 if min_rating is None else min_rating
    if release == "ml-100k":
        split = split or "ua"
        if split in _OFFICIAL_SPLITS:
            train, test = datasets.load_movielens_100k(path, split=split, min_rating=min_rating)
            return _Data(f"MovieLens 100k {split} split ({path}), ratings >= {min_rating:g}", train, test, False)
        data = datasets.load_movielens_100k(path, min_rating=min_rating)
        train, test, how = _split(data, args, seed, "MovieLens 100k")
        return _Data(f"MovieLens 100k ({path}), ratings >= {min_rating:g}; {how}", train, test, True)
    data = datasets.load_movielens(path, min_rating=min_rating)
    label = expected or next((n[len("MovieLens release detected: "):] for n in data.summary.notes
                              if n.startswith("MovieLens release detected: ")), "MovieLens")
    train, test, how = _split(data, args, seed, f"{label} (only MovieLens 100k ships official splits)")
    return _Data(f"{label} ({path}; {data.n_users} users x {data.n_items} items, {data.nnz} positives), "
                 f"ratings >= {min_rating:g}; {how}", train, test, True)


def _print_metrics(result: dict) -> None:
    print(f"held-out metrics over {result['n_users']} users (train positives excluded from rankings):")
    for key, value in result.items():
        if key != "n_users" and isinstance(value, float):
            print(f"  {key:>14s}  {value:.4f}")


def _format_duration(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    h, rest = divmod(seconds, 3600)
    m, sec = divmod(rest, 60)
    return f"{h}:{m:02d}:{sec:02d}" if h else f"{m}:{sec:02d}"


def format_progress(report, total: int, elapsed: float) -> str:
    """The live progress line of a terminal: epoch/total, loss, ordered fraction, validation metric when
    present, samples/s, and the ETA from the mean epoch time so far (``elapsed`` seconds over ``report.epoch``)."""
    parts = [f"epoch {report.epoch}/{total}", f"loss {report.loss:.4f}", f"ordered {report.ordered_fraction:.4f}"]
    if report.validation is not None:
        parts.append(f"{report.metric} {report.validation:.4f}")
    parts.append(f"{report.samples_per_second / 1e6:.2f} M samples/s")
    remaining = max(0, total - report.epoch)
    eta = elapsed / max(1, report.epoch) * remaining
    parts.append(f"ETA {_format_duration(eta)}" if remaining else f"done in {_format_duration(elapsed)}")
    return "  ".join(parts)


class _Progress:
    """Per-epoch output: one line rewritten in place on a terminal, one log line per epoch otherwise."""

    def __init__(self, total: int, quiet: bool, stream=None) -> None:
        self.stream = sys.stdout if stream is None else stream
        self.total, self.quiet = total, quiet
        self.live = not quiet and _isatty(self.stream)
        self.start = time.perf_counter()
        self.width = 0
        self.open = False

    def __call__(self, report) -> None:
        if self.quiet:
            return
        if not self.live:
            print(f"{report}  [{report.epoch}/{self.total}]", file=self.stream, flush=True)
            return
        line = format_progress(report, self.total, time.perf_counter() - self.start)
        pad = " " * max(0, self.width - len(line))
        self.width = len(line)
        self.stream.write("\r" + line + pad)
        self.open = True
        if report.epoch >= self.total:
            self.finish()
        self.stream.flush()

    def finish(self) -> None:
        """End the live line (after the last epoch, early stopping or an interruption)."""
        if self.open:
            self.stream.write("\n")
            self.stream.flush()
            self.open = False


def _isatty(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def _model_params(args) -> dict:
    """BPR constructor arguments from the train options (unset ones keep BPR's defaults)."""
    import numpy as np

    from .model import BPR

    params = {k: v for k, v in dict(factors=args.factors, epochs=args.epochs, learning_rate=args.learning_rate,
                                    loss=args.loss, user_run=args.user_run, init_std=args.init_std,
                                    sampler=args.sampler, popularity_exponent=args.popularity_exponent,
                                    dns_candidates=args.dns_candidates, aobpr_lambda=args.aobpr_lambda,
                                    max_sampled=args.max_sampled, optimizer=args.optimizer,
                                    learning_rate_decay=args.lr_decay).items()
              if v is not None}
    roles = {"user": args.reg_user, "positive": args.reg_positive, "negative": args.reg_negative,
             "bias": args.reg_bias}
    if any(v is not None for v in roles.values()):
        base = args.regularization
        if base is None:
            base = BPR.__init__.__defaults__[1]  # regularization's default
        params["regularization"] = {role: base if v is None else v for role, v in roles.items()}
    elif args.regularization is not None:
        params["regularization"] = args.regularization
    params.update(item_bias=args.item_bias, dtype=np.dtype(args.dtype).type, threads=args.threads,
                  random_state=args.seed)
    return params


def _train(args) -> int:
    from . import metrics
    from .model import BPR

    model = BPR(**_model_params(args))  # invalid hyperparameters fail before any data is read
    data = _load_data(args, args.seed)
    train, test = data.train.matrix, data.test.matrix
    print(f"data: {data.name}")
    print(f"train: {train.nnz} positives, held out: {test.nnz}; {model!r}", flush=True)
    start = time.perf_counter()
    progress = _Progress(model.epochs, args.quiet)

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
    try:
        model.fit(train_for_fit, callback=progress, show_progress=False, **fit_kwargs)
    except KeyboardInterrupt:
        progress.finish()
        # The model holds its last completed epoch (BPR.fit restored it): keep it if asked to.
        if args.save and model.history_:
            model.user_ids, model.item_ids = data.train.user_ids, data.train.item_ids
            model.item_titles = data.train.item_titles
            model.save(args.save)
            print(f"interrupted: saved the model of epoch {len(model.history_)} to {args.save}", file=sys.stderr)
        raise
    finally:
        progress.finish()
    seconds = time.perf_counter() - start
    kernel = sum(r.seconds for r in model.history_)
    print(f"trained {len(model.history_)} epochs in {seconds:.2f} s ({kernel:.2f} s in the SGD kernel; the rest is "
          "validation, and numba compilation on the very first run)")
    if model.best_epoch_ is not None:
        print(f"kept the factors of epoch {model.best_epoch_} ({args.metric} {model.best_score_:.4f} on validation)")
    result = metrics.evaluate(model, train, test, k=args.k)
    _print_metrics(result)
    # Keep the data's own ids (and titles) in the model file, so that recommend
    # and similar answer in them rather than in row/column indices.
    model.user_ids, model.item_ids = data.train.user_ids, data.train.item_ids
    model.item_titles = data.train.item_titles
    if args.save:
        model.save(args.save)
        print(f"saved {args.save}")
    return 0


def _load_model(path: str):
    from .model import BPR

    if not os.path.exists(path):
        raise CLIError(f"model file not found: {path} (write one with: bpr-numpy train --save {path})")
    if os.path.isdir(path):
        raise CLIError(f"{path} is a folder, not a model file")
    import zipfile

    if not zipfile.is_zipfile(path):
        # np.load would try to unpickle a non-archive and say so, which misleads.
        raise CLIError(f"{path} is not a bpr_numpy model file (not an .npz archive; write one with train --save)")
    return BPR.load(path)  # raises a ValueError naming the problem for foreign or other-version files


def _json_value(value: Any) -> Any:
    """Plain JSON (no NaN/inf tokens, which strict parsers reject): non-finite floats become null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _evaluate(args) -> int:
    from . import metrics

    model = _load_model(args.model)
    seed = args.seed
    if seed is None:
        # train stores its --seed as the model's random_state: the split follows it.
        rs = model.random_state
        seed = int(rs) if isinstance(rs, (int,)) and not isinstance(rs, bool) else 0
    data = _load_data(args, seed)
    train, test = data.train.matrix, data.test.matrix
    if train.shape != (model.n_users, model.n_items):
        raise CLIError(f"the model has {model.n_users} users x {model.n_items} items but {data.name} has "
                       f"{train.shape[0]} x {train.shape[1]}: evaluate on the data it was trained on")
    result = metrics.evaluate(model, train, test, k=args.k)
    if args.json:
        out = {"model": args.model, "data": data.name, "k": args.k}
        if data.seeded:
            out["seed"] = seed
        out.update({key: _json_value(value) for key, value in result.items()})
        print(json.dumps(out, indent=2))
    else:
        print(f"model: {args.model}; data: {data.name}")
        _print_metrics(result)
    return 0


class _IdMap:
    """Raw id <-> index for one side (users or items) of a loaded model."""

    def __init__(self, ids, n: int, role: str) -> None:
        import numpy as np

        self.role = role
        # Files written without maps: the raw id is the row/column index itself.
        self.fallback = ids is None
        self.ids = np.arange(n, dtype=np.int64) if ids is None else ids
        self.numeric = self.ids.dtype.kind in "iu"
        keys = self.ids.tolist() if self.numeric else [str(v) for v in self.ids]
        self.index = {key: pos for pos, key in enumerate(keys)}

    def lookup(self, text: str) -> int:
        """Index of a raw id given as text; CLIError with near ids when unknown."""
        text = text.strip()
        kind = "index" if self.fallback else "id"
        if self.numeric:
            try:
                key: Any = int(text)
            except ValueError:
                raise CLIError(f"{self.role} {kind} must be an integer, got {text!r}") from None
        else:
            key = text
        if key in self.index:
            return self.index[key]
        raise CLIError(f"unknown {self.role} {kind} {text!r} ({len(self.ids)} {self.role}s in the model)"
                       + self._suggest(key))

    def _suggest(self, key: Any) -> str:
        if self.numeric:
            import numpy as np

            order = np.argsort(np.abs(self.ids.astype(np.float64) - float(key)), kind="stable")[:3]
            near = [str(v) for v in self.ids[np.sort(order)]]
        else:
            near = difflib.get_close_matches(str(key), list(self.index), n=3, cutoff=0.5)
        return f"; did you mean {', '.join(near)}?" if near else ""

    def raw(self, index: int) -> Any:
        value = self.ids[index]
        return int(value) if self.numeric else str(value)


def _read_ids(path: str) -> list[str]:
    if not os.path.isfile(path):
        raise CLIError(f"users file not found: {path}")
    with open(path, encoding="utf-8") as fh:
        ids = [line.strip() for line in fh if line.strip() and not line.lstrip().startswith("#")]
    if not ids:
        raise CLIError(f"{path} holds no user ids (expected one per line)")
    return ids


def _emit(rows: list[dict], key: str, fmt: str, titles: bool, header=None) -> None:
    """Print result rows grouped by ``key`` (the query id) in the chosen format."""
    import csv

    if fmt == "json":
        groups: dict = {}
        for row in rows:
            groups.setdefault(row[key], []).append({k: v for k, v in row.items() if k != key})
        print(json.dumps([{key: q, "results": items} for q, items in groups.items()], indent=2, ensure_ascii=False))
    elif fmt == "csv":
        fields = [key, "rank", "item", "score"] + (["title"] if titles else [])
        writer = csv.DictWriter(sys.stdout, fieldnames=fields, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    else:
        current = object()
        for row in rows:
            if row[key] != current:
                current = row[key]
                print(f"{key} {current}:" if header is None else header(current))
            line = f"  {row['rank']:3d}  {str(row['item']):>10s}  {row['score']:9.4f}"
            print(line + (f"  {row['title']}" if titles else ""))


def _fallback_note(maps: list[_IdMap]) -> None:
    for m in maps:
        if m.fallback:
            print(f"note: the model file has no {m.role} id map (saved without one); {m.role} ids are "
                  f"{'row' if m.role == 'user' else 'column'} indices 0..{len(m.ids) - 1}", file=sys.stderr)


def _recommend(args) -> int:
    model = _load_model(args.model)
    users, items = _IdMap(model.user_ids, model.n_users, "user"), _IdMap(model.item_ids, model.n_items, "item")
    _fallback_note([users, items])
    raw = [args.user] if args.user is not None else _read_ids(args.users_file)
    rows_idx = [users.lookup(text) for text in raw]
    filter_liked = not args.include_liked
    if filter_liked and model.user_items is None:  # saved with include_interactions=False
        print("note: the model file holds no training interactions; liked items are not filtered", file=sys.stderr)
        filter_liked = False
    top, scores = model.recommend(rows_idx, n=args.n, filter_liked=filter_liked)
    titles = model.item_titles is not None
    out = []
    for u, item_row, score_row in zip(rows_idx, top, scores):
        rank = 0
        for i, s in zip(item_row, score_row):
            if i < 0:  # padding: fewer candidates than n
                continue
            rank += 1
            row = {"user": users.raw(u), "rank": rank, "item": items.raw(int(i)), "score": round(float(s), 6)}
            if titles:
                row["title"] = str(model.item_titles[i])
            out.append(row)
    _emit(out, "user", args.format, titles)
    return 0


def _similar(args) -> int:
    model = _load_model(args.model)
    items = _IdMap(model.item_ids, model.n_items, "item")
    _fallback_note([items])
    q = items.lookup(args.item)
    nb, sims = model.similar_items(q, n=args.n)
    titles = model.item_titles is not None
    out = []
    for rank, (i, s) in enumerate(zip(nb, sims), start=1):
        row = {"similar_to": items.raw(q), "rank": rank, "item": items.raw(int(i)), "score": round(float(s), 6)}
        if titles:
            row["title"] = str(model.item_titles[i])
        out.append(row)
    title = f" ({model.item_titles[q]})" if titles else ""
    _emit(out, "similar_to", args.format, titles,
          header=lambda query: f"items similar to {query}{title} (cosine of item factors):")
    return 0


def _bench(args) -> int:
    from . import datasets
    from ._runtime import available_threads
    from .model import BPR

    if args.nnz is None:
        data = datasets.synthetic_small(random_state=args.seed)
    else:
        # Keep the density of datasets.synthetic's defaults (100 pairs per user, 2:1 users:items).
        n_users = max(10, args.nnz // 50)
        data = datasets.synthetic(n_users=n_users, n_items=max(10, n_users // 2), nnz=args.nnz,
                                  random_state=args.seed)
    threads = args.threads or available_threads()
    print(f"data: {data.n_users} users x {data.n_items} items, {data.nnz} pairs; factors {args.factors}, "
          f"{args.epochs} epochs")
    for t in sorted({1, threads}):
        model = BPR(factors=args.factors, epochs=args.epochs, threads=t, random_state=args.seed)
        model.fit(data.matrix, show_progress=False)  # numba compiles outside the epoch timers
        rates = [r.samples_per_second / 1e6 for r in model.history_]
        print(f"threads {t}: " + "  ".join(f"{r:.2f}" for r in rates)
              + f" M samples/s per epoch (best {max(rates):.2f})", flush=True)
    print("the comparison with implicit, cornac and LightFM on the same data is benchmarks/peers.py "
          "(pip install -e '.[bench]')")
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
    with _interrupt_once():
        return _run(args)


def _interrupt_once_handler(signum, frame):
    # Ignore further Ctrl-Cs before raising: the first one's handling (restoring the last
    # completed epoch, saving it with --save, the message) then always finishes and exits 130,
    # where a second Ctrl-C inside it would escape and end the process with status -2.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    raise KeyboardInterrupt


@contextmanager
def _interrupt_once():
    """Within the block, the first Ctrl-C raises KeyboardInterrupt and later ones are ignored."""
    if threading.current_thread() is not threading.main_thread() or \
            signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        yield  # signals are the main thread's; a host program's own handler is left alone
        return
    signal.signal(signal.SIGINT, _interrupt_once_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def _run(args) -> int:
    try:
        return {"train": _train, "gradcheck": _gradcheck, "evaluate": _evaluate, "recommend": _recommend,
                "similar": _similar, "bench": _bench}[args.command](args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # stdout closed early (e.g. piped into head): not an error worth a message
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except (OSError, ValueError):
            pass
        return 1
    except (CLIError, ValueError, TypeError, OSError, FloatingPointError, RuntimeError) as exc:
        if args.debug:
            raise
        print(f"bpr-numpy {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except MemoryError as exc:  # data or settings too large for this machine: the user's to change
        if args.debug:
            raise
        print(f"bpr-numpy {args.command}: error: out of memory{': ' + str(exc) if str(exc) else ''} (a smaller "
              "data set, fewer --factors, or a machine with more memory)", file=sys.stderr)
        return 1
    except Exception as exc:  # a bug: still one line, the traceback with --debug
        if args.debug:
            raise
        print(f"bpr-numpy {args.command}: internal error: {type(exc).__name__}: {exc} (run with --debug for the "
              "traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
