"""How far is the best pure-BPR model from what this split allows? Strong non-BPR references and P1's anatomy.

Issue 6 asks the best pure-BPR configuration to reach P1 >= 0.93 and precision@10 >= 0.16 on
MovieLens 100k ``ua.test`` (ratings >= 4). This script puts that target next to what other
well-tuned models reach on exactly the same protocol (docs/design.md, 'Evaluation protocols'), and takes P1 apart:

- references that are not BPR, plus popularity: **EASE** (Steck, WWW 2019: closed-form
  item-item ridge regression with a zero diagonal, penalty ``lambda``) and **RP3beta** (Paudel
  et al., 2017: three-step random walk item-item graph, transition probabilities raised to
  ``alpha``, divided by the target item's popularity to the ``beta``, each target item keeping
  its ``top_k`` strongest sources), two of the simple baselines that Dacrema et al. ("Are we
  really making much progress?", RecSys 2019, and its 2021 journal version) found hard to beat
  on top-n tasks. Each is tuned on the validation split every benchmark here uses
  (``split_random(ua.base, 0.1, random_state=0)``), once for validation precision@10 and once
  for validation P1, and scored on ``ua.test``; a winner on the edge of its grid is flagged.
  They show whether other strong models clear the targets; being below BPR here, they bound
  nothing;
- the best pure-BPR-loss configuration of ``benchmarks/quality.py`` (its validation search is
  re-run here for the epoch count), refitted for ``--seeds`` seeds, and the **ensemble** of
  those models (mean of each user's standardised scores);
- where each model's P1 loss comes from: for every user, the (test positive, other item)
  pairs it orders wrongly (ties count one half), split by the kind of the other item: a
  **train positive** of the user, an item the user **rated below 4** in ``ua.test``, or any
  **other** item. P1 = 1 - the three parts. Train positives are labelled negatives in P1, and
  a model fitted to them scores them high; the column "P1, train positives at chance" is the
  P1 the same model would get if it ordered its train positives against the test positives
  no better than a coin (half of those pairs wrong), the most a model that cannot tell the
  random split's two halves apart can expect from them.

The decomposition is checked against :func:`bpr_numpy.metrics.evaluate`'s P1 for every row.

Usage::

    python benchmarks/ceiling.py [--data PATH] [--seeds 5] [--quick] [--markdown PATH]

One core (``threads=1``, BLAS limited to one thread). ``--markdown PATH`` writes the
``## How far from the ceiling`` section into PATH (only that section is replaced).
"""

from __future__ import annotations

import sys
from pathlib import Path

if str(Path(__file__).resolve().parent) not in sys.path:  # loaded by path (a test): see _common.py
    sys.path.append(str(Path(__file__).resolve().parent))
from _common import one_thread  # noqa: E402 - standard library only

one_thread(__name__)  # one core only; before numpy is imported

import argparse  # noqa: E402
import itertools  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from typing import Callable, Mapping, Sequence, TextIO  # noqa: E402

import numpy as np  # noqa: E402
import scipy.sparse as sp  # noqa: E402

from bpr_numpy import BPR, metrics  # noqa: E402
from bpr_numpy.datasets import load_movielens_100k, split_random  # noqa: E402

from _combinations import COMBINATIONS, FULL_PLAN, QUICK_PLAN, label, tune  # noqa: E402
from _data import DEFAULT_DATA  # noqa: E402
from _report import machine_line, write_markdown  # noqa: E402
from _scoring import TARGET_P1, TARGET_PRECISION  # noqa: E402

SECTION_TITLE = "## How far from the ceiling"
# The pure-BPR-loss row of benchmarks/quality.py with the best precision@10 on ua.test.
BEST_PURE_BPR = "bpr, dns 2, sgd + decay 0.99, negative reg x3, 128 factors"
EASE_PENALTIES = (50.0, 100.0, 200.0, 400.0, 800.0, 1600.0, 3200.0)
RP3_ALPHAS = (0.1, 0.25, 0.5, 0.75, 1.0, 1.25)
RP3_BETAS = (0.0, 0.1, 0.2, 0.3, 0.5, 0.6, 0.7, 0.8, 1.0, 1.2)
RP3_TOP_K = (50, 200, None)  # None: every source item
Scores = Callable[[np.ndarray], np.ndarray]


def ease_scores(train: sp.csr_matrix, penalty: float) -> np.ndarray:
    """EASE scores (users x items): ``X B`` with ``B = I - P diagMat(1 / diag(P))``, ``P = (X'X + lambda I)^-1``.

    Parameters
    ----------
    train : csr_matrix
        Binary train positives.
    penalty : float
        The ridge penalty ``lambda``.

    Returns
    -------
    ndarray, float64
    """
    x = (train > 0).astype(np.float64)
    gram = (x.T @ x).toarray()
    gram[np.diag_indices_from(gram)] += penalty
    p = np.linalg.inv(gram)
    b = -p / np.diag(p)
    np.fill_diagonal(b, 0.0)
    return np.asarray(x @ b)


def rp3beta_scores(train: sp.csr_matrix, alpha: float, beta: float, top_k: int | None = None) -> np.ndarray:
    """RP3beta scores (users x items): ``X W`` with ``W = (P_iu P_ui)^alpha / popularity^beta``, zero diagonal.

    ``P_ui`` and ``P_iu`` are the row-normalised user -> item and item -> user transition
    matrices; the power is taken on each transition probability, as Paudel et al. do.

    Parameters
    ----------
    train : csr_matrix
        Binary train positives.
    alpha, beta : float
    top_k : int, optional
        Keep, for each target item (column of ``W``), only its ``top_k`` largest weights
        (ties at the cut kept by lower source index); None keeps them all.

    Returns
    -------
    ndarray, float64
    """
    x = (train > 0).astype(np.float64).toarray()
    per_user = np.maximum(x.sum(axis=1, keepdims=True), 1.0)
    popularity = np.maximum(x.sum(axis=0), 1.0)
    p_ui = (x / per_user) ** alpha
    p_iu = (x.T / popularity[:, None]) ** alpha
    w = (p_iu @ p_ui) / popularity[None, :] ** beta
    np.fill_diagonal(w, 0.0)
    if top_k is not None and top_k < w.shape[0]:
        # Per column, largest first, lower index first on ties; weights equal but for round-off
        # (sums of powers in another order) are ties too.
        order = np.argsort(-np.round(w, 12), axis=0, kind="stable")
        drop = order[top_k:, :]
        np.put_along_axis(w, drop, 0.0, axis=0)
    return x @ w


def standardised_mean(score_blocks: Sequence[Scores]) -> Scores:
    """A block scorer: the mean over models of each user's scores standardised to mean 0, std 1.

    Models trained from different seeds agree on rankings, not on scales or offsets; averaging
    raw scores would let the widest-spread model decide.
    """
    def score_block(users: np.ndarray) -> np.ndarray:
        total = 0.0
        for scorer in score_blocks:
            s = np.asarray(scorer(users), dtype=np.float64)
            sd = s.std(axis=1, keepdims=True)
            total = total + (s - s.mean(axis=1, keepdims=True)) / np.where(sd > 0, sd, 1.0)
        return total / len(score_blocks)
    return score_block


def model_scores(model: BPR) -> Scores:
    """The block scorer of a fitted model (``U[users] V' + b``, float64)."""
    u = model.user_factors.astype(np.float64)
    v = model.item_factors.astype(np.float64)
    b = model.item_biases.astype(np.float64)
    return lambda users: u[users] @ v.T + b


def p1_parts(score: Scores, train: sp.csr_matrix, test: sp.csr_matrix, rated_test: sp.csr_matrix) -> dict[str, float]:
    """P1 taken apart by the kind of item a test positive is wrongly ordered against.

    For every user with a test positive and a non-positive, the fraction of (test positive, non-test-positive)
    pairs ordered wrongly (ties one half) is split by the non-positive's kind: ``"train"``
    (a train positive of the user), ``"rated_below_4"`` (in ``rated_test`` but not a test
    positive), ``"other"``; each part is averaged over users as P1 is. ``"chance"`` is the
    P1 with the train part replaced by half the user's train share of the negatives.

    Parameters
    ----------
    score : callable
        ``score(users) -> (len(users), n_items)`` scores.
    train, test : csr_matrix
        Train and test positives.
    rated_test : csr_matrix
        Every item the user rated in the test file, whatever the rating.

    Returns
    -------
    dict
        ``"p1"``, ``"train"``, ``"rated_below_4"``, ``"other"``, ``"chance"``, and
        ``"train_share"`` (the users' mean share of train positives among their negatives:
        the most the train part can be).
    """
    # Stored values > 0 are positives, as metrics.evaluate reads them.
    train, test, rated_test = (sp.csr_matrix(m > 0) for m in (train, test, rated_test))
    n_users, n_items = train.shape
    users = np.flatnonzero(np.diff(test.indptr))
    parts = {"train": [], "rated_below_4": [], "other": [], "train_share": []}
    for start in range(0, len(users), 256):
        block = users[start:start + 256]
        scores = score(block)
        for row, u in zip(scores, block):
            pos = test.indices[test.indptr[u]:test.indptr[u + 1]]
            kind = np.full(n_items, 2, np.int8)  # other
            kind[rated_test.indices[rated_test.indptr[u]:rated_test.indptr[u + 1]]] = 1
            kind[train.indices[train.indptr[u]:train.indptr[u + 1]]] = 0
            kind[pos] = -1
            n_neg = n_items - len(pos)
            if n_neg == 0:
                continue  # AUC undefined: not averaged, as in metrics.evaluate
            ps = row[pos]
            for code, name in ((0, "train"), (1, "rated_below_4"), (2, "other")):
                neg = np.sort(row[kind == code])
                above = len(neg) - np.searchsorted(neg, ps, side="right")
                ties = np.searchsorted(neg, ps, side="right") - np.searchsorted(neg, ps, side="left")
                parts[name].append(float(np.sum(above + 0.5 * ties)) / (len(ps) * n_neg))
            parts["train_share"].append(float(np.sum(kind == 0)) / n_neg)
    out = {k: float(np.mean(v)) for k, v in parts.items()}
    out["p1"] = 1.0 - out["train"] - out["rated_below_4"] - out["other"]
    out["chance"] = 1.0 - 0.5 * out["train_share"] - out["rated_below_4"] - out["other"]
    return out


@dataclass
class Result:
    """One row: per-seed metrics and P1 parts of a model (one seed for deterministic models)."""

    name: str
    settings: str
    values: dict[str, list[float]]

    def mean(self, key: str) -> float:
        return float(np.mean(self.values[key]))

    def cell(self, key: str) -> str:
        v = self.values[key]
        return f"{np.mean(v):.4f}" if len(v) == 1 else f"{np.mean(v):.4f} ± {np.std(v, ddof=1):.4f}"


def score_row(values: dict[str, list[float]], score: Scores, train: sp.csr_matrix, test: sp.csr_matrix,
              rated_test: sp.csr_matrix) -> None:
    """Append one model's test metrics and P1 parts to ``values``; check the parts against ``evaluate``."""
    r = metrics.evaluate(score, train, test, k=10, metrics=["full_auc", "auc", "precision", "ndcg"])
    parts = p1_parts(score, train, test, rated_test)
    if abs(parts["p1"] - r["full_auc"]) > 1e-9:
        raise AssertionError(f"P1 parts sum to {parts['p1']!r}, evaluate says {r['full_auc']!r}")
    for key in ("full_auc", "auc", "precision@10", "ndcg@10"):
        values.setdefault(key, []).append(float(r[key]))
    for key in ("train", "rated_below_4", "other", "chance", "train_share"):
        values.setdefault(key, []).append(parts[key])


def tune_reference(name: str, axes: Mapping[str, Sequence], score: Callable[..., np.ndarray],
                   fit_train: sp.csr_matrix, valid: sp.csr_matrix,
                   log: TextIO) -> dict[str, tuple[dict, list[str]]]:
    """Score every point of the grid ``axes`` on the validation split; the winner by precision@10 and by P1.

    Parameters
    ----------
    name : str
    axes : mapping of str to sequence
        Each keyword of ``score`` and its values, in increasing order (None, meaning "no
        limit", last).
    score : callable
        ``score(train, **point) -> (users, items)`` scores.
    fit_train, valid : csr_matrix
    log : file

    Returns
    -------
    dict
        ``{"precision@10": (point, edges), "full_auc": (point, edges)}``: the winning keywords,
        and the axes on whose first or last numeric value the winner sits (the optimum may lie
        beyond the grid).
    """
    scored = []
    for values in itertools.product(*axes.values()):
        point = dict(zip(axes, values))
        s = score(fit_train, **point)
        r = metrics.evaluate(lambda users: s[users], fit_train, valid, k=10, metrics=["full_auc", "precision"])
        scored.append((point, r["precision@10"], r["full_auc"]))
        print(f"  {name} {describe(point)}: valid P1 {r['full_auc']:.4f}  precision@10 {r['precision@10']:.4f}",
              file=log, flush=True)

    def edges(point: dict) -> list[str]:
        out = []
        for key, values in axes.items():
            numeric = [v for v in values if v is not None]
            if len(values) > 1 and point[key] is not None and point[key] in (numeric[0], numeric[-1]):
                if point[key] == numeric[-1] and None in values:
                    continue  # below "no limit": an interior point
                out.append(key)
        return out

    by_precision = max(scored, key=lambda t: t[1])[0]
    by_p1 = max(scored, key=lambda t: t[2])[0]
    return {"precision@10": (by_precision, edges(by_precision)), "full_auc": (by_p1, edges(by_p1))}


def describe(point: Mapping) -> str:
    """``{"alpha": 0.5, "top_k": None}`` -> ``"alpha 0.5, top_k all"``."""
    return ", ".join(f"{k} {'all' if v is None else format(v, 'g')}" for k, v in point.items())


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=str(DEFAULT_DATA), help="MovieLens 100k folder (u.data, ua.base, ua.test)")
    p.add_argument("--seeds", type=int, default=5, help="seeds of the BPR refits, and models in the ensemble")
    p.add_argument("--quick", action="store_true", help="two grid points per reference, short BPR search (smoke)")
    p.add_argument("--markdown", default=None, help="write the section into this Markdown file")
    return p


COLUMNS = (("full_auc", "P1 full AUC"), ("auc", "P2 AUC"), ("precision@10", "precision@10"),
           ("ndcg@10", "NDCG@10"), ("train", "P1 lost to train positives"),
           ("rated_below_4", "to items rated < 4"), ("other", "to other items"),
           ("chance", "P1, train positives at chance"))


def main(argv: Sequence[str] | None = None, out: TextIO = sys.stdout, log: TextIO = sys.stderr) -> dict:
    """Run the comparison; print the section; return ``{"rows": [...], "verdict": [...]}``."""
    args = build_parser().parse_args(argv)
    if args.seeds < 1:
        raise SystemExit("--seeds must be >= 1")
    train_i, test_i = load_movielens_100k(args.data, split="ua", min_rating=4.0)
    rated_test = load_movielens_100k(args.data, split="ua", min_rating=None)[1].matrix
    train, test = train_i.matrix, test_i.matrix
    fit_i, valid_i = split_random(train_i, 0.1, random_state=0)
    fit_train, valid = fit_i.matrix, valid_i.matrix
    rows: list[Result] = []

    pop = Result("popularity", "—", {})
    score_row(pop.values, metrics.popularity_scorer(train), train, test, rated_test)
    rows.append(pop)

    references = (
        ("EASE", ease_scores, {"penalty": EASE_PENALTIES[2:4] if args.quick else EASE_PENALTIES}),
        ("RP3beta", rp3beta_scores, {"alpha": RP3_ALPHAS[:1] if args.quick else RP3_ALPHAS,
                                     "beta": RP3_BETAS[:2] if args.quick else RP3_BETAS,
                                     "top_k": RP3_TOP_K[-1:] if args.quick else RP3_TOP_K}),
    )
    for name, score, axes in references:
        print(f"{name}:", file=log, flush=True)
        winners = tune_reference(name, axes, score, fit_train, valid, log)
        done = {}
        for metric, (point, on_edge) in winners.items():
            settings = describe(point)
            if on_edge:
                settings += f" (on the grid's edge: {', '.join(on_edge)})"
            if settings in done:
                done[settings].name += " = best valid P1"
                continue
            chosen = "best valid precision@10" if metric == "precision@10" else "best valid P1"
            s = score(train, **point)
            row = Result(f"{name}, {chosen}", settings, {})
            score_row(row.values, lambda users: s[users], train, test, rated_test)
            rows.append(row)
            done[settings] = row

    combo = next(c for c in COMBINATIONS if c.name == BEST_PURE_BPR)
    print(f"{combo.name}:", file=log, flush=True)
    plan = QUICK_PLAN if args.quick else FULL_PLAN
    BPR(factors=combo.factors, epochs=1, threads=1, **combo.grid(True)[0]).fit(fit_train)  # compile outside timers
    winner, _ = tune(combo, fit_train, valid, plan, args.quick, log)
    epochs = winner.refit_epochs(plan.validate_every)
    settings = f"{label(winner.params)}, {combo.factors} factors, {epochs} epochs"
    single = Result(f"bpr_numpy {combo.name}", settings, {})
    scorers = []
    fit_seconds = []
    for seed in range(args.seeds):
        model = BPR(factors=combo.factors, epochs=epochs, threads=1, random_state=seed, **winner.params)
        start = time.perf_counter()
        model.fit(train)
        fit_seconds.append(time.perf_counter() - start)
        scorers.append(model_scores(model))
        score_row(single.values, scorers[-1], train, test, rated_test)
    rows.append(single)
    BPR(threads=1, epochs=1).fit(train)  # the default path compiled outside the timer
    default_seconds = []
    for seed in range(args.seeds):
        start = time.perf_counter()
        BPR(threads=1, random_state=seed).fit(train)
        default_seconds.append(time.perf_counter() - start)
    ensemble = Result(f"ensemble of the {args.seeds} bpr_numpy models above", "mean of standardised scores", {})
    score_row(ensemble.values, standardised_mean(scorers), train, test, rated_test)
    rows.append(ensemble)

    head = ["model", "settings (chosen on validation)"] + [h for _, h in COLUMNS]
    table = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    table += ["| " + " | ".join([r.name, r.settings] + [r.cell(k) for k, _ in COLUMNS]) + " |" for r in rows]
    best_p1 = max(rows, key=lambda r: r.mean("full_auc"))
    best_prec = max(rows, key=lambda r: r.mean("precision@10"))
    best_chance = max(rows, key=lambda r: r.mean("chance"))
    verdict = [
        f"- Highest P1 of any row: {best_p1.mean('full_auc'):.4f} ({best_p1.name}); target {TARGET_P1}.",
        f"- Highest precision@10 of any row: {best_prec.mean('precision@10'):.4f} ({best_prec.name}); "
        f"target {TARGET_PRECISION}.",
        f"- Highest P1 with train positives ordered at chance: {best_chance.mean('chance'):.4f} "
        f"({best_chance.name}).",
        f"- Best pure-BPR model: P1 {single.mean('full_auc'):.4f}, precision@10 {single.mean('precision@10'):.4f}, "
        f"fit {np.mean(fit_seconds):.2f} s, {np.mean(fit_seconds) / np.mean(default_seconds):.1f}x a default "
        f"`BPR(threads=1)` fit in the same run ({np.mean(default_seconds):.2f} s). It loses "
        f"{single.mean('train'):.4f} of P1 to train positives ranked above test positives, "
        f"{single.mean('train') / single.mean('train_share'):.0%} of the "
        f"{single.mean('train_share'):.4f} they can cost at most (a coin would lose half); with them at chance, "
        f"reaching P1 {TARGET_P1} would still need the other parts to fall from "
        f"{single.mean('rated_below_4') + single.mean('other'):.4f} to "
        f"{1 - TARGET_P1 - 0.5 * single.mean('train_share'):.4f}.",
    ]
    command = "python benchmarks/ceiling.py " + " ".join(argv if argv is not None else sys.argv[1:])
    section = "\n".join([
        SECTION_TITLE, "",
        f"MovieLens 100k `ua` (ratings >= 4), scored on `ua.test` as everywhere in this file; every setting chosen "
        f"on the validation split carved from `ua.base`. bpr_numpy rows: mean ± std over {args.seeds} seeds, one "
        f"thread. Machine: {machine_line()}. Command: `{command.strip()}`. The last four columns take P1 apart "
        "(see the script's docstring): the P1 lost to pairs (test positive, X) ordered wrongly, by the kind of X, "
        "and the P1 the model would have if it ordered its train positives against the test positives at chance.",
        "", *table, "", *verdict, "",
    ])
    print(section, file=out)
    if args.markdown:
        write_markdown(args.markdown, section, title=SECTION_TITLE)
    return {"rows": rows, "verdict": verdict}


if __name__ == "__main__":
    main()
