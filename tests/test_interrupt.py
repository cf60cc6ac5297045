"""Ctrl-C during training: the model keeps its last completed epoch, and the CLI saves it and exits 130."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from bpr_numpy import BPR
from bpr_numpy.datasets import synthetic

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = dict(n_users=20_000, n_items=5_000, nnz=1_000_000, random_state=3)  # ~0.07-0.5 s per epoch


def _spawn(code: str, *args: str, merge: bool = False) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""), PYTHONUNBUFFERED="1")
    return subprocess.Popen([sys.executable, "-c", code, *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT if merge else subprocess.PIPE, text=True, env=env, cwd=ROOT)


def _interrupt_after(proc: subprocess.Popen, marker: str, timeout: float = 600.0) -> tuple[str, str]:
    """Send SIGINT once ``marker`` appears on stdout; return the remaining output."""
    seen = []
    deadline = time.monotonic() + timeout
    for line in proc.stdout:
        seen.append(line)
        if marker in line:
            time.sleep(0.05)  # inside the next epoch's kernel calls
            proc.send_signal(signal.SIGINT)
            break
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail("the marker never appeared")
    out, err = proc.communicate(timeout=timeout)
    return "".join(seen) + out, err or ""


def test_keyboard_interrupt_keeps_the_last_completed_epoch(tmp_path):
    path = tmp_path / "model.npz"
    code = textwrap.dedent(f"""
        import sys
        from bpr_numpy import BPR
        from bpr_numpy.datasets import synthetic
        X = synthetic(**{DATA!r}).matrix
        model = BPR(factors=16, epochs=1000, threads=1, random_state=7)
        try:
            model.fit(X, callback=lambda r: print("done epoch", r.epoch, flush=True))
        except KeyboardInterrupt:
            assert model.interrupted_
            model.save(sys.argv[1])
            print("completed", len(model.history_), flush=True)
            sys.exit(0)
        sys.exit(3)
    """)
    proc = _spawn(code, str(path))
    out, err = _interrupt_after(proc, "done epoch 2")
    assert proc.returncode == 0, err
    assert "the model keeps the factors of epoch" in err
    completed = int(out.strip().splitlines()[-1].split()[-1])
    assert completed >= 2
    saved = BPR.load(path)
    # threads=1 is bitwise reproducible: the same number of whole epochs gives the same factors.
    again = BPR(factors=16, epochs=completed, threads=1, random_state=7).fit(synthetic(**DATA).matrix)
    np.testing.assert_array_equal(saved.user_factors, again.user_factors)
    np.testing.assert_array_equal(saved.item_factors, again.item_factors)
    np.testing.assert_array_equal(saved.item_biases, again.item_biases)


def test_cli_interrupted_training_saves_the_last_epoch_and_exits_130(tmp_path):
    path = tmp_path / "model.npz"
    code = "import sys; from bpr_numpy.cli import main; sys.exit(main(sys.argv[1:]))"
    proc = _spawn(code, "train", "--epochs", "100000", "--threads", "1", "--factors", "8", "--save", str(path),
                  merge=True)
    out, _ = _interrupt_after(proc, "[2/100000]")  # the per-epoch line of epoch 2
    assert proc.returncode == 130, out
    assert "interrupted: saved the model of epoch" in out
    model = BPR.load(path)
    assert model.is_fitted and np.isfinite(model.user_factors).all()
