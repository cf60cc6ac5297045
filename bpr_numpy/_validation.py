"""Checks at the door: turn user input into the well-formed arrays the kernels expect."""

from __future__ import annotations

import numbers

import numpy as np
import scipy.sparse as sp

__all__ = ["as_user_items", "check_index_array"]


def as_user_items(user_items, name: str = "user_items", *, require_positive: bool = True) -> sp.csr_matrix:
    """Validate an interaction matrix and return it as a canonical CSR matrix.

    Parameters
    ----------
    user_items : scipy sparse matrix/array, ndarray or nested list
        Users x items. Stored values > 0 are positives; values <= 0 (and
        explicit zeros) are not. Duplicate entries of a COO input are summed
        first, as scipy does.
    name : str
        Used in error messages.
    require_positive : bool
        Raise when the matrix holds no positive at all.

    Returns
    -------
    scipy.sparse.csr_matrix
        The positives, with sorted unique column indices, int32 indices
        (int64 when the item count needs it) and int64 indptr. Stored values
        are positive but otherwise unspecified: a canonical CSR input whose
        values are all > 0 is shared (read-only, never modified), anything
        else is rebuilt with float32 ones.

    Raises
    ------
    TypeError
        Non-numeric, complex or object data; something that is not a matrix.
    ValueError
        Not 2-D, NaN or infinite values, no positive (``require_positive``).
    """
    if sp.issparse(user_items):
        if user_items.ndim != 2:
            raise ValueError(f"{name} must be 2-D (users x items), got {user_items.ndim}-D")
        matrix = sp.csr_matrix(user_items)  # shares the arrays of a CSR input: never modify it in place
    else:
        if isinstance(user_items, (str, bytes)) or user_items is None:
            raise TypeError(f"{name} must be a sparse matrix or a 2-D array, got {type(user_items).__name__}")
        try:
            dense = np.asarray(user_items)
        except (ValueError, TypeError) as exc:
            raise TypeError(f"{name} could not be read as an array: {exc}") from None
        if dense.ndim != 2:
            raise ValueError(f"{name} must be 2-D (users x items), got an array of shape {dense.shape}")
        matrix = None
    data_dtype = matrix.dtype if matrix is not None else dense.dtype
    if data_dtype == object or not (np.issubdtype(data_dtype, np.number) or data_dtype == np.bool_):
        raise TypeError(f"{name} must hold real numbers, got dtype {data_dtype}")
    if np.issubdtype(data_dtype, np.complexfloating):
        raise TypeError(f"{name} must hold real numbers, got complex dtype {data_dtype}")
    if matrix is None:
        if not np.isfinite(dense).all():
            raise ValueError(f"{name} holds NaN or infinite values")
        matrix = sp.csr_matrix(dense)
    else:
        if not matrix.has_canonical_format:
            matrix = matrix.copy()
            matrix.sum_duplicates()
        if not np.isfinite(matrix.data).all():
            bad = np.flatnonzero(~np.isfinite(matrix.data))[0]
            row = np.searchsorted(matrix.indptr, bad, side="right") - 1
            raise ValueError(
                f"{name} holds NaN or infinite values (first at user {row}, item {matrix.indices[bad]})"
            )
    n_users, n_items = matrix.shape
    if n_users == 0 or n_items == 0:
        raise ValueError(f"{name} has shape {matrix.shape}: it needs at least one user and one item")

    index_dtype = np.int32 if n_items < 2**31 - 1 else np.int64
    keep = matrix.data > 0
    if keep.all() and matrix.has_canonical_format and matrix.indices.dtype == index_dtype:
        # Already canonical: share the caller's indices and (positive) values
        # read-only instead of copying them; at 20M pairs that is 160 MB less.
        out = sp.csr_matrix((matrix.data, matrix.indices, matrix.indptr), shape=(n_users, n_items), copy=False)
        out.has_canonical_format = True
    else:
        indptr = matrix.indptr.astype(np.int64)
        if not keep.all():
            rows = np.repeat(np.arange(n_users), np.diff(indptr))
            indptr[1:] = np.cumsum(np.bincount(rows[keep], minlength=n_users))
        indices = matrix.indices[keep].astype(index_dtype)  # always a copy: sorted below in place
        out = sp.csr_matrix((np.ones(len(indices), dtype=np.float32), indices, indptr), shape=(n_users, n_items))
        out.sort_indices()
    # scipy may downcast index arrays on construction; the kernels take int64 indptr.
    out.indptr = out.indptr.astype(np.int64, copy=False)
    out.indices = out.indices.astype(index_dtype, copy=False)
    if require_positive and out.nnz == 0:
        raise ValueError(f"{name} holds no positive interaction (no stored value > 0)")
    return out


def check_index_array(values, bound: int, name: str) -> np.ndarray:
    """Validate integer indices in ``[0, bound)``; return them as an int64 array.

    Parameters
    ----------
    values : int or array_like of int
    bound : int
        Exclusive upper bound (number of users or items).
    name : str
        Used in error messages ("user", "item").

    Returns
    -------
    numpy.ndarray
        int64, same shape as ``values`` (0-d for a scalar).
    """
    if isinstance(values, numbers.Integral) and not isinstance(values, bool):
        arr = np.asarray(values, dtype=np.int64)
    else:
        arr = np.asarray(values)
        if arr.dtype == np.bool_ or not (np.issubdtype(arr.dtype, np.integer) or arr.size == 0):
            raise TypeError(f"{name} indices must be integers, got dtype {arr.dtype}")
        arr = arr.astype(np.int64, copy=False)
    if arr.size and (arr.min() < 0 or arr.max() >= bound):
        bad = arr[(arr < 0) | (arr >= bound)].flat[0]
        raise ValueError(f"{name} index {bad} is out of range: the model has {bound} {name}s (0..{bound - 1})")
    return arr
