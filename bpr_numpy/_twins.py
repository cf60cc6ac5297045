"""A numba kernel or its plain-NumPy twin: the same outputs, chosen by what the compile would cost.

numba compiles a kernel on its first call in a process whose disk cache does not hold it yet:
seconds, on every new machine, container or CI job, before a newcomer's first result. Where a
small problem makes that compile cost more than the work, a twin written with NumPy array
operations gives the same outputs, bit for bit (each twin's tests compare it with its kernel on
random inputs), so which one ran never shows in a result.

:class:`KernelOrTwin` chooses, per call, by the rent-or-buy rule: a large problem, or a kernel
that costs no compile (compiled in this process, or in numba's disk cache: loaded in ~0.05 s),
takes the kernel; a small one takes the twin until the process has spent
:data:`TWIN_BUDGET_SECONDS` in it (the rent), and the kernel from then on (bought: one
compile). Any sequence of calls (a tuner evaluating hundreds of checkpoints, a script
evaluating once) then costs within a small factor of the best choice made in hindsight.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

__all__ = ["TWIN_BUDGET_SECONDS", "KernelOrTwin"]

#: Seconds a process spends in a twin on small problems before it compiles the kernel for them
#: too: about half of a kernel's compile on the machines we measure on (4-7 s for the
#: evaluation kernel), so that renting never costs more than buying would have.
TWIN_BUDGET_SECONDS: float = 2.0


class KernelOrTwin:
    """A numba kernel (a dispatcher compiled with ``cache=True``) and its NumPy twin.

    Parameters
    ----------
    kernel : numba dispatcher
        The kernel.
    twin : callable
        Its twin: the same arguments, the same outputs bit for bit.
    budget_seconds : float, optional
        The rent (default :data:`TWIN_BUDGET_SECONDS`).

    Attributes
    ----------
    path : str
        ``"auto"`` (the rule of the module's docstring), or ``"numpy"`` / ``"numba"`` to force
        one (tests).
    twin_seconds : float
        Time this process has spent in the twin.
    """

    def __init__(self, kernel: Any, twin: Callable, budget_seconds: float | None = None) -> None:
        self.kernel = kernel
        self.twin = twin
        self.budget_seconds = TWIN_BUDGET_SECONDS if budget_seconds is None else budget_seconds
        self.path = "auto"
        self.twin_seconds = 0.0
        self._on_disk: bool | None = None  # whether numba's cache held the kernel when first asked

    def kernel_available(self) -> bool:
        """Whether the kernel costs no compile: compiled in this process, or in numba's disk cache."""
        if self.kernel.signatures:
            return True
        if self._on_disk is None:
            try:  # numba's on-disk index of the kernel (private to numba: on any surprise, assume none)
                self._on_disk = bool(self.kernel._cache._cache_file._load_index())
            except Exception:
                self._on_disk = False
        return self._on_disk

    def timed_twin(self, *args: Any) -> Any:
        """The twin, its time added to the process's rent."""
        start = time.perf_counter()
        try:
            return self.twin(*args)
        finally:
            self.twin_seconds += time.perf_counter() - start

    def choose(self, small: bool) -> Callable:
        """The kernel, or the timed twin, for a problem that is ``small`` (or not)."""
        path = self.path
        if path == "auto":
            rent = small and self.twin_seconds < self.budget_seconds
            path = "numpy" if rent and not self.kernel_available() else "numba"
        if path not in ("numpy", "numba"):
            raise ValueError(f"path must be 'auto', 'numpy' or 'numba', got {path!r}")
        return self.timed_twin if path == "numpy" else self.kernel
