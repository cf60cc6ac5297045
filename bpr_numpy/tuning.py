"""Hyperparameter search: successive halving over a declared space, epochs as the resource.

:func:`tune` draws ``n_arms`` settings ("arms") from a search space, trains each a few epochs,
scores them on validation pairs, keeps the best ``1 / eta`` of them, trains those ``eta`` times
longer *by continuing them* (:meth:`~bpr_numpy.BPR.partial_fit`: the same model as one longer
fit), and so on until ``max_epochs``. This is successive halving (Jamieson & Talwalkar, AISTATS
2016; one bracket of Li et al.'s Hyperband, JMLR 2018) with epochs as the resource.

Every (arm, epochs) checkpoint scored on the way is a candidate: the number of epochs is part of
the answer, not a fixed setting. A setting that wins only by training longer must beat the
others' shorter checkpoints, which were scored too, and each checkpoint's cumulative training
time is reported beside its score so the price of the extra epochs is visible (``tolerance``
trades a little score for a cheaper checkpoint).

The search itself, :func:`successive_halving`, is a pure function of a training and a scoring
callable and a clock, so its logic is tested without training anything. The space is declared with
:class:`Choice`, :class:`LogUniform`, :class:`Uniform` and :class:`IntLogUniform` (a list means a
choice, a scalar a fixed value); :data:`DEFAULT_SPACE` is a reasonable start for BPR.
The guide is ``docs/guide/tuning.md``, 'The built-in tuner'.
"""

from __future__ import annotations

import itertools
import json
import math
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from .model import BPR

__all__ = [
    "tune",
    "TuneResult",
    "Trial",
    "Choice",
    "LogUniform",
    "Uniform",
    "IntLogUniform",
    "DEFAULT_SPACE",
    "space_from_json",
    "successive_halving",
    "rung_schedule",
    "HalvingResult",
    "Checkpoint",
    "MAX_ARMS",
]

#: Most arms :func:`successive_halving` starts when it sizes the search from the budget
#: (``n_arms=None``). 243 = 3**5 random draws cover a space of a handful of dimensions well; a
#: budget that would afford more arms finishes early instead (raise ``max_epochs`` to use it).
MAX_ARMS = 243

#: Parameters a space may not hold, and why: the tuner sets them itself.
_RESERVED = {
    "epochs": "epochs are the search's resource (min_epochs, max_epochs): every checkpoint is scored, and the "
    "best one's epochs are in best_params",
    "threads": "threads is tune's own argument (threads=1 for reproducible arms)",
    "random_state": "each arm's seed is derived from tune's random_state and the arm's index",
}


# --------------------------------------------------------------------------- the search space


@dataclass(frozen=True)
class Choice:
    """One of ``values``, each equally likely (a plain list or tuple in a space means this).

    Parameters
    ----------
    values : sequence
        The candidates (any values the parameter accepts; not empty).
    """

    values: tuple[Any, ...]

    def __init__(self, values: Sequence[Any]) -> None:
        if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
            raise TypeError(f"Choice takes a list or tuple of values, got {type(values).__name__}")
        object.__setattr__(self, "values", tuple(values))

    def sample(self, rng: np.random.Generator) -> Any:
        """A value drawn uniformly from ``values``."""
        return self.values[int(rng.integers(len(self.values)))]

    def _check(self) -> None:
        if not self.values:
            raise ValueError("Choice needs at least one value")

    def _bounds(self) -> tuple[Any, ...]:
        return self.values


@dataclass(frozen=True)
class LogUniform:
    """A float whose logarithm is uniform on ``[log(low), log(high)]`` (step sizes, penalties).

    Parameters
    ----------
    low, high : float
        ``0 < low < high``, finite.
    """

    low: float
    high: float

    def sample(self, rng: np.random.Generator) -> float:
        """A value drawn log-uniformly from ``[low, high]``."""
        return float(np.exp(rng.uniform(math.log(self.low), math.log(self.high))))

    def _check(self) -> None:
        _check_range(self, positive=True)

    def _bounds(self) -> tuple[Any, ...]:
        return (float(self.low), float(self.high))


@dataclass(frozen=True)
class Uniform:
    """A float uniform on ``[low, high]``.

    Parameters
    ----------
    low, high : float
        ``low < high``, finite.
    """

    low: float
    high: float

    def sample(self, rng: np.random.Generator) -> float:
        """A value drawn uniformly from ``[low, high]``."""
        return float(rng.uniform(self.low, self.high))

    def _check(self) -> None:
        _check_range(self, positive=False)

    def _bounds(self) -> tuple[Any, ...]:
        return (float(self.low), float(self.high))


@dataclass(frozen=True)
class IntLogUniform:
    """An integer in ``[low, high]`` whose logarithm is about uniform (factors, candidates).

    ``floor(x)`` for ``x`` log-uniform on ``[low, high + 1)``: each integer ``v`` has the mass of
    ``[v, v + 1)``, so small values are drawn more often, as on a log scale.

    Parameters
    ----------
    low, high : int
        ``1 <= low < high``.
    """

    low: int
    high: int

    def sample(self, rng: np.random.Generator) -> int:
        """An integer drawn from ``[low, high]``."""
        value = int(math.floor(math.exp(rng.uniform(math.log(self.low), math.log(self.high + 1)))))
        return min(max(value, self.low), self.high)  # exp(log(x)) may round past either end

    def _check(self) -> None:
        for bound in (self.low, self.high):
            if isinstance(bound, (bool, np.bool_)) or not isinstance(bound, (int, np.integer)):
                raise TypeError(f"IntLogUniform takes integer bounds, got low={self.low!r}, high={self.high!r}")
        if not 1 <= self.low < self.high:
            raise ValueError(f"IntLogUniform needs 1 <= low < high, got low={self.low}, high={self.high}")

    def _bounds(self) -> tuple[Any, ...]:
        return (int(self.low), int(self.high))


Dimension = Choice | LogUniform | Uniform | IntLogUniform


def _check_range(dim: LogUniform | Uniform, *, positive: bool) -> None:
    kind = type(dim).__name__
    for bound in (dim.low, dim.high):
        if isinstance(bound, (bool, np.bool_)) or not isinstance(bound, (int, float, np.integer, np.floating)):
            raise TypeError(f"{kind} takes numeric bounds, got low={dim.low!r}, high={dim.high!r}")
    low, high = float(dim.low), float(dim.high)
    if not (math.isfinite(low) and math.isfinite(high)) or not low < high or (positive and low <= 0):
        need = "0 < low < high" if positive else "low < high"
        raise ValueError(f"{kind} needs finite bounds with {need}, got low={dim.low}, high={dim.high}")


#: A reasonable space for BPR: the step size and the L2 strength on log scales, the sampler
#: (uniform, or DNS with 2 to 8 candidates: ``dns_candidates`` is drawn always and read only by
#: DNS), negatives per positive (1, 2 or 4; each costs its draws) and an optional step decay.
#: The epochs are the resource (``min_epochs``, ``max_epochs``).
DEFAULT_SPACE: Mapping[str, Any] = {
    "learning_rate": LogUniform(0.01, 0.3),
    "regularization": LogUniform(1e-4, 0.05),
    "sampler": Choice(["uniform", "dns"]),
    "dns_candidates": Choice([2, 3, 5, 8]),
    "n_negatives": Choice([1, 2, 4]),
    "learning_rate_decay": Choice([1.0, 0.99]),
}


def _as_dimension(value: Any) -> Dimension | None:
    """The dimension a space entry declares, or None for a fixed value (a scalar, a mapping)."""
    if isinstance(value, (Choice, LogUniform, Uniform, IntLogUniform)):
        return value
    if isinstance(value, (list, tuple)):
        return Choice(value)
    return None


def _resolve_space(space: Mapping[str, Any], base_params: Mapping[str, Any]) -> tuple[dict[str, Dimension], dict]:
    """The space's dimensions and fixed values, checked against BPR's parameters (names, bounds, values)."""
    from .model import BPR

    if not isinstance(space, Mapping):
        raise TypeError(f"space must be a mapping from BPR parameter names to dimensions, got {type(space).__name__}")
    names = set(BPR().get_params())
    entries: dict[str, Dimension | None] = {}
    for name, value in space.items():
        if name in _RESERVED:
            raise ValueError(f"space[{name!r}]: not searchable here: {_RESERVED[name]}")
        if name not in names:
            raise ValueError(f"space[{name!r}]: BPR has no such parameter; valid: {', '.join(sorted(names))}")
        dim = entries[name] = _as_dimension(value)
        if dim is not None:
            try:
                dim._check()
            except (TypeError, ValueError) as exc:
                raise type(exc)(f"space[{name!r}]: {exc}") from None
    fixed = {name: space[name] for name, dim in entries.items() if dim is None}
    dims = {name: dim for name, dim in entries.items() if dim is not None}
    # Every value a draw can take (a choice's values, a range's ends) must be one BPR accepts with
    # the base parameters and the fixed values: refused at the door rather than after an hour of search.
    for name, dim in entries.items():
        others = {key: value for key, value in fixed.items() if key != name}
        for candidate in (space[name],) if dim is None else dim._bounds():
            try:
                BPR(**{**base_params, **others, name: candidate})
            except (TypeError, ValueError) as exc:
                raise type(exc)(f"space[{name!r}]: the value {candidate!r} is refused by BPR: {exc}") from None
    return dims, fixed


def space_from_json(obj: Mapping[str, Any]) -> dict[str, Any]:
    """A search space from its JSON form (``bpr-numpy tune --space FILE``).

    Parameters
    ----------
    obj : mapping
        Parameter name to: a list (a :class:`Choice`), ``{"log-uniform": [low, high]}``,
        ``{"uniform": [low, high]}``, ``{"int-log-uniform": [low, high]}``, or any other value
        (fixed; a mapping without one of those keys, such as a per-role ``regularization``, is a
        fixed value too).

    Returns
    -------
    dict
        The space, for :func:`tune`'s ``space`` (checked there against BPR's parameters).

    Examples
    --------
    >>> space_from_json({"learning_rate": {"log-uniform": [0.01, 0.3]}, "sampler": ["uniform", "dns"]})
    {'learning_rate': LogUniform(low=0.01, high=0.3), 'sampler': Choice(values=('uniform', 'dns'))}
    """
    kinds: dict[str, type] = {"log-uniform": LogUniform, "uniform": Uniform, "int-log-uniform": IntLogUniform}
    if not isinstance(obj, Mapping):
        raise TypeError(f"a search space is a JSON object (name -> dimension), got {type(obj).__name__}")
    space: dict[str, Any] = {}
    for name, value in obj.items():
        if isinstance(value, list):
            space[name] = Choice(value)
        elif isinstance(value, Mapping) and len(value) == 1 and next(iter(value)) in kinds:
            kind, bounds = next(iter(value.items()))
            if not isinstance(bounds, list) or len(bounds) != 2:
                raise ValueError(f"space[{name!r}]: {kind} takes [low, high], got {bounds!r}")
            space[name] = kinds[kind](*bounds)
        else:
            space[name] = value
    return space


# --------------------------------------------------------------------------- successive halving


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
    (``per_epoch``), scoring per checkpoint (``per_score``), so a later rung, which trains more
    epochs but scores once, is planned at its own price.
    """

    per_epoch: float
    per_score: float

    @classmethod
    def of(cls, train: list[float], score: list[float], min_epochs: int) -> _Costs:
        return cls(float(np.median(train)) / min_epochs, float(np.median(score)))

    def planned(self, n: int, started: int, spent: float, epochs: list[int], eta: int) -> float:
        """Clock time of the whole search with ``n`` arms, ``started`` of them through rung 0 after ``spent``."""
        cost = spent + (n - started) * (self.per_epoch * epochs[0] + self.per_score)
        arms = n
        for previous, current in itertools.pairwise(epochs):
            arms = -(-arms // eta)
            cost += arms * (self.per_epoch * (current - previous) + self.per_score)
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
    epochs = _rung_epochs(min_epochs, max_epochs, eta)
    start = clock()
    planned = 1 if n_arms is None else int(n_arms)
    trained: dict[int, int] = {}  # arm -> epochs so far
    train_spent: dict[int, float] = {}  # arm -> seconds of its train calls
    spent: dict[int, float] = {}  # arm -> seconds of its train and score calls
    checkpoints: list[Checkpoint] = []
    train_costs: list[float] = []  # rung 0's, for sizing
    score_costs: list[float] = []
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
                costs = _Costs.of(train_costs, score_costs, min_epochs)
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


# --------------------------------------------------------------------------- tune


@dataclass(frozen=True)
class Trial:
    """One checkpoint of :func:`tune`: an arm's setting, scored after some epochs.

    Attributes
    ----------
    arm : int
        The arm's index, from 0.
    params : dict
        The values drawn for the arm (the space's dimensions; fixed values and ``base_params``
        are in :attr:`TuneResult.best_params` only).
    seed : int
        The arm's ``random_state``, derived from tune's ``random_state`` and ``arm``.
    rung : int
        The rung of successive halving, from 0.
    epochs : int
        Epochs trained in all at this checkpoint.
    score : float
        The metric on the validation pairs; -inf when the arm diverged.
    fit_seconds : float
        Training time of the arm up to this checkpoint (``fit`` and ``partial_fit``, scoring
        excluded): about what refitting this checkpoint's parameters costs.
    diverged : bool
        Training produced NaN or infinite factors (:class:`~bpr_numpy.TrainingDivergedError`);
        the arm is not trained further.
    """

    arm: int
    params: dict[str, Any]
    seed: int
    rung: int
    epochs: int
    score: float
    fit_seconds: float
    diverged: bool = False


@dataclass
class TuneResult:
    """What :func:`tune` found.

    Attributes
    ----------
    best_params : dict
        Constructor arguments of the best checkpoint, ready for ``BPR(**best_params)``:
        ``base_params``, the space's fixed values, the arm's drawn values, its ``random_state``
        and ``epochs`` (the checkpoint's). ``threads`` is left out (add ``threads=1`` for the
        bitwise same model when the search ran with ``threads=1``).
    best_score : float
        The best checkpoint's validation score.
    metric : str
        The metric's key, e.g. ``"recall@20"``.
    best : Trial
        The best checkpoint.
    trials : list of Trial
        Every checkpoint, in the order they were scored.
    elapsed_seconds : float
        Wall-clock time of the search.
    best_model : BPR or None
        The best arm's fitted model when its final state is the best checkpoint (it was not
        trained further, as an arm eliminated after that checkpoint or a last-rung winner);
        None when the arm trained past its best checkpoint: refit ``BPR(**best_params)``.
    n_arms : int
        Arms planned (given, or sized from the budget).
    stopped : {"done", "budget", "callback"}
        Why the search ended.
    random_state : int
        The seed the arms were derived from (drawn from the system when ``random_state=None``).
    """

    best_params: dict[str, Any]
    best_score: float
    metric: str
    best: Trial
    trials: list[Trial]
    elapsed_seconds: float
    best_model: BPR | None = field(default=None, repr=False)
    n_arms: int = 0
    stopped: str = "done"
    random_state: int = 0

    def table(self, limit: int | None = None) -> str:
        """The checkpoints as a plain-text table, best score first.

        Parameters
        ----------
        limit : int, optional
            Show only this many rows.

        Returns
        -------
        str
            One line per checkpoint: rank, arm, rung, epochs, score, cumulative fit seconds and
            the drawn values; the best checkpoint is marked ``*``.
        """
        rows = sorted(self.trials, key=lambda t: (-_score_key(t.score), t.epochs, t.arm))
        if limit is not None:
            rows = rows[:limit]
        width = max(9, len(self.metric))
        lines = [f"{'rank':>5} {'arm':>4} {'rung':>4} {'epochs':>6} {self.metric:>{width}} {'fit s':>8}  params"]
        for rank, t in enumerate(rows, 1):
            score = "diverged" if t.diverged else f"{t.score:.4f}"
            mark = "*" if t == self.best else " "
            params = " ".join(f"{k}={_short(v)}" for k, v in t.params.items())
            lines.append(
                f"{rank:>4}{mark} {t.arm:>4} {t.rung:>4} {t.epochs:>6} {score:>{width}} {t.fit_seconds:>8.2f}  {params}"
            )
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """The result as plain JSON values (no model; non-finite scores as None)."""
        return {
            "metric": self.metric,
            "best_score": _jsonable(self.best_score),
            "best_params": _jsonable(self.best_params),
            "elapsed_seconds": self.elapsed_seconds,
            "n_arms": self.n_arms,
            "stopped": self.stopped,
            "random_state": self.random_state,
            "trials": [
                {
                    "arm": t.arm,
                    "params": _jsonable(t.params),
                    "seed": t.seed,
                    "rung": t.rung,
                    "epochs": t.epochs,
                    "score": _jsonable(t.score),
                    "fit_seconds": t.fit_seconds,
                    "diverged": t.diverged,
                }
                for t in self.trials
            ],
        }

    def to_json(self, indent: int | None = 2) -> str:
        """:meth:`to_dict` as a JSON string."""
        return json.dumps(self.to_dict(), indent=indent)


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def _jsonable(value: Any) -> Any:
    """Plain JSON values: NumPy scalars as Python ones, a dtype by name, non-finite floats as None."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.dtype) or (isinstance(value, type) and issubclass(value, np.generic)):
        return np.dtype(value).name
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _parse_metric(metric: Any) -> tuple[str, int, str]:
    """``(name, k, key)`` of a metric key such as ``"recall@20"``, checked before any training."""
    from .metrics import METRIC_NAMES
    from .metrics._protocol import _TOPK_METRICS

    if not isinstance(metric, str):
        raise TypeError(f"metric must be a string such as 'recall@20', got {type(metric).__name__}")
    name, at, k = metric.partition("@")
    top_k = name in _TOPK_METRICS
    if name not in METRIC_NAMES or top_k != bool(at) or (at and not (k.isdigit() and int(k) >= 1)):
        raise ValueError(
            f"unknown metric {metric!r}: use a key metrics.evaluate returns, one of {', '.join(METRIC_NAMES)} "
            "with @k for the top-k ones (e.g. 'recall@20', 'ndcg@20', 'auc')"
        )
    k_value = int(k) if at else 10
    return name, k_value, f"{name}@{k_value}" if top_k else name


def _check_base(base_params: Mapping[str, Any] | None) -> dict[str, Any]:
    from .model import BPR

    if base_params is None:
        return {}
    if not isinstance(base_params, Mapping):
        raise TypeError(f"base_params must be a mapping of BPR arguments, got {type(base_params).__name__}")
    for name in base_params:
        if name in _RESERVED:
            raise ValueError(f"base_params[{name!r}]: set by the tuner: {_RESERVED[name]}")
    BPR(**base_params)  # unknown names and bad values fail here, named by BPR
    return dict(base_params)


def _resolve_seed(random_state: Any) -> int:
    if random_state is None:
        return int(np.random.SeedSequence().entropy)  # type: ignore[arg-type]
    if isinstance(random_state, (bool, np.bool_)) or not isinstance(random_state, (int, np.integer)):
        raise TypeError(f"random_state must be None or an int, got {type(random_state).__name__}")
    if random_state < 0:
        raise ValueError(f"random_state must be >= 0, got {random_state}")
    return int(random_state)


def _arm_setting(seed: int, arm: int, dims: Mapping[str, Dimension]) -> tuple[dict[str, Any], int]:
    """Arm ``arm``'s drawn values and model seed: a function of ``(seed, arm)`` alone, so an arm
    is the same whatever the number of arms."""
    config_seq, model_seq = np.random.SeedSequence(seed, spawn_key=(arm,)).spawn(2)
    rng = np.random.default_rng(config_seq)
    drawn = {name: dim.sample(rng) for name, dim in dims.items()}
    return drawn, int(model_seq.generate_state(1, np.uint64)[0] >> np.uint64(1))  # [0, 2**63): a BPR seed


def _matrices(train: Any, validation: Any) -> tuple[Any, Any]:
    """Checked CSR matrices of the training and validation positives, in one id space."""
    from ._validation import as_user_items
    from .datasets import Interactions

    if isinstance(train, Interactions) and isinstance(validation, Interactions):
        for name in ("user_ids", "item_ids"):
            mine, theirs = getattr(train, name), getattr(validation, name)
            if mine is not None and theirs is not None and not np.array_equal(mine, theirs):
                raise ValueError(
                    f"train and validation have different {name}: rows would mean other users or items "
                    "(split one Interactions, or align them with Interactions.with_id_space_of)"
                )
    train_matrix = as_user_items(train.matrix if isinstance(train, Interactions) else train, "train")
    valid_matrix = as_user_items(
        validation.matrix if isinstance(validation, Interactions) else validation, "validation"
    )
    if train_matrix.shape != valid_matrix.shape:
        raise ValueError(f"train has shape {train_matrix.shape} but validation has shape {valid_matrix.shape}")
    return train_matrix, valid_matrix


def tune(
    train: Any,
    validation: Any,
    *,
    space: Mapping[str, Any] | None = None,
    budget_seconds: float = 900.0,
    metric: str = "recall@20",
    n_arms: int | None = None,
    min_epochs: int = 5,
    max_epochs: int = 135,
    eta: int = 3,
    base_params: Mapping[str, Any] | None = None,
    random_state: int | None = 0,
    threads: int = 0,
    tolerance: float = 0.0,
    show_progress: bool | None = None,
    callback: Callable[[Trial], object] | None = None,
) -> TuneResult:
    """Search BPR's hyperparameters by successive halving within a time budget.

    Arm ``a`` is ``BPR(**base_params, **drawn, random_state=seed_a, threads=threads)`` with
    values drawn from ``space``; it is fitted ``min_epochs`` epochs, scored by ``metric`` on the
    validation pairs (ranking without its training pairs), and, while it survives, continued
    with :meth:`~bpr_numpy.BPR.partial_fit` to ``eta`` times as many epochs and scored again
    (:func:`successive_halving`). The best checkpoint over all arms and epochs wins; its
    epochs are part of :attr:`TuneResult.best_params`.

    Parameters
    ----------
    train : sparse matrix, array_like or Interactions, shape (n_users, n_items)
        Training positives, as for :meth:`~bpr_numpy.BPR.fit`.
    validation : sparse matrix, array_like or Interactions, same shape
        Held-out positives the arms are scored on: a validation split of the training data,
        never the test set you report on.
    space : mapping, optional
        BPR parameter name to a dimension (:class:`Choice`, :class:`LogUniform`,
        :class:`Uniform`, :class:`IntLogUniform`), a list (a choice) or a fixed value.
        Default :data:`DEFAULT_SPACE`. ``epochs``, ``threads`` and ``random_state`` are
        refused: the tuner sets them. Every value a dimension can take is checked with BPR
        before training starts.
    budget_seconds : float, default 900
        Wall-clock budget. No arm starts a step once it is spent; the step in progress
        finishes, so the search overshoots by at most one arm's step (its epochs and scoring).
    metric : str, default "recall@20"
        A key :func:`bpr_numpy.metrics.evaluate` returns: ``"recall@20"``, ``"ndcg@20"``,
        ``"precision@10"``, ``"auc"``, ``"full_auc"``, ``"mrr"``...
    n_arms : int, optional
        Settings to draw. Default: sized from the budget as rung 0 runs (up to
        :data:`MAX_ARMS`), which depends on timing; give it for a reproducible search.
    min_epochs, max_epochs : int, default 5 and 135
        Epochs of the first rung and the most any arm trains.
    eta : int, default 3
        Each rung keeps the best ``1 / eta`` of its arms and trains them ``eta`` times longer.
    base_params : mapping, optional
        BPR arguments shared by every arm (``factors``, ``loss``, ``dtype``...); the space's
        values override them.
    random_state : int or None, default 0
        Seed of the draws and of every arm's model seed. None draws one (kept in the result).
    threads : int, default 0
        Training threads of every arm (0: all cores). With ``threads=1``, a given ``n_arms``
        and a budget that does not bind, two searches with the same seed give the same trials.
    tolerance : float, default 0
        Relative: among the checkpoints scoring within ``tolerance * |best score|`` of the
        best, the one of least training time wins (a shorter or cheaper setting that is as
        good). 0 picks the highest score (exact ties: fewer epochs, then the lower arm).
    show_progress : bool, optional
        One line per checkpoint on stderr. Default: when stderr is a terminal.
    callback : callable, optional
        Called with each :class:`Trial`; returning ``False`` stops the search.

    Returns
    -------
    TuneResult
        The best parameters (epochs included) and score, every checkpoint, and the best model
        when it was not trained past its best checkpoint.

    Raises
    ------
    TrainingDivergedError
        Every arm diverged (a diverged arm alone scores -inf and the search goes on).

    Notes
    -----
    Every arm of a rung is held in memory until the rung ends (``n_arms`` models at rung 0).
    """
    from . import metrics
    from .model import BPR, TrainingDivergedError

    started = time.perf_counter()
    name, k, key = _parse_metric(metric)
    base = _check_base(base_params)
    dims, fixed = _resolve_space(DEFAULT_SPACE if space is None else space, base)
    seed = _resolve_seed(random_state)
    BPR(threads=threads)  # a bad thread count fails now, named by BPR
    if not (isinstance(budget_seconds, (int, float, np.integer, np.floating)) and budget_seconds > 0):
        raise ValueError(f"budget_seconds must be > 0, got {budget_seconds!r}")
    _check_schedule(n_arms, min_epochs, max_epochs, eta)
    if not (isinstance(tolerance, (int, float)) and math.isfinite(tolerance) and tolerance >= 0):
        raise ValueError(f"tolerance must be a finite number >= 0, got {tolerance!r}")
    train_matrix, valid_matrix = _matrices(train, validation)
    from .datasets import Interactions

    fit_input = train if isinstance(train, Interactions) else train_matrix  # an Interactions' ids go to the model
    progress = sys.stderr.isatty() if show_progress is None else bool(show_progress)

    # Every arm the search may start, drawn and checked now: a combination BPR refuses (say a
    # loss and a sampler that do not go together) fails before any training.
    settings: dict[int, tuple[dict[str, Any], int]] = {}
    for arm in range(MAX_ARMS if n_arms is None else n_arms):
        drawn, arm_seed = settings[arm] = _arm_setting(seed, arm, dims)
        try:
            BPR(**{**base, **fixed, **drawn}, random_state=arm_seed, threads=threads)
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"the space's draw for arm {arm} ({drawn}) is refused by BPR: {exc}") from None

    models: dict[int, BPR] = {}
    trained: dict[int, int] = {}  # arm -> epochs
    diverged: set[int] = set()
    released: set[int] = set()
    trials: list[Trial] = []
    best: list[Trial] = []  # the best so far by the selection rule (a list: set inside closures)

    def train_arm(arm: int, extra: int) -> None:
        if arm in diverged:
            return  # nothing left to train
        drawn, arm_seed = settings[arm]
        try:
            if arm not in models:
                models[arm] = BPR(**{**base, **fixed, **drawn}, random_state=arm_seed, threads=threads)
                models[arm].fit(fit_input, epochs=extra, show_progress=False)
            else:
                models[arm].partial_fit(fit_input, epochs=extra, show_progress=False)
        except TrainingDivergedError:
            diverged.add(arm)
            del models[arm]
            return
        trained[arm] = trained.get(arm, 0) + extra

    def score_arm(arm: int) -> float:
        if arm in diverged:
            return -math.inf
        result = metrics.evaluate(models[arm], train_matrix, valid_matrix, k=k, metrics=[name])
        return float(result[key])

    def free_models() -> None:
        # Keep a model only while it may train again or holds the best checkpoint.
        for arm in [a for a in models if a in released and (not best or a != best[0].arm)]:
            del models[arm]

    def on_checkpoint(checkpoint: Checkpoint, planned: int) -> object:
        drawn, arm_seed = settings[checkpoint.arm]
        trial = Trial(
            checkpoint.arm, dict(drawn), arm_seed, checkpoint.rung, checkpoint.epochs, checkpoint.score,
            checkpoint.train_seconds, checkpoint.arm in diverged,
        )  # fmt: skip
        trials.append(trial)
        best[:] = [_select(trials, tolerance, lambda t: t.fit_seconds)]
        free_models()
        if progress:
            top = max(_score_key(t.score) for t in trials)
            print(
                f"tune: arm {trial.arm} (of {planned}) rung {trial.rung} epochs {trial.epochs} {key} "
                f"{'diverged' if trial.diverged else f'{trial.score:.4f}'} (best {top:.4f}) "
                f"{checkpoint.elapsed + setup:.1f} s / {budget_seconds:g} s",
                file=sys.stderr,
                flush=True,
            )
        return None if callback is None else callback(trial)

    def on_release(arm: int) -> None:
        released.add(arm)
        free_models()

    setup = time.perf_counter() - started  # the budget counts from the call, checks included
    halving = successive_halving(
        train_arm,
        score_arm,
        n_arms=n_arms,
        min_epochs=min_epochs,
        max_epochs=max_epochs,
        eta=eta,
        budget_seconds=max(float(budget_seconds) - setup, 1e-9),
        on_checkpoint=on_checkpoint,
        on_release=on_release,
    )
    winner = best[0]
    if not winner.score > -math.inf:
        raise TrainingDivergedError(
            f"every arm diverged or scored NaN ({len(trials)} checkpoints): lower the learning rate's range "
            "or raise the regularization's"
        )
    drawn, arm_seed = settings[winner.arm]
    model = models.get(winner.arm)
    best_model = model if model is not None and trained.get(winner.arm) == winner.epochs else None
    return TuneResult(
        best_params={**base, **fixed, **drawn, "epochs": winner.epochs, "random_state": arm_seed},
        best_score=winner.score,
        metric=key,
        best=winner,
        trials=trials,
        elapsed_seconds=time.perf_counter() - started,
        best_model=best_model,
        n_arms=halving.n_arms,
        stopped=halving.stopped,
        random_state=seed,
    )
