"""The NumPy twin of the evaluation kernel (``metrics._numpy_block``) equals the numba kernel bit for bit.

``evaluate`` picks one of the two by the problem's size and what the process has spent in the
twin (``_protocol._block_function``), so a result must not depend on which ran: every output, dtype and shape is compared exactly.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import pytest
import scipy.sparse as sp
from _budget import examples
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bpr_numpy.metrics import _protocol
from bpr_numpy.metrics._kernels import _block_kernel
from bpr_numpy.metrics._numpy_block import _numpy_block

OUTPUTS = ("full_auc", "auc", "top", "hits", "n_rel", "first_rank", "nan_rows")


def random_csr(rng: np.random.Generator, n_users: int, n_items: int, density: float) -> tuple[np.ndarray, ...]:
    """CSR arrays with sorted, duplicate-free rows and a flag per stored entry (some False)."""
    dense = rng.random((n_users, n_items)) < density
    csr = sp.csr_array(dense.astype(np.float64))
    csr.sort_indices()
    flags = rng.random(csr.nnz) < 0.85
    return csr.indptr.astype(np.int64), csr.indices.astype(np.int32), flags


@st.composite
def blocks(draw):
    """One call's arguments: a block of users of a random train/test pair, scores full of ties."""
    n_users = draw(st.integers(1, 8))
    n_items = draw(st.integers(1, 12))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    tr = random_csr(rng, n_users, n_items, draw(st.sampled_from([0.0, 0.2, 0.5, 0.9, 1.0])))
    te = random_csr(rng, n_users, n_items, draw(st.sampled_from([0.1, 0.3, 0.6, 1.0])))
    n_block = draw(st.integers(0, 10))
    users = rng.integers(0, n_users, n_block).astype(np.int64)  # repeats allowed
    values = draw(st.sampled_from([
        (-1.0, 0.0, 0.5, 1.0),
        (0.0, -0.0, 1.0),
        (-np.inf, 0.0, np.inf),
        (-np.inf, -1.0, 2.0, np.inf, -0.0),
        None,  # continuous
    ]))  # fmt: skip
    if values is None:
        scores = rng.normal(size=(n_block, n_items))
    else:
        scores = rng.choice(np.array(values), size=(n_block, n_items))
    if draw(st.booleans()):  # some rows with a NaN
        bad = rng.random(n_block) < 0.3
        scores[bad, rng.integers(0, n_items, n_block)[bad]] = np.nan
    scores = scores.astype(draw(st.sampled_from([np.float32, np.float64])))
    kmax = draw(st.integers(0, n_items + 2))
    flags = [draw(st.booleans()) for _ in range(3)]
    return (scores, users, *tr, *te, kmax, *flags)


def assert_same_outputs(got: tuple, want: tuple) -> None:
    assert len(got) == len(want) == len(OUTPUTS)
    for name, g, w in zip(OUTPUTS, got, want, strict=True):
        assert g.dtype == w.dtype, name
        assert g.shape == w.shape, name
        # NaN equals NaN here; -0.0 never appears in the outputs (counts and ratios of counts).
        np.testing.assert_array_equal(g, w, err_msg=name)
        if g.dtype.kind == "f":
            assert np.array_equal(g.view(np.int64), w.view(np.int64)), name  # bit for bit


@settings(deadline=None, max_examples=examples(400), suppress_health_check=[HealthCheck.too_slow])
@given(blocks())
def test_numpy_twin_equals_the_kernel(args):
    assert_same_outputs(_numpy_block(*args), _block_kernel(*args))


@pytest.mark.parametrize("n_pos", [1, 64, 65, 300])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_numpy_twin_equals_the_kernel_on_long_rows(n_pos, dtype):
    """Rows long enough for the kernel's bisection path (> 64 positives) and the twin's chunks."""
    rng = np.random.default_rng(n_pos)
    n_users, n_items = 700, 900
    tr = random_csr(rng, n_users, n_items, 0.05)
    dense = np.zeros((n_users, n_items), bool)
    for u in range(n_users):
        dense[u, rng.choice(n_items, rng.integers(0, n_pos + 1), replace=False)] = True
    te_csr = sp.csr_array(dense.astype(np.float64))
    te = (te_csr.indptr.astype(np.int64), te_csr.indices.astype(np.int32), rng.random(te_csr.nnz) < 0.9)
    users = np.arange(n_users, dtype=np.int64)
    scores = rng.integers(0, 9, size=(n_users, n_items)).astype(dtype)  # ties everywhere
    scores[::3] = rng.normal(size=(len(scores[::3]), n_items))  # and rows without
    for kmax, exclude in ((10, True), (0, False), (n_items, False)):
        args = (scores, users, *tr, *te, kmax, exclude, True, True)
        assert_same_outputs(_numpy_block(*args), _block_kernel(*args))


def quick_start():
    from bpr_numpy import BPR, datasets

    data = datasets.synthetic_small(random_state=0)
    train, test = datasets.split_random(data, test_fraction=0.2, random_state=0)
    model = BPR(factors=32, epochs=2, random_state=0).fit(train.matrix)
    return model, train.matrix, test.matrix


def test_evaluate_is_the_same_through_both_paths(monkeypatch):
    model, train, test = quick_start()
    got = {}
    for path in ("numpy", "numba"):
        monkeypatch.setattr(_protocol._BLOCK, "path", path)
        got[path] = _protocol.evaluate(model, train, test, k=[1, 10, 50], per_user=True)
    a, b = got["numpy"], got["numba"]
    assert list(a) == list(b)
    for key in a:
        if key == "per_user":
            for m in a[key]:
                np.testing.assert_array_equal(a[key][m], b[key][m], err_msg=m)
        elif key == "users":
            np.testing.assert_array_equal(a[key], b[key])
        else:
            assert a[key] == b[key] or (np.isnan(a[key]) and np.isnan(b[key])), key
    for exclude in (True, False):
        monkeypatch.setattr(_protocol._BLOCK, "path", "numpy")
        a = _protocol.evaluate(model, train, test, metrics=["mrr", "auc"], exclude_train=exclude)
        monkeypatch.setattr(_protocol._BLOCK, "path", "numba")
        assert a == _protocol.evaluate(model, train, test, metrics=["mrr", "auc"], exclude_train=exclude)


def test_auc_from_scores_is_the_same_through_both_paths(monkeypatch):
    rng = np.random.default_rng(1)
    s = rng.choice([0.0, 1.0, 2.0], size=(30, 40))
    pos = rng.random(s.shape) < 0.3
    cand = rng.random(s.shape) < 0.8
    got = []
    for path in ("numpy", "numba"):
        monkeypatch.setattr(_protocol._BLOCK, "path", path)
        got.append(_protocol.auc_from_scores(s, pos, cand))
    np.testing.assert_array_equal(got[0], got[1])


def test_the_problem_size_and_the_rent_pick_the_path(monkeypatch):
    small = _protocol.SMALL_PROBLEM_SCORES
    block = _protocol._BLOCK
    # A process whose kernel would need compiling, and which has paid no rent yet: small
    # problems go to the twin, large ones (Gowalla) to the kernel.
    monkeypatch.setattr(block, "kernel_available", lambda: False)
    monkeypatch.setattr(block, "twin_seconds", 0.0)
    assert _protocol._block_function(small) == block.timed_twin
    assert _protocol._block_function(small + 1) is _block_kernel
    assert _protocol._block_function(29_858 * 40_981) is _block_kernel
    # The twin's time is the rent: once it reaches the budget, small problems go to the kernel too.
    monkeypatch.setattr(block, "twin", lambda *args: time.sleep(0.02))
    monkeypatch.setattr(block, "budget_seconds", 0.05)
    while _protocol._block_function(1) == block.timed_twin:
        block.timed_twin()
    assert 0.05 <= block.twin_seconds < 0.2
    # A kernel that costs no compile (compiled, or in numba's disk cache) is used at once.
    monkeypatch.setattr(block, "twin_seconds", 0.0)
    monkeypatch.setattr(block, "kernel_available", lambda: True)
    assert _protocol._block_function(1) is _block_kernel
    monkeypatch.setattr(block, "kernel_available", lambda: False)
    monkeypatch.setattr(block, "path", "numba")
    assert _protocol._block_function(1) is _block_kernel
    monkeypatch.setattr(block, "path", "numpy")
    assert _protocol._block_function(10**12) == block.timed_twin
    monkeypatch.setattr(block, "path", "fast")
    with pytest.raises(ValueError, match="path"):
        _protocol._block_function(1)


def test_the_kernel_counts_as_available_once_compiled_or_cached():
    # In a process with an empty cache the kernel is unavailable until the first compile.
    code = ("from bpr_numpy.metrics import _protocol as P; import numpy as np; "
            "assert not P._BLOCK.kernel_available(); "
            "s = np.random.default_rng(0).random((5, 7)); pos = s > 0.5; "
            "P._BLOCK.path = 'numba'; P.auc_from_scores(s, pos); assert P._BLOCK.kernel_available()")
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, NUMBA_CACHE_DIR=cache)
        subprocess.run([sys.executable, "-c", code], check=True, env=env)
        # A new process finds it in the disk cache.
        subprocess.run([sys.executable, "-c", "from bpr_numpy.metrics import _protocol as P; "
                        "assert P._BLOCK.kernel_available()"], check=True, env=env)  # fmt: skip
