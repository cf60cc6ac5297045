"""Hyperparameter search: successive halving over a declared space, epochs as the resource.

:func:`tune` draws ``n_arms`` settings ("arms") from a search space, trains each a few epochs,
scores them on validation pairs, keeps the best ``1 / eta`` of them, trains those ``eta`` times
longer *by continuing them* (:meth:`~bpr_numpy.BPR.partial_fit`: the same model as one longer
fit), and so on until ``max_epochs``. This is successive halving (Jamieson & Talwalkar, AISTATS
2016; one bracket of Li et al.'s Hyperband, JMLR 2018) with epochs as the resource.

Every (arm, epochs) checkpoint scored on all validation users is a candidate (rung 0 scores on a
sample of them when they are many, to choose its survivors only): the number of epochs is part of
the answer, not a fixed setting. A setting that wins only by training longer must beat the
others' shorter checkpoints, which were scored too, and each checkpoint's cumulative training
time is reported beside its score so the price of the extra epochs is visible (``tolerance``
trades a little score for a cheaper checkpoint).

The search itself, :func:`successive_halving`, is a pure function of a training and a scoring
callable and a clock, so its logic is tested without training anything. The space is declared with
:class:`Choice`, :class:`LogUniform`, :class:`Uniform` and :class:`IntLogUniform` (a list means a
choice, a scalar a fixed value); :data:`DEFAULT_SPACE` is a reasonable start for BPR.
The guide is ``docs/guide/tuning.md``, 'The built-in tuner'. Four rooms: ``_space.py`` (the
dimensions and their checks), ``_halving.py`` (the search, no training), ``_tune.py`` (arms as
BPR models, the validation sample rung 0 screens on) and ``_result.py`` (``Trial``,
``TuneResult``, their table and JSON).
"""

from __future__ import annotations

from ._halving import MAX_ARMS, Checkpoint, HalvingResult, rung_schedule, successive_halving
from ._result import Trial, TuneResult
from ._space import DEFAULT_SPACE, Choice, IntLogUniform, LogUniform, Uniform, space_from_json
from ._tune import tune

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
