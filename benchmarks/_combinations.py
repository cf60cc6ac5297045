"""The sampler x loss x optimiser combinations that ``quality.py`` compares on MovieLens 100k: each one's
validation grid around one per-role regularisation, the search budgets, and how a combination is tuned
(``ceiling.py`` re-tunes the best pure-BPR one).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any, Mapping, TextIO

import scipy.sparse as sp

from _scoring import Trial, run_trial

FACTORS = 64
# The per-role regularisation movielens.py's SGD search chose at 64 factors; every grid scales it.
BASE_REG = {"user": 0.02, "positive": 0.01, "negative": 0.04, "bias": 0.02}


@dataclass(frozen=True)
class Combination:
    """One sampler x loss x optimiser, and the grid searched for it.

    Attributes
    ----------
    name : str
        Row label.
    fixed : dict
        BPR keywords common to the grid (sampler, loss, optimizer...).
    learning_rates, reg_scales : tuple of float
        Grid: learning rate x scale of :data:`BASE_REG`.
    extra : tuple of dict
        Sampler-specific settings crossed with the grid (e.g. ``dns_candidates``).
    factors : int
        Latent dimensions (the table's other rows use :data:`FACTORS`).
    role_scales : dict
        Extra multipliers of single roles of :data:`BASE_REG` (e.g. ``{"negative": 3}``).
    """

    name: str
    fixed: dict
    learning_rates: tuple[float, ...]
    reg_scales: tuple[float, ...] = (0.5, 1.0)
    extra: tuple[dict, ...] = ({},)
    factors: int = FACTORS
    role_scales: Mapping[str, float] = field(default_factory=dict)

    def grid(self, quick: bool) -> list[dict]:
        """Every BPR keyword set to try (the first of each axis only with ``quick``)."""
        axes = (self.learning_rates, self.reg_scales, self.extra)
        if quick:
            axes = tuple(a[:1] for a in axes)
        return [dict(self.fixed, learning_rate=lr,
                     regularization={k: v * s * self.role_scales.get(k, 1.0) for k, v in BASE_REG.items()}, **x)
                for lr, s, x in itertools.product(*axes)]


COMBINATIONS: tuple[Combination, ...] = (
    Combination("bpr, uniform, sgd", dict(), (0.02, 0.05)),
    Combination("bpr, uniform-skip, sgd", dict(sampler="uniform-skip"), (0.02, 0.05)),
    Combination("bpr, popularity (alpha), sgd", dict(sampler="popularity"), (0.02,),
                extra=({"popularity_exponent": 0.25}, {"popularity_exponent": 0.5})),
    Combination("bpr, popularity-skip alpha 1 (implicit's), sgd", dict(sampler="popularity-skip"), (0.02,)),
    Combination("bpr, dns, sgd", dict(sampler="dns"), (0.02, 0.05),
                extra=({"dns_candidates": 2}, {"dns_candidates": 4})),
    Combination("bpr, aobpr, sgd", dict(sampler="aobpr"), (0.02, 0.05),
                extra=({"aobpr_lambda": 0.02}, {"aobpr_lambda": 0.1})),
    Combination("bpr, uniform, sgd + decay 0.99", dict(learning_rate_decay=0.99), (0.05, 0.1)),
    Combination("bpr, uniform, adagrad", dict(optimizer="adagrad"), (0.05, 0.1)),
    Combination("bpr, uniform, adam", dict(optimizer="adam"), (0.001, 0.003)),
    Combination("bpr, dns, adagrad", dict(sampler="dns", optimizer="adagrad"), (0.05, 0.1),
                extra=({"dns_candidates": 2},)),
    Combination("warp, uniform, adagrad", dict(loss="warp", optimizer="adagrad"), (0.02, 0.05),
                reg_scales=(0.05, 0.25)),
    Combination("warp, uniform, sgd", dict(loss="warp"), (0.005,), reg_scales=(0.05, 0.25)),
    # A wider validation search (130 candidates: factors 32-200, every role's penalty, decay
    # schedules, user_run, init) found two things that move precision@10: a heavier penalty on
    # the negative item, and DNS with two candidates on top of it; everything else sat on a plateau.
    Combination("bpr, dns 2, sgd + decay 0.99, negative reg x3", dict(sampler="dns", dns_candidates=2,
                learning_rate_decay=0.99), (0.1,), reg_scales=(1.0,), role_scales={"negative": 3.0}),
    Combination("bpr, dns 2, sgd + decay 0.99, negative reg x3, 128 factors", dict(
        sampler="dns", dns_candidates=2, learning_rate_decay=0.99), (0.1,), reg_scales=(1.0,),
        factors=128, role_scales={"negative": 3.0}),
)


@dataclass(frozen=True)
class Plan:
    """Training budget of one search candidate (the attributes ``_scoring.run_trial`` reads)."""

    max_epochs: int
    validate_every: int
    patience: int
    seeds: tuple[int, ...]


FULL_PLAN = Plan(max_epochs=400, validate_every=10, patience=60, seeds=(0,))
QUICK_PLAN = Plan(max_epochs=30, validate_every=10, patience=10, seeds=(0,))


def label(params: Mapping[str, Any]) -> str:
    """The knobs of a candidate that the grid moves, as text."""
    reg = params["regularization"]
    parts = [f"lr {params['learning_rate']:g}", f"reg x{reg['user'] / BASE_REG['user']:g}"]
    if reg["negative"] * BASE_REG["user"] != reg["user"] * BASE_REG["negative"]:
        parts.append(f"negative reg {reg['negative']:g}")
    for key in ("popularity_exponent", "dns_candidates", "aobpr_lambda", "learning_rate_decay"):
        if key in params:
            parts.append(f"{key} {params[key]:g}")
    return ", ".join(parts)


def tune(combo: Combination, fit_train: sp.csr_matrix, valid: sp.csr_matrix, plan: Plan, quick: bool,
         log: TextIO) -> tuple[Trial, list[Trial]]:
    """Search ``combo``'s grid on the validation split; return the winner and every trial."""
    trials = []
    for params in combo.grid(quick):
        trial = run_trial(Trial(combo.factors, combo.name, params), fit_train, valid, plan, "precision@10", log)
        trials.append(trial)
    winner = max(enumerate(trials), key=lambda it: (it[1].mean("precision@10"), -it[0]))[1]
    return winner, trials
