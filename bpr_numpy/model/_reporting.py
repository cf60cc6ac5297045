"""What training reports: one :class:`EpochReport` per epoch, divergence, and validation with early stopping."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np

from .._validation import as_user_items

if TYPE_CHECKING:  # pragma: no cover
    from ._estimator import BPR

__all__ = ["EpochReport", "TrainingDivergedError"]


class TrainingDivergedError(FloatingPointError):
    """Training produced NaN or infinite parameters."""


@dataclass(frozen=True)
class EpochReport:
    """What one epoch did; passed to ``fit``'s callback and kept in ``history_``.

    Attributes
    ----------
    epoch : int
        1-based count of epochs this model has trained, over all calls.
    loss : float
        Mean pair loss ``ell(x_uij)`` over the epoch's applied samples, each
        taken just before its update (the data term; regularisation excluded).
    ordered_fraction : float
        Fraction of applied samples with ``x_uij > 0``: a running estimate of
        the *training* AUC, not a test metric.
    skipped : int
        Samples drawn but not applied because no negative could be found
        (a user who holds every item, or ``MAX_NEGATIVE_TRIES`` misses).
    samples : int
        Samples drawn (applied + skipped).
    seconds : float
        Wall-clock time of the epoch's kernel.
    samples_per_second : float
    metric : str or None
        Name of the validation metric, when ``fit`` was given ``validation``.
    validation : float or None
        Its value after this epoch (None on epochs that were not evaluated).
    """

    epoch: int
    loss: float
    ordered_fraction: float
    skipped: int
    samples: int
    seconds: float
    samples_per_second: float
    metric: str | None = None
    validation: float | None = None

    def __str__(self) -> str:
        text = (
            f"epoch {self.epoch:4d}  loss {self.loss:.4f}  ordered {self.ordered_fraction:.4f}  "
            f"skipped {self.skipped}  {self.seconds:.3f} s  {self.samples_per_second / 1e6:.2f} M samples/s"
        )
        if self.validation is not None:
            text += f"  {self.metric} {self.validation:.4f}"
        return text


class _Validation:
    """Per-epoch validation for ``fit``: scores, keeps the best factors, decides when to stop."""

    def __init__(self, validation, metric: str, patience: int | None, every: int, shape: tuple[int, int]):
        from .. import metrics

        if not isinstance(validation, (tuple, list)) or len(validation) != 2:
            raise TypeError("validation must be a pair (train_positives, validation_positives)")
        self.train = as_user_items(validation[0], "validation[0] (train positives)", require_positive=False)
        self.valid = as_user_items(validation[1], "validation[1] (validation positives)")
        for name, m in (("validation[0]", self.train), ("validation[1]", self.valid)):
            if m.shape != shape:
                raise ValueError(f"{name} has shape {m.shape} but user_items has shape {shape}")
        if not isinstance(metric, str):
            raise TypeError(f"metric must be a string such as 'ndcg@10', got {type(metric).__name__}")
        name, at, k = metric.partition("@")
        top_k = name in ("precision", "recall", "ndcg", "map", "hit_rate", "coverage")
        if name not in metrics.METRIC_NAMES or (at and not top_k) or (at and (not k.isdigit() or int(k) < 1)):
            raise ValueError(
                f"unknown validation metric {metric!r}; use one of {', '.join(metrics.METRIC_NAMES)}, "
                "with @k for the top-k ones (e.g. 'ndcg@10')"
            )
        self.name, self.k = name, int(k) if at else 10
        self.key = f"{name}@{self.k}" if top_k else name
        for label, value, low in (("patience", patience, 1), ("validate_every", every, 1)):
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low
            ):
                raise ValueError(f"{label} must be an integer >= {low}, got {value!r}")
        self.patience, self.every = patience, every
        self.best_score = -np.inf
        self.best_epoch: int | None = None
        self.best_params: list[np.ndarray] | None = None
        self.seen = 0

    def after_epoch(self, model: BPR, report: EpochReport) -> tuple[EpochReport, bool]:
        from .. import metrics

        self.seen += 1
        if self.seen % self.every:
            return report, False
        value = float(metrics.evaluate(model, self.train, self.valid, k=self.k, metrics=[self.name])[self.key])
        report = replace(report, metric=self.key, validation=value)
        if value > self.best_score:  # NaN (no evaluable user) never counts as an improvement
            self.best_score, self.best_epoch = value, report.epoch
            self.best_params = [a.copy() for a in model._parameters()]
        stop = (
            self.patience is not None
            and report.epoch - (self.best_epoch or 0) >= self.patience
            and self.best_epoch is not None
        )
        return report, stop

    def restore_best(self, model: BPR) -> None:
        if self.best_params is not None:
            model._set_parameters(self.best_params)
        model.best_epoch_ = self.best_epoch
        model.best_score_ = None if self.best_epoch is None else self.best_score


def epoch_report(
    epoch: int, loss_sum: float, ordered_sum: float, skipped: int, samples: int, seconds: float
) -> EpochReport:
    """The report of an epoch from its kernels' sums (means over the applied samples)."""
    applied = samples - skipped
    return EpochReport(
        epoch=epoch,
        loss=float(loss_sum / applied) if applied else float("nan"),
        ordered_fraction=float(ordered_sum / applied) if applied else float("nan"),
        skipped=skipped,
        samples=samples,
        seconds=seconds,
        samples_per_second=samples / seconds if seconds > 0 else float("inf"),
    )
