"""Distributed training: Dask workers against the single-process kernel, DSGD against averaging.

    python benchmarks/distributed.py speed   [--nnz 20M] [--interactions syn20m.npz] [--epochs 4] [--repeats 3]
    python benchmarks/distributed.py quality [--data PATH] [--seeds 3] [--epochs 100]
    python benchmarks/distributed.py project [--speed-json speed.json]

``speed`` (the synthetic power-law set of ``bpr_numpy.datasets.synthetic``, 20M pairs by
default): samples/s of one epoch, measured as the wall time between two epochs' callbacks (so
everything an epoch costs counts: for the stratified runs the new item layout, the strata, the
task scheduling and the transfers; for the single-process runs the epoch's copy and checks),
median over epochs 2.. of each run, median over repeats; the configurations alternate within
each repeat. Rows:

* ``BPR threads=T``: the single-machine model, Hogwild over T threads.
* ``strata in-process``: :func:`bpr_numpy.distributed.fit` without a client, ``P`` strata at a
  time on threads of this process (conflict-free, no Hogwild).
* ``Dask W workers, P blocks``: a ``LocalCluster`` of W worker processes with one thread each
  (``threads_per_worker=1``), the same cores. Checkpoints only after the last epoch unless the
  row says "checkpoint every epoch".

It also reports bytes of item factors moved between workers per epoch and bytes of a
checkpoint (``distributed_log_``), the scheduler's cost per task (a tiny matrix where the
kernels take no time), and the stratum sizes of 16 and 64 blocks on this data (the load
imbalance of a sub-epoch). ``--json PATH`` keeps these for ``project``.

``project``: the epoch time of 1B interactions on 16 and 64 workers, from those measured
figures and the assumptions it prints.

``quality`` (MovieLens 100k ``ua``, ratings >= 4, default hyperparameters, ``threads=1``):
P1 full AUC and precision@10 on ``ua.test`` after 25, 50 and 100 epochs, mean ± std over
seeds, for the single-machine model, stratified SGD with P = 2 and 4 (the in-process schedule:
bitwise the factors the Dask run gives, ``tests/test_distributed.py``) and the alternative:
per-epoch parameter averaging (each of P user shards trains a copy of all item factors for an
epoch, then the copies are averaged, as the public Spark BPR does). Both do the same samples
with the same kernel per epoch, so quality per epoch is quality per second up to
communication: per worker and epoch, averaging sends and receives all item factors (2V);
DSGD's rotation about V, plus the item shuffle (2V through the first worker).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp

# This script's folder goes last on the path: first, it would shadow Dask's ``distributed``
# package with this file.
_HERE = str(Path(__file__).resolve().parent)
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE] + [_HERE]
from _common import cpu_model  # noqa: E402

from bpr_numpy import BPR, _strata, distributed, metrics  # noqa: E402
from bpr_numpy.model._training import TrainingState  # noqa: E402

ML100K = Path(__file__).resolve().parents[2] / "shared" / "data" / "ml-100k"


def _size(text: str) -> int:
    text = text.strip().upper()
    scale = {"K": 10**3, "M": 10**6, "B": 10**9}.get(text[-1], 1)
    return int(float(text[:-1] if text[-1] in "KMB" else text) * scale)


def _load(args) -> sp.csr_matrix:
    nnz = _size(args.nnz)
    path = args.interactions
    if path and Path(path).exists():
        m = sp.load_npz(path).tocsr()
        if m.nnz == nnz:
            print(f"loaded {m.nnz:,} pairs from {path}", file=sys.stderr, flush=True)
            return m
    from _data import synthetic_data

    m = synthetic_data(nnz, seed=0)
    if path:
        sp.save_npz(path, m)
    return m


class _EpochClock:
    """Wall time between consecutive epoch callbacks (the first measured from the fit's start)."""

    def __init__(self):
        self.times = [time.perf_counter()]

    def __call__(self, report):
        self.times.append(time.perf_counter())

    def steady(self) -> float:
        gaps = np.diff(self.times)
        return float(np.median(gaps[1:] if len(gaps) > 1 else gaps))


def _machine() -> str:
    import numba

    return (f"{cpu_model()}, {os.cpu_count()} cores; Python {platform.python_version()}, numpy {np.__version__}, "
            f"numba {numba.__version__}")


def _scheduler_cost(client) -> dict:
    """Epoch seconds of a fit whose kernels take no time worth counting (10,000 pairs), per P.

    ``project`` fits ``seconds = fixed + per_task * tasks`` to these: the per-epoch round trips,
    and the cost of each task to the scheduler, the worker and the client together.
    """
    rng = np.random.default_rng(0)
    tiny = sp.random(2000, 1000, density=0.005, format="csr", random_state=rng)
    out = {}
    for P in (2, 4, 8, 16):
        clock = _EpochClock()
        distributed.fit(client, tiny, n_blocks=P, epochs=6, factors=8, threads=1, checkpoint_every=100,
                        callback=clock)
        out[P] = (distributed.tasks_per_epoch(P), clock.steady())
    return out


def _imbalance(m: sp.csr_matrix, P: int, seed: int = 0) -> float:
    """Mean over sub-epochs of (largest stratum / mean stratum): the wait for the slowest worker."""
    bounds = _strata.user_block_bounds(m.indptr, P)
    layout = _strata.item_blocks(m.shape[1], P, seed, 0)
    counts = np.zeros((P, P))
    for p in range(P):
        rows = m.indices[m.indptr[bounds[p]]:m.indptr[bounds[p + 1]]]
        counts[p] = np.bincount(layout.block_of[rows], minlength=P)
    ratios = [max(counts[p, (p + s) % P] for p in range(P)) / (counts.sum() / P / P) for s in range(P)]
    return float(np.mean(ratios))


def cmd_speed(args) -> None:
    from distributed import Client, LocalCluster

    m = _load(args)
    E = args.epochs
    common = dict(factors=args.factors, random_state=0)
    clusters = {w: LocalCluster(n_workers=w, threads_per_worker=1, processes=True, dashboard_address=None)
                for w in (1, 2)}
    clients = {w: Client(c) for w, c in clusters.items()}
    configs = {
        "BPR threads=1": lambda cb: BPR(threads=1, **common).fit(m, epochs=E, callback=cb),
        "BPR threads=2": lambda cb: BPR(threads=2, **common).fit(m, epochs=E, callback=cb),
        "strata in-process, 2 threads, P=2": lambda cb: distributed.fit(
            None, m, n_blocks=2, threads=2, epochs=E, checkpoint_every=E, callback=cb, **common),
        "Dask 1 worker, P=1": lambda cb: distributed.fit(
            clients[1], m, n_blocks=1, threads=1, epochs=E, checkpoint_every=E, callback=cb, **common),
        "Dask 2 workers, P=2": lambda cb: distributed.fit(
            clients[2], m, n_blocks=2, threads=1, epochs=E, checkpoint_every=E, callback=cb, **common),
        "Dask 2 workers, P=4": lambda cb: distributed.fit(
            clients[2], m, n_blocks=4, threads=1, epochs=E, checkpoint_every=E, callback=cb, **common),
        "Dask 2 workers, P=2, checkpoint every epoch": lambda cb: distributed.fit(
            clients[2], m, n_blocks=2, threads=1, epochs=E, checkpoint_every=1, callback=cb, **common),
    }
    # Warm-up: compile/load every kernel in this process and in the workers.
    tiny = sp.random(200, 300, density=0.05, format="csr", random_state=np.random.default_rng(1))
    for w, c in clients.items():
        distributed.fit(c, tiny, n_blocks=w, epochs=1, threads=1, factors=args.factors)
    for t in (1, 2):
        BPR(threads=t, epochs=1, factors=args.factors).fit(tiny)
    distributed.fit(None, tiny, n_blocks=2, threads=2, epochs=1, factors=args.factors)
    rates = {name: [] for name in configs}
    logs = {}
    for r in range(args.repeats):
        for name, run in configs.items():
            clock = _EpochClock()
            model = run(clock)
            rates[name].append(m.nnz / clock.steady())
            logs[name] = getattr(model, "distributed_log_", None)
            print(f"repeat {r} {name}: {rates[name][-1] / 1e6:.2f} M samples/s", file=sys.stderr, flush=True)
    base = {1: "BPR threads=1", 2: "BPR threads=2"}
    print(f"\n{m.shape[0]:,} users x {m.shape[1]:,} items, {m.nnz:,} pairs; {args.factors} factors, {E} epochs, "
          f"{args.repeats} repeats; {_machine()}")
    print("| configuration | cores | M samples/s | vs BPR on the same cores | item bytes moved / epoch | "
          "checkpoint bytes |")
    print("|---|---:|---:|---:|---:|---:|")
    summary = {"nnz": m.nnz, "shape": m.shape, "factors": args.factors, "rates": {}, "logs": {}}
    for name, values in rates.items():
        cores = 1 if ("threads=1" in name or "1 worker" in name) else 2
        med = statistics.median(values)
        ratio = statistics.median(v / b for v, b in zip(values, rates[base[cores]]))
        log = logs[name]
        moved = f"{statistics.median(log.item_bytes[1:] or log.item_bytes) / 2**20:.1f} MiB" if log else "-"
        ckpt = f"{max(log.checkpoint_bytes) / 2**20:.1f} MiB" if log else "-"
        print(f"| {name} | {cores} | {med / 1e6:.2f} | {ratio:.2f}x | {moved} | {ckpt} |")
        summary["rates"][name] = values
        if log:
            summary["logs"][name] = {"item_bytes": log.item_bytes, "checkpoint_bytes": log.checkpoint_bytes}
    cost = _scheduler_cost(clients[2])
    print("\nepochs of a tiny matrix (2 workers): "
          + ", ".join(f"P={P}: {tasks} tasks in {sec * 1e3:.0f} ms" for P, (tasks, sec) in cost.items()))
    imbalance = {P: _imbalance(m, P) for P in (2, 4, 16, 64)}
    print("sub-epoch load imbalance on this data (largest stratum / mean): "
          + ", ".join(f"P={P}: {v:.3f}" for P, v in imbalance.items()))
    summary.update(scheduler_cost=cost, imbalance=imbalance, machine=_machine())
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=1, default=str))
    for c in clients.values():
        c.close()
    for c in clusters.values():
        c.close()


def cmd_project(args) -> None:
    s = json.loads(Path(args.speed_json).read_text())
    per_worker = statistics.median(s["rates"]["Dask 2 workers, P=2"]) / 2
    # Two threads per worker: the single-machine kernel's measured speed-up from one thread to two.
    two_threads = statistics.median(a / b for a, b in zip(s["rates"]["BPR threads=2"], s["rates"]["BPR threads=1"]))
    tasks, seconds = np.array(list(s["scheduler_cost"].values()), dtype=float).T
    per_task, fixed = np.polyfit(tasks, seconds, 1)
    nnz, n_users, n_items, k, bandwidth = 1e9, 20e6, 1e6, 64, 1.25e9
    item_bytes = n_items * (k + 1) * 4
    user_bytes = n_users * k * 4
    print(f"Assumptions: {nnz:.0e} interactions, {n_users:.0e} users, {n_items:.0e} items, {k} float32 factors "
          f"(item factors {item_bytes / 2**20:.0f} MiB, user factors {user_bytes / 2**30:.1f} GiB); a worker's "
          f"stratum speed as measured here at 20M pairs ({per_worker / 1e6:.2f} M samples/s a core in the 2-worker "
          f"LocalCluster; x{two_threads:.2f} with two threads, the single-machine kernel's measured gain); "
          f"{bandwidth * 8 / 1e9:.0f} Gbit/s per worker, transfers not overlapped with compute; per epoch "
          f"{fixed * 1e3:.0f} ms + {per_task * 1e3:.2f} ms per task (fitted to the tiny-matrix epochs: "
          f"{distributed.tasks_per_epoch(16)} tasks at P = 16, {distributed.tasks_per_epoch(64)} at P = 64); "
          f"P = workers; load imbalance of a sub-epoch as measured on the synthetic set at that P.")
    print("| workers x threads | compute s | imbalance | item transfer s | scheduling s | epoch s | "
          "checkpoint s |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for W, threads in ((16, 1), (16, 2), (64, 1)):
        P = W
        imbalance = s["imbalance"].get(str(P), s["imbalance"].get(P))
        compute = nnz / W / (per_worker * (two_threads if threads == 2 else 1))
        # Rotation: each worker sends and receives one block per sub-epoch (about V per epoch, all
        # workers at once); the shuffle: all of V into the first worker and back out (2V, one link).
        transfer = item_bytes * (P - 1) / P / bandwidth + 2 * item_bytes / bandwidth
        scheduling = fixed + distributed.tasks_per_epoch(P) * per_task
        epoch = compute * imbalance + transfer + scheduling
        checkpoint = (item_bytes + user_bytes) / bandwidth
        print(f"| {W} x {threads} | {compute:.1f} | {imbalance:.2f} | {transfer:.2f} | {scheduling:.1f} | "
              f"{epoch:.1f} | {checkpoint:.1f} |")


def _averaging_fit(train, P: int, epochs: int, seed: int, checkpoints, on_epoch) -> None:
    """Per-epoch parameter averaging of item factors over P user shards, with the stratum kernel."""
    model = BPR(threads=1, random_state=seed)
    state = TrainingState(model)  # the model's seed and epoch count, as distributed.fit keeps them
    state.start(train)
    bounds = _strata.user_block_bounds(train.indptr, P)
    identity = (np.zeros(train.shape[1], np.int32), np.arange(train.shape[1], dtype=np.int32))
    shards = []
    for p in range(P):
        a, b = bounds[p], bounds[p + 1]
        indptr = train.indptr[a:b + 1].astype(np.int64) - train.indptr[a]
        indices = train.indices[train.indptr[a]:train.indptr[b]]
        shards.append(_strata.split_strata(indptr, indices, *identity, 1))  # one stratum, global item ids
    for e in range(epochs):
        settings = distributed.stratum_settings(model, 1)
        V_sum = np.zeros_like(model.item_factors)
        b_sum = np.zeros_like(model.item_biases)
        for p in range(P):
            users = _strata.new_block(model.user_factors[bounds[p]:bounds[p + 1]].copy(), step=0)
            items = _strata.new_block(model.item_factors.copy(), model.item_biases.copy(), np.arange(train.shape[1]),
                                      step=0)
            _strata.train_stratum(users, items, shards[p], 0, settings, state.seed, e * P + p, 0)
            model.user_factors[bounds[p]:bounds[p + 1]] = users[0]
            V_sum += items[0]
            b_sum += items[1]
        model.item_factors[...] = V_sum / P
        model.item_biases[...] = b_sum / P
        state.install([model.user_factors, model.item_factors, model.item_biases], e + 1)
        if e + 1 in checkpoints:
            on_epoch(e + 1, model)


def cmd_quality(args) -> None:
    from bpr_numpy.datasets import load_movielens_100k

    train_i, test_i = load_movielens_100k(args.data, split="ua", min_rating=4.0)
    train, test = train_i.matrix, test_i.matrix
    checkpoints = sorted({args.epochs // 4, args.epochs // 2, args.epochs})
    rows = {}

    def recorder(seed_scores):
        def on_epoch(epoch, model):
            seed_scores.setdefault(epoch, []).append((metrics.full_auc(model, train, test),
                                                      metrics.precision_at_k(model, train, test, k=10)))
        return on_epoch

    for seed in range(args.seeds):
        scores = rows.setdefault("single machine (BPR threads=1)", {})
        on = recorder(scores)
        model = BPR(threads=1, random_state=seed)
        model.fit(train, callback=lambda r, m=model: on(r.epoch, m) if r.epoch in checkpoints else None,
                  epochs=args.epochs)
        for P in (2, 4):
            scores = rows.setdefault(f"DSGD, P={P}", {})
            on = recorder(scores)
            model = BPR(threads=1, random_state=seed)
            distributed.fit(None, train, n_blocks=P, epochs=args.epochs, model=model,  # checkpoint every epoch
                            callback=lambda r, m=model, on=on: on(r.epoch, m) if r.epoch in checkpoints else None)
            scores = rows.setdefault(f"averaging, P={P}", {})
            _averaging_fit(train, P, args.epochs, seed, checkpoints, recorder(scores))
        print(f"seed {seed} done", file=sys.stderr, flush=True)
    print(f"\nMovieLens 100k ua (ratings >= 4), default hyperparameters, {args.seeds} seeds; "
          "P1 full AUC / precision@10 on ua.test, mean ± std")
    print("| method | " + " | ".join(f"epoch {e}" for e in checkpoints) + " |")
    print("|---|" + "---:|" * len(checkpoints))
    for name, scores in rows.items():
        cells = []
        for e in checkpoints:
            a = np.array(scores[e])
            cells.append(f"{a[:, 0].mean():.4f} ± {a[:, 0].std():.4f} / {a[:, 1].mean():.4f} ± {a[:, 1].std():.4f}")
        print(f"| {name} | " + " | ".join(cells) + " |")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("speed")
    s.add_argument("--nnz", default="20M")
    s.add_argument("--interactions", default=None)
    s.add_argument("--epochs", type=int, default=4)
    s.add_argument("--repeats", type=int, default=3)
    s.add_argument("--factors", type=int, default=64)
    s.add_argument("--json", default=None)
    q = sub.add_parser("quality")
    q.add_argument("--data", default=str(ML100K))
    q.add_argument("--seeds", type=int, default=3)
    q.add_argument("--epochs", type=int, default=100)
    j = sub.add_parser("project")
    j.add_argument("--speed-json", required=True)
    args = p.parse_args(argv)
    {"speed": cmd_speed, "quality": cmd_quality, "project": cmd_project}[args.command](args)


if __name__ == "__main__":
    main()
