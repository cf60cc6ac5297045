"""The command line end to end, in subprocesses: output, files, exit codes, error messages."""

import json
import os
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
    (("evaluate", "{model}"), 2, "one of the arguments --data --dataset --movielens --synthetic is required"),
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


# ---------------------------------------------------------------- train: data sources, splits, options, progress

def _write_csv(path, n_users=40, n_items=25, per_user=8, seed=0):
    """A small CSV with a header and string ids (user 'u007', item 'song-3'), ratings 1..5."""
    rng = np.random.default_rng(seed)
    lines = ["userId,itemId,rating,timestamp"]
    for u in range(n_users):
        for i in rng.choice(n_items, size=per_user, replace=False):
            lines.append(f"u{u:03d},song-{i},{rng.integers(1, 6)},{1000 + len(lines)}")
    path.write_text("\n".join(lines) + "\n")
    return path


def test_train_on_a_delimited_file_with_string_ids_then_recommend(tmp_path):
    csv = _write_csv(tmp_path / "plays.csv")
    model_path = tmp_path / "m.npz"
    proc = run("train", "--data", str(csv), "--epochs", "2", "--factors", "8", "--threads", "1",
               "--save", str(model_path), check_code=0)
    assert "random split, 0.2 held out, seed 0" in proc.stdout and "[2/2]" in proc.stdout
    model = BPR.load(model_path)
    assert model.n_users == 40 and str(model.user_ids[7]) == "u007"
    out = json.loads(run("recommend", str(model_path), "--user", "u007", "-n", "3", "--format", "json",
                         check_code=0).stdout)
    assert out[0]["user"] == "u007" and len(out[0]["results"]) == 3
    assert all(r["item"].startswith("song-") for r in out[0]["results"])
    # evaluate rebuilds the same split from the same options (seed from the model)
    ev = json.loads(run("evaluate", str(model_path), "--data", str(csv), "--json", check_code=0).stdout)
    assert ev["seed"] == 0 and "random split" in ev["data"]
    # --min-rating and explicit --format/--columns reach the loader
    proc = run("train", "--data", str(csv), "--format", "csv", "--columns", "user,item,rating,-",
               "--min-rating", "4", "--epochs", "1", "--quiet", check_code=0)
    assert "train:" in proc.stdout


@pytest.mark.parametrize("split, expected", [
    (("--split", "leave-k-out", "--leave-k", "2"), "leave-2-out split (random), seed 5"),
    (("--split", "leave-k-out", "--leave-strategy", "latest"), "leave-1-out split (latest)"),
    (("--split", "random", "--test-fraction", "0.5"), "random split, 0.5 held out, seed 5"),
])
def test_train_splits(tmp_path, split, expected):
    csv = _write_csv(tmp_path / "plays.csv")
    proc = run("train", "--data", str(csv), *split, "--seed", "5", "--epochs", "1", "--quiet", "--threads", "1",
               check_code=0)
    assert expected in proc.stdout
    if "--leave-k" in split:
        assert "held out: 80" in proc.stdout  # 2 per user, 40 users


def test_train_on_a_lightgcn_folder(tmp_path):
    folder = tmp_path / "gowalla-mini"
    folder.mkdir()
    (folder / "train.txt").write_text("".join(f"{u} " + " ".join(str((u * 3 + k) % 15) for k in range(5)) + "\n"
                                              for u in range(12)))
    (folder / "test.txt").write_text("".join(f"{u} {(u * 3 + 7) % 15}\n" for u in range(12)))
    proc = run("train", "--data", str(folder), "--epochs", "2", "--factors", "4", "--threads", "1",
               check_code=0)
    assert "LightGCN split" in proc.stdout and "train: 60 positives, held out: 12" in proc.stdout
    proc = run("train", "--data", str(folder), "--split", "random", "--epochs", "1", check_code=1)
    assert "brings its own train/test split" in proc.stderr
    # A folder with a validation carve instead of a test file (LightGCN++'s train.txt + valid.txt).
    (folder / "test.txt").rename(folder / "valid.txt")
    proc = run("train", "--data", str(folder), "--epochs", "1", "--factors", "4", "--threads", "1", check_code=0)
    assert "train.txt/valid.txt" in proc.stdout and "held out: 12" in proc.stdout


def test_dataset_from_the_cache(ml100k_path, tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "ml-100k").symlink_to(ml100k_path, target_is_directory=True)
    env = {**os.environ, "BPR_NUMPY_DATA": str(cache)}
    proc = subprocess.run([sys.executable, "-m", "bpr_numpy", "train", "--dataset", "ml-100k", "--epochs", "1",
                           "--quiet"], capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr
    assert "MovieLens 100k ua split" in proc.stdout and "train: 49906 positives" in proc.stdout
    # the wrong release for --dataset names what was expected and what was found
    (cache / "ml-1m").symlink_to(ml100k_path, target_is_directory=True)
    proc = subprocess.run([sys.executable, "-m", "bpr_numpy", "train", "--dataset", "ml-1m", "--epochs", "1"],
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 1 and "is not ml-1m: expected ratings.dat and users.dat" in proc.stderr
    assert "found MovieLens 100k" in proc.stderr and "Traceback" not in proc.stderr


def test_dataset_offline_error_says_how_to_get_it(tmp_path):
    env = {**os.environ, "BPR_NUMPY_DATA": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-m", "bpr_numpy", "train", "--dataset", "ml-100k", "--epochs", "1"],
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "--download" in proc.stderr and "--data" in proc.stderr and str(tmp_path) in proc.stderr


def test_wrong_folders_and_splits_are_explained(tmp_path, ml100k_path):
    (tmp_path / "notes.txt").write_text("hello\n")
    proc = run("train", "--data", str(tmp_path), "--epochs", "1", check_code=1)
    assert "expected a MovieLens folder or zip" in proc.stderr and "notes.txt" in proc.stderr
    proc = run("train", "--movielens", str(tmp_path), "--epochs", "1", check_code=1)
    assert "is not ml-100k: expected u.data" in proc.stderr
    proc = run("train", "--split", "ua", "--epochs", "1", check_code=1)
    assert "--split ua is an official MovieLens 100k split" in proc.stderr
    csv = _write_csv(tmp_path / "plays.csv")
    proc = run("train", "--data", str(csv), "--split", "u1", "--epochs", "1", check_code=1)
    assert "has none: use --split random" in proc.stderr
    proc = run("train", "--data", str(ml100k_path), "--format", "csv", check_code=1)
    assert "--format/--columns describe a delimited file" in proc.stderr


def test_per_role_regularization_and_hyperparameters_reach_the_model(tmp_path):
    path = tmp_path / "m.npz"
    run("train", "--epochs", "1", "--threads", "1", "--quiet", "--factors", "6", "--lr", "0.05",
        "--regularization", "0.01", "--reg-negative", "0.003", "--reg-bias", "0", "--user-run", "4",
        "--no-item-bias", "--init-std", "0.05", "--loss", "sigmoid", "--dtype", "float64", "--seed", "9",
        "--n-negatives", "3", "--save", str(path), check_code=0)
    params = BPR.load(path).get_params()
    assert dict(params["regularization"]) == {"user": 0.01, "positive": 0.01, "negative": 0.003, "bias": 0.0}
    assert params["factors"] == 6 and params["learning_rate"] == 0.05 and params["user_run"] == 4
    assert params["item_bias"] is False and params["init_std"] == 0.05 and params["loss"] == "sigmoid"
    assert np.dtype(params["dtype"]) == np.float64 and params["random_state"] == 9
    assert params["n_negatives"] == 3


@pytest.mark.parametrize("args, message", [
    (("train", "--test-fraction", "1.5"), "expected a number in (0, 1)"),
    (("train", "--columns", "user,thing"), "unknown column role"),
    (("train", "--dataset", "ml-7k"), "invalid choice"),
    (("train", "--data", "x", "--movielens", "y"), "not allowed with argument"),
])
def test_train_usage_errors(args, message):
    proc = run(*args, check_code=2)
    assert message in proc.stderr


def test_progress_line_formatting_and_live_rewrite():
    import io

    from bpr_numpy.cli import format_progress
    from bpr_numpy.cli._output import _Progress
    from bpr_numpy.model import EpochReport

    r = EpochReport(epoch=3, loss=0.41234, ordered_fraction=0.81, skipped=0, samples=1000, seconds=0.5,
                    samples_per_second=2.5e6, metric="ndcg@10", validation=0.1234)
    line = format_progress(r, 10, elapsed=30.0)  # 10 s per epoch so far, 7 to go
    assert line == ("epoch 3/10  loss 0.4123  ordered 0.8100  ndcg@10 0.1234  2.50 M samples/s  ETA 1:10")
    from dataclasses import replace

    r = replace(r, validation=None, metric=None)
    assert "ndcg" not in format_progress(r, 10, 30.0)
    r = replace(r, epoch=10)
    assert format_progress(r, 10, 3725.0).endswith("done in 1:02:05")

    class Tty(io.StringIO):
        def isatty(self):
            return True

    stream = Tty()
    progress = _Progress(2, quiet=False, stream=stream)
    for epoch in (1, 2):
        r = replace(r, epoch=epoch)
        progress(r)
    progress.finish()  # idempotent: the newline came with the last epoch
    text = stream.getvalue()
    assert text.count("\r") == 2 and text.count("\n") == 1 and text.endswith("\n")
    assert "epoch 1/2" in text and "epoch 2/2" in text
    plain = io.StringIO()
    _Progress(2, quiet=False, stream=plain)(r)
    assert plain.getvalue().endswith("[2/2]\n") and "\r" not in plain.getvalue()
    quiet = Tty()
    _Progress(2, quiet=True, stream=quiet)(r)
    assert quiet.getvalue() == ""


def test_the_first_compilation_is_announced_once_on_a_terminal(monkeypatch, capsys):
    from bpr_numpy import cli
    from bpr_numpy.cli import _commands

    monkeypatch.setattr(_commands, "_kernels_not_cached", lambda: True)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    assert cli.main(["train", "--epochs", "1", "--threads", "1", "--quiet"]) == 0
    assert capsys.readouterr().err.count("compiling the training kernels once") == 1
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False)  # a pipe or a log file: nothing said
    assert cli.main(["train", "--epochs", "1", "--threads", "1", "--quiet"]) == 0
    assert "compiling" not in capsys.readouterr().err


def test_an_empty_numba_cache_is_detected(tmp_path):
    code = ("from bpr_numpy.cli._commands import _kernels_not_cached as first; from bpr_numpy import BPR; "
            "import numpy as np; before = first(); BPR(factors=2, epochs=1, threads=1).fit(np.eye(5)); "
            "print(before, first())")
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path))
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert out.split() == ["True", "False"]


# ---------------------------------------------------------------- tune


def lightgcn_folder(path, holdout="valid.txt"):
    path.mkdir()
    (path / "train.txt").write_text("".join(f"{u} " + " ".join(str((u * 3 + k) % 40) for k in range(8)) + "\n"
                                            for u in range(60)))
    (path / holdout).write_text("".join(f"{u} {(u * 3 + 11) % 40} {(u * 3 + 13) % 40}\n" for u in range(60)))
    return path


def best_json(stdout):
    """The best parameters: the JSON object that ends tune's output."""
    return json.loads(stdout[stdout.rindex("\n{\n") + 1:])


def test_tune_scores_on_valid_txt_and_writes_the_best_parameters(tmp_path):
    folder = lightgcn_folder(tmp_path / "gowalla-mini")
    (folder / "test.txt").write_text("0 1\n")  # present, but tune scores on valid.txt
    output = tmp_path / "best.json"
    args = ("tune", "--data", str(folder), "--arms", "4", "--min-epochs", "1", "--max-epochs", "3",
            "--threads", "1", "--budget", "300", "--metric", "ndcg@5")
    proc = run(*args, "--output", str(output), check_code=0)
    assert "LightGCN split" in proc.stdout and "train.txt/valid.txt" in proc.stdout
    assert "validation: the held-out file, 120 positives" in proc.stdout
    assert "searched 4 arms, 6 checkpoints" in proc.stdout and "ndcg@5" in proc.stdout
    assert "--max-epochs 9 --arms 12 (one more rung, 3x the arms)" in proc.stdout  # seconds of 300 used
    assert proc.stderr.count("tune: arm ") == 6  # one progress line per checkpoint
    params = best_json(proc.stdout)
    assert json.loads(output.read_text()) == params and params["epochs"] in (1, 3)
    BPR(**params)  # ready for the constructor
    again = run(*args, "--quiet", check_code=0)
    assert best_json(again.stdout) == params and "tune: arm" not in again.stderr  # reproducible with --threads 1
    # Rung 0 on 20 of the 60 validation users: its progress lines say so, the later rungs' do not.
    screened = run(*args, "--screening-users", "20", check_code=0)
    assert screened.stderr.count("(screening)") == 4 and screened.stderr.count("tune: arm ") == 6


def test_a_schedule_done_early_is_told_the_options_of_one_more_rung():
    from bpr_numpy.cli._commands import _longer_schedule

    # MovieLens 100k's search: 243 arms, rungs of 5 / 15 / 45 / 135 epochs, 65 s of 900.
    hint = _longer_schedule(243, 5, 135, 3, 65.0, 900)
    assert hint.startswith("the schedule took 65.0 s of the 900.0 s budget: --max-epochs 405 --arms 729 ")
    assert "would take about 244 s" in hint  # 65 s x 3 (the arms) x 5 / 4 (the rungs)
    assert _longer_schedule(243, 5, 135, 3, 150.0, 900) is not None  # 562 s: a third to spare
    assert _longer_schedule(243, 5, 135, 3, 170.0, 900) is None  # 638 s: less than a third to spare
    assert "--max-epochs 10 --arms 4 (one more rung, 2x the arms)" in _longer_schedule(2, 5, 5, 2, 1.0, 60)


def test_tune_carves_validation_out_of_the_training_part(tmp_path):
    space = tmp_path / "space.json"
    space.write_text(json.dumps({"learning_rate": {"log-uniform": [0.01, 0.1]}, "factors": 8,
                                 "sampler": ["uniform", "dns"]}))
    proc = run("tune", "--space", str(space), "--arms", "3", "--min-epochs", "1", "--max-epochs", "1",
               "--threads", "1", "--top", "1", "--quiet", check_code=0)
    assert "validation: 8000 of the 80000 training positives held out" in proc.stdout
    assert "20000 held-out test positives are not looked at" in proc.stdout
    assert "... 2 more checkpoints" in proc.stdout
    params = best_json(proc.stdout)
    assert params["factors"] == 8 and params["epochs"] == 1 and 0.01 <= params["learning_rate"] <= 0.1


@pytest.mark.parametrize("space, args, code, message", [
    ("{not json", (), 1, "not valid JSON"),
    ('{"epochs": [10, 20]}', (), 1, "epochs are the search's resource"),
    ('{"learning_rate": {"log-uniform": [0.3, 0.1]}}', (), 1, "space['learning_rate']: LogUniform needs"),
    ('{"learning_rate": 0.05}', ("--metric", "recall"), 1, "unknown metric 'recall'"),
    ('{"learning_rate": 0.05}', ("--holdout-file", "valid.txt"), 1, "--holdout-file names the held-out file"),
    ('{"learning_rate": 0.05}', ("--eta", "1"), 2, "expected an integer >= 2"),
    ('{"learning_rate": 0.05}', ("--budget", "0"), 2, "expected a number of seconds > 0"),
])
def test_tune_errors(tmp_path, space, args, code, message):
    path = tmp_path / "space.json"
    path.write_text(space)
    proc = run("tune", "--space", str(path), *args, check_code=code)
    assert message in proc.stderr and "Traceback" not in proc.stderr
