"""What :func:`bpr_numpy.tune` returns: each checkpoint a :class:`Trial`, the search a :class:`TuneResult`.

Its table and JSON forms live here too; the search itself is :mod:`._tune`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from ..model import BPR
from ._halving import _score_key


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
    screened : bool
        Scored on :func:`tune`'s sample of ``screening_users`` validation users (rung 0 of a
        large validation set) rather than on all of them: a score for choosing the survivors,
        not one :attr:`TuneResult.best` is chosen by when any checkpoint was scored on all.
    """

    arm: int
    params: dict[str, Any]
    seed: int
    rung: int
    epochs: int
    score: float
    fit_seconds: float
    diverged: bool = False
    screened: bool = False


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
        The best checkpoint (among those scored on all validation users, when any were).
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
            the drawn values; the best checkpoint is marked ``*``. The checkpoints scored on all
            validation users come first, then those of rung 0's screening sample (marked ``s``).
        """
        rows = sorted(self.trials, key=lambda t: (t.screened, -_score_key(t.score), t.epochs, t.arm))
        if limit is not None:
            rows = rows[:limit]
        width = max(9, len(self.metric)) + 1  # a score, then "s" (screened) or " "
        lines = [f"{'rank':>5} {'arm':>4} {'rung':>4} {'epochs':>6} {self.metric:>{width - 1}}  {'fit s':>8}  params"]
        for rank, t in enumerate(rows, 1):
            score = ("diverged" if t.diverged else f"{t.score:.4f}") + ("s" if t.screened else " ")
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
                    "screened": t.screened,
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
