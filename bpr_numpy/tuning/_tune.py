""":func:`bpr_numpy.tune`: each arm a BPR fitted, then continued with ``partial_fit``.

Every checkpoint is scored on the validation pairs (rung 0's on a sample of their users); the
:class:`~bpr_numpy.tuning.TuneResult` (:mod:`._result`) holds them all.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from ..model import BPR
from ._halving import MAX_ARMS, Checkpoint, _check_schedule, _score_key, _select, successive_halving
from ._result import Trial, TuneResult
from ._space import _RESERVED, DEFAULT_SPACE, Dimension, _resolve_space


def _parse_metric(metric: Any) -> tuple[str, int, str]:
    """``(name, k, key)`` of a metric key such as ``"recall@20"``, checked before any training."""
    from ..metrics import METRIC_NAMES
    from ..metrics._protocol import _TOPK_METRICS

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
    from ..model import BPR

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
    from .._validation import as_user_items
    from ..datasets import Interactions

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


def _eligible(trials: list[Trial]) -> list[Trial]:
    """The checkpoints the best is chosen among: those scored on all validation users, when one
    that did not diverge is; else all (the budget ended in rung 0)."""
    full = [t for t in trials if not t.screened]
    return full if any(not t.diverged for t in full) else trials


def _scored_users(matrix: Any) -> int:
    """Users with at least one positive: those :func:`~bpr_numpy.metrics.evaluate` ranks items for."""
    return int(np.count_nonzero(np.diff(matrix.indptr)))


def _screening_matrix(valid: Any, screening_users: int | None, seed: int) -> Any:
    """The validation pairs of a seeded sample of ``screening_users`` of its users (None: not fewer users)."""
    if screening_users is None:
        return None
    counts = np.diff(valid.indptr)
    users = np.flatnonzero(counts > 0)
    if len(users) <= screening_users:
        return None
    keep = np.zeros(valid.shape[0], bool)
    # Its own stream of the search's seed: the arms' draws do not move with the sample size.
    keep[np.random.default_rng([seed, 1]).choice(users, screening_users, replace=False)] = True
    sample = valid.copy()
    sample.data[~np.repeat(keep, counts)] = 0
    sample.eliminate_zeros()
    return sample


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
    screening_users: int | None = 5000,
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
    screening_users : int or None, default 5000
        Rung 0 scores its arms on a fixed sample of this many of the validation users (drawn
        from ``random_state``), the later rungs on all of them; None, or a validation set with
        no more users, scores every rung on all. Scoring ranks every item for every user, and
        rung 0 holds most of the checkpoints: on Gowalla (30k validation users, 41k items) a
        ``recall@20`` pass takes about 4 s on two cores, the time of 5 epochs of DNS with 4
        negatives, and a search's rung 0 scores some 100 arms. Arms a few epochs old differ by
        more than a 5,000-user sample's noise (on Gowalla, per-user recall@20 has a standard
        deviation of 0.17 after 3 epochs of DNS, a standard error of 0.0024 on the sample,
        while rung 0's scores ranged from 0.03 to 0.10); the sample's scores choose rung 0's
        survivors only, and the best checkpoint is chosen among those scored on all users (when
        the budget ends in rung 0, among the screened ones).
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
    from .. import metrics
    from ..model import BPR, TrainingDivergedError

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
    if screening_users is not None and (
        isinstance(screening_users, (bool, np.bool_))
        or not isinstance(screening_users, (int, np.integer))
        or screening_users < 1
    ):
        raise ValueError(f"screening_users must be None or an integer >= 1, got {screening_users!r}")
    train_matrix, valid_matrix = _matrices(train, validation)
    # With one rung there is nothing to screen for: every score is then on all users.
    screen = _screening_matrix(valid_matrix, screening_users, seed) if max_epochs > min_epochs else None
    from ..datasets import Interactions

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
        # Rung 0 (its arms have trained min_epochs, the later rungs' more) on the sample.
        matrix = screen if screen is not None and trained.get(arm) == min_epochs else valid_matrix
        result = metrics.evaluate(models[arm], train_matrix, matrix, k=k, metrics=[name])
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
            screen is not None and checkpoint.rung == 0,
        )  # fmt: skip
        trials.append(trial)
        best[:] = [_select(_eligible(trials), tolerance, lambda t: t.fit_seconds)]
        free_models()
        if progress:
            top = max(_score_key(t.score) for t in _eligible(trials))
            print(
                f"tune: arm {trial.arm} (of {planned}) rung {trial.rung} epochs {trial.epochs} {key} "
                f"{'diverged' if trial.diverged else f'{trial.score:.4f}'}{' (screening)' if trial.screened else ''} "
                f"(best {top:.4f}) "
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
        # Scoring costs about its number of users: the later rungs score all, rung 0 the sample.
        later_scores=1.0 if screen is None else _scored_users(valid_matrix) / _scored_users(screen),
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
