"""Checks at the door: turn user input into the well-formed arrays the kernels expect."""

from __future__ import annotations

import numbers

import numpy as np
import scipy.sparse as sp

__all__ = ["as_user_items", "check_index_array", "check_sparse_structure", "csr_from_arrays"]

#: Index entries checked at a time: the structure checks of a matrix with
#: billions of entries keep their temporaries to a few MiB.
_CHUNK = 1 << 22


def csr_from_arrays(
    data: np.ndarray, indices: np.ndarray, indptr: np.ndarray, shape: tuple[int, int], *, canonical: bool = False
) -> sp.csr_matrix:
    """A CSR matrix holding exactly these arrays (no copy, no change of index dtype).

    scipy's ``csr_matrix((data, indices, indptr))`` picks one index dtype for
    both arrays: above 2**31 entries the int64 indptr would turn the int32
    indices into an int64 copy (twice their memory). Setting the attributes
    keeps int32 indices beside an int64 indptr.
    """
    out = sp.csr_matrix(shape, dtype=data.dtype)
    out.data, out.indices, out.indptr = data, indices, indptr
    if canonical:
        out.has_canonical_format = True
    return out


def _compressed_structure(
    indptr, indices, n_data: int, n_major: int, n_minor: int, name: str, major: str, minor: str
) -> bool:
    """Check a CSR/CSC-like index structure; return whether it is canonical.

    Raises TypeError for non-integer index arrays and ValueError for a
    structure that would make a kernel read out of bounds (wrong indptr
    length, indptr not starting at 0 or decreasing, more entries than stored,
    indices outside ``[0, n_minor)``). Canonical: indices strictly increasing
    within each major slice (sorted, no duplicates). Works in chunks, so it
    never copies the index arrays.
    """
    for label, arr in (("indptr", indptr), ("indices", indices)):
        if not isinstance(arr, np.ndarray) or arr.ndim != 1:
            raise ValueError(f"{name} has a malformed sparse structure: {label} is not a 1-D array")
        if arr.dtype.kind not in "iu":
            raise TypeError(f"{name} has {label} of dtype {arr.dtype}: sparse index arrays must be integers")
    if len(indptr) != n_major + 1:
        raise ValueError(
            f"{name} has a malformed sparse structure: indptr has {len(indptr)} entries "
            f"for {n_major} {major}s (expected {n_major + 1})"
        )
    if indptr[0] != 0:
        raise ValueError(f"{name} has a malformed sparse structure: indptr starts at {indptr[0]}, not 0")
    if n_major and not (indptr[1:] >= indptr[:-1]).all():
        bad = int(np.flatnonzero(indptr[1:] < indptr[:-1])[0])
        raise ValueError(f"{name} has a malformed sparse structure: indptr decreases at {major} {bad}")
    nnz = int(indptr[-1])
    if nnz > len(indices) or nnz > n_data:
        raise ValueError(
            f"{name} has a malformed sparse structure: indptr ends at {nnz} but only "
            f"{min(len(indices), n_data)} entries are stored"
        )
    canonical = True
    for a in range(0, nnz, _CHUNK):
        b = min(nnz, a + _CHUNK)
        block = indices[a:b]
        outside = (block < 0) | (block >= n_minor)
        if outside.any():
            p = a + int(np.flatnonzero(outside)[0])
            where = int(np.searchsorted(indptr, p, side="right")) - 1
            raise ValueError(
                f"{name} has a malformed sparse structure: {minor} index {indices[p]} in {major} "
                f"{where} is outside 0..{n_minor - 1}"
            )
        if canonical:
            nxt = indices[a + 1 : min(nnz, b + 1)]
            # Positions q where indices[q] <= indices[q - 1]: fine only where a new slice starts.
            q = np.flatnonzero(nxt <= block[: len(nxt)]) + (a + 1)
            if len(q):
                r = np.minimum(np.searchsorted(indptr, q, side="left"), n_major)
                canonical = bool((indptr[r] == q).all())
    return canonical


def check_sparse_structure(matrix, name: str) -> bool:
    """Check the index arrays of a scipy sparse matrix before anything reads them.

    scipy checks them when a matrix is built, but not after its arrays are
    modified in place (``X.indices[0] = 10**9``); such a matrix would make
    scipy's converters and the numba kernels read or write out of bounds.

    Returns
    -------
    bool
        For CSR/CSC: whether the matrix is canonical (sorted indices, no
        duplicates), computed from the arrays rather than taken from scipy's
        cached flag. False for the other formats.

    Raises
    ------
    TypeError
        Non-integer index arrays.
    ValueError
        Index arrays that do not describe a matrix of this shape.
    """
    n_rows, n_cols = matrix.shape
    fmt = matrix.format
    if fmt == "csr":
        return _compressed_structure(
            matrix.indptr, matrix.indices, len(matrix.data), n_rows, n_cols, name, "row", "column"
        )
    if fmt == "csc":
        return _compressed_structure(
            matrix.indptr, matrix.indices, len(matrix.data), n_cols, n_rows, name, "column", "row"
        )
    if fmt == "bsr":
        r, c = matrix.blocksize
        if r < 1 or c < 1 or n_rows % r or n_cols % c or matrix.data.ndim != 3 or matrix.data.shape[1:] != (r, c):
            raise ValueError(
                f"{name} has a malformed sparse structure: blocks of {matrix.data.shape[1:]} "
                f"in a {matrix.shape} matrix with blocksize {matrix.blocksize}"
            )
        _compressed_structure(
            matrix.indptr, matrix.indices, len(matrix.data), n_rows // r, n_cols // c, name, "block row", "block column"
        )
        return False
    if fmt == "coo":
        coords = getattr(matrix, "coords", None) or (matrix.row, matrix.col)
        if len(coords) != 2:
            raise ValueError(f"{name} has a malformed sparse structure: {len(coords)} coordinate arrays")
        n = len(matrix.data)
        for label, arr, bound in (("row", coords[0], n_rows), ("column", coords[1], n_cols)):
            if not isinstance(arr, np.ndarray) or arr.ndim != 1 or len(arr) != n:
                raise ValueError(
                    f"{name} has a malformed sparse structure: its {label} indices do not match its {n} stored values"
                )
            if arr.dtype.kind not in "iu":
                raise TypeError(f"{name} has {label} indices of dtype {arr.dtype}: they must be integers")
            for a in range(0, n, _CHUNK):
                block = arr[a : a + _CHUNK]
                outside = (block < 0) | (block >= bound)
                if outside.any():
                    p = a + int(np.flatnonzero(outside)[0])
                    raise ValueError(
                        f"{name} has a malformed sparse structure: {label} index {arr[p]} of "
                        f"entry {p} is outside 0..{bound - 1}"
                    )
        return False
    return False  # dia, lil, dok: their arrays are not reachable without scipy's own checks


def is_sparse(x: object) -> bool:
    """:func:`scipy.sparse.issparse`, typed as a plain ``bool``.

    scipy-stubs narrow ``issparse`` to ``SparseABC``, which declares none of the attributes
    (``ndim``, ``dtype``, ``format``, ``indptr``...) the checks of any scipy sparse format read.
    """
    return sp.issparse(x)


def _check_real_dtype(dtype: np.dtype, name: str) -> None:
    """``TypeError`` unless ``dtype`` holds real numbers (bool, integer or float)."""
    if dtype == np.object_ or not (np.issubdtype(dtype, np.number) or dtype == np.bool_):
        raise TypeError(f"{name} must hold real numbers, got dtype {dtype}")
    if np.issubdtype(dtype, np.complexfloating):
        raise TypeError(f"{name} must hold real numbers, got complex dtype {dtype}")


def dense_matrix(obj, name: str, layout: str) -> np.ndarray:
    """A non-sparse 2-D real input as an array; TypeError/ValueError naming ``name`` otherwise.

    ``layout`` describes the expected axes in the message (``"users x items"``).
    """
    if isinstance(obj, (str, bytes)) or obj is None:
        raise TypeError(f"{name} must be a sparse matrix or a 2-D array, got {type(obj).__name__}")
    try:
        dense = np.asarray(obj)
    except (ValueError, TypeError) as exc:
        raise TypeError(f"{name} could not be read as an array: {exc}") from None
    if dense.ndim != 2:
        raise ValueError(f"{name} must be 2-D ({layout}), got an array of shape {dense.shape}")
    _check_real_dtype(dense.dtype, name)
    return dense


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
        else is rebuilt with float32 ones. The indices of a CSR input are
        never copied to a wider type: int32 indices stay int32 beside an
        int64 indptr (more than 2**31 pairs).

    Raises
    ------
    TypeError
        Non-numeric, complex or object data; something that is not a matrix;
        sparse index arrays that are not integers.
    ValueError
        Not 2-D, NaN or infinite values, no positive (``require_positive``),
        sparse index arrays that do not describe a matrix of its shape.
    """
    canonical = False
    if is_sparse(user_items):
        if user_items.ndim != 2:
            raise ValueError(f"{name} must be 2-D (users x items), got {user_items.ndim}-D")
        _check_real_dtype(user_items.dtype, name)
        # Before any conversion: scipy's converters trust the index arrays.
        canonical = check_sparse_structure(user_items, name)
        if user_items.format == "csr":
            # The caller's arrays, shared (never modified in place).
            nnz = int(user_items.indptr[-1])
            matrix = csr_from_arrays(
                user_items.data[:nnz], user_items.indices[:nnz], user_items.indptr, user_items.shape
            )
        else:
            try:
                # Integers are widened first: scipy sums duplicates in the input dtype (int8 100 + 100 = -56).
                matrix = sp.csr_matrix(user_items.astype(np.float64) if user_items.dtype.kind in "iu" else user_items)
            except (ValueError, TypeError, IndexError) as exc:  # a corrupt dia/lil/dok matrix
                raise ValueError(f"{name} could not be converted to CSR: {exc}") from None
            canonical = check_sparse_structure(matrix, name)
        if not canonical:
            # scipy's copy gives both index arrays one dtype, as sum_duplicates needs; integers are
            # widened so that summed duplicates cannot wrap around.
            matrix = matrix.astype(np.float64) if matrix.dtype.kind in "iu" else matrix.copy()
            matrix.sum_duplicates()
        if not np.isfinite(matrix.data).all():
            bad = np.flatnonzero(~np.isfinite(matrix.data))[0]
            row = np.searchsorted(matrix.indptr, bad, side="right") - 1
            raise ValueError(f"{name} holds NaN or infinite values (first at user {row}, item {matrix.indices[bad]})")
    else:
        dense = dense_matrix(user_items, name, "users x items")
        if not np.isfinite(dense).all():
            raise ValueError(f"{name} holds NaN or infinite values")
        if dense.dtype == np.float16:  # numeric, but not a dtype scipy.sparse supports
            dense = dense.astype(np.float32)
        matrix = sp.csr_matrix(dense)
        canonical = True
    n_users, n_items = matrix.shape
    if n_users == 0 or n_items == 0:
        raise ValueError(f"{name} has shape {matrix.shape}: it needs at least one user and one item")

    index_dtype = np.int32 if n_items < 2**31 - 1 else np.int64
    keep = matrix.data > 0
    if keep.all() and matrix.indices.dtype == index_dtype:
        # Already canonical: share the caller's indices and (positive) values
        # read-only instead of copying them; at 20M pairs that is 160 MB less.
        # The kernels take contiguous index arrays: a strided view is copied, never a contiguous one.
        indptr = np.ascontiguousarray(matrix.indptr, dtype=np.int64)  # n_users + 1 entries at most
        out = csr_from_arrays(
            matrix.data, np.ascontiguousarray(matrix.indices), indptr, (n_users, n_items), canonical=True
        )
    else:
        indptr = matrix.indptr.astype(np.int64)
        if not keep.all():
            rows = np.repeat(np.arange(n_users), np.diff(indptr))
            indptr[1:] = np.cumsum(np.bincount(rows[keep], minlength=n_users))
        indices = matrix.indices[keep].astype(index_dtype)  # sorted and unique: matrix is canonical here
        out = csr_from_arrays(
            np.ones(len(indices), dtype=np.float32), indices, indptr, (n_users, n_items), canonical=True
        )
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

    Raises
    ------
    TypeError
        Not integers (bools, floats, strings, objects).
    ValueError
        An index outside ``[0, bound)``, Python integers beyond int64 included.
    """

    def out_of_range(bad) -> ValueError:
        return ValueError(f"{name} index {bad} is out of range: the model has {bound} {name}s (0..{bound - 1})")

    if isinstance(values, numbers.Integral) and not isinstance(values, (bool, np.bool_)):
        if not 0 <= int(values) < bound:
            raise out_of_range(int(values))
        return np.asarray(int(values), dtype=np.int64)
    try:
        arr = np.asarray(values)
    except (ValueError, TypeError) as exc:  # ragged nested lists
        raise TypeError(f"{name} indices must be an integer or an array of integers ({exc})") from None
    if (
        arr.dtype == object
        and arr.size
        and all(isinstance(v, numbers.Integral) and not isinstance(v, (bool, np.bool_)) for v in arr.flat)
    ):
        for v in arr.flat:  # Python integers too large for int64 make an object array
            if not 0 <= int(v) < bound:
                raise out_of_range(int(v))
        arr = arr.astype(np.int64)
    if arr.dtype == np.bool_ or not (np.issubdtype(arr.dtype, np.integer) or arr.size == 0):
        raise TypeError(f"{name} indices must be integers, got dtype {arr.dtype}")
    if arr.size:
        outside = (arr < 0) | (arr >= bound)  # before the cast: a uint64 above 2**63 is not negative
        if outside.any():
            raise out_of_range(arr[outside].flat[0])
    return arr.astype(np.int64, copy=False)
