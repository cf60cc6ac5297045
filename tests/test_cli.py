"""The command line end to end, in subprocesses: output, files, exit codes, error messages."""

import json
import subprocess
import sys

import numpy as np
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


# ---------------------------------------------------------------- evaluate, recommend, similar, bench

@pytest.fixture(scope="module")
def synth_model(tmp_path_factory):
    """A model trained on the built-in synthetic set (seed 3) with a tiny budget, saved."""
    path = tmp_path_factory.mktemp("cli") / "synth.npz"
    run("train", "--epochs", "2", "--threads", "1", "--seed", "3", "--quiet", "--save", str(path), check_code=0)
    return path


def test_train_saves_raw_id_maps(synth_model):
    model = BPR.load(synth_model)
    assert model.user_ids.dtype == np.int64 and len(model.user_ids) == model.n_users
    assert len(model.item_ids) == model.n_items and model.item_titles is None


def test_evaluate_text_and_json_match_the_training_split(synth_model):
    proc = run("evaluate", str(synth_model), "--synthetic", check_code=0)
    assert "seed 3" in proc.stdout  # taken from the model's random_state
    for key in ("full_auc", "auc", "precision@10", "recall@10", "ndcg@10", "map@10"):
        assert key in proc.stdout
    result = json.loads(run("evaluate", str(synth_model), "--synthetic", "--json", "-k", "5", check_code=0).stdout)
    assert result["seed"] == 3 and result["k"] == 5 and "ndcg@5" in result
    # Same split, same model: the metrics agree with an in-process evaluation.
    from bpr_numpy import datasets, metrics

    data = datasets.synthetic_small(random_state=3)
    train, test = datasets.split_random(data, test_fraction=0.2, random_state=3)
    expected = metrics.evaluate(BPR.load(synth_model), train.matrix, test.matrix, k=5)
    assert result["full_auc"] == pytest.approx(expected["full_auc"], abs=1e-12)
    assert result["n_users"] == expected["n_users"]


def test_evaluate_on_other_data_is_refused(synth_model, ml100k_path):
    proc = run("evaluate", str(synth_model), "--movielens", str(ml100k_path), check_code=1)
    assert "evaluate on the data it was trained on" in proc.stderr


def test_recommend_formats_and_liked_items_filtered(synth_model, tmp_path):
    model = BPR.load(synth_model)
    liked = set(model._user_items[7].indices.tolist())
    text = run("recommend", str(synth_model), "--user", "7", "-n", "4", check_code=0).stdout
    assert text.splitlines()[0] == "user 7:" and len(text.splitlines()) == 5
    rows = run("recommend", str(synth_model), "--user", "7", "-n", "4", "--format", "csv", check_code=0).stdout
    lines = rows.strip().splitlines()
    assert lines[0] == "user,rank,item,score" and len(lines) == 5
    items = [int(line.split(",")[2]) for line in lines[1:]]
    expected, _ = model.recommend(7, n=4)
    assert items == expected.tolist() and not liked & set(items)
    users_file = tmp_path / "users.txt"
    users_file.write_text("7\n\n12\n")
    out = json.loads(run("recommend", str(synth_model), "--users-file", str(users_file), "-n", "3",
                         "--format", "json", check_code=0).stdout)
    assert [group["user"] for group in out] == [7, 12]
    assert [r["item"] for r in out[0]["results"]] == expected[:3].tolist()


def test_similar(synth_model):
    proc = run("similar", str(synth_model), "--item", "5", "-n", "3", check_code=0)
    assert "items similar to 5" in proc.stdout and len(proc.stdout.strip().splitlines()) == 4
    out = json.loads(run("similar", str(synth_model), "--item", "5", "-n", "3", "--format", "json",
                         check_code=0).stdout)
    assert out[0]["similar_to"] == 5 and len(out[0]["results"]) == 3


def test_models_without_id_maps_fall_back_to_indices(synth_model, tmp_path):
    model = BPR.load(synth_model)
    model.user_ids = model.item_ids = None
    path = tmp_path / "plain.npz"
    model.save(path)
    proc = run("recommend", str(path), "--user", "7", "-n", "2", check_code=0)
    assert "no user id map" in proc.stderr and "user 7:" in proc.stdout


def test_bench_prints_throughput_per_thread_count():
    proc = run("bench", "--epochs", "2", "--threads", "2", "--nnz", "20000", "--factors", "16", check_code=0)
    assert "threads 1:" in proc.stdout and "threads 2:" in proc.stdout
    assert proc.stdout.count("M samples/s per epoch") == 2 and "benchmarks/peers.py" in proc.stdout


@pytest.mark.parametrize("args, code, message", [
    (("recommend", "{model}", "--user", "99999"), 1, "unknown user id '99999' (2000 users in the model); did you mean"),
    (("recommend", "{model}", "--user", "x1"), 1, "user id must be an integer"),
    (("similar", "{model}", "--item", "-4"), 1, "unknown item id '-4' (1000 items in the model); did you mean 0, 1, 2?"),
    (("recommend", "{missing}", "--user", "1"), 1, "model file not found"),
    (("evaluate", "{missing}", "--synthetic"), 1, "model file not found"),
    (("recommend", "{text}", "--user", "1"), 1, "is not a bpr_numpy model file"),
    (("similar", "{foreign}", "--item", "1"), 1, "no 'meta' entry"),
    (("recommend", "{model}", "--users-file", "{missing}"), 1, "users file not found"),
    (("recommend", "{model}"), 2, "one of the arguments --user --users-file is required"),
    (("evaluate", "{model}"), 2, "one of the arguments --movielens --synthetic is required"),
    (("recommend", "{model}", "--user", "1", "-n", "0"), 2, "expected a positive integer"),
])
def test_model_command_errors(synth_model, tmp_path, args, code, message):
    (tmp_path / "notes.txt").write_text("not a model\n")
    np.savez(tmp_path / "foreign.npz", a=np.arange(3))
    paths = dict(model=synth_model, missing=tmp_path / "nope.npz", text=tmp_path / "notes.txt",
                 foreign=tmp_path / "foreign.npz")
    proc = run(*[a.format(**paths) for a in args], check_code=code)
    assert message in proc.stderr and "Traceback" not in proc.stderr


def test_debug_shows_the_traceback(synth_model):
    proc = run("--debug", "recommend", str(synth_model), "--user", "99999")
    assert proc.returncode != 0 and "Traceback" in proc.stderr


def test_movielens_raw_ids_and_titles(ml100k_path, tmp_path):
    path = tmp_path / "ml.npz"
    run("train", "--movielens", str(ml100k_path), "--epochs", "3", "--threads", "1", "--quiet",
        "--save", str(path), check_code=0)
    model = BPR.load(path)
    assert model.user_ids[195] == 196 and model.item_titles[49] == "Star Wars (1977)"
    out = json.loads(run("recommend", str(path), "--user", "196", "-n", "5", "--format", "json",
                         check_code=0).stdout)
    expected, _ = model.recommend(195, n=5)  # raw user 196 is row 195
    assert out[0]["user"] == 196
    assert [r["item"] for r in out[0]["results"]] == (expected + 1).tolist()  # raw item ids are 1-based
    assert all(r["title"] == model.item_titles[r["item"] - 1] for r in out[0]["results"])
    proc = run("similar", str(path), "--item", "50", "-n", "3", check_code=0)
    assert "Star Wars (1977)" in proc.stdout
    proc = run("evaluate", str(path), "--movielens", str(ml100k_path), "--json", check_code=0)
    assert json.loads(proc.stdout)["n_users"] > 900
    proc = run("recommend", str(path), "--user", "944", check_code=1)
    assert "unknown user id '944'" in proc.stderr and "943" in proc.stderr
