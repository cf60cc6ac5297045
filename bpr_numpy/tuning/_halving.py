"""Successive halving as a pure function of a training and a scoring callable and a clock.

The rungs, the budget, and sizing the arms from it; nothing here trains a model.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    pass

#: Most arms :func:`successive_halving` starts when it sizes the search from the budget
#: (``n_arms=None``). 243 = 3**5 random draws cover a space of a handful of dimensions well; a
#: budget that would afford more arms finishes early instead (raise ``max_epochs`` to use it).
MAX_ARMS = 243


@dataclass(frozen=True)
class Checkpoint:
    """One arm scored after a rung of :func:`successive_halving`.

    Attributes
    ----------
    arm : int
        The arm's index, from 0.
    rung : int
        The rung, from 0.
    epochs : int
        Epochs the arm has trained in all, at this checkpoint.
    score : float
        What ``score`` returned (higher is better; NaN counts as -inf).
    train_seconds : float
        The arm's training time so far by the clock (its ``train`` calls): about what training
        this checkpoint's setting from scratch costs.
    seconds : float
        The arm's whole cost so far (its ``train`` and ``score`` calls).
    elapsed : float
        Clock time from the search's start to the end of this checkpoint.
    """

    arm: int
    rung: int
    epochs: int
    score: float
    train_seconds: float
    seconds: float
    elapsed: float


@dataclass
class HalvingResult:
    """The record of a :func:`successive_halving` search.

    Attributes
    ----------
    checkpoints : list of Checkpoint
        Every checkpoint, in the order they were scored.
    n_arms : int
        Arms planned: ``n_arms`` as given, or as last sized from the budget (``n_arms=None``).
        Fewer start when the budget runs out in rung 0.
    stopped : {"done", "budget", "callback"}
        Why the search ended: the schedule finished, the budget was spent, or the callback said stop.
    elapsed : float
        Clock time of the whole search.
    """

    checkpoints: list[Checkpoint]
    n_arms: int
    stopped: str
    elapsed: float

    def best(self, tolerance: float = 0.0) -> Checkpoint:
        """The best checkpoint: highest score, or with ``tolerance`` the cheapest near it.

        Parameters
        ----------
        tolerance : float, default 0
            Relative: the checkpoints scoring at least ``best - tolerance * |best|`` are
            candidates, and the one of least ``train_seconds`` wins. 0 picks the highest score,
            exact ties going to fewer epochs, then the lower arm.
        """
        return _select(self.checkpoints, tolerance, lambda c: c.train_seconds)


def _score_key(score: float) -> float:
    """Scores as ranked: NaN (nothing to score, or a diverged arm) below everything."""
    return -math.inf if math.isnan(score) else score


def _select(items: Sequence[Any], tolerance: float, cost: Callable[[Any], float]) -> Any:
    """The best of ``items`` (each with ``score``, ``epochs``, ``arm``) by the rule of :meth:`HalvingResult.best`."""
    if not items:
        raise ValueError("nothing was scored")
    if not (math.isfinite(tolerance) and tolerance >= 0):
        raise ValueError(f"tolerance must be a finite number >= 0, got {tolerance!r}")
    top = max(_score_key(c.score) for c in items)
    if tolerance == 0 or not math.isfinite(top):
        near = [c for c in items if _score_key(c.score) == top]
        return min(near, key=lambda c: (c.epochs, c.arm))
    near = [c for c in items if _score_key(c.score) >= top - tolerance * abs(top)]
    return min(near, key=lambda c: (cost(c), c.epochs, c.arm))


def _rung_epochs(min_epochs: int, max_epochs: int, eta: int) -> list[int]:
    """Total epochs at each rung: ``min_epochs * eta**r``, the last one capped at ``max_epochs``."""
    epochs = [min_epochs]
    while epochs[-1] < max_epochs:
        epochs.append(min(epochs[-1] * eta, max_epochs))
    return epochs


def _check_schedule(n_arms: int | None, min_epochs: int, max_epochs: int, eta: int) -> None:
    for name, value, low in (("min_epochs", min_epochs, 1), ("max_epochs", max_epochs, 1), ("eta", eta, 2)):
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    if max_epochs < min_epochs:
        raise ValueError(f"max_epochs ({max_epochs}) must be >= min_epochs ({min_epochs})")
    if n_arms is not None and (
        isinstance(n_arms, (bool, np.bool_)) or not isinstance(n_arms, (int, np.integer)) or n_arms < 1
    ):
        raise ValueError(f"n_arms must be None or an integer >= 1, got {n_arms!r}")


def rung_schedule(n_arms: int, min_epochs: int, max_epochs: int, eta: int = 3) -> list[tuple[int, int]]:
    """The plan of :func:`successive_halving` when the budget does not bind.

    Parameters
    ----------
    n_arms, min_epochs, max_epochs, eta
        As in :func:`successive_halving` (``n_arms`` given).

    Returns
    -------
    list of (arms, epochs)
        Per rung: the arms trained in it and the total epochs each has after it. Rung ``r``
        trains ``ceil(n_arms / eta**r)`` arms (at least one: a lone survivor is still trained
        up the remaining rungs) to ``min(min_epochs * eta**r, max_epochs)`` epochs.

    Examples
    --------
    >>> rung_schedule(27, 5, 135, 3)
    [(27, 5), (9, 15), (3, 45), (1, 135)]
    """
    _check_schedule(n_arms, min_epochs, max_epochs, eta)
    plan, arms = [], int(n_arms)
    for epochs in _rung_epochs(min_epochs, max_epochs, eta):
        plan.append((arms, epochs))
        arms = -(-arms // eta)  # ceil: survivors of the next rung
    return plan


@dataclass(frozen=True)
class _Costs:
    """What rung 0 measured, for planning: medians of its steps' training and scoring seconds.

    The median shrugs off the first arm's one-off compilation. Training is charged per epoch
    (``per_epoch``), scoring per checkpoint (``per_score``, times ``later_scores`` after rung 0),
    so a later rung, which trains more epochs but scores once, is planned at its own price. The
    later rungs train the survivors, and the settings that score best early are often the dearer
    ones (more negatives, more candidates): rung ``r``'s epochs are charged at ``later_epochs[r - 1]``,
    the median cost of the best ``1 / eta**r`` of rung 0's arms so far, those that would reach it
    now (the estimate of the rung before while they are fewer than three).
    """

    per_epoch: float
    per_score: float
    later_scores: float = 1.0
    later_epochs: tuple[float, ...] = ()

    @classmethod
    def of(cls, train: list[float], score: list[float], min_epochs: int, later_scores: float = 1.0,
           ranks: list[float] | None = None, eta: int = 3, rungs: int = 1) -> _Costs:  # fmt: skip
        """From rung 0's steps so far: their training and scoring seconds and (``ranks``) scores."""
        per_epoch = float(np.median(train)) / min_epochs
        order = sorted(range(len(ranks)), key=lambda a: (-ranks[a], a)) if ranks else []
        estimate, keep, later = per_epoch, len(order), []
        for _ in range(1, rungs):
            keep = -(-keep // eta)
            if keep >= 3:  # a median of three or more shrugs off one arm's compilation, as above
                estimate = float(np.median([train[a] for a in order[:keep]])) / min_epochs
            later.append(estimate)
        return cls(per_epoch, float(np.median(score)), later_scores, tuple(later))

    def planned(self, n: int, started: int, spent: float, epochs: list[int], eta: int) -> float:
        """Clock time of the whole search with ``n`` arms, ``started`` of them through rung 0 after ``spent``."""
        cost = spent + (n - started) * (self.per_epoch * epochs[0] + self.per_score)
        arms = n
        for rung, (previous, current) in enumerate(itertools.pairwise(epochs), 1):
            arms = -(-arms // eta)
            per_epoch = self.later_epochs[rung - 1] if rung <= len(self.later_epochs) else self.per_epoch
            cost += arms * (per_epoch * (current - previous) + self.per_score * self.later_scores)
        return cost


def _arms_for_budget(started: int, spent: float, costs: _Costs, epochs: list[int], eta: int, budget: float,
                     max_arms: int) -> int:  # fmt: skip
    """The most arms, from ``started`` (and ``eta``) to ``max_arms``, whose planned cost fits the budget.

    At least ``eta`` arms are planned, so that a slow first arm (one-off compilation) cannot end
    the search before a second measurement; the budget still stops them if it must.
    """
    n = max(started, min(eta, max_arms))
    while n < max_arms and costs.planned(n + 1, started, spent, epochs, eta) <= budget:
        n += 1
    return n


def successive_halving(
    train: Callable[[int, int], object],
    score: Callable[[int], float],
    *,
    n_arms: int | None,
    min_epochs: int,
    max_epochs: int,
    eta: int = 3,
    budget_seconds: float = math.inf,
    clock: Callable[[], float] = time.perf_counter,
    max_arms: int = MAX_ARMS,
    later_scores: float = 1.0,
    on_checkpoint: Callable[[Checkpoint, int], object] | None = None,
    on_release: Callable[[int], object] | None = None,
) -> HalvingResult:
    """Successive halving with epochs as the resource; a pure function of its callables and ``clock``.

    Rung ``r`` brings every surviving arm to ``min(min_epochs * eta**r, max_epochs)`` epochs in
    all, continuing where it stopped (``train`` gets the *extra* epochs), and scores it; the best
    ``ceil(n / eta)`` of the ``n`` arms of the rung survive (ties go to the lower arm index, so
    the search is deterministic given the scores). It ends at ``max_epochs``; a lone survivor is
    still trained up the remaining rungs, so the epoch count is searched for it too
    (:func:`rung_schedule` is the plan).

    Parameters
    ----------
    train : callable ``(arm, extra_epochs)``
        Train arm ``arm`` (from 0) ``extra_epochs`` more epochs; the first call starts it.
    score : callable ``(arm) -> float``
        Score arm ``arm`` as trained so far (higher is better; NaN counts as worse than any
        number). Timed apart from ``train``: see ``n_arms``.
    n_arms : int or None
        Arms to start. None sizes the search from the budget: rung 0 starts arms one by one
        and, after each, plans from the medians of its steps so far (the first may include
        one-off compilation) how many arms the whole schedule affords within
        ``budget_seconds``, at least ``eta`` and at most ``max_arms``. Training is charged
        per epoch and scoring per checkpoint, as measured in rung 0. The number of arms then
        depends on timing: only a given ``n_arms`` is reproducible.
    min_epochs, max_epochs : int
        Epochs of the first rung, and the most any arm trains (``1 <= min_epochs <= max_epochs``).
    eta : int, default 3
        Halving rate (>= 2): a rung keeps ``1 / eta`` of its arms, which train ``eta`` times longer.
    budget_seconds : float, default inf
        No arm's step (training, then scoring) starts once ``clock()`` says this much has passed
        since the start; a step in progress finishes, so the search overshoots by at most one
        step. The record so far is returned.
    clock : callable, default time.perf_counter
        Seconds, monotonic (the tests pass a fake one).
    max_arms : int, default :data:`MAX_ARMS`
        Upper bound of ``n_arms=None``.
    later_scores : float, default 1
        For ``n_arms=None``: what scoring a checkpoint after rung 0 costs, as a multiple of rung
        0's (:func:`~bpr_numpy.tuning.tune` scores rung 0 on a sample of the validation users and
        the later rungs on all of them: about all users / the sample's).
    on_checkpoint : callable ``(checkpoint, n_arms) -> bool or None``, optional
        Called after each checkpoint with the arms planned so far; returning ``False`` stops
        the search (as :meth:`~bpr_numpy.BPR.fit`'s callback).
    on_release : callable ``(arm)``, optional
        Called once for each arm that will not be trained again (eliminated, or the search
        over), so its owner can free it.

    Returns
    -------
    HalvingResult
        Every checkpoint, the arms planned, and why the search stopped.
    """
    _check_schedule(n_arms, min_epochs, max_epochs, eta)
    if n_arms is None and not math.isfinite(budget_seconds):
        raise ValueError("n_arms=None sizes the search from the budget: give a finite budget_seconds, or n_arms")
    if not budget_seconds > 0:  # also refuses NaN
        raise ValueError(f"budget_seconds must be > 0, got {budget_seconds!r}")
    if not (math.isfinite(later_scores) and later_scores > 0):
        raise ValueError(f"later_scores must be a finite number > 0, got {later_scores!r}")
    epochs = _rung_epochs(min_epochs, max_epochs, eta)
    start = clock()
    planned = 1 if n_arms is None else int(n_arms)
    trained: dict[int, int] = {}  # arm -> epochs so far
    train_spent: dict[int, float] = {}  # arm -> seconds of its train calls
    spent: dict[int, float] = {}  # arm -> seconds of its train and score calls
    checkpoints: list[Checkpoint] = []
    train_costs: list[float] = []  # rung 0's, for sizing
    score_costs: list[float] = []
    rung0_scores: list[float] = []  # in arm order, as train_costs
    survivors: list[int] = []
    stopped = "done"
    released: set[int] = set()

    def release(arm: int) -> None:
        if arm not in released:
            released.add(arm)
            if on_release is not None:
                on_release(arm)

    def step(arm: int, rung: int) -> Checkpoint:
        t0 = clock()
        train(arm, epochs[rung] - trained.get(arm, 0))
        t1 = clock()
        value = float(score(arm))
        t2 = clock()
        trained[arm] = epochs[rung]
        train_spent[arm] = train_spent.get(arm, 0.0) + (t1 - t0)
        spent[arm] = spent.get(arm, 0.0) + (t2 - t0)
        checkpoint = Checkpoint(arm, rung, epochs[rung], value, train_spent[arm], spent[arm], t2 - start)
        checkpoints.append(checkpoint)
        if rung == 0:
            train_costs.append(t1 - t0)
            score_costs.append(t2 - t1)
            rung0_scores.append(_score_key(value))
        return checkpoint

    for rung in range(len(epochs)):
        scores: dict[int, float] = {}
        arms = iter(range(planned)) if rung == 0 else iter(survivors)
        arm = next(arms, None)
        while arm is not None:
            if clock() - start >= budget_seconds:
                stopped = "budget"
                break
            checkpoint = step(arm, rung)
            scores[arm] = _score_key(checkpoint.score)
            if rung == 0 and n_arms is None:
                # Re-plan from what rung 0 has cost so far; never fewer arms than already started.
                costs = _Costs.of(train_costs, score_costs, min_epochs, later_scores, rung0_scores, eta, len(epochs))
                planned = _arms_for_budget(arm + 1, clock() - start, costs, epochs, eta, budget_seconds, max_arms)
                arms = iter(range(arm + 1, planned))
            if on_checkpoint is not None and on_checkpoint(checkpoint, planned) is False:
                stopped = "callback"
                break
            arm = next(arms, None)
        if stopped != "done" or rung == len(epochs) - 1:
            break
        ranked = sorted(scores, key=lambda a: (-scores[a], a))
        survivors = sorted(ranked[: -(-len(ranked) // eta)])  # trained in index order: the record reads naturally
        for arm in sorted(ranked[len(survivors) :]):
            release(arm)
    for arm in sorted(trained):
        release(arm)  # the search is over: every arm still held
    return HalvingResult(checkpoints, planned, stopped, clock() - start)
