"""The command line end to end, in subprocesses: output, files, exit codes, error messages."""

import subprocess
import sys

import pytest

from bpr_numpy import BPR


def run(*args, check_code=None):
    proc = subprocess.run([sys.executable, "-m", "bpr_numpy", *args], capture_output=True, text=True, timeout=300)
    if check_code is not None:
        assert proc.returncode == check_code, proc.stdout + proc.stderr
    return proc


def test_train_on_builtin_data_prints_epochs_and_held_out_metrics(tmp_path):
    model_path = tmp_path / "m.npz"
    proc = run("train", "--epochs", "3", "--threads", "1", "--save", str(model_path), check_code=0)
    out = proc.stdout
    assert "built-in synthetic data" in out
    assert out.count("M samples/s") == 3 and "[3/3]" in out
    for key in ("full_auc", "auc", "precision@10", "ndcg@10"):
        assert key in out
    model = BPR.load(model_path)
    assert len(model.history_) == 3 and model.n_users == 2000


def test_train_with_validation_and_early_stopping():
    proc = run("train", "--epochs", "8", "--threads", "1", "--validate-every", "2", "--metric", "auc", check_code=0)
    assert "validation:" in proc.stdout and "kept the factors of epoch" in proc.stdout
    assert proc.stdout.count(" auc 0.") == 4


def test_train_on_movielens(ml100k_path):
    proc = run("train", "--movielens", str(ml100k_path), "--epochs", "2", "--quiet", check_code=0)
    assert "MovieLens 100k ua split" in proc.stdout and "train: 49906 positives" in proc.stdout
    assert "M samples/s" not in proc.stdout  # --quiet


def test_gradcheck_passes_and_fails_on_its_tolerance():
    proc = run("gradcheck", "--factors", "32", "--loss", "sigmoid", check_code=0)
    assert "PASS" in proc.stdout and "item_bias" in proc.stdout
    proc = run("gradcheck", "--no-item-bias", "--tolerance", "1e-30", check_code=1)
    assert "FAIL" in proc.stdout and "item_bias" not in proc.stdout


@pytest.mark.parametrize("args, code, message", [
    (("train", "--epochs", "-1"), 2, "expected an integer >= 0"),
    (("train", "--loss", "hinge"), 2, "invalid choice"),
    (("frobnicate",), 2, "invalid choice"),
    (("train", "--movielens", "/nonexistent/ml-100k", "--epochs", "1"), 1, "bpr-numpy train: error:"),
    (("train", "--learning-rate", "-1", "--epochs", "1"), 1, "learning_rate must be finite and > 0"),
    (("gradcheck", "--items", "1"), 1, "at least 2"),
])
def test_errors_have_exit_codes_and_no_traceback(args, code, message):
    proc = run(*args, check_code=code)
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr


def test_no_command_prints_help():
    proc = run(check_code=2)
    assert "train" in proc.stdout and "gradcheck" in proc.stdout
