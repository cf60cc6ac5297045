"""Hostile inputs: fuzzed interaction matrices and arguments into every public entry point.

Each generated case either works, and then matches a reference (the same call
on a clean canonical CSR, or a brute-force computation from the definitions),
or raises ValueError/TypeError with a message naming the problem. Never a
crash, a hang, another exception type or a silent wrong answer.

Also here: the boundscheck mode (``BPR_NUMPY_BOUNDSCHECK=1``, see
``tests/conftest.py``), degenerate data that could make the sampler loop
(users holding every item, a one-item catalogue), threads, and int64 indptr
with int32 indices (big data) without a copy of the indices.
"""

from __future__ import annotations

import copy
import math
import os
import subprocess
import sys
import textwrap
import threading
import tracemalloc
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
from _budget import examples
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from bpr_numpy import BPR, metrics
from bpr_numpy._validation import as_user_items

REPO = Path(__file__).resolve().parents[1]
BOUNDSCHECK = os.environ.get("BPR_NUMPY_BOUNDSCHECK", "") not in ("", "0")
SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much,
                                                     HealthCheck.data_too_large])
NAMED = (ValueError, TypeError)


def fuzz(n: int):
    """Hypothesis settings for a fuzz test whose CI budget is ``n`` examples."""
    return settings(max_examples=examples(n), **SETTINGS)


# --------------------------------------------------------------------------- interaction matrices

DTYPES = ("float64", "float32", "float16", "int64", "int32", "int8", "uint8", "bool")
SUMMING = ("coo_matrix", "coo_array", "csr_raw", "csc_raw", "csr_from_coo")  # duplicates are added
LAST_WRITE = ("dense", "list", "csr_matrix", "csr_array", "csc_matrix", "csc_array", "bsr", "dia", "lil", "dok")
FINITE = (1.0, 2.0, 0.5, 3.0, 0.0, -1.0, -0.5)
NONFINITE = (math.nan, math.inf, -math.inf)


class Case:
    """A generated input and what it means: ``dense`` holds the value of every cell."""

    def __init__(self, obj, dense, label):
        self.obj, self.dense, self.label = obj, dense, label

    @property
    def positives(self) -> np.ndarray:
        return np.nan_to_num(self.dense.astype(np.float64), nan=0.0) > 0

    def expected_error(self, require_positive: bool = True) -> str | None:
        """The ValueError message pattern as_user_items must raise, or None."""
        if not np.isfinite(self.dense.astype(np.float64)).all():
            return "NaN or infinite"
        if 0 in self.dense.shape:
            return "at least one user and one item|must be 2-D"  # [] is a 1-D empty list
        if require_positive and not self.positives.any():
            return "no positive"
        return None

    def __repr__(self):
        return f"Case({self.label}, dense={self.dense.tolist()!r})"


def _raw_compressed(rows, cols, vals, shape, dtype, fmt, idx_dtype, ptr_dtype, strided, lie):
    """A CSR/CSC built from its arrays: entries in input order within each row (unsorted, duplicates)."""
    major, minor = (rows, cols) if fmt == "csr_raw" else (cols, rows)
    n_major = shape[0] if fmt == "csr_raw" else shape[1]
    order = np.argsort(major, kind="stable")
    indptr = np.zeros(n_major + 1, np.int64)
    np.add.at(indptr, major + 1, 1)
    indptr = np.cumsum(indptr)
    indices = minor[order]
    cls = sp.csr_matrix if fmt == "csr_raw" else sp.csc_matrix
    m = cls((vals[order].astype(dtype), indices.astype(np.int64), indptr), shape=shape)
    indices = indices.astype(idx_dtype)
    if strided:  # index arrays that are views with a stride
        wide = np.zeros(2 * len(indices), idx_dtype)
        wide[::2] = indices
        indices = wide[::2]
    m.indices = indices
    m.indptr = indptr.astype(ptr_dtype)  # may differ from the indices' dtype
    if lie:
        m.has_canonical_format = True  # a flag that may be false: it must not be trusted
    return m


@st.composite
def interaction_cases(draw, shape=None, nonfinite=True, formats=SUMMING + LAST_WRITE):
    if shape is None:
        n_users = draw(st.sampled_from((1, 2, 3, 4, 5, 1, 2, 3, 0)))
        n_items = draw(st.sampled_from((1, 2, 3, 4, 5, 1, 2, 3, 0)))
    else:
        n_users, n_items = shape
    fmt = draw(st.sampled_from(formats))
    hostile = nonfinite and draw(st.integers(0, 9)) == 0
    dtype = np.dtype(draw(st.sampled_from(DTYPES)))
    pool = FINITE + (NONFINITE if hostile else ())
    if hostile:
        dtype = np.dtype(draw(st.sampled_from(("float64", "float32", "float16"))))
    if dtype == np.float16 and fmt not in ("dense", "list"):
        dtype = np.dtype(np.float32)  # scipy.sparse has no float16
    entries = []
    if n_users and n_items:
        full_rows = draw(st.lists(st.integers(0, n_users - 1), max_size=2))  # users holding every item
        entries = [(u, i, 1.0) for u in full_rows for i in range(n_items)]
        entries += draw(st.lists(st.tuples(st.integers(0, n_users - 1), st.integers(0, n_items - 1),
                                           st.sampled_from(pool)), max_size=12))
        entries = draw(st.permutations(entries)) if len(entries) < 12 else entries
    if dtype.kind == "u":
        entries = [(u, i, max(v, 0.0)) for u, i, v in entries]
    rows = np.array([e[0] for e in entries], np.int64)
    cols = np.array([e[1] for e in entries], np.int64)
    vals = np.array([e[2] for e in entries], np.float64).astype(dtype)
    shape = (n_users, n_items)
    dense = np.zeros(shape, dtype)
    if fmt in SUMMING:
        with np.errstate(invalid="ignore", over="ignore"):  # inf + -inf is NaN, as scipy makes it
            np.add.at(dense, (rows, cols), vals)
    else:
        dense[rows, cols] = vals  # the last write wins
    if fmt in ("csr_raw", "csc_raw"):
        obj = _raw_compressed(rows, cols, vals, shape, dtype, fmt,
                              draw(st.sampled_from((np.int32, np.int64))), draw(st.sampled_from((np.int32, np.int64))),
                              draw(st.integers(0, 7)) == 0, draw(st.integers(0, 7)) == 0)
    elif fmt == "csr_from_coo":
        obj = sp.csr_matrix((vals, (rows, cols)), shape=shape)
    elif fmt in ("coo_matrix", "coo_array"):
        obj = getattr(sp, fmt)((vals, (rows, cols)), shape=shape)
        idx = draw(st.sampled_from((np.int32, np.int64)))
        obj.row, obj.col = obj.row.astype(idx), obj.col.astype(idx)
    elif fmt == "dense":
        obj = dense.copy() if draw(st.booleans()) else np.asfortranarray(dense)
    elif fmt == "list":
        obj = dense.tolist()
    elif fmt == "bsr":
        r = draw(st.sampled_from([d for d in range(1, n_users + 1) if n_users % d == 0] or [1]))
        c = draw(st.sampled_from([d for d in range(1, n_items + 1) if n_items % d == 0] or [1]))
        obj = sp.bsr_matrix(dense, blocksize=(r, c)) if n_users and n_items else sp.bsr_matrix(shape, dtype=dtype)
    else:
        obj = getattr(sp, {"dia": "dia_matrix", "lil": "lil_matrix", "dok": "dok_matrix"}.get(fmt, fmt))(dense)
        if fmt in ("csr_matrix", "csr_array", "csc_matrix", "csc_array") and len(entries) and draw(st.booleans()):
            # explicit zeros: store a 0 in every cell of the first row
            m = sp.coo_matrix(obj)
            extra = [(rows[0], j) for j in range(n_items) if dense[rows[0], j] == 0]
            if extra:
                er, ec = np.array(extra).T
                obj = type(obj)(sp.coo_matrix((np.concatenate([m.data, np.zeros(len(extra), dtype)]),
                                               (np.concatenate([m.row, er]), np.concatenate([m.col, ec]))),
                                              shape=shape))
    return Case(obj, dense, fmt)


def snapshot(obj):
    """Everything a call must leave unchanged in its input."""
    if sp.issparse(obj):
        if obj.format in ("csr", "csc", "bsr"):
            return (obj.data.copy(), obj.indices.copy(), obj.indptr.copy())
        if obj.format == "coo":
            return (obj.data.copy(), obj.row.copy(), obj.col.copy())
        return obj.toarray()
    return copy.deepcopy(obj)


def same(a, b) -> bool:
    if isinstance(a, tuple):
        return all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, np.ndarray):
        return a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b, equal_nan=a.dtype.kind == "f")
    return repr(a) == repr(b)  # lists, with NaN


def assert_canonical(m: sp.csr_matrix, positives: np.ndarray):
    assert m.indptr.dtype == np.int64 and m.indices.dtype == np.int32
    assert m.indices.flags.c_contiguous and m.indptr.flags.c_contiguous
    assert (m.data > 0).all()
    for u in range(m.shape[0]):
        row = m.indices[m.indptr[u]:m.indptr[u + 1]]
        assert (np.diff(row) > 0).all()
    np.testing.assert_array_equal(m.toarray() > 0, positives)


def clean(positives: np.ndarray) -> sp.csr_matrix:
    return sp.csr_matrix(positives.astype(np.float32))


@fuzz(1500)
@given(interaction_cases(), st.sampled_from(["fit", "partial_fit"]))
def test_fit_on_fuzzed_matrices_matches_the_clean_input(case, method):
    before = snapshot(case.obj)
    model = BPR(factors=2, epochs=1, threads=1, random_state=3)
    error = case.expected_error()
    if error:
        with pytest.raises(ValueError, match=error):
            getattr(model, method)(case.obj)
        assert not model.is_fitted
        return
    getattr(model, method)(case.obj)
    assert same(before, snapshot(case.obj)), "the caller's matrix was modified"
    pos = case.positives
    assert_canonical(model.user_items, pos)
    # The reference: the same model trained on a clean canonical CSR of the positives.
    ref = getattr(BPR(factors=2, epochs=1, threads=1, random_state=3), method)(clean(pos))
    np.testing.assert_array_equal(model.user_factors, ref.user_factors)
    np.testing.assert_array_equal(model.item_factors, ref.item_factors)
    np.testing.assert_array_equal(model.item_biases, ref.item_biases)
    (report,) = model.history_
    assert report.samples == pos.sum() and 0 <= report.skipped <= report.samples
    holders = pos.any(axis=1)
    if pos[holders].all():  # every user with a positive holds every item: nothing to learn from
        assert report.skipped == report.samples
    assert np.isfinite(model.user_factors).all() and np.isfinite(model.item_factors).all()


@fuzz(300)
@given(interaction_cases(nonfinite=False), st.data())
def test_partial_fit_with_another_matrix_of_the_same_shape(case, data):
    assume(case.expected_error() is None)
    model = BPR(factors=2, epochs=1, threads=1, random_state=1).fit(case.obj)
    other = data.draw(interaction_cases(shape=case.dense.shape))
    error = other.expected_error()
    if error:
        with pytest.raises(ValueError, match=error):
            model.partial_fit(other.obj)
        return
    model.partial_fit(other.obj)
    assert_canonical(model.user_items, other.positives)
    assert [r.epoch for r in model.history_] == [1, 2]
    wrong = np.ones((case.dense.shape[0] + 1, case.dense.shape[1]))
    with pytest.raises(ValueError, match="fitted on"):
        model.partial_fit(wrong)


# --------------------------------------------------------------------------- corrupt sparse structures

@st.composite
def corrupt_matrices(draw):
    """A sparse matrix whose index arrays were edited in place into something impossible."""
    n_users, n_items = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    dense = np.zeros((n_users, n_items), np.float32)
    dense[draw(st.integers(0, n_users - 1)), draw(st.integers(0, n_items - 1))] = 1.0
    dense[draw(st.integers(0, n_users - 1)), draw(st.integers(0, n_items - 1))] = 2.0
    fmt = draw(st.sampled_from(("csr_matrix", "csr_array", "csc_matrix", "csc_array", "coo_matrix", "bsr_matrix")))
    m = getattr(sp, fmt)(dense)
    idx_dtype = draw(st.sampled_from((np.int32, np.int64)))
    if fmt.startswith("coo"):
        m.row, m.col = m.row.astype(idx_dtype), m.col.astype(idx_dtype)
        which = draw(st.sampled_from(("row", "col")))
        arr = getattr(m, which)
        bound = n_users if which == "row" else n_items
        kind = draw(st.sampled_from(("high", "negative", "float", "short")))
        k = draw(st.integers(0, len(arr) - 1))
        if kind == "high":
            arr[k] = bound + draw(st.integers(0, 2**31 - 1 - bound))
        elif kind == "negative":
            arr[k] = -draw(st.integers(1, 2**31))
        else:  # scipy's row/col setters cast and check, the coords tuple is taken as is
            new = arr.astype(np.float64) if kind == "float" else arr[:-1]
            m.coords = (new, m.col) if which == "row" else (m.row, new)
        return m, kind
    m.indices = m.indices.astype(idx_dtype)
    m.indptr = m.indptr.astype(draw(st.sampled_from((np.int32, np.int64))))
    n_minor = n_items if m.format == "csr" else n_users if m.format == "csc" else n_items // m.blocksize[1]
    kind = draw(st.sampled_from(("high", "negative", "indptr_start", "indptr_decreasing", "indptr_end",
                                 "indptr_length", "float_indices")))
    if kind == "indptr_decreasing":
        assume(len(m.indptr) >= 3 and m.indptr[-1] >= 1)
    if kind == "high":
        m.indices[draw(st.integers(0, m.nnz - 1 if m.format != "bsr" else len(m.indices) - 1))] = \
            n_minor + draw(st.integers(0, 2**31 - 1 - n_minor))
    elif kind == "negative":
        m.indices[draw(st.integers(0, len(m.indices) - 1))] = -draw(st.integers(1, 2**31))
    elif kind == "indptr_start":
        m.indptr[0] = draw(st.integers(1, 5))
    elif kind == "indptr_decreasing":
        r = draw(st.integers(1, len(m.indptr) - 2))
        m.indptr[r] = m.indptr[r + 1] + 1
    elif kind == "indptr_end":
        m.indptr[-1] = len(m.indices) + draw(st.integers(1, 2**20))
    elif kind == "indptr_length":
        m.indptr = np.concatenate([m.indptr, m.indptr[-1:]]) if draw(st.booleans()) else m.indptr[:-1]
    else:
        m.indices = m.indices.astype(np.float64)
    return m, kind


@fuzz(600)
@given(corrupt_matrices(), st.sampled_from(["fit", "recommend", "evaluate", "popularity"]))
def test_corrupt_sparse_structures_are_rejected_before_any_kernel_reads_them(corrupt, entry):
    m, kind = corrupt
    model = BPR(factors=2, epochs=1, threads=1, random_state=0)
    with pytest.raises(NAMED) as info:
        if entry == "fit":
            model.fit(m)
        elif entry == "recommend":
            model.fit(np.ones(m.shape)).recommend(0, user_items=m)
        elif entry == "evaluate":
            metrics.evaluate(model.fit(np.ones(m.shape)), np.zeros(m.shape), m)
        else:
            metrics.popularity_scorer(m)
    message = str(info.value)
    assert any(word in message for word in ("malformed sparse structure", "must be integers",
                                            "index pointer", "indices", "indptr")), message


@pytest.mark.parametrize("bad, error, match", [
    (b"bytes", TypeError, "sparse matrix or a 2-D array"),
    (3.0, ValueError, "2-D"),
    ([[1, 2], [3]], (TypeError, ValueError), "could not be read|inhomogeneous|2-D"),
    (np.array([[object()]], dtype=object), TypeError, "real numbers"),
    (np.array([[np.datetime64("2020-01-01")]]), TypeError, "real numbers"),
    (np.array([["1", "2"]]), TypeError, "real numbers"),
    (sp.csr_matrix(np.array([[1 + 2j]])), TypeError, "complex"),
    (np.zeros((2, 0)), ValueError, "at least one user"),
    (sp.csr_matrix((3, 0)), ValueError, "at least one user"),
    ({"user": [0], "item": [1]}, ValueError, "2-D"),
    (np.ones((1, 1, 1)), ValueError, "2-D"),
])
@pytest.mark.parametrize("entry", ["fit", "partial_fit", "recommend", "evaluate"])
def test_wrong_kinds_of_input_name_the_problem(bad, error, match, entry):
    model = BPR(factors=2, epochs=1, threads=1, random_state=0)
    if entry == "evaluate":  # the metrics word it their own way, and name the argument
        with pytest.raises(NAMED, match="^train "):
            metrics.evaluate(model.fit(np.ones((2, 2))), bad, np.ones((2, 2)))
        return
    with pytest.raises(error, match=match):
        if entry in ("fit", "partial_fit"):
            getattr(model, entry)(bad)
        else:
            model.fit(np.ones((2, 2))).recommend(0, user_items=bad)


# --------------------------------------------------------------------------- score, recommend, similar_items

N_USERS, N_ITEMS, FACTORS = 5, 4, 3


@pytest.fixture(scope="module")
def trained():
    dense = np.array([[1, 0, 0, 1], [0, 1, 0, 0], [1, 1, 1, 1], [0, 0, 0, 1], [0, 0, 1, 0]], np.float32)
    model = BPR(factors=FACTORS, epochs=3, threads=1, random_state=0).fit(dense)
    model.item_biases[:] = np.array([0.1, -0.2, 0.0, 0.3], np.float32)
    return model


LAYOUTS = ("C", "F", "strided", "float64", "readonly")


def with_layout(model: BPR, layout: str) -> BPR:
    """The same model whose factor arrays are laid out (or typed) differently, with the same values."""
    m = copy.copy(model)
    m._item_norms = None
    m.history_ = list(model.history_)
    for name in ("user_factors", "item_factors", "item_biases"):
        a = getattr(model, name)
        if layout == "F":
            a = np.asfortranarray(a)
        elif layout == "strided":
            wide = np.zeros((a.shape[0], 2 * a.shape[1]) if a.ndim == 2 else (2 * a.shape[0],), a.dtype)
            if a.ndim == 2:
                wide[:, ::2] = a
                a = wide[:, ::2]
            else:
                wide[::2] = a
                a = wide[::2]
        elif layout == "float64":
            a = a.astype(np.float64)
        elif layout == "readonly":
            a = a.copy()
            a.flags.writeable = False
        setattr(m, name, a)
    return m


def index_arguments(bound: int):
    ints = st.integers(-2, bound + 1)
    arrays = st.tuples(st.lists(ints, max_size=5), st.sampled_from(("int8", "int16", "int32", "int64", "uint16")))
    return st.one_of(
        ints,
        ints.map(np.int64),
        st.integers(0, bound + 1).map(np.uint64),
        st.integers(2**63, 2**80) | st.integers(-(2**80), -(2**63) - 1),  # beyond int64
        st.lists(ints, max_size=4),
        st.lists(st.lists(ints, min_size=2, max_size=2), min_size=1, max_size=2),  # 2-D
        arrays.map(lambda t: np.array([v % 2**16 if t[1] == "uint16" else v for v in t[0]], dtype=t[1])),
        st.lists(st.integers(0, bound - 1), min_size=1, max_size=3).map(lambda v: np.array(v, np.int64)[::-1]),
        st.just(np.array([2**64 - 1], np.uint64)),
        st.booleans(), st.floats(allow_nan=True), st.none(), st.text(max_size=2),
        st.lists(st.floats(0, 3), min_size=1, max_size=2), st.just(np.array([True, False])),
        st.just([1, None]), st.just([[0], [1, 2]]), st.just(np.arange(2).reshape(2, 1).astype(np.float32)),
    )


def reference_indices(value, bound: int):
    """The int64 array a valid index argument stands for, or None when it must be refused."""
    if isinstance(value, (bool, np.bool_, float, str)) or value is None:
        return None
    if isinstance(value, (int, np.integer)):
        return np.array(int(value)) if 0 <= int(value) < bound else None
    try:
        arr = np.asarray(value)
    except ValueError:
        return None
    if arr.size == 0:
        return arr.astype(np.int64)
    if arr.dtype == object:
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in arr.flat):
            return None
    elif arr.dtype.kind not in "iu":
        return None
    if all(0 <= int(v) < bound for v in arr.flat):
        return arr.astype(np.int64)
    return None


@fuzz(1500)
@given(index_arguments(N_USERS), index_arguments(N_ITEMS), st.sampled_from(LAYOUTS))
def test_score_on_fuzzed_indices(trained, users, items, layout):
    model = with_layout(trained, layout)
    u, i = reference_indices(users, N_USERS), reference_indices(items, N_ITEMS)
    try:
        ub, ib = np.broadcast_arrays(u, i) if u is not None and i is not None else (None, None)
    except ValueError:
        ub = None
    if ub is None:
        with pytest.raises(NAMED):
            model.score(users, items)
        return
    got = model.score(users, items)
    U, V, b = (trained.user_factors.astype(np.float64), trained.item_factors.astype(np.float64),
               trained.item_biases.astype(np.float64))
    want = (U[ub] * V[ib]).sum(axis=-1) + b[ib]
    assert got.shape == ub.shape
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def check_top(items, scores, full, candidates, n):
    """``items``/``scores`` (one row) are a correct top-``n`` of ``full`` over ``candidates``."""
    k = min(n, int(candidates.sum()))
    valid = items >= 0
    assert valid.sum() == k and valid[:k].all()
    top = items[:k]
    assert len(set(top.tolist())) == k and candidates[top].all()
    np.testing.assert_allclose(scores[:k], full[top], rtol=1e-5, atol=1e-6)
    assert (np.diff(scores[:k]) <= 1e-6).all()  # best first
    rest = candidates.copy()
    rest[top] = False
    if k and rest.any():
        assert scores[k - 1] >= full[rest].max() - 1e-5
    assert (scores[k:] == -np.inf).all()


@fuzz(1000)
@given(index_arguments(N_USERS), st.sampled_from([1, 2, 3, 4, 5, 10, 0, -1, True, 2.5, "3", None, np.int64(2)]),
       st.booleans(), st.sampled_from(LAYOUTS), st.data())
def test_recommend_on_fuzzed_arguments(trained, users, n, filter_liked, layout, data):
    model = with_layout(trained, layout)
    given_items = data.draw(st.none() | interaction_cases(shape=(N_USERS, N_ITEMS)) |
                            interaction_cases(shape=(N_USERS + 1, N_ITEMS), formats=("dense",)))
    u = reference_indices(users, N_USERS)
    n_ok = isinstance(n, (int, np.integer)) and not isinstance(n, bool) and n >= 1
    liked = trained.user_items.toarray() > 0
    matrix_error = None
    if given_items is not None:
        matrix_error = given_items.expected_error(require_positive=False)
        if given_items.dense.shape != (N_USERS, N_ITEMS) and matrix_error is None:
            matrix_error = "shape"
        liked = given_items.positives if matrix_error is None else liked
    arg = None if given_items is None else given_items.obj
    if u is None or not n_ok or (filter_liked and matrix_error):
        with pytest.raises(NAMED):
            model.recommend(users, n=n, filter_liked=filter_liked, user_items=arg)
        return
    if u.ndim > 1:  # a 2-D batch: refused, or served as the flattened batch
        try:
            items, scores = model.recommend(users, n=n, filter_liked=filter_liked, user_items=arg)
        except NAMED:
            return
        u = u.reshape(-1)
        items, scores = items.reshape(len(u), -1), scores.reshape(len(u), -1)
    else:
        items, scores = model.recommend(users, n=n, filter_liked=filter_liked, user_items=arg)
    full = (trained.user_factors.astype(np.float64) @ trained.item_factors.T.astype(np.float64)
            + trained.item_biases)
    if u.ndim == 0:
        assert items.ndim == 1 and len(items) <= n
        rows, items, scores = [int(u)], items[None, :], scores[None, :]
        pad = np.full((1, min(n, N_ITEMS) - items.shape[1]), -1)
        items = np.concatenate([items, pad], axis=1)
        scores = np.concatenate([scores, np.full(pad.shape, -np.inf, scores.dtype)], axis=1)
    else:
        rows = u.reshape(-1)
        assert items.shape == (len(rows), min(n, N_ITEMS)) == scores.shape
    for r, user in enumerate(rows):
        candidates = ~liked[user] if filter_liked else np.ones(N_ITEMS, bool)
        check_top(items[r], scores[r], full[user], candidates, n)


@fuzz(600)
@given(index_arguments(N_ITEMS), st.sampled_from([1, 2, 3, 4, 10, 0, -2, False, 1.0, "2"]), st.sampled_from(LAYOUTS))
def test_similar_items_on_fuzzed_arguments(trained, items, n, layout):
    model = with_layout(trained, layout)
    q = reference_indices(items, N_ITEMS)
    n_ok = isinstance(n, (int, np.integer)) and not isinstance(n, bool) and n >= 1
    if q is None or not n_ok:
        with pytest.raises(NAMED):
            model.similar_items(items, n=n)
        return
    if q.ndim > 1:  # a 2-D batch: refused, or served as the flattened batch
        try:
            neighbours, sims = model.similar_items(items, n=n)
        except NAMED:
            return
        neighbours, sims = neighbours.reshape(q.size, -1), sims.reshape(q.size, -1)
    else:
        neighbours, sims = model.similar_items(items, n=n)
    V = trained.item_factors.astype(np.float64)
    norms = np.linalg.norm(V, axis=1)
    unit = V / np.where(norms > 0, norms, 1.0)[:, None]
    rows = np.atleast_1d(q).reshape(-1)
    neighbours, sims = np.atleast_2d(neighbours), np.atleast_2d(sims)
    k = min(n, N_ITEMS - 1)
    assert neighbours.shape == (len(rows), k) == sims.shape
    for r, item in enumerate(rows):
        candidates = np.ones(N_ITEMS, bool)
        candidates[item] = False
        check_top(neighbours[r], sims[r], unit @ unit[item], candidates, k)


def test_recommend_with_a_huge_n_does_not_allocate_it(trained):
    # Found by this suite: padding to n allocated a (len(users), n) array (MemoryError).
    items, scores = trained.recommend([0, 1], n=10**12)
    assert items.shape == scores.shape == (2, N_ITEMS)
    items, scores = trained.recommend(0, n=10**12)
    assert len(items) <= N_ITEMS


def test_partial_fit_with_read_only_factors(trained):
    # Replaced factor arrays (read-only here) are copied into writable C arrays of the model's dtype.
    model = with_layout(trained, "readonly")
    model.partial_fit(np.ones((N_USERS, N_ITEMS)))
    assert np.isfinite(model.user_factors).all() and model.user_factors.flags.writeable


# --------------------------------------------------------------------------- metrics

METRIC_CALLS = ("evaluate", "full_auc", "auc", "precision_at_k", "recall_at_k", "ndcg_at_k", "map_at_k",
                "hit_rate_at_k", "coverage_at_k", "mrr")


def call_metric(name, model, train, test, k=3, exclude_train=True):
    f = getattr(metrics, name)
    if name == "evaluate":
        return f(model, train, test, k=k, exclude_train=exclude_train)
    if name in ("full_auc", "auc"):
        return f(model, train, test)
    if name == "mrr":
        return f(model, train, test, exclude_train=exclude_train)
    return f(model, train, test, k=k, exclude_train=exclude_train)


def same_result(a, b):
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        for key in a:
            same_result(a[key], b[key])
    elif isinstance(a, float) and math.isnan(a):
        assert isinstance(b, float) and math.isnan(b)
    else:
        assert a == b


@fuzz(1200)
@given(st.sampled_from(METRIC_CALLS), st.booleans(), st.sampled_from(LAYOUTS), st.data())
def test_metrics_on_fuzzed_matrices_match_the_clean_input(trained, name, exclude_train, layout, data):
    model = with_layout(trained, layout)
    shape = data.draw(st.sampled_from([(N_USERS, N_ITEMS)] * 5 + [(N_USERS, N_ITEMS + 1), (1, N_ITEMS)]))
    train = data.draw(interaction_cases(shape=shape))
    test = data.draw(interaction_cases(shape=(N_USERS, N_ITEMS)))
    before = snapshot(train.obj), snapshot(test.obj)
    errors = [c.expected_error(require_positive=False) for c in (train, test)]
    if any(errors) or shape != (N_USERS, N_ITEMS):
        with pytest.raises(ValueError, match="NaN or infinite|shape|has \\d+ users"):
            call_metric(name, model, train.obj, test.obj, exclude_train=exclude_train)
        return
    got = call_metric(name, model, train.obj, test.obj, exclude_train=exclude_train)
    want = call_metric(name, with_layout(trained, layout), clean(train.positives), clean(test.positives),
                       exclude_train=exclude_train)
    same_result(got, want)
    assert same(before, (snapshot(train.obj), snapshot(test.obj)))


@fuzz(300)
@given(st.sampled_from(LAYOUTS), st.data())
def test_fold_in_on_fuzzed_matrices_matches_the_clean_input(trained, layout, data):
    model = with_layout(trained, layout)
    n_rows = data.draw(st.integers(1, 4))
    shape = data.draw(st.sampled_from([(n_rows, N_ITEMS)] * 5 + [(n_rows, N_ITEMS + 1), (n_rows, 0)]))
    case = data.draw(interaction_cases(shape=shape))
    before = snapshot(case.obj)
    error = case.expected_error(require_positive=False)
    if error or shape[1] != N_ITEMS:
        with pytest.raises(ValueError, match=error or "item columns|at least one"):
            model.fold_in(case.obj)
        return
    got = model.fold_in(case.obj)
    assert same(before, snapshot(case.obj)), "the caller's matrix was modified"
    want = with_layout(trained, layout).fold_in(clean(case.positives))
    np.testing.assert_array_equal(got, want)
    assert got.shape == (n_rows, FACTORS) and np.isfinite(got).all()
    # Vectors from a fuzzed batch recommend like any other: against the brute force of their scores.
    items, scores = model.recommend(user_factors=got, user_items=case.obj, n=N_ITEMS)
    full = got.astype(np.float64) @ np.asarray(trained.item_factors, np.float64).T + trained.item_biases
    for r in range(n_rows):
        check_top(items[r], scores[r], full[r], ~case.positives[r], N_ITEMS)


@fuzz(200)
@given(st.data())
def test_fuzzed_feature_matrices_train_like_their_clean_values(data):
    # Side features through every input format: a working call trains exactly as the dense values do.
    interactions = np.array([[1, 0, 0, 1], [0, 1, 0, 0], [1, 1, 1, 0], [0, 0, 0, 1], [0, 0, 1, 0]], np.float32)
    side = data.draw(st.sampled_from(["user_features", "item_features"]))
    rows = interactions.shape[0 if side == "user_features" else 1]
    shape = data.draw(st.sampled_from([(rows, 2)] * 4 + [(rows, 1), (rows + 1, 2), (rows, 0)]))
    case = data.draw(interaction_cases(shape=shape))
    before = snapshot(case.obj)
    kw = dict(factors=2, epochs=2, threads=1, random_state=1)
    # Unlike interactions, a matrix with no feature column is fine (identities only).
    error = None if np.isfinite(case.dense.astype(np.float64)).all() else "NaN or infinite"
    if error or shape[0] != rows:
        with pytest.raises(ValueError, match=error or "rows; expected"):
            BPR(**kw).fit(interactions, **{side: case.obj})
        return
    model = BPR(**kw).fit(interactions, **{side: case.obj})
    assert same(before, snapshot(case.obj)), "the caller's features were modified"
    ref = BPR(**kw).fit(interactions, **{side: case.dense.astype(np.float64)})
    np.testing.assert_array_equal(model.user_embeddings, ref.user_embeddings)
    np.testing.assert_array_equal(model.item_embeddings, ref.item_embeddings)
    assert np.isfinite(model.user_factors).all() and np.isfinite(model.item_factors).all()


def ref_full_auc(S, train, test):
    """P1 from its definition, one user at a time."""
    values = []
    for u in range(S.shape[0]):
        pos, neg = test[u], ~test[u]
        if pos.any() and neg.any():
            p, q = S[u][pos][:, None], S[u][neg][None, :]
            values.append(((p > q).sum() + 0.5 * (p == q).sum()) / (pos.sum() * neg.sum()))
    return float(np.mean(values)) if values else math.nan


@fuzz(300)
@given(interaction_cases(shape=(N_USERS, N_ITEMS), nonfinite=False),
       interaction_cases(shape=(N_USERS, N_ITEMS), nonfinite=False))
def test_full_auc_on_fuzzed_matrices_matches_its_definition(trained, train, test):
    S = trained.user_factors @ trained.item_factors.T + trained.item_biases
    got = metrics.full_auc(trained, train.obj, test.obj)
    want = ref_full_auc(S.astype(np.float64), train.positives, test.positives)
    if math.isnan(want):
        assert math.isnan(got)
    else:
        assert got == pytest.approx(want, abs=1e-12)


@fuzz(600)
@given(st.one_of(st.integers(1, 6), st.lists(st.integers(1, 6), min_size=1, max_size=3),
                 st.sampled_from([0, -1, True, 2.5, "3", [], None, [2, 0], (1, 2), np.int32(2), 10**6, 2**40])),
       st.one_of(st.none(), st.integers(-1, 7), st.sampled_from([True, 2.0, "2", 10**9])),
       st.one_of(st.none(), st.sampled_from([["auc"], ["precision", "mrr"], "ndcg", [], ["precision@10"], ["bogus"],
                                              [3], ("coverage", "map")])),
       st.sampled_from([True, False, 1, None]))
def test_metric_arguments_are_checked(trained, k, block_size, wanted, exclude_train):
    train = trained.user_items
    test = sp.csr_matrix(np.array([[0, 1, 1, 0], [1, 0, 0, 0], [0, 0, 0, 0], [1, 0, 1, 0], [0, 1, 0, 0]]))
    try:
        got = metrics.evaluate(trained, train, test, k=k, metrics=wanted, block_size=block_size,
                               exclude_train=exclude_train)
    except NAMED as exc:
        assert str(exc)
        return
    ks = [k] if isinstance(k, (int, np.integer)) else list(k)
    assert all(isinstance(x, (int, np.integer)) and not isinstance(x, bool) and x >= 1 for x in ks)
    assert got["n_users"] == 4
    for key, value in got.items():
        if key != "n_users":
            assert math.isnan(value) or 0.0 <= value <= 1.0, (key, value)
    # A k beyond the catalogue ranks every candidate: the same hits as k = n_items.
    for kk in ks:
        if f"recall@{kk}" in got and kk >= N_ITEMS:
            ref = metrics.evaluate(trained, train, test, k=N_ITEMS, metrics=["recall"], exclude_train=exclude_train)
            assert got[f"recall@{kk}"] == ref[f"recall@{N_ITEMS}"]


# --------------------------------------------------------------------------- degenerate data must terminate

HANG_SCRIPT = textwrap.dedent("""
    import numpy as np, scipy.sparse as sp
    from bpr_numpy import BPR, metrics
    full = np.zeros((4, 6)); full[0] = 1; full[1] = 1; full[2, 3] = 1   # users 0 and 1 hold every item
    one = np.ones((5, 1))                                                  # a one-item catalogue
    for X, name in ((full, "full"), (one, "one"), (np.ones((1, 1)), "single")):
        for threads in (1, 2):
            m = BPR(factors=2, epochs=3, threads=threads, random_state=0).fit(X)
            m.partial_fit(X, epochs=2)
            skipped = [r.skipped for r in m.history_]
            samples = [r.samples for r in m.history_]
            print(name, threads, samples, skipped)
            assert samples == [int((X > 0).sum())] * 5
            if name != "full":
                assert skipped == samples          # every sample skipped, and counted
            else:
                assert 0 < sum(skipped) < sum(samples)
            assert m.recommend(0, n=3)[0].size == (0 if name != "full" else 0)
            metrics.evaluate(m, X, X)
            m.similar_items(0)
    print("done")
""")


def run_python(code: str, env_extra: dict | None = None, timeout: float = 600.0) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env.update(env_extra or {})
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout, env=env,
                          cwd=str(REPO))


@pytest.mark.skipif(BOUNDSCHECK, reason="runs in the default mode only")
def test_users_holding_every_item_and_a_one_item_catalogue_terminate_with_skips_reported():
    # In a subprocess, so that a hang fails this test (timeout) instead of stalling the suite.
    result = run_python(HANG_SCRIPT, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip().endswith("done")


# --------------------------------------------------------------------------- threads

def _data(seed=0, n_users=60, n_items=40):
    rng = np.random.default_rng(seed)
    return sp.csr_matrix((rng.random((n_users, n_items)) < 0.2).astype(np.float32))


def test_more_threads_than_cores():
    X = _data()
    model = BPR(factors=4, epochs=2, threads=64, random_state=0).fit(X)
    assert len(model.history_) == 2 and np.isfinite(model.user_factors).all()


def test_single_threaded_fits_inside_a_threaded_program_are_reproducible():
    X = _data()
    expected = BPR(factors=4, epochs=3, threads=1, random_state=7).fit(X).user_factors
    stop = threading.Event()

    def busy():  # another thread of the program keeps working meanwhile
        while not stop.is_set():
            np.linalg.svd(np.ones((60, 60)))

    worker = threading.Thread(target=busy)
    worker.start()
    try:
        with ThreadPoolExecutor(max_workers=4) as pool:
            results = list(pool.map(lambda seed: BPR(factors=4, epochs=3, threads=1, random_state=seed).fit(X),
                                    [7] * 6))
    finally:
        stop.set()
        worker.join()
    for m in results:  # concurrent single-threaded fits do not disturb each other
        np.testing.assert_array_equal(m.user_factors, expected)


TWO_THREADS_SCRIPT = textwrap.dedent("""
    import threading, numpy as np, scipy.sparse as sp
    from bpr_numpy import BPR
    rng = np.random.default_rng(0)
    X = sp.csr_matrix((rng.random((300, 200)) < 0.1).astype(np.float32))
    BPR(factors=4, epochs=1, threads=2, random_state=0).fit(X)
    errors, models = [], []
    def work(seed):
        try:
            for _ in range(10):
                models.append(BPR(factors=4, epochs=3, threads=2, random_state=seed).fit(X))
        except BaseException as exc:
            errors.append(repr(exc))
    workers = [threading.Thread(target=work, args=(s,)) for s in range(2)]
    for w in workers: w.start()
    for w in workers: w.join()
    assert not errors, errors
    assert len(models) == 20 and all(np.isfinite(m.user_factors).all() for m in models)
    assert all(len(m.history_) == 3 for m in models)
    print("done")
""")


@pytest.mark.skipif(BOUNDSCHECK, reason="runs in the default mode only")
def test_two_models_fitted_from_two_python_threads_at_once():
    # In a subprocess, so that a hang or a crash fails this test alone: the Hogwild helper threads
    # (_runtime.hogwild) serve one parallel epoch at a time, whichever Python thread asks.
    result = run_python(TWO_THREADS_SCRIPT, {}, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip().endswith("done")


FORK_SCRIPT = textwrap.dedent("""
    import multiprocessing, numpy as np, scipy.sparse as sp
    from bpr_numpy import BPR
    rng = np.random.default_rng(0)
    X = sp.csr_matrix((rng.random((300, 200)) < 0.1).astype(np.float32))
    BPR(factors=4, epochs=2, threads=2, random_state=0).fit(X)  # the parent's helper threads start

    def child(queue):
        model = BPR(factors=4, epochs=2, threads=2, random_state=0).fit(X)
        queue.put(bool(np.isfinite(model.user_factors).all()))

    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    process = ctx.Process(target=child, args=(queue,), daemon=True)  # a hung child must not hold the exit
    process.start()
    assert queue.get(timeout=60) is True
    process.join(timeout=120)
    assert process.exitcode == 0, process.exitcode
    print("done")
""")


@pytest.mark.skipif(BOUNDSCHECK or sys.platform == "win32", reason="fork: POSIX, default mode only")
def test_a_forked_child_fits_on_threads_of_its_own():
    # The parent's Hogwild helper threads do not exist in a forked child: it starts its own.
    result = run_python(FORK_SCRIPT, {}, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip().endswith("done")


# --------------------------------------------------------------------------- big data: int64 indptr

def _big_csr(n_users=2000, per_user=500, n_items=5000, seed=0):
    """A canonical CSR with int64 indptr and int32 indices, as scipy gives above 2**31 pairs."""
    rng = np.random.default_rng(seed)
    step = n_items // per_user
    indices = (np.arange(per_user, dtype=np.int32) * step + rng.integers(0, step, (n_users, 1), dtype=np.int32))
    indices = indices.astype(np.int32).ravel()
    indptr = np.arange(0, n_users * per_user + 1, per_user, dtype=np.int64)
    X = sp.csr_matrix((np.ones(len(indices), np.float32), indices, indptr), shape=(n_users, n_items))
    X.indptr, X.indices = indptr, indices  # scipy's constructor narrows indptr to int32 at this size
    return X


def test_int64_indptr_with_int32_indices_trains_without_copying_the_indices():
    X = _big_csr()
    assert X.indptr.dtype == np.int64 and X.indices.dtype == np.int32
    tracemalloc.start()
    try:
        checked = as_user_items(X)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert np.shares_memory(checked.indices, X.indices) and checked.indices.dtype == np.int32
    assert checked.indptr.dtype == np.int64
    assert peak < X.indices.nbytes, f"validation allocated {peak} bytes for {X.indices.nbytes} bytes of indices"
    model = BPR(factors=4, epochs=1, threads=1, random_state=0).fit(X)
    assert np.shares_memory(model.user_items.indices, X.indices)
    # Training reads the same pairs as from an all-int32 CSR: bitwise the same model.
    narrow = sp.csr_matrix((X.data, X.indices, X.indptr.astype(np.int32)), shape=X.shape)
    narrow.indptr = X.indptr.astype(np.int32)
    ref = BPR(factors=4, epochs=1, threads=1, random_state=0).fit(narrow)
    np.testing.assert_array_equal(model.user_factors, ref.user_factors)


def test_int64_index_choice_of_scipy_does_not_copy_the_indices(monkeypatch):
    # Above 2**31 pairs scipy gives every index array of a matrix it builds int64;
    # simulate that choice at a size CI can hold: the indices must still be shared.
    X = _big_csr(n_users=50, per_user=10, n_items=100)
    from scipy.sparse import _compressed

    monkeypatch.setattr(_compressed._cs_matrix, "_get_index_dtype",
                        lambda self, arrays=(), maxval=None, check_contents=False: np.int64, raising=True)
    checked = as_user_items(X)
    assert np.shares_memory(checked.indices, X.indices) and checked.indices.dtype == np.int32
    model = BPR(factors=2, epochs=1, threads=1, random_state=0).fit(X)
    assert np.shares_memory(model.user_items.indices, X.indices)


# --------------------------------------------------------------------------- boundscheck mode

CANARY = textwrap.dedent("""
    import numpy as np
    from numba import njit

    @njit(cache=True)
    def read(a, i):
        return a[i]
""")


@pytest.mark.skipif(not BOUNDSCHECK, reason="only in the boundscheck mode (BPR_NUMPY_BOUNDSCHECK=1)")
def test_boundscheck_mode_catches_an_out_of_bounds_read(tmp_path):
    import numba

    assert numba.config.BOUNDSCHECK
    assert os.environ["NUMBA_CACHE_DIR"].endswith("boundscheck")
    folder = Path(os.environ.get("BPR_NUMPY_CANARY_DIR", tmp_path))
    (folder / "bpr_numpy_canary.py").write_text(CANARY)
    sys.path.insert(0, str(folder))
    try:
        import bpr_numpy_canary
    finally:
        sys.path.remove(str(folder))
    with pytest.raises(IndexError):
        bpr_numpy_canary.read(np.arange(3.0), 5)


@pytest.mark.skipif(BOUNDSCHECK, reason="starts the boundscheck mode itself")
def test_fuzz_subset_runs_with_boundscheck(tmp_path):
    # The canary is compiled and cached *without* boundscheck first: the mode must not reuse that code.
    (tmp_path / "bpr_numpy_canary.py").write_text(CANARY)
    plain = run_python(f"import sys; sys.path.insert(0, {str(tmp_path)!r}); import numpy as np, bpr_numpy_canary; "
                       "bpr_numpy_canary.read(np.arange(3.0), 5)",
                       {"NUMBA_CACHE_DIR": str(tmp_path / "plain-cache")})
    assert plain.returncode == 0, plain.stderr  # silently out of bounds: what the mode is for
    env = dict(os.environ, BPR_NUMPY_BOUNDSCHECK="1", BPR_NUMPY_CANARY_DIR=str(tmp_path),
               NUMBA_CACHE_DIR=str(tmp_path / "plain-cache"), BPR_NUMPY_EXAMPLES_SCALE="0.03")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env.pop("HYPOTHESIS_PROFILE", None)
    subset = ("fuzzed or corrupt or boundscheck_mode or int64_indptr_with or "
              "model_files_fuzzed or data_files_fuzzed or kernel_steps_replay or an_epoch_applies or "
              "(run_prefetching and serial) or sub_matrices or shuffle_into or disjoint_rows")
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rA", "-p", "no:cacheprovider", "-x", "-k", subset,
         str(REPO / "tests" / "test_fuzz.py"), str(REPO / "tests" / "test_files.py"),
         str(REPO / "tests" / "test_hybrid.py"), str(REPO / "tests" / "test_kernels.py"),
         str(REPO / "tests" / "test_strata.py"), str(REPO / "tests" / "test_fuzz_limits.py")],
        capture_output=True, text=True, timeout=900, env=env, cwd=str(REPO))
    tail = result.stdout[-4000:] + result.stderr[-2000:]
    assert result.returncode == 0, tail
    assert "PASSED tests/test_fuzz.py::test_boundscheck_mode_catches_an_out_of_bounds_read" in result.stdout, tail
    assert "PASSED tests/test_fuzz.py::test_fit_on_fuzzed_matrices_matches_the_clean_input" in result.stdout, tail
    assert "PASSED tests/test_hybrid.py::test_an_epoch_applies_the_plain_samplers_triplets_in_order" in result.stdout, tail
    for sampler in ("uniform", "dns-3"):
        prefetching = f"test_epoch_with_the_bitmap_or_run_prefetching_equals_the_plain_epoch[serial-{sampler}]"
        assert f"PASSED tests/test_kernels.py::{prefetching}" in result.stdout, tail
    assert "PASSED tests/test_strata.py::test_strata_are_the_sub_matrices_over_block_local_ids" in result.stdout, tail
    assert "PASSED tests/test_fuzz_limits.py::test_fuzzed_replaced_arrays_reach_no_kernel_unchecked" in result.stdout, \
        tail
    assert "PASSED tests/test_strata.py::test_strata_change_disjoint_rows_within_their_blocks" in result.stdout, tail
    assert (tmp_path / "plain-cache" / "boundscheck").is_dir()  # compiled into a cache of its own
