"""What each sub-command does: ``train``, ``evaluate``, ``tune``, ``recommend``, ``similar``, ``bench``, ``gradcheck``.

Each takes the parsed arguments and returns the exit status; failures are
raised (:class:`~._errors.CLIError` for the user's mistakes) and reported in
one line by :mod:`._errors`. The model, the metrics and the data sets are
imported inside the commands, so that building the parser stays cheap.
"""

from __future__ import annotations

import json
import os
import sys
import time

from ._data import _load_data
from ._errors import CLIError
from ._ids import _fallback_note, _IdMap, _read_ids
from ._output import _emit, _json_value, _print_metrics, _Progress


def _model_params(args) -> dict:
    """BPR constructor arguments from the train options (unset ones keep BPR's defaults)."""
    import numpy as np

    from ..model import BPR

    params = {
        k: v
        for k, v in dict(
            factors=args.factors,
            epochs=args.epochs,
            learning_rate=args.learning_rate,
            loss=args.loss,
            user_run=args.user_run,
            init_std=args.init_std,
            sampler=args.sampler,
            popularity_exponent=args.popularity_exponent,
            dns_candidates=args.dns_candidates,
            n_negatives=args.n_negatives,
            aobpr_lambda=args.aobpr_lambda,
            max_sampled=args.max_sampled,
            optimizer=args.optimizer,
            learning_rate_decay=args.lr_decay,
            solver=args.solver,
            batch_size=args.batch_size,
            init=args.init,
        ).items()
        if v is not None
    }
    roles = {"user": args.reg_user, "positive": args.reg_positive, "negative": args.reg_negative, "bias": args.reg_bias}
    if any(v is not None for v in roles.values()):
        base = args.regularization
        if base is None:
            defaults = BPR.__init__.__defaults__
            assert defaults is not None
            base = defaults[1]  # regularization's default
        params["regularization"] = {role: base if v is None else v for role, v in roles.items()}
    elif args.regularization is not None:
        params["regularization"] = args.regularization
    params.update(
        item_bias=args.item_bias, dtype=np.dtype(args.dtype).type, threads=args.threads, random_state=args.seed
    )
    return params


def _kernels_not_cached() -> bool:
    """Whether numba's cache holds no compiled epoch kernel yet: the first run on this machine.

    Read from numba's on-disk index of the kernel (private to numba, hence the guard: on any
    surprise, say nothing rather than fail).
    """
    try:
        from .._kernels import _epoch

        return not _epoch._run_chunks._cache._cache_file._load_index()
    except Exception:  # a hint only: say nothing rather than fail
        return False


def _train(args) -> int:
    from .. import metrics
    from ..model import BPR

    model = BPR(**_model_params(args))  # invalid hyperparameters fail before any data is read
    data = _load_data(args, args.seed)
    train, test = data.train.matrix, data.test.matrix
    print(f"data: {data.name}")
    print(f"train: {train.nnz} positives, held out: {test.nnz}; {model!r}", flush=True)
    start = time.perf_counter()
    progress = _Progress(model.epochs, args.quiet)

    fit_kwargs = {}
    if args.validate_every is not None or args.patience is not None:
        from ..datasets import Interactions, split_random

        fit_part, valid = split_random(Interactions.from_csr(train), test_fraction=0.1, random_state=args.seed)
        train_for_fit = fit_part.matrix
        fit_kwargs = dict(
            validation=(train_for_fit, valid.matrix),
            metric=args.metric,
            patience=args.patience,
            validate_every=args.validate_every or 1,
        )
        print(
            f"validation: {valid.nnz} of the training positives held out; {args.metric} every "
            f"{fit_kwargs['validate_every']} epoch(s)" + (f", patience {args.patience}" if args.patience else "")
        )
    else:
        train_for_fit = train
    if sys.stderr.isatty() and _kernels_not_cached():
        print(
            "compiling the training kernels once (a few seconds; numba caches them for later runs) ...",
            file=sys.stderr,
            flush=True,
        )
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
    print(
        f"trained {len(model.history_)} epochs in {seconds:.2f} s ({kernel:.2f} s in the SGD kernel; the rest is "
        "validation, and numba compilation on the very first run)"
    )
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


def _read_space(path: str) -> dict:
    """The search space of ``tune --space FILE`` (JSON), checked against BPR's parameters now, before any data."""
    from .. import tuning
    from ..tuning._space import _resolve_space

    try:
        with open(path, encoding="utf-8") as fh:
            obj = json.load(fh)
    except json.JSONDecodeError as exc:
        raise CLIError(f"--space {path}: not valid JSON ({exc})") from None
    try:
        space = tuning.space_from_json(obj)
        _resolve_space(space, {})
    except (TypeError, ValueError) as exc:
        raise CLIError(f"--space {path}: {exc}") from None
    return space


def _tune(args) -> int:
    from .. import tuning
    from .._files import write_text_atomic
    from ..datasets import split_random
    from ..tuning._result import _jsonable
    from ..tuning._tune import _parse_metric

    space = _read_space(args.space) if args.space else None
    _parse_metric(args.metric)  # a misspelt metric fails before the data is read
    data = _load_data(args, args.seed, prefer_validation=True)
    print(f"data: {data.name}")
    if data.validation:
        fit_part, valid = data.train, data.test
        print(f"validation: the held-out file, {valid.nnz} positives; training: {fit_part.nnz} positives")
    else:
        # Score on pairs carved out of the training part: the held-out part is the test set, not looked at.
        fit_part, valid = split_random(data.train, test_fraction=args.validation_fraction, random_state=args.seed)
        print(
            f"validation: {valid.nnz} of the {data.train.nnz} training positives held out "
            f"({args.validation_fraction:g}, seed {args.seed}); the {data.test.nnz} held-out test positives "
            "are not looked at"
        )
    budget = "sized from the budget" if args.arms is None else f"{args.arms} arms"
    print(
        f"search: {args.metric}, {budget}, epochs {args.min_epochs} to {args.max_epochs} (eta {args.eta}), "
        f"budget {args.budget:g} s, seed {args.seed}",
        flush=True,
    )
    result = tuning.tune(
        fit_part,
        valid,
        space=space,
        budget_seconds=args.budget,
        metric=args.metric,
        n_arms=args.arms,
        min_epochs=args.min_epochs,
        max_epochs=args.max_epochs,
        eta=args.eta,
        random_state=args.seed,
        threads=args.threads,
        tolerance=args.tolerance,
        screening_users=args.screening_users or None,
        show_progress=not args.quiet,
    )
    arms = len({t.arm for t in result.trials})
    why = {"done": "schedule complete", "budget": "budget spent", "callback": "stopped"}[result.stopped]
    print(f"searched {arms} arms, {len(result.trials)} checkpoints, in {result.elapsed_seconds:.1f} s ({why})")
    if result.stopped == "done":
        hint = _longer_schedule(arms, args.min_epochs, args.max_epochs, args.eta, result.elapsed_seconds, args.budget)
        if hint:
            print(hint)
    print(result.table(limit=args.top or None))
    if args.top and len(result.trials) > args.top:
        print(f"  ... {len(result.trials) - args.top} more checkpoints (--top 0 shows all)")
    print(f"best: {result.metric} {result.best_score:.4f} at {result.best.epochs} epochs (arm {result.best.arm})")
    text = json.dumps(_jsonable(result.best_params), indent=2)
    print(text)
    if args.output:
        write_text_atomic(args.output, text + "\n")
        print(f"wrote {args.output}", file=sys.stderr)
    return 0


def _longer_schedule(
    arms: int, min_epochs: int, max_epochs: int, eta: int, elapsed: float, budget: float
) -> str | None:
    """A note for a schedule that finished well within its budget: the options of one more rung.

    A complete schedule leaves the rest of the budget unused, and on small data the best settings
    are often those that train longest (MovieLens 100k: 65 s of 900, picks that trained 135
    epochs; with one more rung and three times the arms, 405 epochs and better picks, see
    benchmarks/RESULTS.md). The projection scales the time taken: successive halving spends about
    as much on each rung, and ``eta`` times the arms cost ``eta`` times as much. It runs low (the
    survivors tend to be the dearer settings: MovieLens 100k, 244 s projected, 270-330 s taken
    two searches at a time), so the note needs a third of the budget to spare. None otherwise.
    """
    from ..tuning._halving import _rung_epochs

    rungs = len(_rung_epochs(min_epochs, max_epochs, eta))
    projected = elapsed * eta * (rungs + 1) / rungs
    if projected > budget * 2 / 3:
        return None
    return (
        f"the schedule took {elapsed:.1f} s of the {budget:.1f} s budget: --max-epochs {max_epochs * eta} "
        f"--arms {arms * eta} (one more rung, {eta}x the arms) would take about {projected:.0f} s and "
        "train the best settings longer"
    )


def _load_model(path: str):
    from ..model import BPR

    if not os.path.exists(path):
        raise CLIError(f"model file not found: {path} (write one with: bpr-numpy train --save {path})")
    if os.path.isdir(path):
        raise CLIError(f"{path} is a folder, not a model file")
    import zipfile

    if not zipfile.is_zipfile(path):
        # np.load would try to unpickle a non-archive and say so, which misleads.
        raise CLIError(f"{path} is not a bpr_numpy model file (not an .npz archive; write one with train --save)")
    return BPR.load(path)  # raises a ValueError naming the problem for foreign or other-version files


def _evaluate(args) -> int:
    from .. import metrics

    model = _load_model(args.model)
    seed = args.seed
    if seed is None:
        # train stores its --seed as the model's random_state: the split follows it.
        rs = model.random_state
        seed = int(rs) if isinstance(rs, (int,)) and not isinstance(rs, bool) else 0
    data = _load_data(args, seed)
    train, test = data.train.matrix, data.test.matrix
    if train.shape != (model.n_users, model.n_items):
        raise CLIError(
            f"the model has {model.n_users} users x {model.n_items} items but {data.name} has "
            f"{train.shape[0]} x {train.shape[1]}: evaluate on the data it was trained on"
        )
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
    for u, item_row, score_row in zip(rows_idx, top, scores, strict=True):
        rank = 0
        for i, s in zip(item_row, score_row, strict=True):
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
    for rank, (i, s) in enumerate(zip(nb, sims, strict=True), start=1):
        row = {"similar_to": items.raw(q), "rank": rank, "item": items.raw(int(i)), "score": round(float(s), 6)}
        if titles:
            row["title"] = str(model.item_titles[i])
        out.append(row)
    title = f" ({model.item_titles[q]})" if titles else ""
    _emit(
        out,
        "similar_to",
        args.format,
        titles,
        header=lambda query: f"items similar to {query}{title} (cosine of item factors):",
    )
    return 0


def _bench(args) -> int:
    from .. import datasets
    from .._runtime import available_threads
    from ..model import BPR

    if args.nnz is None:
        data = datasets.synthetic_small(random_state=args.seed)
    else:
        # Keep the density of datasets.synthetic's defaults (100 pairs per user, 2:1 users:items).
        n_users = max(10, args.nnz // 50)
        data = datasets.synthetic(n_users=n_users, n_items=max(10, n_users // 2), nnz=args.nnz, random_state=args.seed)
    threads = args.threads or available_threads()
    print(
        f"data: {data.n_users} users x {data.n_items} items, {data.nnz} pairs; factors {args.factors}, "
        f"{args.epochs} epochs"
    )
    for t in sorted({1, threads}):
        model = BPR(factors=args.factors, epochs=args.epochs, threads=t, random_state=args.seed)
        model.fit(data.matrix, show_progress=False)  # numba compiles outside the epoch timers
        rates = [r.samples_per_second / 1e6 for r in model.history_]
        print(
            f"threads {t}: " + "  ".join(f"{r:.2f}" for r in rates) + f" M samples/s per epoch (best {max(rates):.2f})",
            flush=True,
        )
    print(
        "the comparison with implicit, cornac and LightFM on the same data is benchmarks/peers.py "
        "(pip install -e '.[bench]')"
    )
    return 0


def _gradcheck(args) -> int:
    from ..gradcheck import DEFAULT_TOLERANCE, gradcheck

    if args.items < 2:
        raise CLIError("--items must be at least 2 (a triplet needs two distinct items)")
    result = gradcheck(
        args.users,
        args.items,
        args.factors,
        args.batch,
        loss=args.loss,
        item_bias=not args.no_item_bias,
        scale=args.scale,
        random_state=args.seed,
        tolerance=DEFAULT_TOLERANCE if args.tolerance is None else args.tolerance,
    )
    d = result.details
    print(
        f"finite-difference check: {d['n_users']} users, {d['n_items']} items, {d['factors']} factors, "
        f"batch {d['batch']}, loss {d['loss']}, item bias {'on' if d['item_bias'] else 'off'}, "
        f"max |x_uij| {d['max_abs_x']:.3g}"
    )
    print(result)
    return 0 if result.passed else 1
