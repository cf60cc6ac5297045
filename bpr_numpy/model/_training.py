"""The training loop: initial factors, the epochs (kernel calls, snapshots, validation, Ctrl-C), reports.

Free functions over a :class:`~bpr_numpy.model.BPR` (the estimator dispatches to them, as
scikit-learn's estimators dispatch to module-level solvers). The math is
:mod:`bpr_numpy.objective`; the kernels are :mod:`bpr_numpy._kernels` and
:mod:`bpr_numpy._hybrid_kernels`; see ``docs/architecture.md``.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

import numpy as np
import scipy.sparse as sp

from .. import sampling
from .._kernel_args import row_blocks
from .._parameters import INT64_MAX, check_allocation
from .._runtime import (
    aligned_empty,
    available_threads,
    initial_rows,
    kernel_ready,
    membership_bitmap,
    resolve_seed,
)
from .._validation import as_user_items
from ..hybrid import Features
from ..objective import LOSS_REGISTRY, OPTIMIZER_REGISTRY, OptimizerState, Regularization
from ._factor_model import PARAMETER_NAMES
from ._reporting import EpochReport, TrainingDivergedError

if TYPE_CHECKING:  # pragma: no cover
    from ._estimator import BPR


#: Arrays of fewer elements count as small for the snapshot's :class:`~bpr_numpy._twins.KernelOrTwin`:
#: NumPy's two passes (a few ms at most) cost less than compiling the one-pass kernel on a new
#: machine (0.07 s).
SMALL_SNAPSHOT = 1 << 20

_CHOOSER = None


def _copy_finite_numpy(src: np.ndarray, dst: np.ndarray) -> bool:
    """:func:`bpr_numpy._kernels._copy_finite`'s twin: the copy, then the check, in NumPy."""
    np.copyto(dst, src)
    return bool(np.isfinite(dst).all())


def _snapshot_chooser():
    """The snapshot's kernel-or-twin chooser, made on first use (importing must not import numba)."""
    global _CHOOSER
    if _CHOOSER is None:
        from .._kernels import _copy_finite
        from .._twins import KernelOrTwin

        _CHOOSER = KernelOrTwin(_copy_finite, _copy_finite_numpy)
    return _CHOOSER


def _copy_checking_finite(src: np.ndarray, dst: np.ndarray) -> bool:
    """Copy the 1-D ``src`` into ``dst``; return whether every value is finite."""
    return _snapshot_chooser().choose(src.size < SMALL_SNAPSHOT)(src, dst)


class _Snapshot:
    """A copy of the parameters (and optimiser state) as the last completed epoch left them.

    Kept in preallocated buffers, so an interrupted epoch can be undone: the
    price of "Ctrl-C keeps the last completed epoch" is one more copy of the
    parameters in memory and one copy of them per epoch, which also checks
    that they are finite (one pass over memory instead of two; NumPy's two
    passes for parameters under ``SMALL_SNAPSHOT`` values).
    """

    def __init__(self, model: BPR) -> None:
        self.model = model
        self.live = self._arrays()
        self.n_parameters = len(model._parameters())
        self.saved = [np.empty_like(a) for a in self.live]

    def _arrays(self) -> list[np.ndarray]:
        m = self.model
        state = m._optimizer_state
        extra = [a for a in state.arrays() if a.size] if state is not None and state.code else []
        return [*m._parameters(), *extra]

    def take(self) -> int:
        """Copy the live arrays; return the index of the first parameter array with NaN/inf, or -1."""
        bad = -1
        for k, (src, dst) in enumerate(zip(self.live, self.saved, strict=True)):
            if k < self.n_parameters and src.size:
                if not _copy_checking_finite(src.reshape(-1), dst.reshape(-1)) and bad < 0:
                    bad = k
            else:
                np.copyto(dst, src)
        return bad

    def restore(self) -> None:
        for dst, src in zip(self.live, self.saved, strict=True):
            np.copyto(dst, src)


def _check_epochs(epochs) -> None:
    if isinstance(epochs, bool) or not isinstance(epochs, (int, np.integer)) or not 0 <= epochs <= INT64_MAX:
        raise ValueError(f"epochs must be a non-negative integer below 2**63, got {epochs!r}")


def check_feature_settings(model: BPR) -> None:
    """Side features take the losses the registry marks ``hybrid``; the kernels also its samplers and optimisers.

    The minibatch trainer applies every optimiser and draws every sampler it draws without
    features (:func:`bpr_numpy._parameters.check_combination` has those rules).
    """
    if not LOSS_REGISTRY[model.loss].hybrid:
        usable = " or ".join(repr(loss.name) for loss in LOSS_REGISTRY.values() if loss.hybrid)
        raise ValueError(f"side features support loss {usable}, not {model.loss!r}")
    if int(model.n_negatives) > 1:
        raise ValueError("side features train one negative per positive: n_negatives must be 1")
    if model.solver != "kernel":
        return
    if not sampling.REGISTRY[model.sampler].hybrid:
        usable = ", ".join(s.name for s in sampling.REGISTRY.values() if s.hybrid)
        raise ValueError(
            f"side features with solver='kernel' support the samplers {usable}, not "
            f"{model.sampler!r} (solver='minibatch' draws any fixed law)"
        )
    if not OPTIMIZER_REGISTRY[model.optimizer].hybrid:
        usable = ", ".join(o.name for o in OPTIMIZER_REGISTRY.values() if o.hybrid)
        raise ValueError(
            f"side features with solver='kernel' support optimizer {usable}, not "
            f"{model.optimizer!r} (solver='minibatch' applies every optimiser)"
        )


def build_features(model: BPR, shape: tuple[int, int], user_features, item_features) -> Features | None:
    """The side features of a fit (None without any), checked against the model's settings."""
    if user_features is None and item_features is None:
        return None
    check_feature_settings(model)
    return Features.build(
        shape, user_features, item_features, identity=model.identity, normalize=bool(model.normalize_features)
    )


def interactions(user_items) -> tuple[sp.csr_matrix, tuple | None]:
    """The training matrix, and ``(user_ids, item_ids, item_titles)`` when given an Interactions."""
    from ..datasets import Interactions

    if isinstance(user_items, Interactions):
        return as_user_items(user_items.matrix), (user_items.user_ids, user_items.item_ids, user_items.item_titles)
    return as_user_items(user_items), None


def check_same_ids(model: BPR, maps: tuple) -> None:
    """``partial_fit`` on an Interactions: its ids must be the model's (the rows are the same users)."""
    for name, mine, theirs in zip(("user_ids", "item_ids"), (model.user_ids, model.item_ids), maps[:2], strict=True):
        if mine is not None and (len(mine) != len(theirs) or not np.array_equal(mine, theirs)):
            raise ValueError(
                f"the Interactions' {name} differ from the model's: rows would mean other "
                "users or items (align them first: Interactions.with_id_space_of)"
            )


def start(model: BPR, matrix: sp.csr_matrix, features: Features | None) -> None:
    """Begin a fit from scratch: a seed from ``random_state``, fresh factors, the interactions kept."""
    model._seed = resolve_seed(model.random_state)
    model._features = features
    init_factors(model, *matrix.shape)
    model._user_items = matrix
    model.interrupted_, model.best_epoch_, model.best_score_ = False, None, None


def resume(model: BPR, matrix: sp.csr_matrix, features: Features | None, user_features, item_features) -> None:
    """Continue a fitted model (``partial_fit``): same shape; new side features replace the old ones.

    A side not given keeps the features it was fitted with; new ones must lay out the same
    columns, and the factors follow them at once, whether or not an epoch runs.
    """
    model._check_fitted()
    if matrix.shape != (model.n_users, model.n_items):
        raise ValueError(
            f"user_items has shape {matrix.shape} but the model was fitted on {(model.n_users, model.n_items)}"
        )
    if features is not None:
        old = model._features
        if old is None:
            raise ValueError("this model was fitted without side features: partial_fit takes none")
        if user_features is None:
            features.users = old.users
        if item_features is None:
            features.items = old.items
        for label, new, was in (
            ("user_features", features.users, old.users),
            ("item_features", features.items, old.items),
        ):
            if new.n_features != was.n_features:
                raise ValueError(
                    f"partial_fit's {label} lay out {new.n_features} feature columns "
                    f"(identities included); the model was fitted with {was.n_features}"
                )
        features.set_embeddings(old.embeddings())
        model._features = features
        model.user_factors, model.item_factors, model.item_biases = features.representations(bool(model.item_bias))
        model._item_norms = None
    if model._seed is None:  # a loaded model without its seed continues on a fresh stream
        model._seed = resolve_seed(model.random_state)


def init_factors(model: BPR, n_users: int, n_items: int) -> None:
    dtype = np.dtype(model.dtype)
    rows = (
        (n_users + n_items)
        if model._features is None
        else (model._features.users.n_features + model._features.items.n_features)
    )
    factors = int(model.factors)  # a numpy int8 would overflow below, and its sqrt would be float16
    check_allocation(int(rows) * factors * dtype.itemsize, f"factors={factors} ({rows} rows of {dtype.name} factors)")
    std = 1.0 / np.sqrt(factors) if model.init_std is None else float(model.init_std)
    threads = min(model.threads or available_threads(), available_threads())
    streams = iter((0, 1))  # users, then items
    seed = model._seed
    assert seed is not None, "start() resolves the seed first"

    def normal(rows: int) -> np.ndarray:
        return initial_rows(seed, next(streams), rows, factors, std, dtype, threads, model.init)

    if model._features is not None:
        model._features.init_embeddings(normal)
        model.user_factors, model.item_factors, model.item_biases = model._features.representations(
            bool(model.item_bias)
        )
    else:
        model.user_factors = normal(n_users)
        model.item_factors = normal(n_items)
        model.item_biases = aligned_empty(n_items, dtype)
        model.item_biases[:] = 0
    for name, a in zip(("user_factors", "item_factors"), model._parameters(), strict=False):
        if not np.isfinite(a).all():  # std * a normal draw can overflow float32 while std itself does not
            raise ValueError(
                f"init_std={model.init_std} gives {name} infinite values in {dtype.name}; use a smaller init_std"
            )
    model._optimizer_state = None
    model._epochs_done = 0
    model._diverged = None
    model._item_norms = None
    model.history_ = []


def train(model: BPR, matrix: sp.csr_matrix, epochs: int, callback, show_progress, validation=None) -> BPR:
    _check_epochs(epochs)
    epochs = int(epochs)  # a numpy integer would make the epoch counter wrap at its width
    if model._epochs_done + epochs > INT64_MAX:  # the kernels seed each epoch's streams with its int64 number
        raise ValueError(f"epochs={epochs} after the {model._epochs_done} already trained would count past 2**63")
    if model._features is not None:  # loss or sampler may have been changed since the features were set
        check_feature_settings(model)
    if show_progress is None:
        show_progress = sys.stderr.isatty()
    model._user_items = matrix
    model._item_norms = None
    dtype = np.dtype(model.dtype)
    # Arrays a user replaced (read-only, strided, another dtype) are copied into what
    # the kernels take, rather than compiling a new kernel or failing inside numba.
    model._set_parameters([kernel_ready(a, dtype) for a in model._parameters()])
    threads = min(model.threads or available_threads(), available_threads())
    rows = row_blocks(matrix.indptr)  # the samplers' map from a CSR position to its user
    state = model._optimizer_state
    U, V, _ = model._factors()
    # The trained rows: factor rows, or feature-embedding rows with side features.
    rows_u, rows_i = (
        (U.shape[0], V.shape[0])
        if model._features is None
        else (model._features.users.n_features, model._features.items.n_features)
    )
    if state is None or not state.fits(model.optimizer, rows_u, rows_i, U.shape[1], U.dtype):
        # Fresh accumulators: first training, a changed optimiser, or a loaded model (not saved).
        model._optimizer_state = OptimizerState(model.optimizer, rows_u, rows_i, U.shape[1], dtype=U.dtype)
    alias = alias_table(model, matrix)
    # Only samplers that draw negatives ahead of the updates test them against the bitmap.
    draws_ahead = (
        sampling.sampler_codes(model.sampler).adaptive != sampling.ADAPTIVE_AOBPR
        and not LOSS_REGISTRY[model.loss].draws_negatives
    )
    bitmap = None
    if epochs and draws_ahead and model.solver == "kernel":  # the kernels' test (plain and hybrid)
        bitmap = membership_bitmap(matrix.indptr, matrix.indices, matrix.shape[1])
    if not epochs:
        if validation is not None:
            validation.restore_best(model)
        return model
    # The lock is taken per epoch (_run_epoch), so two fits interleave their epochs.
    return epoch_loop(model, matrix, rows, threads, alias, bitmap, epochs, callback, show_progress, validation)


def epoch_loop(model: BPR, matrix, rows, threads, alias, bitmap, epochs, callback, show_progress, validation) -> BPR:
    """The epochs of :meth:`_train`, after its setup."""
    total = model._epochs_done + epochs
    # Compile (or load from the cache) outside the epoch timer: a call
    # with zero samples has the same types and does no work.
    # Coerced once: the checks cost 1.5% of a MovieLens 100k fit when done per epoch.
    reg = Regularization.coerce(model.regularization)
    run = _EPOCHS[model.solver]
    run(model, matrix, rows, threads, alias, bitmap, reg, n_samples=0)
    snapshot = _Snapshot(model)
    snapshot.take()
    # Ctrl-C may land anywhere in the loop. Inside an epoch's kernel calls (``completed``
    # false), the model puts back the last completed epoch; anywhere else the live arrays hold
    # a completed epoch, which it keeps. Either way it says so and lets the interrupt go on.
    report, done, completed = None, model._epochs_done, True
    try:
        for _ in range(epochs):
            done = model._epochs_done
            completed = False
            if any(a is not b for a, b in zip(model._parameters(), snapshot.live, strict=False)):
                # A callback replaced a parameter array: check it, copy it into what the kernels
                # take, and snapshot that.
                model._check_parameter_arrays()
                dtype = model._factors()[0].dtype
                model._set_parameters([kernel_ready(a, dtype) for a in model._parameters()])
                snapshot = _Snapshot(model)
                snapshot.take()
            elif any(a.shape != b.shape for a, b in zip(model._parameters(), snapshot.saved, strict=False)):
                model._check_parameter_arrays()  # reshaped in place: names the array
            report = run(model, matrix, rows, threads, alias, bitmap, reg)
            assert report is not None, "an epoch with samples reports"
            completed = True
            check_finite(model, snapshot.take())
            stop = False
            if validation is not None:
                report, stop = validation.after_epoch(model, report)
            model.history_.append(report)
            if show_progress:
                print(f"{report}  [{report.epoch}/{total}]", file=sys.stderr, flush=True)
            if callback is not None and callback(report) is False:
                break
            if stop:
                break
    except KeyboardInterrupt:
        if not completed:
            snapshot.restore()
            model._epochs_done = done
        elif (
            report is not None
            and report.epoch == model._epochs_done
            and (not model.history_ or model.history_[-1].epoch != report.epoch)
        ):
            model.history_.append(report)
        model.interrupted_ = True
        where = f"during epoch {done + 1}" if not completed else f"after epoch {model._epochs_done}"
        print(
            f"interrupted {where}: the model keeps the factors of epoch {model._epochs_done} (the last one completed)",
            file=sys.stderr,
            flush=True,
        )
        raise
    if validation is not None:
        validation.restore_best(model)
    return model


def alias_table(model: BPR, matrix: sp.csr_matrix) -> tuple[np.ndarray, np.ndarray]:
    """The alias table of the sampler's candidate law over ``matrix`` (empty arrays for a uniform candidate)."""
    weights = sampling.item_weights(model.sampler, matrix, model.get_params())
    if weights is None:
        return np.empty(0), np.empty(0, np.int64)
    return sampling.alias_table(weights)


def _kernel_epoch(*args, **kwargs) -> EpochReport | None:
    from . import _kernel_epoch  # numba's kernels; imported when a kernel fit runs

    return _kernel_epoch.run_epoch(*args, **kwargs)


def _minibatch_epoch(*args, **kwargs) -> EpochReport | None:
    from . import _minibatch  # NumPy only; imported when a minibatch fit runs

    return _minibatch.run_epoch(*args, **kwargs)


#: One epoch of each solver (``BPR(solver=...)``, :data:`bpr_numpy._parameters.SOLVERS`), with one
#: signature: ``(model, matrix, rows, threads, alias, bitmap, reg, n_samples=None)``; ``rows`` is
#: :func:`bpr_numpy._kernel_args.row_blocks` of the matrix.
_EPOCHS = {"kernel": _kernel_epoch, "minibatch": _minibatch_epoch}


def epoch_learning_rate(model: BPR, epoch: int) -> float:
    """The step size of epoch ``epoch`` (from 0): ``learning_rate * learning_rate_decay ** epoch``.

    ValueError when it is not finite in the model's dtype (a decay above 1 grows it without
    bound), rather than training on an infinite step.
    """
    try:
        rate = model.learning_rate * model.learning_rate_decay**epoch
    except OverflowError:
        rate = float("inf")
    if not abs(rate) <= float(np.finfo(np.dtype(model.dtype)).max):
        raise ValueError(
            f"the learning rate of epoch {epoch + 1} (learning_rate * learning_rate_decay ** {epoch}"
            f" with learning_rate_decay={model.learning_rate_decay}) overflows "
            f"{np.dtype(model.dtype).name}; use learning_rate_decay <= 1"
        )
    return rate


def check_finite(model: BPR, bad: int) -> None:
    """Raise when the epoch just completed left NaN/inf in parameter array ``bad`` (-1: none did)."""
    if bad < 0:
        return
    name = PARAMETER_NAMES[bad]
    model._diverged = (
        f"training diverged in epoch {model._epochs_done}: {name} holds NaN or infinite values. "
        f"Lower the learning rate (now {model.learning_rate}) or raise the regularization, then fit again."
    )
    raise TrainingDivergedError(model._diverged)


class TrainingState:
    """The estimator's training bookkeeping, for a trainer outside this package.

    :mod:`bpr_numpy.distributed` trains a :class:`~bpr_numpy.model.BPR` its own way (strata
    of blocks on Dask workers) but keeps the model's epoch count, seed, history and arrays as
    a single-machine fit does; it reaches them only through this handle, so the model's
    private attributes are read and written in this package alone.
    """

    def __init__(self, model: BPR) -> None:
        self.model = model

    def check_parameters(self) -> None:
        """Check the hyperparameters (as ``fit`` does first)."""
        self.model._check_params()

    def start(self, matrix: sp.csr_matrix) -> None:
        """Begin a fit from scratch (no side features): seed, initial factors, the interactions."""
        start(self.model, matrix, None)

    @property
    def epochs_done(self) -> int:
        """Epochs trained so far (over every call); epoch ``e`` (from 0) seeds its streams with ``e``."""
        return self.model._epochs_done

    @property
    def seed(self) -> int:
        """The seed of this fit's streams, resolved from ``random_state`` when it began."""
        seed = self.model._seed
        assert seed is not None, "start() resolves the seed first"
        return seed

    def learning_rate(self) -> float:
        """The step size of the next epoch."""
        return epoch_learning_rate(self.model, self.model._epochs_done)

    def finish_epoch(self, report: EpochReport) -> None:
        """Count the epoch ``report`` describes and keep the report in ``history_``."""
        self.model._epochs_done = report.epoch
        self.model.history_.append(report)

    def install(self, arrays: list[np.ndarray], epoch: int) -> None:
        """Make ``arrays`` (user factors, item factors, biases) the model's, as of ``epoch``.

        Raises :class:`TrainingDivergedError` (and marks the model diverged) when they hold NaN or inf.
        """
        model = self.model
        model._set_parameters(arrays)
        model._epochs_done = epoch
        check_finite(model, next((k for k, a in enumerate(arrays) if not np.isfinite(a).all()), -1))

    def rewind(self, epoch: int) -> int:
        """Forget the epochs after ``epoch`` (whose arrays the model holds); returns the reports kept."""
        model = self.model
        model._epochs_done = epoch
        keep = sum(1 for r in model.history_ if r.epoch <= epoch)
        del model.history_[keep:]
        return keep
