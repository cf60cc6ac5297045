"""bpr_numpy: Bayesian Personalized Ranking, a NumPy reference with fast numba kernels.

Importing the package compiles nothing and does not import numba: the kernels
compile on first use and are cached on disk.
"""

from .gradcheck import GradcheckResult, check_gradients, gradcheck
from .model import BPR, EpochReport, TrainingDivergedError
from .objective import Regularization

__version__ = "0.1.0"

__all__ = [
    "BPR",
    "EpochReport",
    "TrainingDivergedError",
    "Regularization",
    "GradcheckResult",
    "check_gradients",
    "gradcheck",
    "__version__",
]
