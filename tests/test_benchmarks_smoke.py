"""Smoke test of the peer benchmark harness (benchmarks/peers.py) on toy data.

bpr_numpy only: the peers (implicit, cornac, LightFM) are optional, and a missing one must
be skipped with a message, never fail. No timing assertions: the numbers depend on the
machine. Where a peer *is* installed, one extra test checks that its adapter's factors
rank items exactly as the library's own scoring does.
"""

from __future__ import annotations

import importlib
import importlib.util
import io
import sys
from pathlib import Path

import numpy as np
import pytest
from _scripts import load_script
import scipy.sparse as sp

HARNESS = Path(__file__).resolve().parents[1] / "benchmarks" / "peers.py"
PEERS = ("implicit", "cornac", "lightfm")


@pytest.fixture(scope="module")
def peers():
    yield from load_script(HARNESS, "bpr_numpy_bench_peers")


@pytest.fixture
def no_peers(monkeypatch, peers):
    """Make every peer fail to import, whether or not it is installed."""
    for name in PEERS:
        adapter = peers.ADAPTERS[name]()
        for mod in {adapter.module, adapter.module.split(".")[0]}:
            monkeypatch.setitem(sys.modules, mod, None)  # None in sys.modules: import raises ImportError


def toy_split(peers, seed=0):
    """A toy train/test pair: 60 users x 40 items, 8 train and 2 test positives per user."""
    full = peers.tiny_matrix(n_users=60, n_items=40, per_user=10, seed=seed)
    rng = np.random.default_rng(seed)
    test_mask = np.zeros(full.nnz, dtype=bool)
    for u in range(full.shape[0]):
        lo, hi = full.indptr[u], full.indptr[u + 1]
        test_mask[rng.choice(np.arange(lo, hi), 2, replace=False)] = True
    coo = full.tocoo()

    def part(mask):
        return peers.canonical_csr(sp.csr_matrix((coo.data[mask], (coo.row[mask], coo.col[mask])), shape=full.shape))
    return part(~test_mask), part(test_mask)


def test_missing_peers_are_skipped_with_a_message(peers, no_peers):
    log = io.StringIO()
    adapters, skipped = peers.resolve_adapters(list(peers.LIBRARIES), log=log)
    assert [a.name for a in adapters] == ["bpr_numpy"]
    assert len(skipped) == 3
    for name, msg in zip(PEERS, skipped):
        assert msg.startswith(f"skipping {name}:")
        assert "pip install -e .[bench]" in msg
        assert "\n" not in msg
    assert log.getvalue().count("\n") == 3


def test_canonical_csr(peers):
    m = sp.coo_matrix((np.array([2.0, 1.0, -1.0, 3.0]), (np.array([0, 0, 1, 1]), np.array([3, 1, 2, 2]))), shape=(2, 4))
    c = peers.canonical_csr(m)
    assert c.dtype == np.float32 and c.has_sorted_indices
    assert c.nnz == 3 and np.all(c.data == 1.0)  # -1 dropped; the duplicate (1, 2) summed to 2 -> one positive
    assert c[1, 2] == 1.0 and c[0, 1] == 1.0 and c[0, 3] == 1.0


def test_run_group_and_tables_bpr_numpy_only(peers):
    train, test = toy_split(peers)
    adapter = peers.BprNumpyAdapter()
    settings = peers.FitSettings(factors=8, epochs=3, learning_rate=0.05, regularization=0.01, seed=0)
    log = io.StringIO()
    peers.warm_up([adapter], [1], settings, log=log)
    recs = peers.run_group([adapter], train, dataset="toy", threads=[1], repeats=2, settings=settings,
                           test=test, log=log)
    assert [(r.library, r.repeat, r.seed) for r in recs] == [("bpr_numpy", 0, 0), ("bpr_numpy", 1, 1)]
    for r in recs:
        assert r.nnz == train.nnz and r.epochs == 3 and r.threads_used == 1
        assert r.fit_s > 0 and r.samples_per_s > 0 and r.kernel_s is not None
        assert r.peak_rss_mib >= 0 or np.isnan(r.peak_rss_mib)
        assert set(r.quality) == {k for k, _ in peers.QUALITY_KEYS}
        assert all(0.0 <= v <= 1.0 for v in r.quality.values())
    rows = peers.summarize(recs)
    assert len(rows) == 1 and rows[0].repeats == 2 and rows[0].ratio[0] == pytest.approx(1.0)
    text = peers.format_table(rows, with_quality=True)
    md = peers.format_table(rows, with_quality=True, markdown=True)
    for table in (text, md):
        assert "bpr_numpy" in table and "P1 full AUC" in table and "bpr_numpy/peer" in table
    assert md.splitlines()[1].startswith("|---")
    assert any("history_" in n for n in peers.table_notes(rows, [adapter], quality=True))


def test_factors_common_form_scores_like_the_model(peers):
    train, _ = toy_split(peers)
    settings = peers.FitSettings(factors=8, epochs=2, seed=1)
    a = peers.BprNumpyAdapter()
    model = a.build(settings, train.shape)
    a.fit(model, a.prepare(train, settings), settings)
    f = a.factors(model, train.shape, settings)
    users, items = np.arange(5), np.arange(7)
    np.testing.assert_allclose((f.user_factors @ f.item_factors.T + f.item_bias)[:5, :7],
                               model.score(users[:, None], items[None, :]), rtol=1e-5, atol=1e-6)


def test_peak_rss_sees_an_allocation(peers):
    with peers.PeakRSS() as mem:
        block = np.ones(64 * 2**20 // 8)  # 64 MiB, touched
        del block
    if mem.method == "none":
        pytest.skip("no way to read the peak RSS here")
    assert mem.delta_mib >= 48  # a 64 MiB array cannot go unseen (the psutil fallback may sample late)


def test_cli_end_to_end_without_peers(peers, no_peers, tmp_path):
    out, log = io.StringIO(), io.StringIO()
    md, png = tmp_path / "peers.md", tmp_path / "peers.png"
    sections = peers.main(["scaling", "--sizes", "4k,8k", "--threads", "1", "--repeats", "1", "--epochs", "1",
                           "--factors", "8", "--markdown", str(md), "--plot", str(png)], out=out, log=log)
    text = out.getvalue()
    assert text.startswith("machine: ")
    assert "== scaling ==" in text and "bpr_numpy" in text
    for name in PEERS:
        assert f"skipping {name}:" in text
    assert [s.title for s in sections] == ["scaling"] and len(sections[0].rows) == 2
    assert {r.nnz for r in sections[0].rows} == {4000, 8000}
    assert "### scaling" in md.read_text()
    if importlib.util.find_spec("matplotlib") is None:
        assert "matplotlib is not installed" in log.getvalue()
    else:
        assert png.stat().st_size > 0


def test_bad_options_are_rejected(peers):
    with pytest.raises(SystemExit):
        peers.build_parser().parse_args(["movielens", "--libs", "bpr_numpy,mahout"])
    with pytest.raises(SystemExit):
        peers.build_parser().parse_args(["movielens", "--threads", "0"])
    assert peers.parse_size("20M") == 20_000_000 and peers.parse_size("2.5k") == 2500


@pytest.mark.parametrize("name", PEERS)
def test_peer_adapter_ranks_like_the_library(peers, name):
    """The common form (U @ V.T + b) must rank each user's items exactly as the peer's own scores."""
    adapter = peers.ADAPTERS[name]()
    if adapter.import_error() is not None:
        pytest.skip(f"{name} is not installed")
    train, _ = toy_split(peers)
    settings = peers.FitSettings(factors=8, epochs=3, learning_rate=0.05, regularization=0.01, threads=1, seed=0)
    model = adapter.build(settings, train.shape)
    adapter.fit(model, adapter.prepare(train, settings), settings)
    f = adapter.factors(model, train.shape, settings)
    assert f.user_factors.shape == (train.shape[0], 8) and f.item_factors.shape == (train.shape[1], 8)
    ours = f.user_factors @ f.item_factors.T + f.item_bias
    users = np.arange(train.shape[0])
    if name == "implicit":
        native = np.asarray(model.user_factors) @ np.asarray(model.item_factors).T
    elif name == "cornac":
        native = np.stack([model.score(int(u)) for u in users])
    else:
        native = np.stack([model.predict(int(u), np.arange(train.shape[1]), num_threads=1) for u in users])
    diff = native - ours
    # equal up to a per-user constant (LightFM's user bias), i.e. identical per-user rankings
    np.testing.assert_allclose(diff - diff.mean(axis=1, keepdims=True), 0.0, atol=1e-5)
