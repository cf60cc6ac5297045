"""SplitMix64: the one random-number generator of every numba kernel in bpr_numpy.

A 64-bit state advanced by a Weyl increment and finished by a bijective mix
(Steele, Lea and Flood, "Fast splittable pseudorandom number generators",
OOPSLA 2014). One word of state makes it cheap to give every chunk, user or
stream its own generator derived from a seed, which is how the kernels stay
reproducible whatever the thread count.

All functions compile lazily (on first use) and are inlined into their callers.
"""

from __future__ import annotations

import numpy as np
from numba import njit

GOLDEN = np.uint64(0x9E3779B97F4A7C15)
MIX1 = np.uint64(0xBF58476D1CE4E5B9)
MIX2 = np.uint64(0x94D049BB133111EB)
_S30 = np.uint64(30)
_S27 = np.uint64(27)
_S31 = np.uint64(31)
_S11 = np.uint64(11)
_S12 = np.uint64(12)
TWO_POW_M53 = 1.0 / 9007199254740992.0
TWO_POW_M52 = 1.0 / 4503599627370496.0


@njit(cache=True, nogil=True, inline="always")
def mix64(z):  # pragma: no cover - compiled
    """SplitMix64 finaliser: a bijective 64-bit hash."""
    z = (z ^ (z >> _S30)) * MIX1
    z = (z ^ (z >> _S27)) * MIX2
    return z ^ (z >> _S31)


@njit(cache=True, nogil=True, inline="always")
def next_bits(state):  # pragma: no cover - compiled
    """Advance a state; return ``(new_state, 64 random bits)``."""
    state = state + GOLDEN
    return state, mix64(state)


@njit(cache=True, nogil=True, inline="always")
def below(bits, n):  # pragma: no cover - compiled
    """Map 64 random bits to an integer uniform in ``[0, n)`` (53-bit resolution)."""
    k = np.int64(float(bits >> _S11) * TWO_POW_M53 * n)
    # Rounding can give n itself when (1 - 2^-53) * n rounds up.
    return k if k < n else n - 1


@njit(cache=True, nogil=True, inline="always")
def unit_open(bits):  # pragma: no cover - compiled
    """Map 64 random bits to a float uniform in the open interval (0, 1).

    52 bits plus one half: every value is exact, the largest is 1 - 2^-53
    (with 53 bits, 2^53 - 1/2 would round up to 2^53, i.e. to 1.0).
    """
    return (np.float64(bits >> _S12) + 0.5) * TWO_POW_M52
