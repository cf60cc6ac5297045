"""pandas in and out: interactions from a DataFrame with ids of any type, results as DataFrames.

pandas is optional at run time (imported only by ``datasets.from_dataframe`` and ``as_frame=True``)
and a test dependency.
"""

import subprocess
import sys
import uuid

import numpy as np
import pytest

from bpr_numpy import BPR, metrics
from bpr_numpy.datasets import Interactions, from_dataframe, split_random

pd = pytest.importorskip("pandas")


def _clicks(seed=0, n=2000, n_users=80, n_items=50):
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "user": rng.integers(0, n_users, n),
        "item": rng.choice([f"film {k}" for k in range(n_items)], n),
        "rating": rng.integers(1, 6, n).astype(float),
        "when": pd.to_datetime(rng.integers(10**9, 11**9, n), unit="s"),
    })


def test_a_dataframe_gives_what_the_same_arrays_give():
    frame = _clicks()
    got = from_dataframe(frame, rating="rating", timestamp="when", min_rating=3.0, dedupe="last")
    want = Interactions.from_arrays(frame["user"].to_numpy(), frame["item"].to_numpy().astype(str),
                                    frame["rating"].to_numpy(), frame["when"].to_numpy(), min_rating=3.0,
                                    dedupe="last")
    assert (got.matrix != want.matrix).nnz == 0
    np.testing.assert_array_equal(got.user_ids, want.user_ids)
    np.testing.assert_array_equal(got.item_ids, want.item_ids)
    np.testing.assert_array_equal(got.timestamps, want.timestamps)


@pytest.mark.parametrize("make, expected", [
    (lambda: pd.Series([3, 1, 3], dtype="Int64"), [1, 3]),                        # nullable integers
    (lambda: pd.Series(["b", "a", "b"], dtype="string"), ["a", "b"]),              # pandas strings
    (lambda: pd.Series(pd.Categorical(["x", "y", "x"])), ["x", "y"]),              # categorical of strings
    (lambda: pd.Series(pd.Categorical([7, 5, 7])), [5, 7]),                        # categorical of integers
    (lambda: pd.Series([-1, 2, -1]), ["-1", "2"]),                                 # negative integers: strings
    (lambda: pd.Series([uuid.UUID(int=2), uuid.UUID(int=1), uuid.UUID(int=2)]),
     [str(uuid.UUID(int=1)), str(uuid.UUID(int=2))]),                              # any other object: str()
    (lambda: pd.Series(pd.to_datetime(["2024-01-02", "2024-01-01", "2024-01-02"])),
     ["2024-01-01 00:00:00", "2024-01-02 00:00:00"]),                              # dates
])
def test_ids_of_any_type_become_integers_or_strings(make, expected):
    users = make()
    data = from_dataframe(pd.DataFrame({"user": users, "item": [1, 2, 2]}))
    assert list(data.user_ids) == expected
    first = users.iloc[0]
    assert data.user_index(first if isinstance(expected[0], (int, np.integer)) else str(first)) == expected.index(
        first if isinstance(expected[0], (int, np.integer)) else str(first))


@pytest.mark.parametrize("frame, error, message", [
    (pd.DataFrame({"user": [1.0, 2.0], "item": [1, 2]}), TypeError, "holds floats.*astype"),
    (pd.DataFrame({"user": [True, False], "item": [1, 2]}), TypeError, "booleans"),
    (pd.DataFrame({"user": [1, "1"], "item": [1, 2]}), ValueError, "same string"),
    (pd.DataFrame({"user": ["a", None], "item": [1, 2]}, index=[10, 11]), ValueError, "missing value at row 11"),
    (pd.DataFrame({"user": ["a", "b"]}), ValueError, "no column item='item'.*'user'"),
    (pd.DataFrame({"user": ["a", "b"], "item": [1, 2], "rating": ["good", "bad"]}), TypeError, "'rating' must be numeric"),
    ([("a", 1)], TypeError, "pandas DataFrame"),
])
def test_bad_frames_are_named(frame, error, message):
    rating = "rating" if isinstance(frame, pd.DataFrame) and "rating" in frame else None
    with pytest.raises(error, match=message):
        from_dataframe(frame, rating=rating)


def test_time_zones_become_utc():
    frame = pd.DataFrame({"user": [1, 1], "item": [1, 2],
                          "when": pd.to_datetime(["2024-01-01 12:00", "2024-01-01 13:00"]).tz_localize("Europe/Paris")})
    data = from_dataframe(frame, timestamp="when")
    assert data.timestamps[0] == np.datetime64("2024-01-01T11:00", "ns").astype(np.int64)  # stored as int64 ns


def test_fit_on_interactions_keeps_their_ids_and_recommend_gives_a_frame(tmp_path):
    data = from_dataframe(_clicks(seed=1), rating="rating", min_rating=3.0)
    train, test = split_random(data, 0.2, random_state=0)
    model = BPR(factors=6, epochs=5, threads=1, random_state=0).fit(train)
    np.testing.assert_array_equal(model.user_ids, train.user_ids)
    np.testing.assert_array_equal(model.item_ids, train.item_ids)
    items, scores = model.recommend([0, 3], 4)
    frame = model.recommend([0, 3], 4, as_frame=True)
    assert list(frame.columns) == ["user", "user_id", "rank", "item", "item_id", "score"]
    np.testing.assert_array_equal(frame["item"].to_numpy(), items.ravel())
    np.testing.assert_array_equal(frame["score"].to_numpy(), scores.ravel())
    assert list(frame["rank"]) == [1, 2, 3, 4] * 2 and list(frame["user"]) == [0] * 4 + [3] * 4
    assert list(frame["item_id"]) == list(train.item_ids[items.ravel()])
    assert list(frame["user_id"]) == [train.user_ids[0]] * 4 + [train.user_ids[3]] * 4
    # The ids survive a save and a load, and partial_fit refuses another id space.
    model.save(tmp_path / "m.npz")
    assert list(BPR.load(tmp_path / "m.npz").recommend(0, 4, as_frame=True)["item_id"]) == list(frame["item_id"][:4])
    other = Interactions.from_csr(train.matrix, user_ids=np.arange(train.n_users) + 1000, item_ids=train.item_ids)
    with pytest.raises(ValueError, match="user_ids differ"):
        model.partial_fit(other)
    model.partial_fit(train)


def test_new_users_vectors_and_padding_in_a_frame():
    data = from_dataframe(_clicks(seed=2, n_items=6), rating="rating")
    model = BPR(factors=3, epochs=2, threads=1, random_state=0).fit(data)
    liked = data.matrix[:2]
    frame = model.recommend(user_factors=model.user_factors[:2], user_items=liked, n=6, as_frame=True)
    assert (frame["user"] == -1).all() and frame["user_id"].isna().all()
    assert len(frame) == 12 - liked.nnz  # liked items are left out, not padded in


def test_evaluate_gives_per_user_values_as_a_frame():
    data = from_dataframe(_clicks(seed=3), rating="rating", min_rating=3.0)
    train, test = split_random(data, 0.2, random_state=0)
    model = BPR(factors=6, epochs=5, threads=1, random_state=0).fit(train)
    plain = metrics.evaluate(model, train.matrix, test.matrix, metrics=["auc", "ndcg"], per_user=True)
    framed = metrics.evaluate(model, train.matrix, test.matrix, metrics=["auc", "ndcg"], per_user=True, as_frame=True)
    per = framed["per_user"]
    assert list(per.columns) == ["auc", "ndcg@10"] and per.index.name == "user"
    np.testing.assert_array_equal(per.index.to_numpy(), plain["users"])
    np.testing.assert_array_equal(per["auc"].to_numpy(), plain["per_user"]["auc"])
    assert per["auc"].mean() == pytest.approx(plain["auc"])
    with pytest.raises(ValueError, match="per_user=True"):
        metrics.evaluate(model, train.matrix, test.matrix, as_frame=True)


def test_pandas_is_imported_only_when_asked():
    code = ("import sys, bpr_numpy, bpr_numpy.datasets, bpr_numpy.metrics; from bpr_numpy import BPR; "
            "assert 'pandas' not in sys.modules, 'pandas imported'")
    subprocess.run([sys.executable, "-c", code], check=True)
