"""Raw-id maps and item titles in model files: round trip, no pickles, validation, old files."""

import json
import zipfile

import numpy as np
import pytest
import scipy.sparse as sp

from bpr_numpy import BPR


@pytest.fixture(scope="module")
def fitted():
    X = sp.random(12, 9, density=0.3, random_state=1, format="csr")
    model = BPR(factors=4, epochs=2, threads=1, random_state=0).fit(X)
    return model


def test_new_model_has_no_maps():
    model = BPR()
    assert model.user_ids is None and model.item_ids is None and model.item_titles is None


@pytest.mark.parametrize("user_ids, item_ids, titles", [
    (np.arange(100, 112), np.arange(9) * 7, None),
    (np.array([f"u{i}" for i in range(12)], dtype=object), np.array(list("abcdefghi")), [f"Film {i} é" for i in range(9)]),
    (np.arange(12, dtype=np.uint32), np.array(["x" * (i + 1) for i in range(9)]), np.array([f"T{i}" for i in range(9)])),
])
def test_maps_round_trip_without_pickles(fitted, tmp_path, user_ids, item_ids, titles):
    fitted.user_ids, fitted.item_ids, fitted.item_titles = user_ids, item_ids, titles
    path = tmp_path / "m.npz"
    try:
        fitted.save(path)
    finally:
        fitted.user_ids = fitted.item_ids = fitted.item_titles = None
    with np.load(path, allow_pickle=False) as data:  # would raise on an object array
        for key in ("user_ids", "item_ids"):
            assert data[key].dtype.kind in "iU"
    loaded = BPR.load(path)
    assert [str(v) for v in loaded.user_ids] == [str(v) for v in user_ids]
    assert [str(v) for v in loaded.item_ids] == [str(v) for v in item_ids]
    if np.asarray(user_ids).dtype.kind in "iu":
        assert loaded.user_ids.dtype == np.int64
    if titles is None:
        assert loaded.item_titles is None
    else:
        assert loaded.item_titles.dtype.kind == "U" and list(loaded.item_titles) == list(titles)


def test_save_rejects_a_map_of_the_wrong_length(fitted, tmp_path):
    fitted.item_ids = np.arange(5)
    try:
        with pytest.raises(ValueError, match="item_ids has 5 entries but the model has 9 items"):
            fitted.save(tmp_path / "m.npz")
    finally:
        fitted.item_ids = None


def _rewrite(src, dst, **changes):
    with np.load(src, allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    arrays.update(changes)
    meta = json.loads(arrays["meta"].tobytes())
    meta["entries"] = sorted(arrays)  # keep the listing consistent: only the changed arrays are wrong
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8)
    np.savez(dst, **arrays)


def test_load_rejects_a_map_of_the_wrong_length(fitted, tmp_path):
    fitted.save(tmp_path / "m.npz")
    _rewrite(tmp_path / "m.npz", tmp_path / "bad.npz", user_ids=np.arange(3))
    with pytest.raises(ValueError, match="user_ids has 3 entries but the model has 12 users"):
        BPR.load(tmp_path / "bad.npz")
    _rewrite(tmp_path / "m.npz", tmp_path / "bad2.npz", item_titles=np.array(["a", "b"]))
    with pytest.raises(ValueError, match="item_titles has 2 entries"):
        BPR.load(tmp_path / "bad2.npz")


def test_files_without_maps_still_load(fitted, tmp_path):
    fitted.save(tmp_path / "m.npz")
    with zipfile.ZipFile(tmp_path / "m.npz") as z:
        assert not any(name.startswith(("user_ids", "item_ids", "item_titles")) for name in z.namelist())
        meta = json.loads(np.load(tmp_path / "m.npz")["meta"].tobytes())
    assert meta["format_version"] == 1  # the maps do not bump the format
    loaded = BPR.load(tmp_path / "m.npz")
    assert loaded.user_ids is None and loaded.item_ids is None and loaded.item_titles is None
    np.testing.assert_array_equal(loaded.item_factors, fitted.item_factors)
