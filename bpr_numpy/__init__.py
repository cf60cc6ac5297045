"""bpr_numpy: Bayesian Personalized Ranking, a NumPy reference with fast numba kernels.

Importing the package is cheap: the math and the oracle (NumPy only) load at
once; the estimator, the tuner, metrics, data sets and CLI load on first use (PEP 562);
numba is imported only by the modules that need it, and the kernels compile on
first call and are cached on disk.
"""

from importlib import import_module
from typing import TYPE_CHECKING

# Eager on purpose: ``gradcheck`` names both a submodule and its entry-point
# function, and binding the function here, after the submodule has loaded,
# keeps ``from bpr_numpy import gradcheck`` the function however the
# submodule is imported later.
from .gradcheck import GradcheckResult, check_gradients, gradcheck
from .objective import Regularization

__version__ = "0.1.0"

_EXPORTS = {
    "BPR": "model",
    "EpochReport": "model",
    "TrainingDivergedError": "model",
    "tune": "tuning",
}
_SUBMODULES = ("model", "metrics", "datasets", "cli")

__all__ = [
    *_EXPORTS,
    *_SUBMODULES,
    "objective",
    "Regularization",
    "GradcheckResult",
    "check_gradients",
    "gradcheck",
    "__version__",
]

if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs
    from . import cli, datasets, metrics, model  # noqa: F401
    from .model import BPR, EpochReport, TrainingDivergedError  # noqa: F401
    from .tuning import tune  # noqa: F401


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
    elif name in _SUBMODULES:
        value = import_module(f".{name}", __name__)
    else:
        raise AttributeError(f"module 'bpr_numpy' has no attribute {name!r}")
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
