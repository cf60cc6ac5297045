"""Checks of evaluate's inputs: the train/test matrices, the cut-offs ``k``, and the model or scorer."""

from __future__ import annotations

import numbers
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
import scipy.sparse as sp

from .._validation import check_sparse_structure, is_sparse

#: ``score_block(users) -> (len(users), n_items)`` scores: what ``evaluate`` calls, and what the baselines return.
BlockScorer = Callable[[np.ndarray], np.ndarray]


def _check_matrix(x: Any, name: str) -> sp.csr_array:
    """Return ``x`` as a canonical CSR array (sorted, no duplicates), or raise naming ``name``."""
    if is_sparse(x):
        if x.ndim != 2:
            raise ValueError(f"{name} must be 2-D, got a {x.ndim}-D sparse array")
        if x.dtype.kind not in "biuf":
            raise TypeError(f"{name} must hold real numbers, got dtype {x.dtype}")
        # The index arrays are checked before scipy converts them or the kernel
        # reads them: an out-of-range index would be an out-of-bounds access.
        canonical = check_sparse_structure(x, name)
        try:
            csr = sp.csr_array(x)
        except (ValueError, TypeError, IndexError) as exc:  # a corrupt dia/lil/dok matrix
            raise ValueError(f"{name} could not be converted to CSR: {exc}") from None
        if x.format != "csr":
            canonical = check_sparse_structure(csr, name)
    else:
        if isinstance(x, (str, bytes)) or (not hasattr(x, "__len__") and not hasattr(x, "__array__")):
            raise TypeError(f"{name} must be a 2-D scipy.sparse matrix or array-like, got {type(x).__name__}")
        try:
            arr = np.asarray(x)
        except (ValueError, TypeError) as exc:  # ragged nested lists
            raise TypeError(f"{name} could not be read as an array: {exc}") from None
        if arr.ndim != 2:
            raise ValueError(f"{name} must be 2-D, got an array with {arr.ndim} dimension(s)")
        if arr.dtype.kind not in "biuf":
            raise TypeError(f"{name} must hold real numbers, got dtype {arr.dtype}")
        if arr.dtype == np.float16:  # numeric, but not a dtype scipy.sparse supports
            arr = arr.astype(np.float32)
        csr = sp.csr_array(arr)
        canonical = True
    if csr.data.dtype.kind == "f" and not np.all(np.isfinite(csr.data)):
        raise ValueError(f"{name} contains NaN or infinite values")
    if not canonical:  # computed from the arrays: scipy's cached flag may predate an in-place edit
        # the kernel relies on sorted, duplicate-free rows; copy so the caller's
        # matrix is left as it was
        csr = csr.copy()
        csr.sum_duplicates()
    return csr


def _check_k(k: int | Sequence[int]) -> list[int]:
    ks = [k] if isinstance(k, (numbers.Integral, np.integer)) else k
    if isinstance(ks, (str, bytes)) or not isinstance(ks, Iterable):
        raise TypeError(f"k must be an int or a sequence of ints, got {type(k).__name__}")
    out: list[int] = []
    for kk in ks:
        if isinstance(kk, bool) or not isinstance(kk, (numbers.Integral, np.integer)):
            raise TypeError(f"k must be an int or a sequence of ints, got {kk!r}")
        if not 1 <= int(kk) < 2**63:  # counts of items are int64
            raise ValueError(f"k must be >= 1 and below 2**63, got {kk}")
        if int(kk) not in out:
            out.append(int(kk))
    if not out:
        raise ValueError("k must not be an empty sequence")
    return out


def _as_block_scorer(model: Any) -> tuple[BlockScorer, int | None, int | None]:
    """Turn a factor model or a ``score_block`` callable into ``(scorer, n_users, n_items)``.

    A model with ``user_factors`` and ``item_factors`` (and optionally ``item_biases``, or an
    ``item_bias`` array as older bpr_numpy models and other libraries name it)
    wins over being callable, so an estimator that also defines ``__call__`` is
    scored from its factors. ``n_users``/``n_items`` are None for a callable.
    """
    if hasattr(model, "user_factors") and hasattr(model, "item_factors"):
        uf = model.user_factors
        itf = model.item_factors
        if uf is None or itf is None:
            raise ValueError("model has no factors (is it fitted?)")
        uf = np.asarray(uf)
        itf = np.asarray(itf)
        if uf.ndim != 2 or itf.ndim != 2:
            raise ValueError(f"user_factors and item_factors must be 2-D, got shapes {uf.shape} and {itf.shape}")
        if uf.shape[1] != itf.shape[1]:
            raise ValueError(f"user_factors has {uf.shape[1]} factors but item_factors has {itf.shape[1]}")
        if uf.dtype.kind not in "biuf" or itf.dtype.kind not in "biuf":
            raise TypeError(f"factors must be real numbers, got {uf.dtype} and {itf.dtype}")
        if uf.dtype.kind != "f":
            uf = uf.astype(np.float64)
        if itf.dtype.kind != "f":
            itf = itf.astype(np.float64)
        if not (np.all(np.isfinite(uf)) and np.all(np.isfinite(itf))):
            raise ValueError("model factors contain NaN or infinite values")
        bias_name, bias = "item_biases", getattr(model, "item_biases", None)
        if bias is None and not isinstance(getattr(model, "item_bias", None), (bool, np.bool_)):
            bias_name, bias = "item_bias", getattr(model, "item_bias", None)  # BPR.item_bias is the flag
        if bias is not None:
            bias = np.asarray(bias)
            if bias.shape != (itf.shape[0],):
                raise ValueError(f"{bias_name} has shape {bias.shape} but item_factors has {itf.shape[0]} rows")
            if bias.dtype.kind not in "biuf" or not np.all(np.isfinite(bias)):
                raise ValueError(f"{bias_name} must be finite real numbers")
        itf_t = itf.T  # BLAS takes the transposed view without a copy

        def score_factors(users: np.ndarray) -> np.ndarray:
            block = uf[users] @ itf_t
            if bias is not None:
                block += bias
            return block

        return score_factors, uf.shape[0], itf.shape[0]
    if callable(model):
        return model, None, None
    raise TypeError(
        "model must have user_factors and item_factors attributes or be a callable "
        f"score_block(users) -> (len(users), n_items) array, got {type(model).__name__}"
    )


def _score(scorer: BlockScorer, users: np.ndarray, n_items: int) -> np.ndarray:
    block = scorer(users)
    block = np.asarray(block)
    if block.shape != (len(users), n_items):
        raise ValueError(
            f"the scorer returned shape {block.shape} for {len(users)} users; expected ({len(users)}, {n_items})"
        )
    if block.dtype.kind not in "biuf":
        raise TypeError(f"the scorer returned dtype {block.dtype}; expected real numbers")
    # float32 goes to the kernel as is: it converts each row while copying it, which
    # saves two passes over the block (a cast and a NaN check, 30% of the time at
    # 10k items). Other types become float64, so the kernel compiles at most twice.
    dtype = block.dtype if block.dtype in (np.float32, np.float64) else np.float64
    return np.ascontiguousarray(block, dtype=dtype)
