"""How many examples each property test draws: the CI budget, scaled for longer hunts.

``HYPOTHESIS_PROFILE=nightly`` multiplies every test's count by 20;
``BPR_NUMPY_EXAMPLES_SCALE=<factor>`` sets the factor explicitly.
"""

import os

SCALE = float(os.environ.get("BPR_NUMPY_EXAMPLES_SCALE",
                             "20" if os.environ.get("HYPOTHESIS_PROFILE") == "nightly" else "1"))


def examples(n: int) -> int:
    """The number of examples for a test whose CI budget is ``n``."""
    return max(1, int(round(n * SCALE)))
