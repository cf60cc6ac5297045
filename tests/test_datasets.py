"""Tests of bpr_numpy.datasets: containers, loaders, downloads, splits, synthetic data.

MovieLens 100k is read from ../shared/data/ml-100k beside the repository
(GroupLens terms forbid redistributing it); those tests skip when it is
absent. Every other fixture is written to tmp_path by the tests. No test
touches the network: the URL opener is replaced.
"""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import sys
import time
import urllib.error
import zipfile
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
from _budget import examples
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import bpr_numpy.datasets._download as dl
from bpr_numpy.datasets import (
    ML100K_GENRES,
    DatasetDownloadError,
    Interactions,
    LoadSummary,
    align,
    data_home,
    fetch_movielens,
    load_adjacency_list,
    load_delimited,
    load_lightgcn,
    load_movielens,
    load_movielens_100k,
    split_leave_k_out,
    split_random,
    synthetic,
    synthetic_small,
)

ML100K = Path(__file__).parents[2] / "shared" / "data" / "ml-100k"
needs_ml100k = pytest.mark.skipif(
    not (ML100K / "u.data").is_file(), reason=f"MovieLens 100k not found at {ML100K}"
)
HYP = settings(deadline=None, max_examples=examples(40), suppress_health_check=[HealthCheck.function_scoped_fixture])


# ---------------------------------------------------------------- helpers
def pair_set(x: Interactions) -> set[tuple]:
    rows, cols = x.pairs()
    return set(zip(x.user_ids[rows].tolist(), x.item_ids[cols].tolist()))


def pair_dict(x: Interactions, values: np.ndarray) -> dict[tuple, float]:
    rows, cols = x.pairs()
    return dict(zip(zip(x.user_ids[rows].tolist(), x.item_ids[cols].tolist()), values.tolist()))


def assert_canonical(x: Interactions) -> None:
    m = x.matrix
    assert sp.isspmatrix_csr(m)
    assert m.dtype in (np.float32, np.float64)
    assert m.shape == (x.user_ids.size, x.item_ids.size)
    for r in range(m.shape[0]):
        row = m.indices[m.indptr[r] : m.indptr[r + 1]]
        assert np.all(np.diff(row) > 0)
    s = x.summary
    assert s.rows_in == s.stored + s.duplicates_merged + s.below_min_rating + s.unknown_ids_dropped + s.moved_to_other_split
    assert s.stored == m.nnz
    if x.ratings is not None:
        assert x.ratings.shape == (m.nnz,)
    if x.timestamps is not None:
        assert x.timestamps.shape == (m.nnz,)


def brute_auc(pos: np.ndarray, neg: np.ndarray) -> float:
    """AUC by comparing every positive with every negative (ties count one half)."""
    p = np.asarray(pos, dtype=float)[:, None]
    n = np.asarray(neg, dtype=float)[None, :]
    return float(np.mean((p > n) + 0.5 * (p == n)))


def write(path: Path, text: str | bytes, encoding: str = "utf-8") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text if isinstance(text, bytes) else text.encode(encoding))
    return path


def zip_dir(src: Path, dest: Path, folder: str | None = None, skip: tuple[str, ...] = ()) -> Path:
    with zipfile.ZipFile(dest, "w", zipfile.ZIP_DEFLATED) as z:
        for f in sorted(src.iterdir()):
            if f.is_file() and f.name not in skip:
                z.write(f, f"{folder}/{f.name}" if folder else f.name)
    return dest


# ---------------------------------------------------------------- Interactions.from_arrays
def test_from_arrays_int_ids_canonical_csr():
    x = Interactions.from_arrays([5, 1, 5, 3], [20, 10, 10, 30])
    assert x.user_ids.tolist() == [1, 3, 5] and x.user_ids.dtype == np.int64
    assert x.item_ids.tolist() == [10, 20, 30]
    assert (x.n_users, x.n_items, x.nnz, x.shape) == (3, 3, 4, (3, 3))
    assert x.matrix.dtype == np.float32 and x.matrix.indices.dtype == np.int32
    assert x.matrix.toarray().tolist() == [[1, 0, 0], [0, 0, 1], [1, 1, 0]]
    assert_canonical(x)
    assert "3 users" in repr(x)


def test_from_arrays_string_ids_and_lookups():
    x = Interactions.from_arrays(["bob", "alice", "bob"], ["x", "y", "y"])
    assert x.user_ids.dtype.kind == "U" and x.user_ids.tolist() == ["alice", "bob"]
    assert x.user_index("bob") == 1 and x.item_index("y") == 1
    assert x.user_indices(["bob", "alice"]).tolist() == [1, 0]
    assert x.item_indices(["y", "nope"], missing=-1).tolist() == [1, -1]
    with pytest.raises(KeyError, match="carol.*not found"):
        x.user_index("carol")
    with pytest.raises(KeyError, match="ids are strings: pass str, not int"):
        x.user_index(3)
    with pytest.raises(KeyError, match="2 item ids not found"):
        x.item_indices(["p", "q", "x"])
    y = Interactions.from_arrays([1, 2], [1, 2])
    with pytest.raises(KeyError, match="ids are integers: pass int, not str"):
        y.user_index("1")
    with pytest.raises(TypeError, match="user_indices"):
        y.user_index([1, 2])


def test_unsorted_fixed_id_space_lookup():
    x = Interactions.from_arrays(["c", "a"], ["q", "p"], user_ids=["c", "b", "a"], item_ids=["q", "p"])
    assert x.user_ids.tolist() == ["c", "b", "a"]
    assert x.user_index("a") == 2 and x.user_index("c") == 0
    assert x.matrix.toarray().tolist() == [[1, 0], [0, 0], [0, 1]]


@pytest.mark.parametrize(
    "rule, rating, ts",
    [("max", 5.0, 30), ("sum", 10.0, 30), ("last", 1.0, 30), ("first", 4.0, 10)],
)
def test_dedupe_rules(rule, rating, ts):
    # (u1, i1) occurs three times: ratings 4 @ t=10, 5 @ t=20, 1 @ t=30 (given out of time order).
    users = [1, 1, 2, 1]
    items = [1, 1, 1, 1]
    x = Interactions.from_arrays(users, items, [5, 1, 3, 4], [20, 30, 5, 10], dedupe=rule, binarize=False)
    assert x.summary.duplicates_merged == 2
    u = x.user_index(1)
    assert x.matrix[u, 0] == rating
    k = x.matrix.indptr[u]
    assert x.ratings[k] == rating and x.timestamps[k] == ts
    assert_canonical(x)


def test_dedupe_last_without_timestamps_uses_input_order():
    x = Interactions.from_arrays([1, 1, 1], [2, 2, 2], [3, 5, 4], dedupe="last", binarize=False)
    assert x.ratings.tolist() == [4.0]
    x = Interactions.from_arrays([1, 1, 1], [2, 2, 2], [3, 5, 4], dedupe="first", binarize=False)
    assert x.ratings.tolist() == [3.0]


def test_dedupe_ties_in_timestamp_break_by_input_order():
    x = Interactions.from_arrays([1, 1, 1], [2, 2, 2], [3, 5, 4], [7, 7, 7], dedupe="last", binarize=False)
    assert x.ratings.tolist() == [4.0]
    x = Interactions.from_arrays([1, 1, 1], [2, 2, 2], [3, 5, 4], [7, 7, 7], dedupe="first", binarize=False)
    assert x.ratings.tolist() == [3.0]


def test_dedupe_error_names_positions():
    with pytest.raises(ValueError, match=r"duplicate \(user, item\) pair \(user 'a', item 'x'\) at position 0 and position 2"):
        Interactions.from_arrays(["a", "b", "a"], ["x", "x", "x"], dedupe="error")


def test_min_rating_applies_after_merging():
    # The user rated the item 5, later changed it to 2.
    users, items, ratings, ts = [1, 1, 1], [7, 7, 8], [5, 2, 4], [1, 2, 3]
    last = Interactions.from_arrays(users, items, ratings, ts, dedupe="last", min_rating=4)
    assert pair_set(last) == {(1, 8)}
    assert (last.summary.duplicates_merged, last.summary.below_min_rating) == (1, 1)
    mx = Interactions.from_arrays(users, items, ratings, ts, dedupe="max", min_rating=4)
    assert pair_set(mx) == {(1, 7), (1, 8)}
    # The id space keeps every id seen, even when all its pairs fall below the threshold.
    assert last.item_ids.tolist() == [7, 8]
    assert_canonical(last)


def test_binarize_false_and_counts():
    x = Interactions.from_arrays([1, 1, 2], [3, 3, 3], dedupe="sum", binarize=False)
    assert x.matrix.toarray().tolist() == [[2.0], [1.0]]
    assert x.ratings is None
    x = Interactions.from_arrays([1, 2], [3, 3], [2.5, 4.0], binarize=False)
    assert x.matrix.data.tolist() == [2.5, 4.0]
    x = Interactions.from_arrays([1, 2], [3, 3], [2.5, 4.0])
    assert x.matrix.data.tolist() == [1.0, 1.0] and x.ratings.tolist() == [2.5, 4.0]


def test_empty_input_gives_empty_matrix():
    x = Interactions.from_arrays([], [])
    assert x.shape == (0, 0) and x.nnz == 0


def test_datetime_timestamps():
    t = np.array(["2020-01-01", "2021-01-01"], dtype="datetime64[D]")
    x = Interactions.from_arrays([1, 1], [1, 2], timestamps=t)
    assert x.timestamps.dtype == np.int64 and x.timestamps[1] > x.timestamps[0]


@pytest.mark.parametrize(
    "kwargs, exc, pattern",
    [
        (dict(users=[1, 2], items=[1]), ValueError, "same length"),
        (dict(users=[[1, 2]], items=[1]), ValueError, "1-D"),
        (dict(users=np.zeros((2, 2), int), items=[1, 2]), ValueError, "1-D"),
        (dict(users=[1, -2], items=[1, 2]), ValueError, "non-negative.*-2 at position 1"),
        (dict(users=[1.0, 2.0], items=[1, 2]), TypeError, "floats; ids must be integers or strings"),
        (dict(users=np.array([1.0, 2.0]), items=[1, 2]), TypeError, "float64; ids must be integers or strings"),
        (dict(users=[1, "a"], items=[1, 2]), TypeError, r"users\[1\] is 'a'"),
        (dict(users=[1, None], items=[1, 2]), TypeError, r"users\[1\] is None"),
        (dict(users=[True, False], items=[1, 2]), TypeError, "integers or strings"),
        (dict(users=["a", ""], items=[1, 2]), ValueError, "empty string at position 1"),
        (dict(users="ab", items=[1, 2]), TypeError, "sequence of ids"),
        (dict(users=[1, 2], items=[1, 2], ratings=[1.0, np.nan]), ValueError, "rating nan at position 1"),
        (dict(users=[1, 2], items=[1, 2], ratings=[1.0, np.inf]), ValueError, "not a finite number"),
        (dict(users=[1, 2], items=[1, 2], ratings=[1.0]), ValueError, "one value per pair"),
        (dict(users=[1, 2], items=[1, 2], ratings=["a", "b"]), TypeError, "ratings must be numbers"),
        (dict(users=[1, 2], items=[1, 2], timestamps=[1.0, np.nan]), ValueError, "timestamp nan"),
        (dict(users=[1, 2], items=[1, 2], min_rating=4), ValueError, "min_rating needs ratings"),
        (dict(users=[1, 2], items=[1, 2], ratings=[1, 2], min_rating=float("nan")), ValueError, "finite"),
        (dict(users=[1, 2], items=[1, 2], ratings=[1, 2], min_rating="4"), TypeError, "min_rating"),
        (dict(users=[1, 2], items=[1, 2], dedupe="mean"), ValueError, "dedupe must be one of"),
        (dict(users=[1, 2], items=[1, 2], unknown="skip"), ValueError, "unknown must be one of"),
        (dict(users=[1, 2], items=[1, 2], binarize="yes"), TypeError, "binarize"),
        (dict(users=[1, 2], items=[1, 2], user_ids=[1, 1, 2]), ValueError, "unique"),
    ],
)
def test_from_arrays_validation(kwargs, exc, pattern):
    users = kwargs.pop("users")
    items = kwargs.pop("items")
    with pytest.raises(exc, match=pattern):
        Interactions.from_arrays(users, items, **kwargs)


@st.composite
def raw_logs(draw):
    n = draw(st.integers(0, 40))
    users = draw(st.lists(st.integers(0, 6), min_size=n, max_size=n))
    items = draw(st.lists(st.integers(0, 6), min_size=n, max_size=n))
    ratings = draw(st.lists(st.integers(1, 5), min_size=n, max_size=n))
    ts = draw(st.lists(st.integers(0, 5), min_size=n, max_size=n))
    return users, items, ratings, ts


@HYP
@given(raw_logs(), st.sampled_from(["max", "sum", "last", "first"]), st.sampled_from([None, 3.0]), st.booleans())
def test_from_arrays_matches_dict_reference(log, rule, min_rating, string_ids):
    users, items, ratings, ts = log
    if string_ids:
        users = [f"u{u}" for u in users]
        items = [f"i{i}" for i in items]
    x = Interactions.from_arrays(users, items, ratings, ts, dedupe=rule, min_rating=min_rating, binarize=False)
    ref: dict[tuple, tuple[float, int, int]] = {}  # pair -> (rating, timestamp, position)
    for k, key in enumerate(zip(users, items)):
        r, t = float(ratings[k]), ts[k]
        if key not in ref:
            ref[key] = (r, t, k)
            continue
        r0, t0, k0 = ref[key]
        if rule == "max":
            ref[key] = (max(r0, r), max(t0, t), k0)
        elif rule == "sum":
            ref[key] = (r0 + r, max(t0, t), k0)
        elif rule == "last":
            ref[key] = (r, t, k) if (t, k) >= (t0, k0) else (r0, t0, k0)
        else:
            ref[key] = (r, t, k) if (t, k) < (t0, k0) else (r0, t0, k0)
    expected = {key: v for key, v in ref.items() if min_rating is None or v[0] >= min_rating}
    assert pair_dict(x, x.ratings) == {key: v[0] for key, v in expected.items()}
    assert pair_dict(x, x.timestamps) == {key: v[1] for key, v in expected.items()}
    assert pair_dict(x, x.matrix.data) == {key: v[0] for key, v in expected.items()}
    assert x.user_ids.tolist() == sorted(set(users)) and x.item_ids.tolist() == sorted(set(items))
    assert x.summary.duplicates_merged == len(users) - len(ref)
    assert x.summary.below_min_rating == len(ref) - len(expected)
    assert_canonical(x)


# ---------------------------------------------------------------- id spaces
def test_fixed_id_space_unknown_raise_and_drop():
    with pytest.raises(ValueError, match=r"user id 9 at position 1 is not in the given user_ids.*unknown='drop'"):
        Interactions.from_arrays([1, 9], [1, 1], user_ids=[1, 2, 3])
    x = Interactions.from_arrays([1, 9, 2], [1, 1, 5], user_ids=[1, 2, 3], item_ids=[1, 2], unknown="drop")
    assert x.shape == (3, 2) and pair_set(x) == {(1, 1)}
    assert x.summary.unknown_ids_dropped == 2
    assert_canonical(x)


def test_align_and_reindex():
    a = Interactions.from_arrays([1, 2], [10, 20], [5, 4], [1, 2])
    b = Interactions.from_arrays([3, 1], [30, 10])
    a2, b2 = align(a, b)
    assert a2.same_id_space(b2) and a2.shape == (3, 3)
    assert a2.user_ids.tolist() == [1, 2, 3] and a2.item_ids.tolist() == [10, 20, 30]
    assert pair_set(a2) == pair_set(a) and pair_set(b2) == pair_set(b)
    assert pair_dict(a2, a2.ratings) == pair_dict(a, a.ratings)
    assert align(a2, b2)[0] is a2  # already aligned: returned as is
    with pytest.raises(ValueError, match="not in the target id space"):
        a.reindex(user_ids=[1])
    c = a.reindex(user_ids=[2, 7], unknown="drop")
    assert pair_set(c) == {(2, 20)} and c.summary.unknown_ids_dropped == 1
    with pytest.raises(TypeError, match="integers and some are strings"):
        align(a, Interactions.from_arrays(["x"], ["y"]))
    assert not a.same_id_space(b)
    assert b.with_id_space_of(a2).same_id_space(a2)


def test_from_csr_and_direct_construction_checks():
    m = sp.coo_matrix((np.array([1.0, 2.0, 3.0]), (np.array([0, 0, 1]), np.array([1, 1, 0]))), shape=(2, 3))
    x = Interactions.from_csr(m, user_ids=["a", "b"])
    assert x.matrix.toarray().tolist() == [[0, 3, 0], [3, 0, 0]]
    assert x.summary.duplicates_merged == 1 and x.item_ids.tolist() == [0, 1, 2]
    bad = sp.csr_matrix((np.ones(2, np.float32), np.array([1, 0]), np.array([0, 2])), shape=(1, 2))
    with pytest.raises(ValueError, match="sorted and unique"):
        Interactions(matrix=bad, user_ids=[0], item_ids=[0, 1])
    good = sp.csr_matrix(np.eye(2, dtype=np.float32))
    with pytest.raises(ValueError, match="2 user ids"):
        Interactions(matrix=good, user_ids=[0, 1], item_ids=[0])
    with pytest.raises(ValueError, match="unique"):
        Interactions(matrix=good, user_ids=[0, 0], item_ids=[0, 1])
    with pytest.raises(TypeError, match="CSR"):
        Interactions(matrix=np.eye(2), user_ids=[0, 1], item_ids=[0, 1])
    with pytest.raises(ValueError, match="ratings must hold one value"):
        Interactions(matrix=good, user_ids=[0, 1], item_ids=[0, 1], ratings=np.ones(3))
    x = Interactions(matrix=good, user_ids=[0, 1], item_ids=[0, 1])
    assert isinstance(x.summary, LoadSummary) and x.summary.stored == 2
    with pytest.raises(ValueError, match="boolean array"):
        x.select_pairs(np.ones(3, bool))


# ---------------------------------------------------------------- load_delimited
@pytest.mark.parametrize("sep", ["\t", ",", "::", " ", ";", "|"])
@pytest.mark.parametrize("header", [False, True])
def test_load_delimited_separators(tmp_path, sep, header):
    rows = [(1, 10, 4.5, 100), (2, 10, 3.0, 50), (1, 11, 1.0, 75)]
    text = ("user" + sep + "item" + sep + "rating" + sep + "timestamp\n" if header else "")
    text += "".join(sep.join(map(str, r)) + "\n" for r in rows)
    x = load_delimited(write(tmp_path / "data.txt", text))
    assert x.user_ids.tolist() == [1, 2] and x.item_ids.tolist() == [10, 11]
    assert pair_dict(x, x.ratings) == {(1, 10): 4.5, (2, 10): 3.0, (1, 11): 1.0}
    assert pair_dict(x, x.timestamps) == {(1, 10): 100, (2, 10): 50, (1, 11): 75}
    assert x.timestamps.dtype == np.int64
    s = x.summary
    assert (s.lines_read, s.header_lines, s.rows_in) == (3 + header, int(header), 3)
    assert s.lines_read == s.rows_in + s.header_lines + s.blank_lines + s.malformed_lines
    assert_canonical(x)


def test_load_delimited_header_names_order_and_ignored_columns(tmp_path):
    text = "movieId,userId,extra,rating\n10,1,zzz,4\n11,2,yyy,2\n"
    x = load_delimited(write(tmp_path / "r.csv", text), min_rating=3)
    assert pair_set(x) == {(1, 10)}
    assert x.summary.below_min_rating == 1
    assert any("'extra' ignored" in n for n in x.summary.notes)
    with pytest.raises(ValueError, match=r"r2.csv, line 1: cannot tell the user and item columns"):
        load_delimited(write(tmp_path / "r2.csv", "a,b,c\n1,2,3\n"), header=True)


def test_load_delimited_explicit_columns_and_skip(tmp_path):
    path = write(tmp_path / "r.tsv", "x\t5\talice\t2020\nx\t3\tbob\t2021\n")
    with pytest.raises(ValueError, match="must include 'user' and 'item'"):
        load_delimited(path, columns=(None, "rating", "user", "timestamp"))
    y = load_delimited(path, columns=("item", "rating", "user", None))
    assert pair_dict(y, y.ratings) == {("alice", "x"): 5.0, ("bob", "x"): 3.0}
    assert y.timestamps is None
    with pytest.raises(ValueError, match="unknown column role 'score'"):
        load_delimited(path, columns=("item", "score", "user", None))
    with pytest.raises(ValueError, match="names a role twice"):
        load_delimited(path, columns=("item", "item", "user", None))


def test_load_delimited_id_types(tmp_path):
    x = load_delimited(write(tmp_path / "a.csv", "007,1\n7,1\nalice,2\n"))
    assert x.user_ids.dtype.kind == "U" and x.user_ids.tolist() == ["007", "7", "alice"]
    assert x.item_ids.dtype == np.int64  # every item id is a plain integer
    y = load_delimited(write(tmp_path / "b.csv", "1,2\n3,4\n"), id_type="str")
    assert y.user_ids.tolist() == ["1", "3"]
    z = load_delimited(write(tmp_path / "c.csv", "1,2\n3,4\n"), id_type="int")
    assert z.user_ids.tolist() == [1, 3]
    with pytest.raises(ValueError, match=r"c2.csv, line 2: user id -3 is negative"):
        load_delimited(write(tmp_path / "c2.csv", "1,2\n-3,4\n"), id_type="int")
    with pytest.raises(ValueError, match=r"line 2: field 1 \(user\) is not an integer: 'x'"):
        load_delimited(write(tmp_path / "c3.csv", "1,2\nx,4\n"), id_type="int")
    with pytest.raises(ValueError, match="id_type"):
        load_delimited(tmp_path / "c.csv", id_type="float")


def test_load_delimited_timestamps_and_ratings_as_floats(tmp_path):
    x = load_delimited(write(tmp_path / "t.csv", "1,2,3.5,1.5e9\n1,3,4,1600000000.25\n"))
    assert x.timestamps.dtype == np.float64
    assert pair_dict(x, x.timestamps)[(1, 3)] == 1600000000.25
    assert pair_dict(x, x.ratings)[(1, 2)] == 3.5


def test_load_delimited_crlf_bom_blank_lines_no_final_newline(tmp_path):
    raw = b"\xef\xbb\xbfuser,item\r\n\r\na,b\r\n   \r\nc,d"
    x = load_delimited(write(tmp_path / "w.csv", raw))
    assert pair_set(x) == {("a", "b"), ("c", "d")}
    s = x.summary
    assert (s.lines_read, s.header_lines, s.blank_lines, s.rows_in) == (5, 1, 2, 2)
    assert any("byte-order mark" in n for n in s.notes)


def test_load_delimited_latin1_and_utf16(tmp_path):
    x = load_delimited(write(tmp_path / "l.txt", "Zoë\tCafé\t5\n", encoding="latin-1"), encoding="latin-1")
    assert x.user_ids.tolist() == ["Zoë"] and x.item_ids.tolist() == ["Café"]
    y = load_delimited(write(tmp_path / "u.txt", "Zoë\tCafé\t5\n", encoding="utf-16"), encoding="utf-16")
    assert y.user_ids.tolist() == ["Zoë"]


@pytest.mark.parametrize(
    "text, pattern",
    [
        ("1,2,3\n1,2,3\n1,2\n", r"bad.csv, line 3: expected 3 fields separated by ',', found 2"),
        ("1,2,3\n1,2,3,4,5\n", r"bad.csv, line 2: expected 3 fields separated by ',', found 5"),
        ("1,2,3\n4,5,x\n", r"bad.csv, line 2: field 3 \(rating\) is not a number: 'x'"),
        ("1,2,3,100\n4,5,3,yesterday\n", r"bad.csv, line 2: field 4 \(timestamp\) is not a number: 'yesterday'"),
        ("1,2,3\n4,5,nan\n", r"bad.csv, line 2: field 3 \(rating\) is not a number: 'nan'"),
        ("1,2,3\n4,,3\n", r"bad.csv, line 2: field 2 \(item\) is empty"),
        ("", r"bad.csv: the file is empty"),
        ("\n  \n", r"bad.csv: the file is empty"),
        ("user,item,rating\n\n", r"bad.csv: no data lines"),
        ("user,item,rating\n1,2,3\nuser,item,rating\n4,5,3\n", r"bad.csv, line 3: .*header line in the middle"),
        ("1,2,3\n1,2,3,\n", r"bad.csv, line 2: expected 3 fields"),
        ("1,2,3\n1,2,1e999\n", r"bad.csv, line 2: field 3 \(rating\) is out of range"),
    ],
)
def test_load_delimited_malformed_input_names_file_and_line(tmp_path, text, pattern):
    with pytest.raises(ValueError, match=pattern):
        load_delimited(write(tmp_path / "bad.csv", text))


def test_load_delimited_bad_utf8_names_line(tmp_path):
    path = write(tmp_path / "enc.csv", b"a,b,1\nc,d,2\ncaf\xe9,x,3\n")
    with pytest.raises(ValueError, match=r"enc.csv, line 3: byte b'\\xe9' is not valid utf-8.*latin-1"):
        load_delimited(path)
    assert load_delimited(path, encoding="latin-1").user_ids.tolist() == ["a", "c", "café"]


def test_load_delimited_skip_bad_lines_counts_them(tmp_path):
    text = "1,2,3\n1,2\n4,5,x\n6,7,4\n"
    x = load_delimited(write(tmp_path / "s.csv", text), on_bad_line="skip")
    s = x.summary
    assert s.malformed_lines == 2 and s.rows_in == 2 and s.lines_read == 4
    assert s.malformed_examples[0].startswith("line 2: expected 3 fields")
    assert "line 3: field 3 (rating)" in s.malformed_examples[1]
    with pytest.raises(ValueError, match="no line could be parsed"):
        load_delimited(write(tmp_path / "s2.csv", "1,2,3\nx,y,z,w\n"), columns=("user", "item", "rating", None),
                       header=False, on_bad_line="skip")


def test_load_delimited_from_zip_and_errors(tmp_path):
    z = tmp_path / "d.zip"
    with zipfile.ZipFile(z, "w") as f:
        f.writestr("data/ratings.tsv", "1\t2\t5\n")
        f.writestr("other.txt", "x")
    with pytest.raises(ValueError, match="pass member="):
        load_delimited(z)
    x = load_delimited(z, member="ratings.tsv")
    assert pair_set(x) == {(1, 2)} and "d.zip:data/ratings.tsv" in x.summary.source
    with pytest.raises(FileNotFoundError, match="no member 'nope.tsv'"):
        load_delimited(z, member="nope.tsv")
    with pytest.raises(FileNotFoundError):
        load_delimited(tmp_path / "missing.csv")
    with pytest.raises(IsADirectoryError):
        load_delimited(tmp_path)


def test_load_delimited_into_fixed_space(tmp_path):
    train = load_delimited(write(tmp_path / "train.csv", "a,x\nb,y\n"))
    test = load_delimited(write(tmp_path / "test.csv", "b,x\nc,y\nb,z\n"), user_ids=train.user_ids,
                          item_ids=train.item_ids, unknown="drop")
    assert test.same_id_space(train) and pair_set(test) == {("b", "x")}
    assert test.summary.unknown_ids_dropped == 2
    with pytest.raises(ValueError, match=r"user id 'c' at .*test.csv, line 2 is not in the given user_ids"):
        load_delimited(tmp_path / "test.csv", user_ids=train.user_ids, item_ids=train.item_ids)


@HYP
@given(
    st.lists(
        st.tuples(
            st.one_of(st.integers(0, 50), st.text("abcXYZé_-", min_size=1, max_size=5)),
            st.integers(0, 30),
            st.sampled_from([0.5, 1.0, 2.5, 3.0, 4.0, 5.0]),
            st.integers(0, 2_000_000_000),
        ),
        min_size=1,
        max_size=30,
    ),
    st.sampled_from(["\t", ",", "::", " "]),
    st.booleans(),
)
def test_load_delimited_round_trip(tmp_path_factory, rows, sep, header):
    users = [str(r[0]) for r in rows]
    path = tmp_path_factory.mktemp("rt") / "data.txt"
    text = (sep.join(["user", "item", "rating", "timestamp"]) + "\n") if header else ""
    text += "".join(sep.join([u, str(r[1]), str(r[2]), str(r[3])]) + "\n" for u, r in zip(users, rows))
    write(path, text)
    x = load_delimited(path, dedupe="last")
    canon = all(u.isdigit() and (u == "0" or not u.startswith("0")) for u in users)
    expected_users = [int(u) for u in users] if canon else users
    y = Interactions.from_arrays(expected_users, [r[1] for r in rows], [r[2] for r in rows], [r[3] for r in rows],
                                 dedupe="last")
    assert x.user_ids.tolist() == y.user_ids.tolist() and x.item_ids.tolist() == y.item_ids.tolist()
    assert (x.matrix != y.matrix).nnz == 0
    assert np.array_equal(x.ratings, y.ratings) and np.array_equal(x.timestamps, y.timestamps)
    assert x.summary.header_lines == int(header)


# ---------------------------------------------------------------- LightGCN format
def test_load_lightgcn_one_id_space(tmp_path):
    d = tmp_path / "gowalla"
    write(d / "train.txt", "0 1 2 3\n1 0\n3\n2 2 4\n")  # user 3 has no items
    write(d / "test.txt", "0 4\n1 5 0\n4 1\n")  # item 5 and user 4 only in test
    train, test = load_lightgcn(d)
    assert train.same_id_space(test)
    assert train.user_ids.tolist() == [0, 1, 2, 3, 4] and train.item_ids.tolist() == [0, 1, 2, 3, 4, 5]
    assert pair_set(train) == {(0, 1), (0, 2), (0, 3), (1, 0), (2, 2), (2, 4)}
    assert pair_set(test) == {(0, 4), (1, 5), (1, 0), (4, 1)}
    assert train.matrix[train.user_index(3)].nnz == 0
    assert any("list no items" in n for n in train.summary.notes)
    assert train.summary.lines_read == 4 and train.summary.rows_in == 6
    assert_canonical(train)
    assert_canonical(test)
    z = zip_dir(d, tmp_path / "gowalla.zip", folder="gowalla")
    tz, ez = load_lightgcn(z)
    assert pair_set(tz) == pair_set(train) and pair_set(ez) == pair_set(test)


def test_load_lightgcn_errors(tmp_path):
    d = tmp_path / "bad"
    write(d / "train.txt", "0 1 2\n1 x 3\n")
    write(d / "test.txt", "0 1\n")
    with pytest.raises(ValueError, match=r"train.txt, line 2: token 2 \(item id 1\) is not an integer: 'x'"):
        load_lightgcn(d)
    write(d / "train.txt", "0 1 -2\n")
    with pytest.raises(ValueError, match=r"line 1: token 3 .* is negative"):
        load_lightgcn(d)
    (d / "test.txt").unlink()
    write(d / "train.txt", "0 1\n")
    with pytest.raises(FileNotFoundError, match="no 'test.txt'"):
        load_lightgcn(d)
    write(d / "empty.txt", "")
    with pytest.raises(ValueError, match="empty"):
        load_adjacency_list(d / "empty.txt")


def test_load_adjacency_list_single_file(tmp_path):
    x = load_adjacency_list(write(tmp_path / "a.txt", "5 1 1 2\n7\n"))
    assert x.user_ids.tolist() == [5, 7] and pair_set(x) == {(5, 1), (5, 2)}
    assert x.summary.duplicates_merged == 1


# ---------------------------------------------------------------- MovieLens 100k (real data)
@needs_ml100k
def test_ml100k_u_data_facts():
    x = load_movielens_100k(ML100K, min_rating=None, binarize=False)
    assert x.shape == (943, 1682) and x.nnz == 100_000
    assert x.user_ids.tolist() == list(range(1, 944)) and x.item_ids.tolist() == list(range(1, 1683))
    assert set(np.unique(x.matrix.data).tolist()) == {1.0, 2.0, 3.0, 4.0, 5.0}
    assert np.array_equal(x.matrix.data, x.ratings)
    assert x.summary.lines_read == 100_000 and x.summary.duplicates_merged == 0
    assert np.diff(x.matrix.indptr).min() == 20  # every user rated at least 20 movies
    assert_canonical(x)
    pos = load_movielens_100k(ML100K)
    assert pos.nnz == int((x.ratings >= 4).sum()) and pos.summary.below_min_rating == 100_000 - pos.nnz


@needs_ml100k
def test_ml100k_ua_split_facts():
    train, test = load_movielens_100k(ML100K, "ua", min_rating=None)
    full = load_movielens_100k(ML100K, min_rating=None)
    assert train.shape == test.shape == (943, 1682) and train.same_id_space(test) and train.same_id_space(full)
    assert test.nnz == 9_430 and np.all(np.diff(test.matrix.indptr) == 10)
    assert train.nnz == 90_570
    assert not pair_set(train) & pair_set(test)
    assert pair_set(train) | pair_set(test) == pair_set(full)
    both = {**pair_dict(train, train.ratings), **pair_dict(test, test.ratings)}
    assert both == pair_dict(full, full.ratings)
    pos_train, pos_test = load_movielens_100k(ML100K, "ua")
    assert pos_train.nnz == 49_906
    assert pos_train.shape == pos_test.shape == (943, 1682)


@needs_ml100k
def test_ml100k_side_tables():
    x = load_movielens_100k(ML100K)
    toy = x.item_index(1)
    assert x.item_titles[toy] == "Toy Story (1995)"
    assert x.item_feature_names == ML100K_GENRES and x.item_features.shape == (1682, 19)
    flags = {x.item_feature_names[j] for j in np.flatnonzero(x.item_features[toy])}
    assert flags == {"Animation", "Children's", "Comedy"}
    assert x.item_info["release_date"][toy] == "01-Jan-1995"
    assert any(any(ord(c) > 127 for c in t) for t in x.item_titles)  # Latin-1 titles decoded
    u1 = x.user_index(1)
    uf = x.user_features
    assert (uf["age"][u1], uf["gender"][u1], uf["occupation"][u1], uf["zip_code"][u1]) == (24, "M", "technician", "85711")


@needs_ml100k
def test_ml100k_from_zip_and_detection(tmp_path):
    z = zip_dir(ML100K, tmp_path / "ml-100k.zip", folder="ml-100k", skip=("ub.base", "ub.test"))
    a_train, a_test = load_movielens_100k(z, "ua")
    b_train, b_test = load_movielens(ML100K, split="ua")
    assert (a_train.matrix != b_train.matrix).nnz == 0 and (a_test.matrix != b_test.matrix).nnz == 0
    assert "ml-100k.zip:ml-100k/ua.base" in a_train.summary.source
    with pytest.raises(FileNotFoundError, match="no 'ub.base'"):
        load_movielens_100k(z, "ub")
    with pytest.raises(ValueError, match="split must be None or one of"):
        load_movielens_100k(z, "uc")
    bad = write(tmp_path / "broken.zip", b"PK\x03\x04 this is not really a zip")
    with pytest.raises(ValueError, match="not a zip archive|not a readable zip"):
        load_movielens(bad)
    truncated = write(tmp_path / "trunc.zip", z.read_bytes()[: z.stat().st_size // 2])
    with pytest.raises((ValueError, FileNotFoundError)):
        load_movielens_100k(truncated)


# ---------------------------------------------------------------- other MovieLens formats (tiny fixtures)
def _ml1m(d: Path) -> Path:
    write(d / "ratings.dat", "1::10::5::978300760\n1::20::3::978302109\n2::10::4::978301968\n")
    write(d / "movies.dat", "10::Misérables, Les (1995)::Drama|Musical\n20::Toy Story (1995)::Animation|Children's\n"
          "30::Nobody Rates Me (1999)::Drama\n", encoding="latin-1")
    write(d / "users.dat", "1::F::1::10::48067\n2::M::56::16::70072\n3::M::25::15::55117\n")
    return d


def test_load_movielens_1m_format(tmp_path):
    x = load_movielens(_ml1m(tmp_path / "ml-1m"), min_rating=None)
    assert x.shape == (3, 3)  # user 3 and movie 30 come from users.dat / movies.dat
    assert pair_dict(x, x.ratings) == {(1, 10): 5.0, (1, 20): 3.0, (2, 10): 4.0}
    assert x.item_titles[x.item_index(10)] == "Misérables, Les (1995)"
    assert set(x.item_feature_names) == {"Drama", "Musical", "Animation", "Children's"}
    assert x.user_features["gender"][x.user_index(2)] == "M" and x.user_features["age"][x.user_index(2)] == 56
    assert "MovieLens release detected: ml-1m" in x.summary.notes
    assert "movies file decoded as latin-1" in x.summary.notes
    y = load_movielens(zip_dir(tmp_path / "ml-1m", tmp_path / "ml-1m.zip", folder="ml-1m"))
    assert pair_set(y) == {(1, 10), (2, 10)}
    with pytest.raises(ValueError, match="only for MovieLens 100k"):
        load_movielens(tmp_path / "ml-1m", split="ua")


def test_load_movielens_10m_format(tmp_path):
    d = tmp_path / "ml-10M100K"
    write(d / "ratings.dat", "1::122::5::838985046\n1::185::4.5::838983525\n7::122::3.5::1\n")
    write(d / "movies.dat", "122::Boomerang (1992)::Comedy|Romance\n185::Net, The (1995)::Action|Crime|Thriller\n")
    x = load_movielens(tmp_path)  # the folder holding ml-10M100K
    assert "MovieLens release detected: ml-10m" in x.summary.notes
    assert pair_set(x) == {(1, 122), (1, 185)}
    assert x.user_ids.tolist() == [1, 7]  # user 7's only rating is below 4 but the id stays
    assert x.user_features == {}


def test_load_movielens_csv_format(tmp_path):
    d = tmp_path / "ml-20m"
    write(d / "ratings.csv", "userId,movieId,rating,timestamp\n1,2,3.5,1112486027\n1,29,4.0,1112484676\n"
          "2,2,5.0,974820889\n")
    write(d / "movies.csv", 'movieId,title,genres\n2,Jumanji (1995),Adventure|Children|Fantasy\n'
          '29,"City of Lost Children, The (Cité des enfants perdus, La) (1995)",Adventure|Drama\n'
          "99,Nothing (2000),(no genres listed)\n")
    z = zip_dir(d, tmp_path / "ml-20m.zip", folder="ml-20m")
    x = load_movielens(z, min_rating=None)
    assert "MovieLens release detected: ml-20m" in x.summary.notes
    assert x.summary.header_lines == 1 and x.summary.lines_read == 4
    assert x.item_ids.tolist() == [2, 29, 99]
    assert x.item_titles[1].startswith("City of Lost Children, The (Cité")
    assert "(no genres listed)" not in x.item_feature_names
    assert x.item_features[x.item_index(99)].sum() == 0
    write(d / "ratings.csv", "user,movie,rating,timestamp\n1,2,3,4\n")
    with pytest.raises(ValueError, match=r"ratings.csv, line 1: expected the header userId,movieId,rating,timestamp"):
        load_movielens(d)
    write(d / "ratings.csv", "userId,movieId,rating,timestamp\n1,2,3.5,1112486027\n1,2,x,5\n")
    with pytest.raises(ValueError, match=r"ratings.csv, line 3: field 3 \(rating\) is not a number: 'x'"):
        load_movielens(d)


def test_load_movielens_missing_files(tmp_path):
    write(tmp_path / "empty" / "README.txt", "nothing here")
    with pytest.raises(FileNotFoundError, match="no MovieLens ratings file.*README.txt"):
        load_movielens(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_movielens(tmp_path / "nope")
    with pytest.raises(ValueError, match="pass the path"):
        load_movielens()


# ---------------------------------------------------------------- downloads (network replaced)
class _FakeResponse(io.BytesIO):
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _fake_100k_zip() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("ml-100k/u.data", "1\t1\t5\t881250949\n2\t1\t3\t891717742\n1\t2\t4\t878887116\n")
        z.writestr("ml-100k/ua.base", "1\t1\t5\t881250949\n2\t1\t3\t891717742\n")
        z.writestr("ml-100k/ua.test", "1\t2\t4\t878887116\n")
    return buf.getvalue()


@pytest.fixture
def fake_archive(monkeypatch):
    payload = _fake_100k_zip()
    calls = []

    def opener(url, timeout):
        calls.append((url, timeout))
        return _FakeResponse(payload)

    monkeypatch.setattr(dl, "_urlopen", opener)
    monkeypatch.setitem(dl.MOVIELENS_ARCHIVES, "ml-100k", (dl.MOVIELENS_ARCHIVES["ml-100k"][0],
                                                           hashlib.sha256(payload).hexdigest()))
    monkeypatch.delenv("BPR_NUMPY_OFFLINE", raising=False)
    return payload, calls


def test_fetch_downloads_verifies_and_caches(tmp_path, fake_archive, monkeypatch):
    payload, calls = fake_archive
    path = fetch_movielens("100k", tmp_path)
    assert path == tmp_path / "ml-100k.zip" and path.read_bytes() == payload
    assert len(calls) == 1 and calls[0][0] == "https://files.grouplens.org/datasets/movielens/ml-100k.zip"
    assert calls[0][1] <= 30
    assert [p.name for p in tmp_path.iterdir()] == ["ml-100k.zip"]  # no temp file left behind
    fetch_movielens("ml-100k", tmp_path)
    assert len(calls) == 1  # verified cache hit
    x = load_movielens(name="ml-100k", cache_dir=tmp_path)
    assert pair_set(x) == {(1, 1), (1, 2)}
    train, test = load_movielens_100k(split="ua", cache_dir=tmp_path)
    assert train.shape == test.shape == (2, 2)


def test_fetch_checksum_mismatch_keeps_nothing(tmp_path, fake_archive, monkeypatch):
    monkeypatch.setitem(dl.MOVIELENS_ARCHIVES, "ml-100k", ("https://example.invalid/ml-100k.zip", "0" * 64))
    with pytest.raises(ValueError, match="SHA-256 .* expected 0000"):
        fetch_movielens("ml-100k", tmp_path)
    assert list(tmp_path.iterdir()) == []
    write(tmp_path / "ml-100k.zip", b"corrupt")
    with pytest.raises(ValueError, match="corrupt or not the official archive"):
        fetch_movielens("ml-100k", tmp_path)


def test_fetch_without_network_fails_fast_with_advice(tmp_path, monkeypatch):
    def no_network(url, timeout):
        raise urllib.error.URLError(OSError(101, "Network is unreachable"))

    monkeypatch.setattr(dl, "_urlopen", no_network)
    monkeypatch.delenv("BPR_NUMPY_OFFLINE", raising=False)
    t0 = time.perf_counter()
    with pytest.raises(DatasetDownloadError, match=r"Network is unreachable.*load_movielens\('/path/to/ml-1m.zip'\)"):
        fetch_movielens("ml-1m", tmp_path)
    assert time.perf_counter() - t0 < 5
    assert [p for p in tmp_path.iterdir()] == []
    with pytest.raises(DatasetDownloadError):
        load_movielens(name="ml-1m", download=True, cache_dir=tmp_path)
    with pytest.raises(FileNotFoundError, match="download=True"):
        load_movielens(name="ml-1m", cache_dir=tmp_path)


def test_offline_env_and_data_home(tmp_path, monkeypatch):
    def must_not_be_called(url, timeout):  # pragma: no cover - the point is that it is not called
        raise AssertionError("network used")

    monkeypatch.setattr(dl, "_urlopen", must_not_be_called)
    monkeypatch.setenv("BPR_NUMPY_OFFLINE", "1")
    monkeypatch.setenv("BPR_NUMPY_DATA", str(tmp_path / "cache"))
    assert data_home() == tmp_path / "cache"
    assert data_home(tmp_path / "x") == tmp_path / "x"
    with pytest.raises(DatasetDownloadError, match="BPR_NUMPY_OFFLINE"):
        fetch_movielens("ml-20m")
    monkeypatch.delenv("BPR_NUMPY_DATA")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert data_home() == tmp_path / "xdg" / "bpr_numpy"
    with pytest.raises(ValueError, match="unknown MovieLens data set"):
        fetch_movielens("ml-2m", tmp_path)


def test_unpinned_archive_is_trusted_on_first_use(tmp_path, monkeypatch):
    payload = _fake_100k_zip()
    monkeypatch.setattr(dl, "_urlopen", lambda url, timeout: _FakeResponse(payload))
    monkeypatch.delenv("BPR_NUMPY_OFFLINE", raising=False)
    path = fetch_movielens("ml-latest-small", tmp_path)
    record = tmp_path / "ml-latest-small.zip.sha256"
    assert record.read_text().split()[0] == hashlib.sha256(payload).hexdigest()
    assert fetch_movielens("ml-latest-small", tmp_path) == path
    path.write_bytes(payload + b"tampered")
    with pytest.raises(ValueError, match="corrupt or not the official archive"):
        fetch_movielens("ml-latest-small", tmp_path)
    monkeypatch.setattr(dl, "_urlopen", lambda url, timeout: _FakeResponse(b"<html>proxy error</html>"))
    record.unlink()
    path.unlink()
    with pytest.raises(ValueError, match="not a zip archive"):
        fetch_movielens("ml-latest-small", tmp_path)
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------- splits
@st.composite
def interactions(draw):
    n_users = draw(st.integers(1, 12))
    n_items = draw(st.integers(1, 12))
    cells = draw(st.sets(st.tuples(st.integers(0, n_users - 1), st.integers(0, n_items - 1)), min_size=1, max_size=60))
    cells = sorted(cells)
    ts = draw(st.lists(st.integers(0, 4), min_size=len(cells), max_size=len(cells)))
    users = [c[0] for c in cells]
    items = [c[1] for c in cells]
    return Interactions.from_arrays(users, items, np.arange(len(cells)) % 5 + 1.0, ts)


def _check_split(x, train, test):
    assert train.same_id_space(x) and test.same_id_space(x)
    assert train.shape == test.shape == x.shape
    assert not pair_set(train) & pair_set(test)
    assert pair_set(train) | pair_set(test) == pair_set(x)
    assert train.nnz + test.nnz == x.nnz
    full_r, full_t = pair_dict(x, x.ratings), pair_dict(x, x.timestamps)
    for part in (train, test):
        assert pair_dict(part, part.ratings) == {k: full_r[k] for k in pair_set(part)}
        assert pair_dict(part, part.timestamps) == {k: full_t[k] for k in pair_set(part)}
        assert_canonical(part)


@HYP
@given(interactions(), st.floats(0.05, 0.95), st.integers(0, 2**32))
def test_split_random_properties(x, fraction, seed):
    train, test = split_random(x, fraction, random_state=seed)
    _check_split(x, train, test)
    assert test.nnz == round(fraction * x.nnz)
    again = split_random(x, fraction, random_state=seed)
    assert pair_set(again[1]) == pair_set(test)


@HYP
@given(interactions(), st.integers(1, 3), st.integers(0, 2), st.sampled_from(["random", "latest"]), st.integers(0, 99))
def test_split_leave_k_out_properties(x, k, min_train, strategy, seed):
    train, test = split_leave_k_out(x, k, strategy=strategy, random_state=seed, min_train=min_train)
    _check_split(x, train, test)
    counts = np.diff(x.matrix.indptr)
    got = np.diff(test.matrix.indptr)
    assert np.array_equal(got, np.where(counts >= k + min_train, k, 0))
    again = split_leave_k_out(x, k, strategy=strategy, random_state=seed, min_train=min_train)
    assert pair_set(again[1]) == pair_set(test)
    if strategy == "latest":
        # The held-out pairs are the k latest of each user (ties: larger item index is later).
        for u in np.flatnonzero(counts >= k + min_train):
            a, b = x.matrix.indptr[u], x.matrix.indptr[u + 1]
            order = sorted(range(a, b), key=lambda p: (x.timestamps[p], x.matrix.indices[p]))
            want = {int(x.matrix.indices[p]) for p in order[-k:]}
            have = set(test.matrix.indices[test.matrix.indptr[u] : test.matrix.indptr[u + 1]].tolist())
            assert have == want


def test_split_notes_and_generator_seed():
    x = synthetic(50, 40, 600, random_state=3)
    rng = np.random.default_rng(5)
    a = split_leave_k_out(x, 2, random_state=rng)
    b = split_leave_k_out(x, 2, random_state=rng)  # the generator advanced: another split
    assert pair_set(a[1]) != pair_set(b[1])
    assert "users hold out 2 pairs" in a[1].summary.notes[-1]
    assert a[0].summary.moved_to_other_split == a[1].nnz


@pytest.mark.parametrize(
    "call, exc, pattern",
    [
        (lambda x: split_random(x, 0.0), ValueError, "strictly between 0 and 1"),
        (lambda x: split_random(x, 1.5), ValueError, "strictly between 0 and 1"),
        (lambda x: split_random(x, float("nan")), ValueError, "strictly between"),
        (lambda x: split_random(x, "0.2"), TypeError, "test_fraction"),
        (lambda x: split_random(x.matrix, 0.2), TypeError, "expected an Interactions"),
        (lambda x: split_random(x, 0.2, random_state="seed"), TypeError, "random_state"),
        (lambda x: split_random(x, 0.2, random_state=-1), ValueError, "non-negative"),
        (lambda x: split_leave_k_out(x, 0), ValueError, "k must be >= 1"),
        (lambda x: split_leave_k_out(x, 1.5), TypeError, "k must be an integer"),
        (lambda x: split_leave_k_out(x, 1, min_train=-1), ValueError, "min_train"),
        (lambda x: split_leave_k_out(x, 1, strategy="oldest"), ValueError, "strategy"),
        (lambda x: split_leave_k_out(x, 1, strategy="latest"), ValueError, "needs timestamps"),
    ],
)
def test_split_validation(call, exc, pattern):
    x = Interactions.from_arrays([1, 1, 2], [1, 2, 1])
    with pytest.raises(exc, match=pattern):
        call(x)


# ---------------------------------------------------------------- synthetic
def test_synthetic_exact_deterministic_canonical():
    a = synthetic(300, 200, 5_000, random_state=7)
    b = synthetic(300, 200, 5_000, random_state=7, chunk_users=13)  # other blocking, same data
    c = synthetic(300, 200, 5_000, random_state=8)
    assert a.shape == (300, 200) and a.nnz == 5_000
    assert (a.matrix != b.matrix).nnz == 0
    assert (a.matrix != c.matrix).nnz > 0
    assert a.matrix.dtype == np.float32 and a.matrix.indices.dtype == np.int32
    assert np.all(np.diff(a.matrix.indptr) >= 1)
    assert_canonical(a)
    e = synthetic(300, 200, 5_000, random_state=7, parallel=True)  # threads do not change the data
    assert (a.matrix != e.matrix).nnz == 0
    d = synthetic(30, 20, 100, dtype=np.float64, random_state=np.random.default_rng(1))
    assert d.matrix.dtype == np.float64 and d.nnz == 100


def test_synthetic_power_laws_and_caps():
    x = synthetic(2_000, 1_000, 60_000, popularity_exponent=1.0, activity_exponent=0.8, random_state=1)
    item_deg = np.sort(np.bincount(x.matrix.indices, minlength=x.n_items))[::-1]
    user_deg = np.sort(np.diff(x.matrix.indptr))[::-1]
    assert item_deg[:100].sum() > 0.3 * x.nnz  # the top 10% of items hold far more than 10% of pairs
    assert user_deg[:200].sum() > 0.3 * x.nnz
    assert user_deg.max() <= x.n_items // 2 and user_deg.min() >= 1
    flat = synthetic(100, 50, 1_000, popularity_exponent=0.0, activity_exponent=0.0, affinity_scale=0.0)
    assert np.all(np.diff(flat.matrix.indptr) == 10)
    full = synthetic(10, 8, 80, random_state=2)  # every cell
    assert full.matrix.toarray().min() == 1.0


def test_synthetic_heavy_users_use_exact_path():
    # Rows above a quarter of the catalogue are drawn by Gumbel top-k over all items.
    x, truth = synthetic(20, 400, 4_000, activity_exponent=0.0, max_items_per_user=300, return_truth=True,
                         random_state=4)
    assert np.all(np.diff(x.matrix.indptr) == 200)
    assert_canonical(x)
    # The planted scores of the drawn items beat those of the others.
    u = np.repeat(np.arange(20), 400)
    i = np.tile(np.arange(400), 20)
    drawn = np.asarray(x.matrix.toarray().reshape(-1), dtype=bool)
    s = truth.scores(u, i)
    assert brute_auc(s[drawn], s[~drawn]) > 0.75


def test_synthetic_planted_structure_is_learnable():
    x, truth = synthetic_small(return_truth=True)
    assert x.shape == (2_000, 1_000) and x.nnz == 100_000
    train, test = split_leave_k_out(x, 1, random_state=0)
    aff, score = [], []
    for u in range(0, x.n_users, 10):
        pos = test.matrix.indices[test.matrix.indptr[u] : test.matrix.indptr[u + 1]]
        seen = np.zeros(x.n_items, bool)
        seen[x.matrix.indices[x.matrix.indptr[u] : x.matrix.indptr[u + 1]]] = True
        neg = np.flatnonzero(~seen)
        if pos.size == 0 or neg.size == 0:
            continue
        aff.append(brute_auc(truth.affinity(u, pos), truth.affinity(u, neg)))
        score.append(brute_auc(truth.scores(u, pos), truth.scores(u, neg)))
    assert np.mean(aff) > 0.6  # personal taste alone
    assert np.mean(score) > 0.7  # taste and popularity


def test_synthetic_small_is_fast():
    synthetic_small()  # compiles (or loads cached machine code)
    t0 = time.perf_counter()
    synthetic_small(random_state=1)
    assert time.perf_counter() - t0 < 1.0


@pytest.mark.parametrize(
    "kwargs, exc, pattern",
    [
        (dict(n_users=2, n_items=2, nnz=5), ValueError, "exceeds"),
        (dict(n_users=0), ValueError, "n_users must be >= 1"),
        (dict(n_items=2.5), TypeError, "n_items must be an integer"),
        (dict(popularity_exponent=-1), ValueError, "popularity_exponent"),
        (dict(affinity_scale=float("inf")), ValueError, "affinity_scale"),
        (dict(dtype=np.int32), TypeError, "dtype"),
        (dict(random_state="x"), TypeError, "random_state"),
        (dict(parallel="yes"), TypeError, "parallel"),
        (dict(n_users=10, n_items=10, nnz=60, max_items_per_user=5), ValueError, "cannot be reached"),
        (dict(n_users=10, n_items=10, nnz=60, max_items_per_user=11), ValueError, "exceeds n_items"),
    ],
)
def test_synthetic_validation(kwargs, exc, pattern):
    args = dict(n_users=10, n_items=10, nnz=20)
    args.update(kwargs)
    with pytest.raises(exc, match=pattern):
        synthetic(**args)


# ---------------------------------------------------------------- import cost
def test_import_is_cheap():
    code = (
        "import sys, bpr_numpy.datasets\n"
        "heavy = [m for m in ('bpr_numpy.datasets._parse_kernels', 'bpr_numpy.datasets._csr_kernels',"
        " 'bpr_numpy.datasets._synth_kernels', 'urllib.request') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).parents[1]))
    subprocess.run([sys.executable, "-c", code], check=True, env=env)


def test_utf8_validation_in_slices_reports_the_right_line(tmp_path, monkeypatch):
    import bpr_numpy.datasets._parsing as parsing

    monkeypatch.setattr(parsing, "_VALIDATE_CHUNK", 8)  # many slices, cut at line ends
    lines = [f"usér{k},ïtem{k % 3},{k % 5 + 1}" for k in range(12)]
    raw = ("\n".join(lines[:6]) + "\n").encode() + b"bad\xff,x,1\n" + ("\n".join(lines[6:]) + "\n").encode()
    with pytest.raises(ValueError, match=r"v.csv, line 7: byte b'\\xff' is not valid utf-8"):
        load_delimited(write(tmp_path / "v.csv", raw))
    ok = load_delimited(write(tmp_path / "ok.csv", "\n".join(lines) + "\n"))
    assert ok.n_users == 12 and "usér3" in ok.user_ids.tolist()


def test_csr_check_in_slices_finds_unsorted_rows(monkeypatch):
    import bpr_numpy.datasets._csr as csr

    monkeypatch.setattr(csr, "_CHECK_CHUNK", 3)
    rng = np.random.default_rng(0)
    for _ in range(100):
        n, m = int(rng.integers(1, 6)), int(rng.integers(2, 7))
        mat = sp.csr_matrix((rng.random((n, m)) < 0.6).astype(np.float32))
        Interactions(matrix=mat, user_ids=np.arange(n), item_ids=np.arange(m))
        long_rows = [r for r in range(n) if mat.indptr[r + 1] - mat.indptr[r] >= 2]
        if long_rows:
            a = mat.indptr[long_rows[-1]]
            bad = mat.copy()
            bad.indices[a], bad.indices[a + 1] = bad.indices[a + 1], bad.indices[a]
            with pytest.raises(ValueError, match="sorted and unique"):
                Interactions(matrix=bad, user_ids=np.arange(n), item_ids=np.arange(m))


@pytest.mark.parametrize("files, release", [
    (["u.data"], "ml-100k"), (["ml-100k/ua.base"], "ml-100k"), (["ratings.dat", "users.dat"], "ml-1m"),
    (["ml-10M100K/ratings.dat"], "ml-10m"), (["ratings.csv"], "ml-csv"), (["train.txt", "test.txt"], "lightgcn"),
    (["train.txt", "valid.txt"], "lightgcn"), (["train.txt"], None), (["notes.md"], None),
])
def test_detect_release_names_what_a_folder_or_zip_holds(tmp_path, files, release):
    from bpr_numpy import datasets

    folder = tmp_path / "data"
    for name in files:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text("1\t2\t5\t0\n")
    with zipfile.ZipFile(tmp_path / "data.zip", "w") as archive:
        for name in files:
            archive.write(folder / name, name)
    for path in (folder, tmp_path / "data.zip"):
        found, listing = datasets.detect_release(path)
        assert found == release and files[0].split("/")[-1] in listing
        assert release is None or release in datasets.RELEASES
