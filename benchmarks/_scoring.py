"""Scoring on MovieLens 100k's ``ua`` split, shared by ``movielens.py``, ``quality.py`` and ``ceiling.py``: the
table's metric columns, the issue's targets, a row of per-seed test scores (:class:`Row`, :func:`measure`)
and one validation-search candidate (:class:`Trial`, :func:`run_trial`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Protocol, Sequence, TextIO

import numpy as np
import scipy.sparse as sp

from bpr_numpy import BPR, metrics

# The targets for the tuned rows on ua.test.
TARGET_P1 = 0.93
TARGET_PRECISION = 0.16

# (column key in metrics.evaluate's result, header)
COLUMNS: tuple[tuple[str, str], ...] = (
    ("full_auc", "P1 full AUC"),
    ("auc", "P2 AUC"),
    ("precision@10", "precision@10"),
    ("recall@10", "recall@10"),
    ("ndcg@10", "NDCG@10"),
)


def _num(x: float) -> str:
    return f"{x:g}"


def describe(params: Mapping[str, Any]) -> str:
    """Short human-readable form of a BPR keyword set (learning rate, regularisation, loss...).

    Parameters
    ----------
    params : mapping
        Keyword arguments of :class:`bpr_numpy.BPR` (not ``factors``/``epochs``/seeding).

    Returns
    -------
    str
    """
    parts = [f"lr {_num(params.get('learning_rate', 0.02))}"]
    reg = params.get("regularization", 0.02)
    if isinstance(reg, Mapping):
        vals = {k: float(reg.get(k, 0.0)) for k in ("user", "positive", "negative", "bias")}
        # the most common strength, then the roles that differ from it: "reg 0.02 (negative 0.005)"
        common = max(vals.values(), key=list(vals.values()).count)
        others = ", ".join(f"{k} {_num(v)}" for k, v in vals.items() if v != common)
        parts.append(f"reg {_num(common)}" + (f" ({others})" if others else ""))
    else:
        parts.append(f"reg {_num(reg)}")
    parts.append(f"loss {params.get('loss', 'bpr')}")
    if params.get("item_bias", True) is False:
        parts.append("no item bias")
    return ", ".join(parts)


class TrainingBudget(Protocol):
    """What :func:`run_trial` reads of a search plan (``movielens.SearchPlan``, ``quality.Plan``)."""

    max_epochs: int
    validate_every: int
    patience: int
    seeds: tuple[int, ...]


@dataclass
class Trial:
    """One searched configuration, trained once per search seed on the validation split.

    Attributes
    ----------
    factors : int
    stage : str
    params : dict
        BPR keyword arguments (learning rate, regularisation, loss...).
    best_epochs : list of int
        Per seed, the evaluated epoch with the best validation score (whose factors were kept).
    scores : dict of str to list of float
        Per seed, the kept model's validation metrics (keys of :data:`COLUMNS`).
    trained_epochs : list of int
        Per seed, epochs actually trained before early stopping.
    capped : bool
        Some seed's best epoch was the last one allowed: more epochs might have helped.
    seconds : float
        Wall-clock time of all its fits, validation included.
    """

    factors: int
    stage: str
    params: dict
    best_epochs: list[int] = field(default_factory=list)
    scores: dict[str, list[float]] = field(default_factory=dict)
    trained_epochs: list[int] = field(default_factory=list)
    capped: bool = False
    seconds: float = 0.0

    def mean(self, key: str) -> float:
        """Mean over seeds of validation metric ``key``."""
        return float(np.mean(self.scores[key]))

    def refit_epochs(self, every: int) -> int:
        """Epochs for the refit on all of ``ua.base``: mean best epoch, rounded to ``every``."""
        return max(every, int(round(float(np.mean(self.best_epochs)) / every)) * every)


def quality(model: Any, train: sp.spmatrix, test: sp.spmatrix) -> dict[str, float]:
    """The table's metrics of a model or block scorer, P1/P2 as in docs/design.md, 'Evaluation protocols'.

    Parameters
    ----------
    model : BPR or callable
        Anything :func:`bpr_numpy.metrics.evaluate` scores.
    train, test : sparse matrix
        Train positives (removed from P2's ranking, negatives in P1) and held-out positives.

    Returns
    -------
    dict
        The keys of :data:`COLUMNS`.
    """
    r = metrics.evaluate(model, train, test, k=10, metrics=["full_auc", "auc", "precision", "recall", "ndcg"])
    return {key: float(r[key]) for key, _ in COLUMNS}


def run_trial(trial: Trial, fit_train: sp.spmatrix, valid: sp.spmatrix, plan: TrainingBudget, select: str,
              log: TextIO) -> Trial:
    """Train ``trial`` for every search seed with early stopping on ``select``; fill its scores.

    Parameters
    ----------
    trial : Trial
        Configuration to run (modified in place).
    fit_train, valid : sparse matrix
        The 90% of ``ua.base`` trained on, and the 10% validated on.
    plan : TrainingBudget
        Epoch cap, validation interval, patience and seeds.
    select : str
        Validation metric of early stopping and selection.
    log : file
        Progress is written here.

    Returns
    -------
    Trial
        ``trial``.
    """
    start = time.perf_counter()
    for seed in plan.seeds:
        model = BPR(factors=trial.factors, epochs=plan.max_epochs, threads=1, random_state=seed, **trial.params)
        model.fit(fit_train, validation=(fit_train, valid), metric=select, patience=plan.patience,
                  validate_every=plan.validate_every)
        if model.best_epoch_ is None:  # nothing evaluable: cannot happen on this data, but say so
            raise RuntimeError(f"no validation score for {describe(trial.params)}")
        trial.best_epochs.append(int(model.best_epoch_))
        trial.trained_epochs.append(len(model.history_))
        trial.capped |= model.best_epoch_ >= plan.max_epochs
        for key, value in quality(model, fit_train, valid).items():
            trial.scores.setdefault(key, []).append(value)
    trial.seconds = time.perf_counter() - start
    print(f"  [{trial.factors:3d} factors] {trial.stage:<10s} {describe(trial.params):<58s} "
          f"valid {select} {trial.mean(select):.4f}  P1 {trial.mean('full_auc'):.4f}  "
          f"best epochs {trial.best_epochs}{' (cap)' if trial.capped else ''}  {trial.seconds:.1f} s",
          file=log, flush=True)
    return trial


@dataclass
class Row:
    """One line of the result table: per-seed values of each column.

    Attributes
    ----------
    name : str
    values : dict of str to ndarray
        Keys of :data:`COLUMNS`, one value per seed.
    fit_seconds : ndarray or None
        Wall-clock seconds of ``fit`` per seed; None for baselines.
    """

    name: str
    values: dict[str, np.ndarray]
    fit_seconds: np.ndarray | None = None

    def mean(self, key: str) -> float:
        """Mean over seeds of column ``key``."""
        return float(np.mean(self.values[key]))


def measure(name: str, make: Callable[[int], Any], train: sp.spmatrix, test: sp.spmatrix,
            seeds: Sequence[int], log: TextIO) -> Row:
    """Fit (if a BPR) and score one row over seeds.

    Parameters
    ----------
    name : str
        Row label.
    make : callable
        ``make(seed)``: an unfitted :class:`BPR` (fitted and timed here) or a block scorer.
    train, test : sparse matrix
        ``ua.base`` and ``ua.test`` positives.
    seeds : sequence of int
    log : file

    Returns
    -------
    Row
    """
    values: dict[str, list[float]] = {}
    seconds: list[float] = []
    for seed in seeds:
        model = make(seed)
        if isinstance(model, BPR):
            start = time.perf_counter()
            model.fit(train)
            seconds.append(time.perf_counter() - start)
        for key, value in quality(model, train, test).items():
            values.setdefault(key, []).append(value)
    row = Row(name, {k: np.asarray(v) for k, v in values.items()}, np.asarray(seconds) if seconds else None)
    print(f"  {name}: P1 {row.mean('full_auc'):.4f}  precision@10 {row.mean('precision@10'):.4f}",
          file=log, flush=True)
    return row


def _cell(x: np.ndarray | None, digits: int) -> str:
    if x is None:
        return "—"
    if len(x) == 1:
        return f"{x[0]:.{digits}f}"
    return f"{np.mean(x):.{digits}f} ± {np.std(x, ddof=1):.{digits}f}"
