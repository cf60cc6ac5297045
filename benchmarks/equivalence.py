"""Bitwise equivalence of training across two versions of the code.

Trains every valid sampler x loss x optimiser x {plain, side features} x {float32, float64}
combination for 3 epochs with ``threads=1`` (the serial kernel, bitwise reproducible for a
seed), plus a few non-default settings that take other branches (``item_bias=False``,
``user_run=1``, ``learning_rate_decay=0.9``, ``popularity_exponent=0.5``,
``dns_candidates=2``, several negatives per positive (``n_negatives``), per-role
regularisation, WARP's ``max_sampled``, AOBPR's lambda, ``partial_fit`` after ``fit``,
side-feature identity and normalisation settings, a matrix big enough for the kernels'
prefetching). ``save`` writes every combination's trained arrays;
``compare`` trains them again with the code at hand and checks they are bitwise equal.

Which combinations exist is read from the code: the samplers, losses and optimisers from
``bpr_numpy.sampling.SAMPLERS``, ``bpr_numpy.objective.LOSSES`` and ``OPTIMIZERS``; a
combination the estimator refuses (its ``ValueError`` at construction or ``fit``, e.g.
``loss="warp"`` with a sampler other than uniform/popularity, side features with WARP or an
adaptive sampler) is recorded as refused, not trained. The rules stay the code's.

Data (built here with NumPy alone, so that both versions see the same bytes; their SHA-256
is in the manifest and checked by ``compare``):

* ``dense``: 300 users x 200 items, about 5,000 positives, power-law item popularity:
  dense enough that the samplers use the membership bitmap (the bitmap is no bigger than
  twice the CSR's index array);
* ``sparse``: 300 users x 3,000 items, about 3,000 positives: no bitmap, the samplers
  binary-search the user's row;
* ``big`` (two combinations only): 2,000 users x 20,000 items at 64 factors, factor rows
  beyond the 4 MiB above which the kernels prefetch each run's rows;
* side features: 300 x 6 user features and 200 x 12 item features (random sparse, values
  in [0.5, 1.5)), identities on unless the combination says otherwise.

Saved per combination (one ``.npz`` each, plus ``manifest.json`` with the commit, the
versions, the data hashes and the combination list): ``user_factors``, ``item_factors``,
``item_bias``, with side features ``user_embeddings``, ``item_embeddings``,
``item_bias_embeddings``, and the epochs' reported loss, ordered fraction and skipped count.

Typical use, old commit against the working tree::

    git worktree add /tmp/old <commit>
    python benchmarks/equivalence.py save /tmp/eq --code /tmp/old --fresh-cache
    python benchmarks/equivalence.py compare /tmp/eq --fresh-cache
    git worktree remove /tmp/old

``--code PATH`` trains with the ``bpr_numpy`` of the checkout at PATH (default: the checkout
this script lives in), so the old commit needs no copy of this script. Run both steps on the
same machine: the kernels are compiled for the CPU at hand (``fastmath``), so another CPU may
round differently.

Options: ``--fresh-cache`` trains in a subprocess whose ``NUMBA_CACHE_DIR`` is a new, empty
folder (every kernel compiled afresh), then again in a second subprocess on that same folder
(every kernel loaded from numba's cache; ``--no-cached-pass`` skips it): the results must be
bitwise equal in a fresh process and in a cached one. Without it, one pass in a subprocess
with the environment's cache. ``--jobs N`` (default 2) splits a pass over N subprocesses, by
dtype, so that no two compile the same kernel; with ``--fresh-cache`` each job has a cache
folder of its own (numba's cache is not safe for processes writing one folder at once). ``--only PATTERN`` (fnmatch, comma-separated)
and ``--limit N`` select combinations; ``list`` prints them.

``compare`` prints one line per combination and pass (``OK``, ``DIFFER`` with the arrays that
differ and their largest absolute difference, ``MISSING`` when a saved combination is refused
or gone, ``ERROR``, ``NEW`` for one the saved commit did not train) and a summary, and exits
1 on any DIFFER, MISSING or ERROR (0 otherwise). ``save`` with two passes also checks the
cached pass against the fresh one. The whole matrix takes a few minutes on two cores, almost
all of it numba compiling each specialisation of the kernels.
"""

from __future__ import annotations

import sys
from pathlib import Path

if str(Path(__file__).resolve().parent) not in sys.path:  # loaded by path (a test): see _common.py
    sys.path.append(str(Path(__file__).resolve().parent))
from _common import checkout_commit, cpu_model, one_thread, use_code  # noqa: E402 - standard library only

# One core per worker process, BLAS included: threads=1 training needs no more, and --jobs
# runs the workers side by side.
one_thread(__name__)

import argparse  # noqa: E402
import fnmatch  # noqa: E402
import hashlib  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from dataclasses import asdict, dataclass, field  # noqa: E402
from typing import Any, Mapping, Sequence, TextIO  # noqa: E402

import numpy as np  # noqa: E402
import scipy.sparse as sp  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
MANIFEST = "manifest.json"
FORMAT = 1  # of the saved set; compare refuses another

#: What every combination shares; a combination's own settings override these.
COMMON: dict[str, Any] = dict(factors=10, learning_rate=0.05, regularization=0.01, epochs=3, threads=1,
                              random_state=7)
DTYPES = ("float32", "float64")
#: Relative change of the learning rate under the hidden ``--perturb`` (the self-test of the
#: comparison): big enough to move a float32 learning rate (2^-20 > float32's 2^-24 half-ulp).
PERTURB = 2.0 ** -20

#: name -> (users, items, least and most positives per user, seed). Positives per user are
#: drawn with replacement from a power-law popularity and deduplicated.
DATASETS: dict[str, tuple[int, int, int, int, int]] = {
    "dense": (300, 200, 5, 30, 11),
    "sparse": (300, 3000, 2, 18, 12),
    "big": (2000, 20000, 2, 8, 13),
}
#: Side features: (rows come from the dense set) columns, density, seed.
USER_FEATURES = (6, 0.3, 21)
ITEM_FEATURES = (12, 0.25, 22)


# --------------------------------------------------------------------------- data


def interactions(name: str) -> sp.csr_matrix:
    """One of :data:`DATASETS` as a CSR of float32 ones with sorted indices (NumPy only).

    Parameters
    ----------
    name : str

    Returns
    -------
    scipy.sparse.csr_matrix
    """
    n_users, n_items, low, high, seed = DATASETS[name]
    rng = np.random.default_rng(seed)
    # A power law, so that the popularity samplers draw other negatives than the uniform ones.
    weights = rng.permutation(np.arange(1, n_items + 1, dtype=np.float64) ** -0.8)
    counts = rng.integers(low, high + 1, n_users)
    rows = np.repeat(np.arange(n_users), counts)
    cols = rng.choice(n_items, counts.sum(), p=weights / weights.sum())
    matrix = sp.csr_matrix((np.ones(rows.size, np.float32), (rows, cols)), shape=(n_users, n_items))
    matrix.sum_duplicates()
    matrix.data[:] = 1.0
    return matrix


def feature_matrix(n_rows: int, spec: tuple[int, float, int]) -> sp.csr_matrix:
    """Random sparse side features, values in [0.5, 1.5) (NumPy only)."""
    n_cols, density, seed = spec
    rng = np.random.default_rng(seed)
    values = rng.uniform(0.5, 1.5, (n_rows, n_cols)) * (rng.random((n_rows, n_cols)) < density)
    return sp.csr_matrix(values)


def side_features() -> dict[str, sp.csr_matrix]:
    """``fit`` keyword arguments of the side-feature combinations (rows: the dense set)."""
    n_users, n_items = DATASETS["dense"][:2]
    return {"user_features": feature_matrix(n_users, USER_FEATURES),
            "item_features": feature_matrix(n_items, ITEM_FEATURES)}


def uses_bitmap(matrix: sp.csr_matrix) -> bool:
    """Whether the samplers get a membership bitmap for ``matrix``.

    The rule of ``bpr_numpy._runtime.membership_bitmap``, restated so that the data line can say
    which path each set takes without reaching into the code under test: the bitmap is built
    when it is no bigger than twice the CSR's index array (int32 indices).
    """
    n_users, n_items = matrix.shape
    return n_users * ((n_items + 63) // 64) * 8 <= 2 * matrix.nnz * 4


def data_hashes() -> dict[str, str]:
    """SHA-256 of every input (shape, indptr, indices, data; features too), by name."""
    def digest(matrix: sp.csr_matrix) -> str:
        h = hashlib.sha256(repr(matrix.shape).encode())
        for part in (matrix.indptr, matrix.indices, matrix.data):
            h.update(np.ascontiguousarray(part).tobytes())
        return h.hexdigest()

    hashes = {name: digest(interactions(name)) for name in DATASETS}
    hashes.update({name: digest(m) for name, m in side_features().items()})
    return hashes


# --------------------------------------------------------------------------- combinations


@dataclass
class Combo:
    """One training run.

    Attributes
    ----------
    name : str
        Unique, usable as a file name.
    data : str
        A key of :data:`DATASETS`.
    params : dict
        ``BPR`` arguments over :data:`COMMON` (``dtype`` as a string).
    features : bool
        Fit with :func:`side_features` (dense set only).
    partial : bool
        ``fit`` all epochs but one, then ``partial_fit`` the last (the documented equivalent of
        one ``fit``; exercises carrying the optimiser state over).
    """

    name: str
    data: str
    params: dict[str, Any]
    features: bool = False
    partial: bool = False


def combo(data: str, sampler: str, loss: str, optimizer: str, dtype: str, features: bool = False,
          partial: bool = False, **extra: Any) -> Combo:
    """A :class:`Combo` named ``data.plain|features.sampler.loss.optimizer.dtype[.key=value...][.partial_fit]``."""
    parts = [data, "features" if features else "plain", sampler, loss, optimizer, dtype]
    # A mapping (per-role regularisation) as role-value pairs: the name is also a file name.
    parts += [f"{k}=" + ("+".join(f"{r}{x}" for r, x in v.items()) if isinstance(v, dict) else str(v))
              for k, v in extra.items()]
    if partial:
        parts.append("partial_fit")
    name = ".".join(parts)
    params = dict(sampler=sampler, loss=loss, optimizer=optimizer, dtype=dtype, **extra)
    return Combo(name, data, params, features, partial)


def candidates() -> list[Combo]:
    """Every combination to try, in order; the estimator refuses some (see the module docstring).

    Reads the samplers, losses and optimisers from the code under test, so a sampler added
    there is covered here without a change.
    """
    from bpr_numpy.objective import LOSSES, OPTIMIZERS
    from bpr_numpy.sampling import SAMPLERS

    out = [combo("dense", s, lo, o, d, features=f)
           for f in (False, True) for s in SAMPLERS for lo in LOSSES for o in OPTIMIZERS for d in DTYPES]
    # Without the bitmap: every sampler and loss; the optimisers change the update, not the
    # sampling, so SGD and Adam (the plainest and the most state) are enough here.
    out += [combo("sparse", s, lo, o, d) for s in SAMPLERS for lo in LOSSES for o in ("sgd", "adam") for d in DTYPES]
    # Settings that take other branches. Half float64, so that --jobs 2 (split by dtype) stays balanced.
    out += [
        combo("dense", "uniform", "bpr", "sgd", "float32", item_bias=False),
        combo("dense", "uniform", "bpr", "adagrad", "float64", item_bias=False),
        combo("dense", "uniform", "bpr", "sgd", "float32", user_run=1),
        combo("sparse", "popularity", "bpr", "sgd", "float64", user_run=1),
        combo("dense", "uniform", "bpr", "sgd", "float64", learning_rate_decay=0.9),
        combo("dense", "popularity", "sigmoid", "adam", "float32", learning_rate_decay=0.9),
        combo("dense", "popularity", "bpr", "sgd", "float32", popularity_exponent=0.5),
        combo("dense", "popularity-skip", "bpr", "adagrad", "float64", popularity_exponent=0.5),
        combo("dense", "dns", "bpr", "sgd", "float64", dns_candidates=2),
        combo("dense", "dns", "sigmoid", "adam", "float32", dns_candidates=2),
        combo("dense", "aobpr", "bpr", "sgd", "float32", aobpr_lambda=0.2),
        combo("dense", "uniform", "warp", "sgd", "float64", max_sampled=3),
        combo("dense", "uniform", "bpr", "sgd", "float32",
              regularization={"user": 0.02, "positive": 0.01, "negative": 0.005, "bias": 0.0}),
        combo("dense", "uniform", "bpr", "sgd", "float64", init_std=0.05),
        combo("dense", "uniform", "bpr", "adam", "float32", partial=True),
        combo("dense", "aobpr", "bpr", "adagrad", "float64", partial=True),
        combo("dense", "uniform", "bpr", "adam", "float64", features=True, partial=True),
        combo("dense", "uniform", "bpr", "sgd", "float32", features=True, item_bias=False),
        combo("dense", "uniform", "bpr", "sgd", "float32", features=True, identity=False),
        combo("dense", "popularity", "bpr", "adagrad", "float64", features=True, identity="users"),
        combo("dense", "uniform", "sigmoid", "sgd", "float64", features=True, normalize_features=True),
        # Several negatives per positive (the several-negatives kernel): each sampler's way of
        # drawing them, DNS over each, every optimiser, the softmax over them, without the bitmap.
        combo("dense", "uniform", "bpr", "sgd", "float32", n_negatives=4),
        combo("dense", "popularity", "bpr", "adam", "float64", n_negatives=3),
        combo("dense", "popularity", "sigmoid", "adagrad", "float32", n_negatives=2),
        combo("dense", "dns", "bpr", "sgd", "float64", n_negatives=4, dns_candidates=3),
        combo("dense", "dns", "bpr", "adam", "float32", n_negatives=3),
        combo("dense", "dns", "softmax", "adagrad", "float64", n_negatives=4),
        combo("sparse", "dns", "bpr", "sgd", "float32", n_negatives=8, dns_candidates=5),
        combo("sparse", "uniform", "softmax", "sgd", "float64", n_negatives=4),
        combo("big", "uniform", "bpr", "sgd", "float32", factors=64),
        combo("big", "popularity", "bpr", "adam", "float64", factors=64),
    ]
    names = [c.name for c in out]
    assert len(set(names)) == len(names), "combination names must be unique"
    return out


def select(names: Sequence[str], only: str | None, limit: int | None) -> list[str]:
    """``names`` matching any comma-separated fnmatch pattern of ``only``, the first ``limit`` of them."""
    if only:
        patterns = [p.strip() for p in only.split(",") if p.strip()]
        names = [n for n in names if any(fnmatch.fnmatchcase(n, p) for p in patterns)]
    return list(names[:limit] if limit is not None else names)


# --------------------------------------------------------------------------- training (worker side)


def train(c: Combo, perturb: bool = False) -> dict[str, np.ndarray]:
    """Train one combination; its arrays by name. ``ValueError``: the estimator refuses it."""
    from bpr_numpy import BPR

    params = {**COMMON, **c.params}
    params["dtype"] = np.dtype(params["dtype"]).type
    if perturb:
        params["learning_rate"] *= 1.0 + PERTURB
    matrix = interactions(c.data)
    kwargs = side_features() if c.features else {}
    model = BPR(**params)
    if c.partial:
        model.fit(matrix, epochs=params["epochs"] - 1, show_progress=False, **kwargs)
        model.partial_fit(matrix, epochs=1, show_progress=False)
    else:
        model.fit(matrix, show_progress=False, **kwargs)
    names = ["user_factors", "item_factors", "item_bias"]
    if c.features:
        names += ["user_embeddings", "item_embeddings", "item_bias_embeddings"]
    # The learned biases are ``item_biases`` since the redesign (``item_bias`` is the flag);
    # the older code being compared names the array ``item_bias``.
    renamed = {"item_bias": "item_biases"} if hasattr(model, "item_biases") else {}
    arrays = {name: np.asarray(getattr(model, renamed.get(name, name))) for name in names}
    arrays["history_loss"] = np.array([r.loss for r in model.history_])
    arrays["history_ordered_fraction"] = np.array([r.ordered_fraction for r in model.history_])
    arrays["history_skipped"] = np.array([r.skipped for r in model.history_], np.int64)
    return arrays


def _write_json(path: Path, obj: Any) -> None:
    """Write through a temporary file and a rename: a reader never sees half a file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(obj, indent=1, sort_keys=True), encoding="utf-8")
    os.replace(tmp, path)


def worker(spec_path: str) -> int:
    """``_worker SPEC``: train the combinations of a job file, write ``NAME.npz`` and ``status-JOB.json``.

    The status file is rewritten after every combination, so that a crash leaves the statuses
    of those done. A ``ValueError`` is a refusal; any other exception is an error and the next
    combination runs.
    """
    spec = json.loads(Path(spec_path).read_text(encoding="utf-8"))
    out = Path(spec["out"])
    status: dict[str, dict[str, Any]] = {}
    combos = [Combo(**c) for c in spec["combos"]]
    for k, c in enumerate(combos):
        t0 = time.perf_counter()
        try:
            arrays = train(c, spec["perturb"])
        except ValueError as exc:
            status[c.name] = {"status": "refused", "message": str(exc).splitlines()[0]}
        except Exception as exc:  # reported per combination; the others still run
            status[c.name] = {"status": "error", "message": f"{type(exc).__name__}: {exc}".splitlines()[0]}
        else:
            np.savez(out / f"{c.name}.npz", **arrays)
            status[c.name] = {"status": "ok"}
        status[c.name]["seconds"] = time.perf_counter() - t0
        _write_json(out / f"status-{spec['job']}.json", status)
        if not spec["quiet"]:
            print(f"  [{spec['label']} job {spec['job'] + 1}] {k + 1}/{len(combos)} {c.name}: "
                  f"{status[c.name]['status']} ({status[c.name]['seconds']:.1f} s)", file=sys.stderr, flush=True)
    return 0


# --------------------------------------------------------------------------- passes (parent side)


@dataclass
class PassResult:
    """One pass: every selected combination trained once, in subprocesses."""

    label: str
    folder: Path
    status: dict[str, dict[str, Any]]
    seconds: float
    compiled: int | None = None  # numba cache entries the pass added (None: not a cache of our own)

    def arrays(self, name: str) -> dict[str, np.ndarray]:
        return load_arrays(self.folder, name)


def load_arrays(folder: Path, name: str) -> dict[str, np.ndarray]:
    """A combination's arrays, as :func:`worker` saved them."""
    with np.load(folder / f"{name}.npz") as z:
        return {k: z[k] for k in z.files}


def split_jobs(combos: Sequence[Combo], jobs: int) -> list[list[Combo]]:
    """Combinations grouped by dtype, each group to the emptiest job.

    Each dtype compiles its own kernels, so jobs split this way never compile the same
    specialisation twice (nor race to write it to a fresh cache).
    """
    groups: dict[str, list[Combo]] = {}
    for c in combos:
        groups.setdefault(c.params["dtype"], []).append(c)
    out: list[list[Combo]] = [[] for _ in range(max(1, min(jobs, len(groups))))]
    for group in sorted(groups.values(), key=len, reverse=True):
        min(out, key=len).extend(group)
    return [j for j in out if j]


def cache_entries(folder: Path) -> int:
    """Compiled overloads numba holds in a cache folder (its ``.nbc`` files)."""
    return sum(1 for _ in folder.rglob("*.nbc"))


def run_pass(label: str, combos: Sequence[Combo], work: Path, code: Path, *, jobs: int, perturb: bool,
             cache: Path | None, quiet: bool, log: TextIO) -> PassResult:
    """Train ``combos`` in ``jobs`` fresh subprocesses (``sys.executable``), results under ``work/label``.

    Parameters
    ----------
    label : str
    combos : sequence of Combo
    work : Path
        Scratch folder.
    code : Path
        Checkout whose ``bpr_numpy`` the workers import.
    jobs : int
    perturb : bool
        The self-test: every learning rate moved by :data:`PERTURB`.
    cache : Path, optional
        ``NUMBA_CACHE_DIR`` of the workers (default: the environment's).
    quiet : bool
        No progress line per combination.
    log : file-like

    Returns
    -------
    PassResult
    """
    folder = work / label
    folder.mkdir()
    env = dict(os.environ)
    before = cache_entries(cache) if cache is not None else None
    procs = []
    t0 = time.perf_counter()
    parts = split_jobs(combos, jobs)
    for j, part in enumerate(parts):
        spec = {"out": str(folder), "job": j, "label": label, "perturb": perturb,
                "quiet": quiet, "combos": [asdict(c) for c in part]}
        spec_path = folder / f"job-{j}.json"
        _write_json(spec_path, spec)
        # The worker is this file run as a script with the code's root first on sys.path, so it
        # trains with that checkout's bpr_numpy whatever is installed.
        cmd = [sys.executable, str(Path(__file__).resolve()), "_worker", str(spec_path), "--code", str(code)]
        if cache is not None:
            # One cache folder per job (the split is the same in every pass): numba's cache is not
            # safe for processes writing one folder at once. Two jobs saving overloads of one
            # function number their files from the same index, and one overwrites the other's;
            # a later process then loads code compiled for another signature ("can't unbox
            # array", seen with two jobs sharing a folder).
            env["NUMBA_CACHE_DIR"] = str(cache / f"job-{j}")
        procs.append((subprocess.Popen(cmd, env=dict(env), stdin=subprocess.DEVNULL), part))
    status: dict[str, dict[str, Any]] = {}
    for j, (proc, part) in enumerate(procs):
        rc = proc.wait()
        path = folder / f"status-{j}.json"
        done = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
        for c in part:
            status[c.name] = done.get(c.name) or {
                "status": "error", "message": f"not run: worker {j + 1} exited with status {rc} (its stderr is above)"}
    seconds = time.perf_counter() - t0
    compiled = cache_entries(cache) - before if cache is not None else None
    where = f", NUMBA_CACHE_DIR {cache}" if cache is not None else ""
    # Per process: an unbalanced split, or a core taken by someone else, shows here.
    each = " + ".join(f"{sum(status[c.name]['seconds'] for c in part if 'seconds' in status[c.name]):.0f}"
                      for _, part in procs)
    print(f"{label} pass: {len(combos)} combinations in {len(parts)} process(es), {seconds:.0f} s "
          f"(training {each} s){where}"
          + (f"; {compiled} kernel(s) compiled into the cache" if compiled is not None else ""), file=log, flush=True)
    return PassResult(label, folder, status, seconds, compiled)


def passes(args: argparse.Namespace) -> list[tuple[str, Path | None]]:
    """The passes asked for: (label, numba cache folder or None for the environment's)."""
    if not args.fresh_cache:
        return [("current-cache", None)]
    out: list[tuple[str, Path | None]] = [("fresh", Path("numba-cache"))]
    if not args.no_cached_pass:
        out.append(("cached", Path("numba-cache")))
    return out


# --------------------------------------------------------------------------- comparison


def array_differences(ref: Mapping[str, np.ndarray], got: Mapping[str, np.ndarray]) -> list[str]:
    """What differs between two sets of arrays, bit for bit; empty when they are identical.

    Equal means same names, dtypes, shapes and bytes (so ``-0.0 != 0.0`` and NaN payloads
    count); each differing array is described by its largest absolute difference and how many
    elements differ.
    """
    problems = []
    for key in sorted(set(ref) | set(got)):
        if key not in got:
            problems.append(f"{key} missing")
            continue
        if key not in ref:
            problems.append(f"{key} not in the reference")
            continue
        a, b = np.asarray(ref[key]), np.asarray(got[key])
        if a.dtype != b.dtype or a.shape != b.shape:
            problems.append(f"{key} {a.dtype}{list(a.shape)} -> {b.dtype}{list(b.shape)}")
            continue
        if a.tobytes() == b.tobytes():
            continue
        bits_a = np.ascontiguousarray(a).view(np.uint8).reshape(a.size, -1)
        bits_b = np.ascontiguousarray(b).view(np.uint8).reshape(b.size, -1)
        n = int((bits_a != bits_b).any(axis=1).sum())
        x, y = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
        with np.errstate(invalid="ignore"):
            diff = np.abs(x - y)
        # NaN on one side only is as far as it gets; on both sides it is no difference in value.
        diff[np.isnan(diff)] = np.inf
        diff[np.isnan(x) & np.isnan(y)] = 0.0
        worst = float(diff.max()) if diff.size else 0.0
        problems.append(f"{key} max|diff| {worst:.3g} ({n} of {a.size} differ)")
    return problems


@dataclass
class Tally:
    """Counts of one pass's verdicts."""

    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(
        ("OK", "DIFFER", "MISSING", "ERROR", "NEW", "refused"), 0))

    @property
    def failed(self) -> bool:
        return any(self.counts[k] for k in ("DIFFER", "MISSING", "ERROR"))

    def line(self) -> str:
        return ", ".join(f"{v} {k}" for k, v in self.counts.items())


def judge(names: Sequence[str], ref_trained: set[str], ref_refused: Mapping[str, str],
          ref_arrays, result: PassResult, out: TextIO) -> Tally:
    """Print one verdict line per trained combination of ``names``; the tally.

    Parameters
    ----------
    names : sequence of str
        The selected combinations (saved or current).
    ref_trained, ref_refused
        What the reference trained, and refused (name -> message).
    ref_arrays : callable
        name -> the reference's arrays.
    result : PassResult
        The pass under test; a name it has no status for is not a combination of its code.
    out : file-like
    """
    tally = Tally()
    for name in names:
        st = result.status.get(name)
        if name in ref_trained:
            if st is None:
                verdict, why = "MISSING", "no longer a combination of this code"
            elif st["status"] == "refused":
                verdict, why = "MISSING", f"refused now: {st['message']}"
            elif st["status"] == "error":
                verdict, why = "ERROR", st["message"]
            else:
                problems = array_differences(ref_arrays(name), result.arrays(name))
                verdict, why = ("DIFFER", "; ".join(problems)) if problems else ("OK", "")
        elif st is not None and st["status"] == "ok":
            verdict = "NEW"
            why = f"refused by the reference: {ref_refused[name]}" if name in ref_refused else "not in the reference"
        elif st is not None and st["status"] == "error":
            verdict, why = "ERROR", st["message"]
        else:  # refused on both sides, or refused here and never tried there
            tally.counts["refused"] += 1
            continue
        tally.counts[verdict] += 1
        print(f"{verdict:<7s} {name}" + (f": {why}" if why else ""), file=out)
    return tally


# --------------------------------------------------------------------------- commands


def header(code: Path) -> dict[str, Any]:
    """The versions and machine a set of results comes from (the manifest's and the run's header)."""
    import numba
    import scipy

    import bpr_numpy

    commit, dirty = checkout_commit(code)
    return {"commit": commit, "uncommitted_changes": dirty, "code": str(code),
            "bpr_numpy": bpr_numpy.__version__, "numba": numba.__version__, "numpy": np.__version__,
            "scipy": scipy.__version__, "python": platform.python_version(), "machine": cpu_model()}


def describe(info: Mapping[str, Any]) -> str:
    """One line naming a manifest's or run's code and machine."""
    dirty = " (with uncommitted changes in bpr_numpy/)" if info.get("uncommitted_changes") else ""
    return (f"{info['code']} at {info['commit'][:12]}{dirty}; bpr_numpy {info['bpr_numpy']}, numba {info['numba']}, "
            f"numpy {info['numpy']}, Python {info['python']}; {info['machine']}")


def data_line() -> str:
    parts = []
    for name in DATASETS:
        m = interactions(name)
        parts.append(f"{name} {m.shape[0]}x{m.shape[1]} {m.nnz} pairs ({'bitmap' if uses_bitmap(m) else 'no bitmap'})")
    return "data: " + ", ".join(parts) + "; settings " + ", ".join(f"{k}={v}" for k, v in COMMON.items())


def run_all(args: argparse.Namespace, combos: Sequence[Combo], code: Path, log: TextIO) -> list[PassResult]:
    """Every pass of the run, in a scratch folder the caller removes (``args.work``)."""
    results = []
    for label, cache in passes(args):
        results.append(run_pass(label, combos, args.work, code, jobs=args.jobs, perturb=args.perturb,
                                cache=None if cache is None else args.work / cache, quiet=args.quiet, log=log))
    return results


def cmd_list(args: argparse.Namespace, code: Path, out: TextIO, log: TextIO) -> int:
    for name in select([c.name for c in candidates()], args.only, args.limit):
        print(name, file=out)
    return 0


def cmd_save(args: argparse.Namespace, code: Path, out: TextIO, log: TextIO) -> int:
    target = Path(args.dir)
    if (target / MANIFEST).exists():
        if not args.force:
            raise SystemExit(f"{target} already holds a saved set; --force replaces it")
        for old in target.glob("*.npz"):
            old.unlink()
        (target / MANIFEST).unlink()
    target.mkdir(parents=True, exist_ok=True)
    info = header(code)
    print(f"code: {describe(info)}\n{data_line()}", file=out, flush=True)
    every = candidates()
    names = set(select([c.name for c in every], args.only, args.limit))
    combos = [c for c in every if c.name in names]
    results = run_all(args, combos, code, log)
    first = results[0]
    trained = [c.name for c in combos if first.status[c.name]["status"] == "ok"]
    refused = {n: s["message"] for n, s in first.status.items() if s["status"] == "refused"}
    errors = {n: s["message"] for n, s in first.status.items() if s["status"] == "error"}
    for name in trained:
        shutil.copyfile(first.folder / f"{name}.npz", target / f"{name}.npz")
    for name, message in errors.items():
        print(f"ERROR   {name}: {message}", file=out)
    failed = bool(errors)
    for later in results[1:]:  # the cached pass must reproduce the fresh one
        print(f"\n{later.label} pass against the {first.label} pass:", file=out)
        tally = judge([c.name for c in combos], set(trained), refused, first.arrays, later, out)
        print(f"{later.label} pass: {tally.line()}", file=out)
        failed |= tally.failed
    manifest = {"format": FORMAT, **info, "created": time.strftime("%Y-%m-%d %H:%M:%S %z"),
                "common": COMMON, "data_sha256": data_hashes(), "passes": [r.label for r in results],
                "combinations": trained, "refused": refused, "errors": errors,
                "selection": {"only": args.only, "limit": args.limit}}
    _write_json(target / MANIFEST, manifest)
    print(f"\nsaved {len(trained)} combinations to {target} ({len(refused)} refused by the code, "
          f"{len(errors)} errors){'' if not args.perturb else ' [PERTURBED: not a reference]'}", file=out)
    return 1 if failed else 0


def cmd_compare(args: argparse.Namespace, code: Path, out: TextIO, log: TextIO) -> int:
    source = Path(args.dir)
    try:
        saved = json.loads((source / MANIFEST).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SystemExit(f"{source / MANIFEST} not found: run `save` first") from None
    if saved.get("format") != FORMAT:
        raise SystemExit(f"{source} was saved in format {saved.get('format')}, this script reads {FORMAT}")
    info = header(code)
    print(f"saved: {describe(saved)}, {saved['created']}\nnow:   {describe(info)}\n{data_line()}", file=out, flush=True)
    problems = []
    if saved["common"] != json.loads(json.dumps(COMMON)):
        problems.append(f"the saved set was trained with {saved['common']}, this script trains with {COMMON}")
    hashes = data_hashes()
    problems += [f"input {k} differs from the saved one (NumPy's generator changed?)"
                 for k in sorted(hashes) if saved["data_sha256"].get(k) != hashes[k]]
    if problems:
        for p in problems:
            print(f"cannot compare: {p}", file=out)
        return 1
    every = candidates()
    tried = [*saved["combinations"], *saved["refused"], *saved["errors"]]
    order = [c.name for c in every] + [n for n in tried if n not in {c.name for c in every}]
    if saved["selection"]["only"] or saved["selection"]["limit"] is not None:
        # A partial saved set: what it tried, not every combination this code has.
        order = [n for n in order if n in set(tried)]
    names = select(order, args.only, args.limit)
    wanted = set(names)
    combos = [c for c in every if c.name in wanted]
    results = run_all(args, combos, code, log)
    failed = False
    for result in results:
        print(f"\n{result.label} pass against the saved set:", file=out)
        tally = judge(names, set(saved["combinations"]), saved["refused"],
                      lambda n: load_arrays(source, n), result, out)
        print(f"{result.label} pass: {tally.line()}", file=out)
        failed |= tally.failed
    print(f"\n{'DIFFERENT' if failed else 'bitwise equal'}: {len(results)} pass(es) "
          f"({', '.join(r.label for r in results)}) against {saved['commit'][:12]}", file=out)
    return 1 if failed else 0


def build_parser() -> argparse.ArgumentParser:
    """The command-line parser."""
    p = argparse.ArgumentParser(prog="python benchmarks/equivalence.py", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("command", choices=["save", "compare", "list"])
    p.add_argument("dir", nargs="?", help="folder of the saved set (save, compare)")
    p.add_argument("--code", default=str(REPO),
                   help="checkout whose bpr_numpy trains (default: this script's, %(default)s)")
    p.add_argument("--fresh-cache", action="store_true",
                   help="train with a new, empty NUMBA_CACHE_DIR, then again from that cache in a second process")
    p.add_argument("--no-cached-pass", action="store_true", help="with --fresh-cache: the fresh pass only")
    p.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1),
                   help="worker processes per pass, split by dtype (default: %(default)s)")
    p.add_argument("--only", default=None, metavar="PATTERN",
                   help="combinations whose names match one of these comma-separated fnmatch patterns")
    p.add_argument("--limit", type=int, default=None, metavar="N", help="the first N selected combinations")
    p.add_argument("--force", action="store_true", help="save: replace a saved set in DIR")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress line per trained combination")
    p.add_argument("--perturb", action="store_true", help=argparse.SUPPRESS)  # self-test: must report DIFFER
    return p


def main(argv: Sequence[str] | None = None, out: TextIO | None = None, log: TextIO | None = None) -> int:
    """Run a command; the exit status (0: equal, 1: not, or a failed save).

    Parameters
    ----------
    argv : sequence of str, optional
        Arguments (default: ``sys.argv[1:]``).
    out, log : file-like, optional
        Verdicts (default stdout) and progress (default stderr).

    Returns
    -------
    int
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    out = sys.stdout if out is None else out
    log = sys.stderr if log is None else log
    if argv[:1] == ["_worker"]:  # a subprocess of run_pass, not for people
        p = argparse.ArgumentParser(prog="equivalence.py _worker")
        p.add_argument("spec")
        p.add_argument("--code", required=True)
        job = p.parse_args(argv[1:])
        use_code(Path(job.code))
        return worker(job.spec)
    args = build_parser().parse_args(argv)
    if args.command != "list" and not args.dir:
        raise SystemExit(f"{args.command} needs DIR")
    if args.jobs < 1 or (args.limit is not None and args.limit < 0):
        raise SystemExit("--jobs must be >= 1 and --limit >= 0")
    code = use_code(Path(args.code))
    command = {"save": cmd_save, "compare": cmd_compare, "list": cmd_list}[args.command]
    with tempfile.TemporaryDirectory(prefix="bpr-equivalence-") as work:
        args.work = Path(work)
        return command(args, code, out, log)


if __name__ == "__main__":
    sys.exit(main())
