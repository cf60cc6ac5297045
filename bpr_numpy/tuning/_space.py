"""The search space of :func:`bpr_numpy.tune`.

Its dimensions, the default space, its JSON form, and its checks against BPR's parameters.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    pass

#: Parameters a space may not hold, and why: the tuner sets them itself.
_RESERVED = {
    "epochs": "epochs are the search's resource (min_epochs, max_epochs): every checkpoint is scored, and the "
    "best one's epochs are in best_params",
    "threads": "threads is tune's own argument (threads=1 for reproducible arms)",
    "random_state": "each arm's seed is derived from tune's random_state and the arm's index",
}


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
#: DNS), negatives per positive (1 or 2) and the step's decay per epoch (none, or 0.99 to 0.997).
#: The epochs are the resource (``min_epochs``, ``max_epochs``). Why these ranges: on Gowalla
#: the decay is what carries DNS past its plateau (DNS-5 at 400 epochs: 0.1905 with lr 0.3 decayed
#: by 0.993 an epoch, 0.1793 with lr 0.1 undecayed), and 4 negatives per positive, which cost 4x
#: an epoch, survived the early rungs and spent the budget the long runs needed
#: (benchmarks/RESULTS.md, "The tuner on Gowalla").
DEFAULT_SPACE: Mapping[str, Any] = {
    "learning_rate": LogUniform(0.01, 0.4),
    "regularization": LogUniform(1e-4, 0.05),
    "sampler": Choice(["uniform", "dns"]),
    "dns_candidates": Choice([2, 3, 5, 8]),
    "n_negatives": Choice([1, 2]),
    "learning_rate_decay": Choice([1.0, 0.99, 0.993, 0.995, 0.997]),
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
    from ..model import BPR

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
