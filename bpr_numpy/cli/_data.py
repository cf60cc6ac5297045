"""The data options of ``train`` and ``evaluate``: which data to load and how to split it.

Both commands call :func:`_load_data` with the same options, so ``evaluate``
rebuilds exactly the split ``train`` used. The option choices (releases,
splits, delimiters) are defined here and read by :mod:`._parser`.
"""

from __future__ import annotations

import os
import sys

from ._errors import CLIError

_DATASETS = ("ml-100k", "ml-1m", "ml-10m", "ml-20m", "ml-25m")
_OFFICIAL_SPLITS = ("ua", "ub", "u1", "u2", "u3", "u4", "u5")
_SPLITS = (*_OFFICIAL_SPLITS, "leave-k-out", "random")
_DELIMITERS = {"csv": ",", "tsv": "\t", "dat": "::", "auto": None}


#: The held-out files a LightGCN folder may hold, in the order train/evaluate look for them
#: (tune looks for valid.txt first: a tuner must not score on the test file).
_LIGHTGCN_HOLDOUTS = ("test.txt", "valid.txt")


class _Data:
    """A loaded train/test split: ``name`` describes it; ``train``/``test`` are Interactions in one id space.

    ``validation``: the held-out pairs are a validation file (a LightGCN folder's ``valid.txt`` or
    another file named by ``--holdout-file``, not ``test.txt``), which ``tune`` may score on.
    """

    def __init__(self, name: str, train, test, seeded: bool, validation: bool = False) -> None:
        self.name, self.train, self.test, self.seeded = name, train, test, seeded
        self.validation = validation


def _lightgcn_holdout(path: str, args, prefer_validation: bool) -> str:
    """The held-out file of a LightGCN folder: ``--holdout-file``, else the first of test.txt and
    valid.txt present (valid.txt first with ``prefer_validation``)."""
    if getattr(args, "holdout_file", None):
        return args.holdout_file
    from ..datasets._sources import _Source

    order = _LIGHTGCN_HOLDOUTS[::-1] if prefer_validation else _LIGHTGCN_HOLDOUTS
    with _Source(path) as src:
        return next((name for name in order if src.has(name)), order[0])


def _cached_dataset(name: str, download: bool) -> str:
    """Path of ``--dataset NAME`` in the cache (a .zip or an unpacked folder); downloads only with --download."""
    from .. import datasets

    home = datasets.data_home()
    folders = [name] + (["ml-10M100K"] if name == "ml-10m" else [])
    for candidate in [home / f"{name}.zip"] + [home / f for f in folders]:
        if candidate.exists():
            return str(candidate)
    if not download:
        raise CLIError(
            f"{name} is not in the data cache {home} (no {name}.zip or {name}/ there): run again with "
            f"--download to fetch it from GroupLens, or pass --data /path/to/{name} (the folder or .zip); "
            f"set BPR_NUMPY_DATA to use another cache folder"
        )
    print(f"downloading {name} into {home} ...", file=sys.stderr, flush=True)
    return str(datasets.fetch_movielens(name))


def _split(data, args, seed: int, what: str):
    """Split one Interactions by --split (random/leave-k-out); official names are refused."""
    from .. import datasets

    split = args.split or "random"
    if split in _OFFICIAL_SPLITS:
        raise CLIError(
            f"--split {split} is an official MovieLens 100k split, and {what} has none: "
            "use --split random or --split leave-k-out"
        )
    if split == "random":
        train, test = datasets.split_random(data, test_fraction=args.test_fraction, random_state=seed)
        how = f"random split, {args.test_fraction:g} held out, seed {seed}"
    else:
        train, test = datasets.split_leave_k_out(data, k=args.leave_k, strategy=args.leave_strategy, random_state=seed)
        how = f"leave-{args.leave_k}-out split ({args.leave_strategy}), seed {seed}"
    return train, test, how


def _load_data(args, seed: int, *, prefer_validation: bool = False) -> _Data:
    """Load the data and build the train/test split the options describe.

    ``train`` and ``evaluate`` both call this, so ``evaluate`` rebuilds exactly the split ``train`` used.
    ``tune`` passes ``prefer_validation``: a LightGCN folder's valid.txt, when it has one, is then
    the held-out file by default.
    """
    from .. import datasets

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
    if getattr(args, "holdout_file", None) and path is None:
        raise CLIError("--holdout-file names the held-out file of a LightGCN folder: pass the folder with --data")
    if path is None:
        if delimited_opts:
            raise CLIError("--format/--columns describe a delimited file: pass it with --data PATH")
        data = datasets.synthetic_small(random_state=seed)
        train, test, how = _split(data, args, seed, "the built-in synthetic data")
        return _Data(
            f"built-in synthetic data ({data.n_users} users x {data.n_items} items, {data.nnz} pairs); {how}",
            train,
            test,
            True,
        )

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
            default = (
                f"no MovieLens or LightGCN files (it holds: {listing})"
                if is_container
                else "a single file, not a folder or .zip"
            )
            what = default if release is None else datasets.RELEASES.get(release, default)
            raise CLIError(
                f"{path} is not {expected}: expected {datasets.release_files(expected)} in the folder "
                f"or zip (top level or one folder down), found {what}"
            )
    if is_container and release is None:
        if zipfile.is_zipfile(path) and not os.path.isdir(path) and delimited_opts:
            release = "delimited"
        else:
            raise CLIError(
                f"{path}: expected a MovieLens folder or zip (u.data, ratings.dat or ratings.csv) or a "
                f"LightGCN folder (train.txt and test.txt or valid.txt), top level or one folder down; "
                f"it holds: {listing}"
            )
    if release in ("lightgcn", "ml-100k", "ml-1m", "ml-10m", "ml-csv") and delimited_opts:
        raise CLIError(
            f"--format/--columns describe a delimited file, but {path} holds {datasets.RELEASES[release]}: drop them"
        )
    min_rating = args.min_rating
    if getattr(args, "holdout_file", None) and release != "lightgcn":
        raise CLIError("--holdout-file names the held-out file of a LightGCN folder (train.txt + test.txt/valid.txt)")

    if release == "lightgcn":
        holdout = _lightgcn_holdout(path, args, prefer_validation)
        if split is not None:
            raise CLIError(
                f"{path} is a LightGCN folder: it brings its own train/test split ({holdout}); drop --split {split}"
            )
        if min_rating is not None:
            raise CLIError("--min-rating does not apply to LightGCN data (no ratings)")
        train, test = datasets.load_lightgcn(path, test_name=holdout)
        return _Data(
            f"LightGCN split ({path}: train.txt/{holdout})", train, test, False, validation=holdout != "test.txt"
        )
    if release is None or release == "delimited":
        data = datasets.load_delimited(
            path, delimiter=_DELIMITERS[args.data_format or "auto"], columns=args.columns, min_rating=min_rating
        )
        train, test, how = _split(data, args, seed, f"the delimited file {path}")
        return _Data(
            f"{path} ({data.n_users} users x {data.n_items} items, {data.nnz} pairs); {how}", train, test, True
        )
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
    assert data.summary is not None  # Interactions fills it in
    label = expected or next(
        (
            n[len("MovieLens release detected: ") :]
            for n in data.summary.notes
            if n.startswith("MovieLens release detected: ")
        ),
        "MovieLens",
    )
    train, test, how = _split(data, args, seed, f"{label} (only MovieLens 100k ships official splits)")
    return _Data(
        f"{label} ({path}; {data.n_users} users x {data.n_items} items, {data.nnz} positives), "
        f"ratings >= {min_rating:g}; {how}",
        train,
        test,
        True,
    )
