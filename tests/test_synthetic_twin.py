"""The NumPy twin of the synthetic generator (``datasets._synth_numpy``) equals the numba kernels bit for bit.

``synthetic`` picks one of the two by the data's size and what the process has spent in the
twin (``_synthetic._fill_chooser``, ``_synthetic._is_small``), so the data must not depend on
which ran: the matrices (indptr, indices, data) and the alias tables are compared exactly.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import tempfile

import numpy as np
import pytest
from _budget import examples
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from numba import njit

import bpr_numpy.datasets._synth_numpy as twin
from bpr_numpy.datasets import _synthetic, synthetic, synthetic_small
from bpr_numpy.datasets._synth_kernels import _accept, alias_table, fill_rows_serial


@njit
def kernel_dots(w, h):  # pragma: no cover - compiled
    """Dot products of rows as ``_fill_block`` and ``_exact_row`` sum them."""
    out = np.empty(w.shape[0])
    for r in range(w.shape[0]):
        dot = 0.0
        for k in range(w.shape[1]):
            dot += w[r, k] * h[r, k]
        out[r] = dot
    return out


@njit
def kernel_gumbel(u):  # pragma: no cover - compiled
    """``log(-log(u))`` as ``_exact_row`` computes it."""
    out = np.empty(u.size)
    for i in range(u.size):
        out[i] = np.log(-np.log(u[i]))
    return out


def both_paths(monkeypatch, *args, **kwargs):
    """``synthetic(*args, **kwargs)`` through the twin and through the kernel."""
    chooser = _synthetic._fill_chooser()
    out = []
    for path in ("numpy", "numba"):
        monkeypatch.setattr(chooser, "path", path)
        out.append(synthetic(*args, **kwargs))
    return out


def assert_same(a, b) -> None:
    for name in ("indptr", "indices", "data"):
        x, y = getattr(a.matrix, name), getattr(b.matrix, name)
        assert x.dtype == y.dtype, name
        np.testing.assert_array_equal(x, y, err_msg=name)


@st.composite
def problems(draw):
    """``synthetic`` arguments: small shapes, every path of the kernel (heavy rows, rows out of tries)."""
    n_users = draw(st.integers(1, 60))
    n_items = draw(st.integers(1, 300))
    nnz = draw(st.integers(1, min(n_users * n_items, 3_000)))
    kwargs = dict(
        factors=draw(st.integers(1, 16)),
        popularity_exponent=draw(st.sampled_from([0.0, 0.5, 0.8, 1.5, 3.0])),
        activity_exponent=draw(st.sampled_from([0.0, 0.5, 1.0, 2.0])),
        # 0: every proposal accepted; large: rows run out of tries and fall back on Gumbel top-m;
        # 1e20 with one factor (dots of +-1): keys tied in the top-m, ordered by position.
        affinity_scale=draw(st.one_of(st.sampled_from([0.0, 3.0, 20.0, 60.0, 1e4, 1e20]), st.floats(0.0, 12.0))),
        dtype=draw(st.sampled_from([np.float32, np.float64])),
        random_state=draw(st.integers(0, 2**32 - 1)),
    )
    if draw(st.booleans()):
        kwargs["max_items_per_user"] = draw(st.integers(-(-nnz // n_users), n_items))
    return (n_users, n_items, nnz), kwargs


@settings(deadline=None, max_examples=examples(120), suppress_health_check=[HealthCheck.too_slow,
                                                                             HealthCheck.function_scoped_fixture])
@given(problems())
def test_twin_equals_the_kernel(monkeypatch, problem):
    args, kwargs = problem
    assert_same(*both_paths(monkeypatch, *args, **kwargs))


def fill_inputs(n_users, n_items, nnz, heavy, **kwargs):
    """The kernel's inputs as ``synthetic`` builds them, with a chosen ``heavy`` (to force a path)."""
    x, truth = synthetic(n_users, n_items, nnz, return_truth=True, **kwargs)
    log_pop = truth.item_log_popularity
    rank_to_item = np.argsort(-log_pop, kind="stable").astype(np.int64)
    p = np.exp(log_pop[rank_to_item] - log_pop[rank_to_item].max())
    p /= p.sum()
    prob, alias = alias_table(p)
    return (x.matrix.indptr.astype(np.int64), np.empty(nnz, np.int32), truth.user_factors,
            np.ascontiguousarray(truth.item_factors[rank_to_item]), log_pop[rank_to_item], prob, alias,
            rank_to_item, truth.affinity_scale, np.uint64(12345), 7, heavy)  # fmt: skip


@pytest.mark.parametrize("heavy", [0, 5, 10**9])  # every row exact / some / none
@pytest.mark.parametrize("alpha", [0.0, 3.0, 80.0])
def test_twin_fills_rows_as_the_kernel(heavy, alpha):
    args = fill_inputs(40, 120, 1_500, heavy, affinity_scale=alpha, random_state=heavy % 7)
    want = args[1]
    fill_rows_serial(*args)
    got = np.empty_like(want)
    twin.fill_rows_numpy(*args[:1], got, *args[2:])
    np.testing.assert_array_equal(got, want)


@settings(deadline=None, max_examples=examples(200))
@given(st.integers(1, 400), st.sampled_from([0.0, 0.3, 1.0, 2.5]), st.integers(0, 2**32 - 1), st.booleans())
def test_alias_tables_are_equal(n, exponent, seed, ranked):
    rng = np.random.default_rng(seed)
    # Ranked: as synthetic builds it, a power law (many equal columns when the exponent is 0).
    ranks = np.arange(1.0, n + 1)
    w = np.exp(-exponent * np.log(ranks)) if ranked else rng.random(n) ** (1 + 4 * exponent)
    p = w / w.sum()
    prob, alias = twin.alias_table_numpy(p)
    want_prob, want_alias = alias_table(p)
    assert prob.dtype == want_prob.dtype and alias.dtype == want_alias.dtype
    assert np.array_equal(prob.view(np.int64), want_prob.view(np.int64))
    np.testing.assert_array_equal(alias, want_alias)


# Where the twin's arithmetic could differ from the kernel's in the last bit, which the
# comparisons of whole matrices above would only see where a uniform draw lands within that bit
# of a threshold: the dot products' order, and the C library's exp and log (NumPy's SIMD versions
# differ from them on this AVX-512 machine, in 0.4% of logs and 5% of exps).
def test_dot_products_are_summed_in_the_kernels_order():
    rng = np.random.default_rng(0)
    for f in (1, 3, 16, 64):
        w, h = rng.normal(size=(2, 4_000, f))
        got = twin._dots(w, h.T[:, :, None])[:, 0]
        assert np.array_equal(got.view(np.int64), kernel_dots(w, h).view(np.int64))


def test_logs_are_the_kernels():
    rng = np.random.default_rng(1)
    u = np.concatenate([rng.random(50_000), 1.0 - rng.random(1_000) * 1e-12, rng.random(1_000) * 1e-300])
    u = u[(u > 0) & (u < 1)]
    assert np.array_equal(twin._gumbel(u).view(np.int64), kernel_gumbel(u).view(np.int64))


def test_acceptance_is_the_kernels():
    rng = np.random.default_rng(2)
    x = np.concatenate([-rng.random(3_000) * 5, -rng.random(1_000) * 1e-3, [0.0, -0.0, -np.inf, -800.0]])
    e = np.array([math.exp(v) for v in x])
    # Uniforms on both sides of exp(x), one bit apart: only the kernel's exp decides them alike.
    u = np.concatenate([e, np.nextafter(e, 0.0), np.nextafter(e, 2.0), rng.random(x.size)])
    x = np.tile(x, 4)
    keep = (u > 0) & (u < 1)
    u, x = u[keep], x[keep]
    want = np.array([_accept(a, b) for a, b in zip(u.tolist(), x.tolist(), strict=True)])
    np.testing.assert_array_equal(twin._accept(u, x), want)


@pytest.mark.parametrize(
    "p",
    [
        [3 / 8, 3 / 8, 1 / 8, 1 / 8],  # a column left with exactly 1.0: back on the large stack
        [1 / 2, 1 / 4, 1 / 4],
        [1 / 16] * 16,
        [5 / 16, 1 / 16, 3 / 16, 3 / 16, 1 / 16, 1 / 8, 1 / 16],
        [1.0],
    ],
)
def test_alias_tables_are_equal_at_exact_masses(p):
    p = np.array(p)
    prob, alias = twin.alias_table_numpy(p)
    want_prob, want_alias = alias_table(p)
    assert np.array_equal(prob.view(np.int64), want_prob.view(np.int64))
    np.testing.assert_array_equal(alias, want_alias)


def test_tied_keys_are_taken_by_position(monkeypatch):
    # One factor: every dot product is exactly +1 or -1, and an affinity of 1e20 swallows the
    # popularity and the Gumbel noise: rows out of tries take their last items among keys all
    # equal, by position (sort_positions' rule).
    for seed in range(3):
        a, b = both_paths(monkeypatch, 5, 40, 150, factors=1, affinity_scale=1e20, activity_exponent=0.0,
                          random_state=seed)  # fmt: skip
        assert_same(a, b)


def test_synthetic_small_is_the_same_through_both_paths(monkeypatch):
    assert_same(*both_paths(monkeypatch, *_synthetic.SYNTHETIC_PRESETS["small"], random_state=0))
    a, b = both_paths(monkeypatch, *_synthetic.SYNTHETIC_PRESETS["small"], random_state=3, affinity_scale=8.0)
    assert_same(a, b)


def test_the_size_and_the_rent_pick_the_path(monkeypatch):
    chooser = _synthetic._fill_chooser()
    monkeypatch.setattr(chooser, "kernel_available", lambda: False)
    monkeypatch.setattr(chooser, "twin_seconds", 0.0)
    calls = []
    monkeypatch.setattr(chooser, "twin", lambda *a: calls.append("numpy") or twin.fill_rows_numpy(*a))
    synthetic_small(random_state=0)
    assert calls == ["numpy"]
    assert _synthetic._is_small(*_synthetic.SYNTHETIC_PRESETS["small"])
    assert not _synthetic._is_small(*_synthetic.SYNTHETIC_PRESETS["medium"])
    assert not _synthetic._is_small(2_000, 1_000, _synthetic.SMALL_SYNTHETIC_NNZ + 1)
    assert not _synthetic._is_small(100_000, 100_000, 100_000)  # a catalogue too large for the twin's tables
    assert not _synthetic._is_small(20_000, 200, 100_000)  # too many tries if every row runs out
    synthetic(300, 200, 5_000, parallel=True)  # parallel requests take the kernel
    assert calls == ["numpy"]
    monkeypatch.setattr(chooser, "twin_seconds", chooser.budget_seconds)  # the rent is paid: the kernel
    synthetic(300, 200, 5_000)
    assert calls == ["numpy"]
    monkeypatch.setattr(chooser, "twin_seconds", 0.0)
    monkeypatch.setattr(chooser, "kernel_available", lambda: True)  # compiled or cached: the kernel
    synthetic(300, 200, 5_000)
    assert calls == ["numpy"]


def test_synthetic_small_compiles_nothing_with_an_empty_cache():
    # What the twin is for: a new machine's quick start generates its data without compiling.
    code = ("from bpr_numpy.datasets import synthetic_small; from bpr_numpy.datasets import _synth_kernels as k; "
            "synthetic_small(random_state=0); "
            "assert not k.fill_rows_serial.signatures and not k.alias_table.signatures")
    with tempfile.TemporaryDirectory() as cache:
        subprocess.run([sys.executable, "-c", code], check=True, env=dict(os.environ, NUMBA_CACHE_DIR=cache))
