"""The estimator's hyperparameters: what each one accepts, declared once and checked at the door.

:class:`bpr_numpy.BPR` checks its constructor arguments against :data:`CONSTRAINTS` at
construction, at ``set_params`` and at every fit (scikit-learn's ``_parameter_constraints``
idea). Each bound that is tighter than the type's says why, so the message a user gets
explains the limit. The rules that join parameters (WARP's samplers, what each solver takes)
are :func:`check_combination`, read from the registries' capabilities; what side features take
is :func:`bpr_numpy.model._training.check_feature_settings`.
"""

from __future__ import annotations

import contextlib
import inspect
import math
import numbers
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, SupportsFloat

import numpy as np

__all__: list[str] = []

#: Largest integer the numba kernels take (int64), and the largest seed of the triplet streams.
INT64_MAX = 2**63 - 1

#: Most candidates one draw may score (``dns_candidates``, ``max_sampled``). The kernels work
#: in chunks of up to 4,096 samples, the unit of the seeded triplet streams and the finest
#: grain at which Ctrl-C is seen; 1,024 candidates of 64 factors make a chunk about 0.3 s.
#: (DNS papers use 2-10 candidates, LightFM's WARP 10-100 draws.)
MAX_CANDIDATES = 1024

#: Longest run of samples drawn for one user (= ``_kernels.BATCH``: runs restart at each batch).
MAX_USER_RUN = 32


def _is_integer(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))


def _is_real(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))


def as_finite_float(value: SupportsFloat) -> float | None:
    """``float(value)`` when it is finite, else None (NaN, infinities, and integers beyond float64)."""
    try:
        result = float(value)
    except OverflowError:  # an int of more than ~1024 bits
        return None
    return result if math.isfinite(result) else None


@dataclass(frozen=True)
class Integer:
    """An integer in ``[low, high]``; ``why`` explains a bound tighter than int64's."""

    low: int
    high: int = INT64_MAX
    why: str = ""

    def check(self, name: str, value: Any, dtype: np.dtype | None) -> None:
        if not _is_integer(value):
            raise TypeError(f"{name} must be an integer, got {type(value).__name__}")
        if value < self.low:
            raise ValueError(f"{name} must be >= {self.low}, got {value}")
        if value > self.high:
            reason = f" ({self.why})" if self.why else ""
            raise ValueError(f"{name} must be <= {self.high}{reason}, got {value}")


@dataclass(frozen=True)
class Real:
    """A finite real ``>= low`` (``> low`` when ``strict``) and ``<= high`` (``why`` says why).

    ``in_dtype``: the value is used in the model's precision (a step size, a penalty, a
    standard deviation), so it must also be finite once cast to it: 1e39 is finite in
    float64 but infinite in float32.
    """

    low: float = 0.0
    strict: bool = False
    in_dtype: bool = False
    optional: bool = False
    high: float = math.inf
    why: str = ""

    def check(self, name: str, value: Any, dtype: np.dtype | None) -> None:
        """``dtype`` (the model's) matters only with ``in_dtype``; None: float64's range."""
        if value is None and self.optional:
            return
        if not _is_real(value):
            raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
        if as_finite_float(value) is None or value < self.low or (self.strict and value == self.low):
            raise ValueError(f"{name} must be finite and {'>' if self.strict else '>='} {self.low:g}, got {value}")
        if value > self.high:
            raise ValueError(f"{name} must be <= {self.high:g} ({self.why}), got {value}")
        largest = float(np.finfo(dtype).max) if self.in_dtype else math.inf
        if abs(float(value)) > largest:
            raise ValueError(
                f"{name}={value} is beyond the model's dtype {np.dtype(dtype).name} "
                f"(largest {largest:.4g}); use a smaller value or dtype=numpy.float64"
            )


@dataclass(frozen=True)
class Choice:
    """One of the names of a registry (read at check time, so the registry is the one list)."""

    options: Callable[[], tuple]

    def check(self, name: str, value: Any, dtype: np.dtype) -> None:
        options = self.options()
        if not isinstance(value, str) or value not in options:
            raise ValueError(f"{name} must be one of {options}, got {value!r}")


@dataclass(frozen=True)
class Boolean:
    """``True`` or ``False`` (numpy booleans too); ``names`` adds accepted strings."""

    names: tuple[str, ...] = ()

    def check(self, name: str, value: Any, dtype: np.dtype) -> None:
        allowed = ", ".join(["a bool", *map(repr, self.names[:-1])]) + (f" or {self.names[-1]!r}" if self.names else "")
        if isinstance(value, str) and self.names:
            if value not in self.names:
                raise ValueError(f"{name} must be {allowed}, got {value!r}")
        elif not isinstance(value, (bool, np.bool_)):
            raise TypeError(f"{name} must be {allowed}, got {value!r}")


@dataclass(frozen=True)
class Custom:
    """A parameter checked by a function of ``(name, value, dtype)``."""

    function: Callable[[str, Any, np.dtype], None]

    def check(self, name: str, value: Any, dtype: np.dtype) -> None:
        self.function(name, value, dtype)


def check_dtype(value: Any) -> np.dtype:
    """The model's dtype from ``value``: float32 or float64, else a named error."""
    try:
        dtype = np.dtype(value)
    except TypeError:
        raise TypeError(f"dtype must be numpy.float32 or numpy.float64, got {value!r}") from None
    if dtype not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise ValueError(f"dtype must be numpy.float32 or numpy.float64, got {dtype}")
    return dtype


def check_random_state(name: str, value: Any) -> None:
    """None, a numpy Generator, or an integer in ``[0, 2**63)`` (the streams' 63-bit seed).

    Larger integers are refused rather than reduced: reducing them would give two seeds
    the same triplets without a word.
    """
    if value is None or isinstance(value, np.random.Generator):
        return
    if not _is_integer(value):
        raise TypeError(f"{name} must be None, an int or a numpy Generator, got {type(value).__name__}")
    if not 0 <= value <= INT64_MAX:
        raise ValueError(f"{name} must be a non-negative integer below 2**63, got {value}")


def _regularization(name: str, value: Any, dtype: np.dtype) -> None:
    from .objective import Regularization

    strengths = Regularization.coerce(value)
    for role, strength in zip(("user", "positive", "negative", "bias"), strengths.as_tuple(), strict=True):
        Real(in_dtype=True).check(f"{name}.{role}" if not _is_real(value) else name, strength, dtype)


def _losses() -> tuple:
    from .objective import LOSSES

    return LOSSES


def _samplers() -> tuple:
    from .sampling import SAMPLERS

    return SAMPLERS


def _optimizers() -> tuple:
    from .objective import OPTIMIZERS

    return OPTIMIZERS


#: The training paths of :class:`bpr_numpy.BPR`: ``"kernel"``, the numba kernels (sampled triplets, one
#: SGD step each, Hogwild over threads), and ``"minibatch"``, the vectorised NumPy trainer
#: (:mod:`bpr_numpy.model._minibatch`).
SOLVERS: tuple[str, ...] = ("kernel", "minibatch")


#: Every constructor argument of :class:`bpr_numpy.BPR` but ``dtype`` (checked first, since
#: the others are checked in it), in the constructor's order.
CONSTRAINTS: dict[str, Any] = {
    "factors": Integer(1),
    "learning_rate": Real(strict=True, in_dtype=True),
    "regularization": Custom(_regularization),
    "epochs": Integer(0),
    "loss": Choice(_losses),
    "sampler": Choice(_samplers),
    "user_run": Integer(1, MAX_USER_RUN, "runs restart at each batch of the kernels"),
    "popularity_exponent": Real(),
    "dns_candidates": Integer(
        1, MAX_CANDIDATES, "a larger count would make a kernel call too long to interrupt with Ctrl-C"
    ),
    "aobpr_lambda": Real(
        strict=True, high=1e6, why="the rank law exp(-r / (aobpr_lambda * n_items)) is then uniform to 1e-6"
    ),
    "max_sampled": Integer(
        1, MAX_CANDIDATES, "a larger count would make a kernel call too long to interrupt with Ctrl-C"
    ),
    "optimizer": Choice(_optimizers),
    "learning_rate_decay": Real(strict=True),
    "item_bias": Boolean(),
    "init_std": Real(in_dtype=True, optional=True),
    "threads": Integer(0),
    "random_state": Custom(lambda name, value, dtype: check_random_state(name, value)),
    "identity": Boolean(("users", "items")),
    "normalize_features": Boolean(),
    "solver": Choice(lambda: SOLVERS),
    "batch_size": Integer(1, INT64_MAX),
    "init": Choice(lambda: ("normal", "uniform")),
    "n_negatives": Integer(
        1, MAX_CANDIDATES, "a larger count would make a kernel call too long to interrupt with Ctrl-C"
    ),
}


def check_parameters(params: dict[str, Any]) -> None:
    """Check every hyperparameter of ``params`` (a ``get_params()`` dict) against :data:`CONSTRAINTS`."""
    dtype = check_dtype(params["dtype"])
    for name, constraint in CONSTRAINTS.items():
        constraint.check(name, params[name], dtype)


def _several_negatives(sampler: Any) -> bool:
    """Whether ``sampler`` can draw ``n_negatives > 1`` negatives (see :func:`check_combination`)."""
    from . import sampling

    return (
        not sampler.codes.skip_liked
        and not sampler.keeps_liked
        and sampler.draw is None
        and sampler.codes.adaptive in (sampling.ADAPTIVE_NONE, sampling.ADAPTIVE_DNS)
    )


def check_combination(params: dict[str, Any]) -> None:
    """The rules between hyperparameters, read from the registries' capabilities (after :func:`check_parameters`).

    WARP draws its own negatives from a sampler marked ``warp``; the kernels apply the
    optimisers marked ``kernel``, never keep a positive as its negative and call no sampler's
    ``draw`` function; the minibatch trainer takes the losses that do not draw their own
    negatives and the samplers whose draw does not depend on the factors.
    """
    from . import sampling
    from .objective import LOSS_REGISTRY, OPTIMIZER_REGISTRY

    loss, sampler, optimizer = (
        LOSS_REGISTRY[params["loss"]],
        sampling.REGISTRY[params["sampler"]],
        OPTIMIZER_REGISTRY[params["optimizer"]],
    )
    if params["solver"] == "kernel":
        if not optimizer.kernel:
            raise ValueError(f"optimizer={optimizer.name!r} is applied by solver='minibatch' only")
        if sampler.keeps_liked:
            raise ValueError(
                f"sampler={sampler.name!r} keeps a positive drawn as its negative, which only solver='minibatch' does"
            )
        if sampler.draw is not None:
            raise ValueError(
                f"sampler={sampler.name!r} draws with a NumPy function, which only solver='minibatch' calls"
            )
    else:
        if loss.draws_negatives:
            raise ValueError(
                f"solver='minibatch' takes the losses that do not draw their own negatives, not {loss.name!r}"
            )
        if sampler.codes.adaptive != sampling.ADAPTIVE_NONE:
            raise ValueError(
                f"solver='minibatch' draws negatives from a fixed law; sampler={sampler.name!r} "
                "depends on the factors (use solver='kernel')"
            )
    negatives = int(params["n_negatives"])
    if loss.joint and params["solver"] != "kernel":
        raise ValueError(f"loss={loss.name!r} is trained by solver='kernel' (its several-negatives kernel)")
    if negatives > 1 or loss.joint:
        what = "n_negatives > 1" if negatives > 1 else f"loss={loss.name!r}"
        if params["solver"] != "kernel":
            raise ValueError("n_negatives > 1 is trained by solver='kernel'; solver='minibatch' takes one negative")
        if loss.draws_negatives:
            raise ValueError(f"loss={loss.name!r} draws its own negatives: n_negatives must be 1")
        # The extra negatives are drawn as the sampler draws its first one, redrawn while a known
        # positive; DNS picks each from its candidates. Samplers that skip (or keep) a known
        # positive, choose from the factors otherwise, or draw in NumPy cannot do that.
        if not _several_negatives(sampler):
            usable = ", ".join(repr(s.name) for s in sampling.REGISTRY.values() if _several_negatives(s))
            raise ValueError(f"{what} takes the samplers {usable}, not {sampler.name!r}")
        candidates = negatives * int(params["dns_candidates"])
        if sampler.codes.adaptive == sampling.ADAPTIVE_DNS and candidates > MAX_CANDIDATES:
            raise ValueError(
                f"n_negatives * dns_candidates = {candidates} candidates per positive; "
                f"at most {MAX_CANDIDATES}, so that a kernel call stays short enough to interrupt with Ctrl-C"
            )
    if loss.draws_negatives and not sampler.warp:
        usable = " or ".join(repr(s.name) for s in sampling.REGISTRY.values() if s.warp)
        raise ValueError(
            f"loss={loss.name!r} draws its own negatives until one violates the margin: "
            f"use sampler={usable}, not {sampler.name!r}"
        )


def memory_limit() -> int | None:
    """The most memory this process could hold, in bytes; ``None`` where it is not known.

    The machine's physical memory, or the process's address-space limit
    (``RLIMIT_AS``, as ``ulimit -v`` sets) where that is lower.
    """
    limits = []
    with contextlib.suppress(AttributeError, ValueError, OSError):  # no sysconf (Windows) or no such name
        limits.append(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    try:
        import resource

        soft = resource.getrlimit(resource.RLIMIT_AS)[0]
        if soft != resource.RLIM_INFINITY:
            limits.append(soft)
    except (ImportError, AttributeError, ValueError, OSError):  # no resource module (Windows)
        pass
    limits = [n for n in limits if n > 0]  # sysconf answers -1 for "unknown"
    return min(limits) if limits else None


def check_allocation(nbytes: int, what: str) -> None:
    """Refuse an allocation of ``nbytes`` (an exact Python int) beyond :func:`memory_limit`.

    A size computed from a user's parameters (``factors=10**12``) would otherwise end as a
    bare ``MemoryError``, or an overflow inside numpy, far from the parameter that caused it.
    """
    memory = memory_limit()
    if memory is not None and nbytes > memory:
        raise ValueError(
            f"{what} would need {nbytes / 2**30:.3g} GiB, more than the "
            f"{memory / 2**30:.3g} GiB of memory this process can have"
        )


class ParameterMixin:
    """scikit-learn's estimator convention, read from the constructor's signature.

    Every ``__init__`` argument is stored unchanged under its own name, so ``get_params``,
    ``set_params``, ``__repr__`` and ``sklearn.base.clone`` need no table of their own. A
    subclass checks its parameters in ``_check_params`` (which ``set_params`` calls).
    """

    @classmethod
    def _get_param_names(cls) -> list[str]:
        return [name for name in inspect.signature(cls.__init__).parameters if name != "self"]

    def _check_params(self) -> None:
        check_parameters(self.get_params())

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """Hyperparameters as a dict of constructor arguments (scikit-learn convention)."""
        return {name: getattr(self, name) for name in self._get_param_names()}

    def set_params(self, **params: Any) -> ParameterMixin:
        """Set hyperparameters by constructor argument name; validated at once, all or none."""
        names = self._get_param_names()
        unknown = [name for name in params if name not in names]
        if unknown:
            raise ValueError(f"unknown parameter {unknown[0]!r}; valid: {', '.join(names)}")
        before = {name: getattr(self, name) for name in params}
        for name, value in params.items():
            setattr(self, name, value)
        try:
            self._check_params()
        except Exception:
            for name, value in before.items():  # a refused change leaves the estimator as it was
                setattr(self, name, value)
            raise
        return self

    def __repr__(self) -> str:
        shown = []
        for name, parameter in inspect.signature(type(self).__init__).parameters.items():
            value = getattr(self, name, parameter.default)
            if name != "self" and value is not parameter.default and value != parameter.default:
                shown.append(f"{name}={value.__name__ if isinstance(value, type) else repr(value)}")
        return f"{type(self).__name__}({', '.join(shown)})"
