"""Command line: ``bpr-numpy`` (console script) and ``python -m bpr_numpy``.

Sub-commands:

* ``train``: fit BPR on the built-in synthetic data set (or a MovieLens 100k
  folder with ``--movielens``), print one line per epoch and the held-out
  metrics; ``--save`` writes the model.
* ``gradcheck``: run the finite-difference oracle on a random problem and print
  the max relative error per parameter block; exit status 1 above tolerance.
* ``evaluate``: the held-out metrics of a saved model on the split it was
  trained against (``--movielens PATH`` or ``--synthetic``); ``--json``.
* ``recommend``: top items for users given by their raw ids (``--user`` or
  ``--users-file``), liked items filtered, with titles when the model has them.
* ``similar``: nearest items by cosine of the item factors.
* ``bench``: a short local throughput run at 1 and ``--threads`` threads.

Exit status: 0 success, 1 failure (including unknown ids and unreadable model
files), 2 usage error. No traceback unless ``--debug``.
"""

from __future__ import annotations

import argparse
import difflib
import json
import math
import os
import sys
import time
from typing import Any, Sequence

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
        description="Bayesian Personalized Ranking: train, evaluate, recommend, benchmark, check gradients.",
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

    evaluate = sub.add_parser("evaluate", help="held-out metrics of a saved model on the split it was trained against")
    evaluate.add_argument("model", help="a .npz file written by train --save or BPR.save")
    source = evaluate.add_mutually_exclusive_group(required=True)
    source.add_argument("--movielens", metavar="PATH", help="MovieLens 100k folder or zip: the ua split, ratings >= 4")
    source.add_argument("--synthetic", action="store_true",
                        help="the built-in synthetic data set and the seeded split train uses")
    evaluate.add_argument("--seed", type=_nonneg_int, default=None,
                          help="seed of the synthetic data and split (default: the model's random_state, else 0)")
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
    grad.add_argument("--loss", choices=["bpr", "sigmoid"], default="bpr")
    grad.add_argument("--no-item-bias", action="store_true")
    grad.add_argument("--scale", type=float, default=1.0, help="std of the random factors (|x_uij| grows with it)")
    grad.add_argument("--seed", type=_nonneg_int, default=0)
    grad.add_argument("--tolerance", type=float, default=None)
    return parser


def _load_training_data(args, seed: int | None = None):
    """Return (name, train, test, train_interactions); train and test are aligned CSR matrices.

    ``evaluate`` calls this too, so that it rebuilds exactly the split ``train`` used.
    """
    from . import datasets

    seed = args.seed if seed is None else seed
    if args.movielens:
        try:
            train, test = datasets.load_movielens_100k(args.movielens, split="ua", min_rating=4.0)
        except FileNotFoundError as exc:
            raise CLIError(f"MovieLens 100k not found: {exc}") from None
        return f"MovieLens 100k ua split ({args.movielens})", train.matrix, test.matrix, train
    data = datasets.synthetic_small(random_state=seed)
    train, test = datasets.split_random(data, test_fraction=0.2, random_state=seed)
    return (f"built-in synthetic data ({data.n_users} users x {data.n_items} items, {data.nnz} pairs)",
            train.matrix, test.matrix, train)


def _print_metrics(result: dict) -> None:
    print(f"held-out metrics over {result['n_users']} users (train positives excluded from rankings):")
    for key, value in result.items():
        if key != "n_users" and isinstance(value, float):
            print(f"  {key:>14s}  {value:.4f}")


def _train(args) -> int:
    import numpy as np

    from . import metrics
    from .model import BPR

    name, train, test, train_data = _load_training_data(args)
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
    _print_metrics(result)
    # Keep the data's own ids (and titles) in the model file, so that recommend
    # and similar answer in them rather than in row/column indices.
    model.user_ids, model.item_ids = train_data.user_ids, train_data.item_ids
    model.item_titles = train_data.item_titles
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
    if seed is None and not args.movielens:
        # train stores its --seed as the model's random_state: the split follows it.
        rs = model.random_state
        seed = int(rs) if isinstance(rs, int) else 0
    name, train, test, _ = _load_training_data(args, seed=0 if seed is None else seed)
    if train.shape != (model.n_users, model.n_items):
        raise CLIError(f"the model has {model.n_users} users x {model.n_items} items but {name} has "
                       f"{train.shape[0]} x {train.shape[1]}: evaluate on the data it was trained on")
    result = metrics.evaluate(model, train, test, k=args.k)
    if args.json:
        out = {"model": args.model, "data": name, "k": args.k}
        if not args.movielens:
            out["seed"] = seed
        out.update({key: _json_value(value) for key, value in result.items()})
        print(json.dumps(out, indent=2))
    else:
        print(f"model: {args.model}; data: {name}" + ("" if args.movielens else f", seed {seed}"))
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
    from .model import BPR, _available_threads

    if args.nnz is None:
        data = datasets.synthetic_small(random_state=args.seed)
    else:
        # Keep the density of datasets.synthetic's defaults (100 pairs per user, 2:1 users:items).
        n_users = max(10, args.nnz // 50)
        data = datasets.synthetic(n_users=n_users, n_items=max(10, n_users // 2), nnz=args.nnz,
                                  random_state=args.seed)
    threads = args.threads or _available_threads()
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
    try:
        return {"train": _train, "gradcheck": _gradcheck, "evaluate": _evaluate, "recommend": _recommend,
                "similar": _similar, "bench": _bench}[args.command](args)
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
