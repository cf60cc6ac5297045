"""Distributed training on a Dask LocalCluster (2 worker processes): quality on MovieLens 100k, the
same factors as the in-process schedule, conflict-free strata, and a worker killed during training."""

import os
import signal
import sys
import threading

import numpy as np
import pytest

from bpr_numpy import distributed, metrics
from test_strata import _matrix, assert_conflict_free

dask_distributed = pytest.importorskip("distributed")

SEED = 0


@pytest.fixture(scope="module")
def client():
    # Worker processes start with this process's sys.path: a folder holding a distributed.py
    # (benchmarks/, put there by a script another test imported) would hide Dask's package.
    saved = sys.path[:]
    sys.path[:] = [p for p in sys.path if not os.path.isfile(os.path.join(p or ".", "distributed.py"))]
    try:
        cluster = dask_distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                                dashboard_address=None)
        with cluster, dask_distributed.Client(cluster) as c:
            yield c
    finally:
        sys.path[:] = saved


@pytest.fixture(scope="module")
def in_process(ua):
    """The same schedule (2 blocks, default hyperparameters) on this process's threads."""
    return distributed.fit(None, ua[0], n_blocks=2, threads=2, random_state=SEED)


def _assert_same_factors(a, b):
    for name in ("user_factors", "item_factors", "item_biases"):
        assert np.array_equal(getattr(a, name), getattr(b, name)), name


def _assert_quality(model, ua):
    train, test = ua
    # The single-machine floors of tests/test_movielens.py for one seed (measured mean - 5 std;
    # docs/guide/tuning.md): the stratified schedule measured 0.9198 / 0.1396 (seed 0), 0.9198 / 0.1423 (seed 1).
    assert metrics.full_auc(model, train, test) >= 0.9202 - 5 * 0.0004
    assert metrics.precision_at_k(model, train, test, k=10) >= 0.1409 - 5 * 0.0017


@pytest.mark.slow
def test_dask_fit_reaches_single_machine_quality_with_the_in_process_factors(client, ua, in_process):
    model = distributed.fit(client, ua[0], threads=1, random_state=SEED)
    assert model.distributed_log_.n_blocks == model.distributed_log_.workers == 2
    _assert_same_factors(model, in_process)
    _assert_quality(model, ua)
    log = model.distributed_log_
    # Per epoch after the first: each of the 2 item blocks moves once (rotation), and the shuffle
    # sends block 1 to worker 0 and the new block 1 back: about twice the item factors.
    item_bytes = ua[0].shape[1] * (64 + 1) * 4
    assert all(1.9 * item_bytes <= b <= 2.1 * item_bytes for b in log.item_bytes[1:]), log.item_bytes[:5]


def test_dask_strata_touch_disjoint_rows_and_more_blocks_than_workers_give_the_in_process_factors(client):
    m = _matrix(50, 70, 0.15, 4)
    record = []
    kwargs = dict(n_blocks=4, factors=4, epochs=3, random_state=2, threads=1)
    model = distributed.fit(client, m, _record=record, **kwargs)
    assert_conflict_free(m, model, record, n_blocks=4, epochs=3)
    _assert_same_factors(model, distributed.fit(None, m, **kwargs))


def test_a_worker_gone_while_its_pinned_tasks_wait_is_noticed(client):
    import time

    executor = distributed._Dask(client)
    executor.POLL = 0.2
    pids = client.run(os.getpid)
    worker = sorted(pids)[-1]
    executor.assign([worker])
    pending = executor.submit(time.sleep, 60, worker=worker)  # pinned: no other worker may take it
    time.sleep(0.5)
    os.kill(pids[worker], signal.SIGKILL)
    with pytest.raises(distributed.WorkerLostError, match="left the cluster"):
        executor.gather([pending])
    client.wait_for_workers(2, timeout=60)  # the nanny brings it back for the next test


@pytest.mark.slow
@pytest.mark.parametrize("checkpoint_every", [1, 3])
def test_a_worker_killed_during_training_is_recovered_from_the_last_checkpoint(client, ua, in_process,
                                                                             checkpoint_every):
    pids = client.run(os.getpid)
    victim = pids[sorted(pids)[0]]

    killed = []

    def kill_soon(report):
        # Lands inside one of the next epochs (each takes tens of ms). Once: epochs redone after
        # the restart are reported again.
        if report.epoch == 50 and not killed:
            killed.append(True)
            threading.Timer(0.02, os.kill, (victim, signal.SIGKILL)).start()

    model = distributed.fit(client, ua[0], threads=1, random_state=SEED, callback=kill_soon,
                            checkpoint_every=checkpoint_every)
    assert model.distributed_log_.restarts >= 1
    assert [r.epoch for r in model.history_] == list(range(1, 101))
    # Restarted from the epoch's start with the same streams: the very factors of an unbroken run.
    _assert_same_factors(model, in_process)
    _assert_quality(model, ua)


@pytest.mark.slow
def test_benchmark_script_runs_end_to_end(tmp_path, ml100k_path):
    """benchmarks/distributed.py on toy sizes: speed (both clusters, every row), projection, quality."""
    import subprocess
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "distributed.py"
    speed = tmp_path / "speed.json"

    def run(*args):
        result = subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stderr[-3000:]
        return result.stdout

    out = run("speed", "--nnz", "20K", "--epochs", "2", "--repeats", "1", "--factors", "8", "--json", str(speed))
    assert "| Dask 2 workers, P=2 |" in out and "epochs of a tiny matrix" in out
    assert "| 64 x 1 |" in run("project", "--speed-json", str(speed))
    out = run("quality", "--data", str(ml100k_path), "--epochs", "4", "--seeds", "1")
    assert "| DSGD, P=2 |" in out and "| averaging, P=4 |" in out
