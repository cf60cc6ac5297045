"""The ``recommend`` sub-command of ``peers.py``: bpr_numpy's and implicit's batch ``recommend`` for every
user over the same factors, alternated, with a check that their top-n lists agree.
"""

from __future__ import annotations

import gc
import math
import statistics
import time
from dataclasses import dataclass
from typing import TextIO

import numpy as np
import scipy.sparse as sp

from _adapters import Factors
from _data import QUICK_SIZES, SCALING_SIZES
from _session import Section, Session
from _tables import _fmt_spread, _mmm


@dataclass
class RecommendRecord:
    """One timed ``recommend`` call for every user."""

    library: str
    init: str
    threads: int
    repeat: int
    users: int
    seconds: float
    cpu_s: float

    @property
    def users_per_s(self) -> float:
        return self.users / self.seconds if self.seconds > 0 else math.inf


def recommend_factors(csr: sp.csr_matrix, init: str, factors: int, epochs: int, seed: int,
                      log: TextIO) -> Factors:
    """float32 factors for the recommend benchmark.

    ``random``: N(0, 0.1^2) factors and biases, no structure (every item is a contender for
    every user, the worst case for bpr_numpy's early stop). ``trained``: bpr_numpy ``BPR``
    fitted for ``epochs`` epochs on ``csr`` (item norms and biases follow popularity).
    """
    if init == "random":
        rng = np.random.default_rng(seed)
        n_users, n_items = csr.shape
        return Factors((rng.standard_normal((n_users, factors)) * 0.1).astype(np.float32),
                       (rng.standard_normal((n_items, factors)) * 0.1).astype(np.float32),
                       (rng.standard_normal(n_items) * 0.1).astype(np.float32))
    from bpr_numpy import BPR

    t0 = time.perf_counter()
    model = BPR(factors=factors, epochs=epochs, threads=0, random_state=seed).fit(csr, show_progress=False)
    print(f"trained bpr_numpy for {epochs} epochs in {time.perf_counter() - t0:.1f} s (not timed)",
          file=log, flush=True)
    return Factors(model.user_factors, model.item_factors, model.item_biases)


class RecommendRunner:
    """The two libraries' batch ``recommend`` over the same factors and the same liked items.

    bpr_numpy: a ``BPR`` holding the factors, ``recommend(users, n, filter_liked=True,
    user_items=csr)`` (the matrix is validated inside the timed call). implicit 0.7:
    ``implicit.cpu.bpr.BayesianPersonalizedRanking`` with ``user_factors = [U, 1]`` and
    ``item_factors = [V, b]`` (its bias column, see :class:`ImplicitAdapter`), so it scores
    ``U V^T + b`` too, in one sgemm (float32 rounding differs in the last bits);
    ``recommend(userids, user_items[userids], N=n, filter_already_liked_items=True)``, the
    row slice taken before the timer.
    """

    def __init__(self, csr: sp.csr_matrix, f: Factors, with_implicit: bool) -> None:
        from bpr_numpy import BPR

        self.csr = csr
        self.users = np.arange(csr.shape[0])
        self.ours = BPR(factors=f.user_factors.shape[1], threads=1)
        self.ours.user_factors, self.ours.item_factors, self.ours.item_biases = (
            f.user_factors, f.item_factors, f.item_bias)
        self.theirs = None
        if with_implicit:
            from implicit.cpu.bpr import BayesianPersonalizedRanking

            ones = np.ones((csr.shape[0], 1), np.float32)
            self.theirs = BayesianPersonalizedRanking(factors=f.user_factors.shape[1], dtype=np.float32)
            self.theirs.user_factors = np.ascontiguousarray(np.hstack([f.user_factors, ones]))
            self.theirs.item_factors = np.ascontiguousarray(np.hstack([f.item_factors, f.item_bias[:, None]]))
            self.liked_rows = sp.csr_matrix(csr)[self.users]

    def run(self, library: str, threads: int, n: int,
            users: np.ndarray | None = None) -> tuple[np.ndarray, float, float]:
        """Top-n for ``users`` (default all): (items, wall s, CPU s); BLAS held to ``threads``."""
        from threadpoolctl import threadpool_limits

        users = self.users if users is None else users
        with threadpool_limits(threads):
            c0, t0 = time.process_time(), time.perf_counter()
            if library == "bpr_numpy":
                self.ours.threads = threads
                items, _ = self.ours.recommend(users, n=n, filter_liked=True, user_items=self.csr)
            else:
                self.theirs.num_threads = threads
                liked = self.liked_rows if users is self.users else sp.csr_matrix(self.csr)[users]
                items, _ = self.theirs.recommend(users, liked, N=n, filter_already_liked_items=True)
            return np.asarray(items), time.perf_counter() - t0, time.process_time() - c0


def check_same_top_n(f: Factors, csr: sp.csr_matrix, users: np.ndarray, ours: np.ndarray,
                     theirs: np.ndarray) -> tuple[int, int]:
    """How many users get identical lists, and how many get lists equal up to ties.

    Up to ties: position by position, the exact (float64) scores of the two lists differ
    by at most 1e-5 of the user's largest |score| (float32 rounding), and neither list holds
    a liked item.
    """
    identical = tied = 0
    s_all = f.user_factors[users].astype(np.float64) @ f.item_factors.T.astype(np.float64) + f.item_bias
    for a, u in enumerate(users):
        s = s_all[a]
        liked = set(csr.indices[csr.indptr[u]:csr.indptr[u + 1]].tolist())
        if np.array_equal(ours[a], theirs[a]):
            identical += 1
        tol = 1e-5 * np.abs(s).max()
        if not (liked & set(ours[a].tolist()) or liked & set(theirs[a].tolist())) and \
                np.all(np.abs(s[ours[a]] - s[theirs[a]]) <= tol):
            tied += 1
    return identical, tied


def cmd_recommend(session: Session) -> Section:
    """Batch ``recommend`` for every user of the 200k x 50k set (n=10, liked items filtered)."""
    a = session.args
    nnz = max(QUICK_SIZES) if a.quick else SCALING_SIZES[-1]
    csr = session.synthetic(nnz)
    threads = session.threads([1, 2])
    repeats = session.repeats()
    n = 10
    names = [x.name for x in session.adapters if x.name in ("bpr_numpy", "implicit")]
    if "bpr_numpy" not in names:
        raise SystemExit("recommend needs bpr_numpy in --libs")
    log = session.log
    records: list[RecommendRecord] = []
    notes: list[str] = []
    lines: list[list[str]] = []
    for init in a.init:
        f = recommend_factors(csr, init, a.factors, session.epochs(3), a.seed, log)
        runner = RecommendRunner(csr, f, "implicit" in names)
        sample = np.random.default_rng(a.seed).choice(csr.shape[0], min(500, csr.shape[0]), replace=False)
        for t in threads:  # warm-up: numba compilation, thread pools
            for lib in names:
                runner.run(lib, t, n, sample[:50])
        if "implicit" in names:
            ours, _, _ = runner.run("bpr_numpy", 1, n, sample)
            theirs, _, _ = runner.run("implicit", 1, n, sample)
            same, tied = check_same_top_n(f, csr, sample, ours, theirs)
            notes.append(f"{init} factors: top-{n} lists of {len(sample)} random users: {same} identical, "
                         f"{tied} equal up to float32 ties")
        for r in range(repeats):
            for t in threads:
                for lib in names:
                    _, sec, cpu = runner.run(lib, t, n)
                    rec = RecommendRecord(lib, init, t, r, csr.shape[0], sec, cpu)
                    records.append(rec)
                    print(f"  [recommend {init} repeat {r + 1}/{repeats} threads {t}] {lib:<9s} {sec:8.2f} s  "
                          f"{rec.users_per_s:10,.0f} users/s  CPU/wall {cpu / sec:4.2f}", file=log, flush=True)
        del runner, f
        gc.collect()
        for t in threads:
            mine = {x.repeat: x for x in records if x.init == init and x.threads == t and x.library == "bpr_numpy"}
            for lib in names:
                recs = [x for x in records if x.init == init and x.threads == t and x.library == lib]
                sec = _mmm([x.seconds for x in recs])
                ratio = _mmm([x.seconds / mine[x.repeat].seconds for x in recs])
                lines.append([init, lib, str(t), _fmt_spread(sec, 2) if len(recs) > 1 else f"{sec[0]:.2f}",
                              f"{statistics.median(x.users_per_s for x in recs):,.0f}",
                              "1" if lib == "bpr_numpy" else (_fmt_spread(ratio, 2) if len(recs) > 1
                                                              else f"{ratio[0]:.2f}"),
                              f"{statistics.median(x.cpu_s / x.seconds for x in recs):.2f}"])
    head = ["factors", "library", "threads", "s (median, min-max)", "users/s", "peer s / bpr_numpy s", "CPU/wall"]
    data_line = (f"data: bpr_numpy.datasets.synthetic, {csr.shape[0]:,} users x {csr.shape[1]:,} items, "
                 f"{csr.nnz:,} liked pairs{' [--quick size]' if a.quick else ''}; recommend for all "
                 f"{csr.shape[0]:,} users, n={n}, liked items filtered; factors {a.factors}, float32; "
                 f"{repeats} repeat(s), libraries alternated, BLAS held to the thread count (threadpoolctl)")
    notes += [
        "s: wall time of one recommend call for every user, after an untimed warm-up call per library and "
        "thread count; peer s / bpr_numpy s from the same repeat, median (min-max): > 1 means bpr_numpy is faster",
        "random factors: N(0, 0.1^2), no item stands out, so bpr_numpy's early stop (Cauchy-Schwarz bound on "
        "the items left) settles almost no user: this is the full product; trained factors: bpr_numpy BPR, "
        f"{session.epochs(3)} epochs on the same pairs, not timed",
        "implicit: user_factors [U, 1], item_factors [V, b], num_threads = threads; its batches are 100 users, "
        "prange over batches with the GIL held around each batch's product and per-user filtering",
    ]
    return Section("recommend", data_line, [], notes, table=(head, lines))
