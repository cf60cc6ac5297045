"""Gowalla, train -> valid: bpr_numpy's settings and the installed peers in one table.

The protocol of the NGCF/LightGCN papers (docs/design.md, 'Beyond MovieLens 100k'): train on the
LightGCN carve's ``train.txt``, rank every item for each user with a validation pair (the user's
training items excluded), recall@20 and NDCG@20 averaged over those users; 64 factors. The
official test file is not in ``../shared/data/gowalla`` and is never read: everything here is
measured on ``valid.txt``, which is also what the settings were chosen on (say so when quoting).

Rows (``--rows``, each defined once in ``ROWS``):

- ``default``: ``BPR()`` as shipped;
- ``grid``: plain SGD at the pick of a learning-rate x L2 grid (lr 0.1, reg 0.005, 200 epochs);
- ``dns``: dynamic negative sampling, 5 candidates, the same step and L2;
- ``negatives``: 8 uniform negatives per positive (``n_negatives=8``), lr 0.2;
- ``aobpr``: adaptive oversampling, the same step and L2;
- ``warp``: the WARP loss with AdaGrad;
- ``softmax``: the sampled softmax over 16 uniform negatives per positive;
- ``best``: the best setting found by hand (DNS-5 with 8 negatives per positive, lr 0.4 decayed by
  0.993 an epoch);
- ``decayed``: the best setting found, by the tuner (``bpr-numpy tune ... --seed 1``): DNS-8 with
  one negative per positive, lr 0.237 decayed by 0.995 an epoch, 486 epochs (about a fifth of ``best``'s
  time);
- ``tuned``: the tuner's pick, read from ``--tuned FILE`` (the JSON ``bpr-numpy tune --output``
  writes, or :meth:`bpr_numpy.tuning.TuneResult.to_json`); skipped without it.

Peers (``--libs``, through ``_adapters.py``, the same CSR and the same scoring):
implicit and cornac BPR at the settings in ``PEERS`` (bpr_numpy's plain-SGD pick, the same update
convention; ``--peer-grid`` searches a learning-rate x L2 grid first), LightFM BPR and WARP when
``lightfm`` imports.

Each row is fitted ``len(--seeds)`` times; the table gives the mean (± the standard deviation
over seeds when there are several) and the seconds of one fit (scoring not included). Threads:
``--threads`` (default 2) for every library.

Usage::

    python benchmarks/gowalla.py [--data DIR] [--rows default,grid,...] [--libs implicit,cornac]
        [--seeds 0,1,2] [--threads 2] [--tuned best.json] [--peer-grid] [--quick] [--markdown PATH]

``--quick`` trains every row for 2 epochs on the first 2,000 users (a smoke run, CI's).
"""

from __future__ import annotations

import sys
from pathlib import Path

if str(Path(__file__).resolve().parent) not in sys.path:  # loaded by path (a test): see _common.py
    sys.path.append(str(Path(__file__).resolve().parent))

import argparse  # noqa: E402
import copy  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from typing import Any, Callable, Sequence, TextIO  # noqa: E402

import numpy as np  # noqa: E402
import scipy.sparse as sp  # noqa: E402

from _adapters import FitSettings, resolve_adapters  # noqa: E402
from _report import code_version, machine_line, write_markdown  # noqa: E402

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "gowalla"
SECTION_TITLE = "## Gowalla (train -> valid)"
K = 20


@dataclass(frozen=True)
class Setting:
    """One bpr_numpy row: a label, BPR's arguments and the epochs it trains."""

    label: str
    params: dict[str, Any]
    epochs: int


#: bpr_numpy's rows, each defined once. The step sizes and L2 strengths were picked on valid.txt
#: (RESULTS.md, 'Gowalla (train -> valid)', says how).
ROWS: dict[str, Setting] = {
    "default": Setting("BPR() defaults", {}, 100),
    "grid": Setting("plain SGD, grid pick", dict(learning_rate=0.1, regularization=0.005), 200),
    "dns": Setting("DNS-5", dict(learning_rate=0.1, regularization=0.005, sampler="dns", dns_candidates=5), 400),
    "negatives": Setting("uniform, 8 negatives per positive",
                         dict(learning_rate=0.2, regularization=0.005, n_negatives=8), 300),
    "aobpr": Setting("AOBPR", dict(learning_rate=0.1, regularization=0.005, sampler="aobpr"), 200),
    "warp": Setting("WARP + AdaGrad", dict(learning_rate=0.05, regularization=1e-4, loss="warp",
                                           optimizer="adagrad"), 100),
    "softmax": Setting("sampled softmax, 16 uniform negatives",
                       dict(learning_rate=0.1, regularization=0.005, loss="softmax", n_negatives=16), 150),
    "best": Setting("best found by hand: DNS-5, 8 negatives per positive, step size decayed",
                    dict(learning_rate=0.4, regularization=0.005, sampler="dns", dns_candidates=5,
                         n_negatives=8, learning_rate_decay=0.993), 400),
    "decayed": Setting("best found (the tuner's, seed 1): DNS-8, one negative, step size decayed",
                       dict(learning_rate=0.23716677267382089, regularization=0.01094136242911348,
                            sampler="dns", dns_candidates=8, learning_rate_decay=0.995), 486),
}


@dataclass(frozen=True)
class PeerSetting:
    """One peer row: the adapter's name, a label, and what ``FitSettings`` it gets."""

    library: str
    label: str
    learning_rate: float
    regularization: float
    epochs: int
    grid: dict[str, Sequence[float]] = field(default_factory=dict)
    loss: str = "bpr"  # LightFM's loss


#: The peers' learning-rate x L2 grid (``--peer-grid``); implicit and cornac update as bpr_numpy
#: does (``theta += lr (z grad - lambda theta)``), so their defaults here are bpr_numpy's plain-SGD
#: grid pick.
_GRID = dict(learning_rate=(0.05, 0.1, 0.2), regularization=(0.001, 0.005, 0.01))

#: The peers' rows (LightFM's L2 is mapped onto its global decay by its adapter).
PEERS: tuple[PeerSetting, ...] = (
    PeerSetting("implicit", "implicit BPR", 0.1, 0.005, 200, _GRID),
    PeerSetting("cornac", "cornac BPR", 0.1, 0.005, 200, _GRID),
    PeerSetting("lightfm", "LightFM BPR (adagrad)", 0.05, 0.005, 100),
    PeerSetting("lightfm", "LightFM WARP (adagrad)", 0.05, 0.005, 50, loss="warp"),
)


@dataclass
class Result:
    """One table row: scores per seed and fit seconds per seed."""

    label: str
    settings: str
    epochs: int
    recall: list[float] = field(default_factory=list)
    ndcg: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    note: str = ""


def load(path: Path, quick: bool) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    """train.txt and valid.txt of the LightGCN carve, as two CSR matrices of the same shape."""
    from bpr_numpy.datasets import load_lightgcn

    train, valid = load_lightgcn(path, test_name="valid.txt")
    a, b = train.matrix.tocsr(), valid.matrix.tocsr()
    if quick:  # the first 2,000 users: a smoke run
        a, b = a[:2000], b[:2000]
    return a, b


def score(model: Any, train: sp.csr_matrix, valid: sp.csr_matrix) -> tuple[float, float]:
    """recall@20 and NDCG@20 over the users with a validation pair, training pairs excluded."""
    from bpr_numpy import metrics

    r = metrics.evaluate(model, train, valid, k=K, metrics=["recall", "ndcg"])
    return float(r[f"recall@{K}"]), float(r[f"ndcg@{K}"])


def describe(params: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in params.items()) or "(defaults)"


def run_bpr_numpy(name: str, setting: Setting, train: sp.csr_matrix, valid: sp.csr_matrix, seeds: Sequence[int],
                  threads: int, epochs: int | None, log: TextIO) -> Result:
    from bpr_numpy import BPR

    n_epochs = epochs or setting.epochs
    res = Result(f"bpr_numpy: {setting.label}", describe(setting.params), n_epochs)
    for seed in seeds:
        model = BPR(**{**setting.params, "epochs": n_epochs, "threads": threads, "random_state": seed})
        t0 = time.perf_counter()
        model.fit(train)
        res.seconds.append(time.perf_counter() - t0)
        r, n = score(model, train, valid)
        res.recall.append(r)
        res.ndcg.append(n)
        print(f"  {name} seed {seed}: recall@{K} {r:.4f}, NDCG@{K} {n:.4f}, fit {res.seconds[-1]:.1f} s",
              file=log, flush=True)
    return res


def tuned_setting(path: str) -> Setting:
    """The tuner's pick from its JSON (``best_params``, epochs included)."""
    data = json.loads(Path(path).read_text())
    params = dict(data.get("best_params", data))
    epochs = int(params.pop("epochs"))
    for reserved in ("threads", "random_state"):
        params.pop(reserved, None)
    if "dtype" in params:
        params["dtype"] = np.dtype(params["dtype"]).type
    return Setting("the tuner's pick", params, epochs)


def fit_peer(adapter: Any, train: sp.csr_matrix, valid: sp.csr_matrix, settings: FitSettings
             ) -> tuple[float, float, float]:
    data = adapter.prepare(train, settings)
    model = adapter.build(settings, train.shape)
    t0 = time.perf_counter()
    adapter.fit(model, data, settings)
    seconds = time.perf_counter() - t0
    r, n = score(adapter.factors(model, train.shape, settings), train, valid)
    return r, n, seconds


def run_peer(peer: PeerSetting, adapter: Any, train: sp.csr_matrix, valid: sp.csr_matrix, seeds: Sequence[int],
             threads: int, epochs: int | None, grid: bool, log: TextIO) -> Result:
    lr, reg = peer.learning_rate, peer.regularization
    n_epochs = epochs or peer.epochs
    note = ""
    if grid and peer.grid:
        best = None
        for glr in peer.grid["learning_rate"]:
            for greg in peer.grid["regularization"]:
                s = FitSettings(factors=64, epochs=n_epochs, learning_rate=glr, regularization=greg,
                                threads=threads, seed=seeds[0])
                r, _, sec = fit_peer(adapter, train, valid, s)
                print(f"  {peer.library} grid lr {glr} reg {greg}: recall@{K} {r:.4f} ({sec:.1f} s)", file=log,
                      flush=True)
                if best is None or r > best[0]:
                    best = (r, glr, greg)
        assert best is not None
        _, lr, reg = best
        note = f"grid lr {list(peer.grid['learning_rate'])} x reg {list(peer.grid['regularization'])}"
    res = Result(peer.label, f"learning_rate={lr}, regularization={reg}", n_epochs, note=note)
    for seed in seeds:
        s = FitSettings(factors=64, epochs=n_epochs, learning_rate=lr, regularization=reg, threads=threads, seed=seed)
        r, n, sec = fit_peer(adapter, train, valid, s)
        res.recall.append(r)
        res.ndcg.append(n)
        res.seconds.append(sec)
        print(f"  {peer.library} seed {seed}: recall@{K} {r:.4f}, NDCG@{K} {n:.4f}, fit {sec:.1f} s", file=log,
              flush=True)
    return res


def _cell(values: Sequence[float], digits: int) -> str:
    if not values:
        return "—"
    mean = float(np.mean(values))
    if len(values) == 1:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {float(np.std(values, ddof=1)):.{digits}f}"


def table(results: Sequence[Result], threads: int) -> str:
    lines = [f"| model | settings | epochs | recall@{K} | NDCG@{K} | fit s ({threads} threads) |",
             "|---|---|---|---|---|---|"]
    for r in results:
        settings = r.settings + (f"; {r.note}" if r.note else "")
        lines.append(f"| {r.label} | {settings} | {r.epochs} | {_cell(r.recall, 4)} | {_cell(r.ndcg, 4)} | "
                     f"{_cell(r.seconds, 1)} |")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                epilog="\n\n".join(__doc__.split("\n\n")[1:]),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=str(DEFAULT_DATA), help="the LightGCN carve's folder (default: %(default)s)")
    p.add_argument("--rows", type=lambda s: [x.strip() for x in s.split(",") if x.strip()],
                   default=["default", "grid", "dns", "negatives", "softmax", "warp", "best", "decayed", "tuned"],
                   help=f"bpr_numpy rows, from {','.join([*ROWS, 'tuned'])} (default: %(default)s)")
    p.add_argument("--libs", type=lambda s: [x.strip() for x in s.split(",") if x.strip()],
                   default=[peer.library for peer in PEERS], help="peers (default: %(default)s); 'none' for none")
    p.add_argument("--seeds", type=lambda s: [int(x) for x in s.split(",")], default=[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--tuned", default=None, metavar="JSON", help="the tuner's output, for the 'tuned' row")
    p.add_argument("--peer-grid", action="store_true", help="re-run each peer's learning-rate x L2 grid first")
    p.add_argument("--quick", action="store_true", help="2 epochs on the first 2,000 users (smoke run)")
    p.add_argument("--markdown", default=None, metavar="PATH", help="write the section into PATH")
    return p


def main(argv: Sequence[str] | None = None, log: TextIO = sys.stdout) -> int:
    args = build_parser().parse_args(argv)
    unknown = [r for r in args.rows if r not in ROWS and r != "tuned"]
    if unknown:
        print(f"unknown rows {unknown}; choose from {','.join([*ROWS, 'tuned'])}", file=sys.stderr)
        return 2
    data = Path(args.data)
    if not (data / "train.txt").is_file() or not (data / "valid.txt").is_file():
        print(f"no train.txt and valid.txt in {data}: the Gowalla carve is not redistributed; "
              "point --data at your copy", file=sys.stderr)
        return 2
    epochs = 2 if args.quick else None
    train, valid = load(data, args.quick)
    print(f"Gowalla: {train.shape[0]} users x {train.shape[1]} items, {train.nnz} training pairs, "
          f"{valid.nnz} validation pairs; seeds {args.seeds}, {args.threads} threads", file=log, flush=True)
    results: list[Result] = []
    started = time.perf_counter()
    for name in args.rows:
        if name == "tuned":
            if args.tuned is None:
                print("  tuned: skipped (no --tuned FILE)", file=log)
                continue
            setting = tuned_setting(args.tuned)
        else:
            setting = ROWS[name]
        results.append(run_bpr_numpy(name, setting, train, valid, args.seeds, args.threads, epochs, log))
    libs = [] if args.libs == ["none"] else args.libs
    adapters, _ = resolve_adapters(libs, log=log) if libs else ([], [])
    by_name = {a.name: a for a in adapters}
    for peer in PEERS:
        if peer.library in by_name:
            adapter = by_name[peer.library]
            if peer.loss != getattr(adapter, "loss", "bpr"):
                adapter = copy.copy(adapter)
                adapter.loss = peer.loss  # type: ignore[attr-defined]
            results.append(run_peer(peer, adapter, train, valid, args.seeds, args.threads, epochs, args.peer_grid,
                                    log))
    text = table(results, args.threads)
    print("\n" + text, file=log)
    if args.markdown:
        command = "python benchmarks/gowalla.py " + " ".join(argv if argv is not None else sys.argv[1:])
        section = "\n".join([
            SECTION_TITLE, "",
            f"- Command: `{command.strip()}` (whole run {(time.perf_counter() - started) / 60:.1f} min)",
            f"- Machine: {machine_line().replace('(this run: 1 thread)', f'(this run: {args.threads} threads)')}",
            f"- Code: {code_version()}",
            f"- Data: {train.shape[0]} users x {train.shape[1]} items, {train.nnz} training pairs, "
            f"{valid.nnz} validation pairs; seeds {args.seeds}",
            "", text, ""])
        write_markdown(args.markdown, section, SECTION_TITLE)
    return 0


if __name__ == "__main__":
    sys.exit(main())
