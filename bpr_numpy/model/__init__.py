"""The BPR estimator (:class:`BPR`) and what it reports: the package's front door.

``_estimator`` holds the class, ``_training`` the training loop, ``_persistence`` model files and
``_retrieval`` top-k retrieval; see ``docs/architecture.md``.
"""

from ._estimator import BPR
from ._factor_model import FactorModel
from ._persistence import FORMAT_NAME, FORMAT_VERSION
from ._reporting import EpochReport, TrainingDivergedError

__all__ = ["BPR", "FactorModel", "EpochReport", "TrainingDivergedError", "FORMAT_NAME", "FORMAT_VERSION"]
