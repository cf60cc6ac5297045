"""Damaged files: model files (truncated, bit-flipped, foreign, hostile), data files, killed saves.

Loading a damaged model file raises ValueError naming the file (never another
exception, never a half-built model; a flip that misses every checked byte
loads the very same model). Malformed data files raise ValueError naming the
file and the line. A save killed by SIGKILL leaves the old file or the new one.
"""

from __future__ import annotations

import io
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
from _budget import examples
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bpr_numpy import BPR
from bpr_numpy.datasets import Interactions, load_adjacency_list, load_delimited

REPO = Path(__file__).resolve().parents[1]
SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                                     HealthCheck.data_too_large])
REFUSED = r"is not a (readable|valid) bpr_numpy model file"


def fuzz(n: int):
    return settings(max_examples=examples(n), **SETTINGS)


# --------------------------------------------------------------------------- model files

@pytest.fixture(scope="module")
def model():
    rng = np.random.default_rng(0)
    X = sp.csr_matrix((rng.random((12, 9)) < 0.3).astype(np.float32))
    m = BPR(factors=3, epochs=2, threads=1, random_state=0).fit(X)
    m.user_ids = np.arange(100, 112)
    m.item_ids = np.array([f"item-{i}" for i in range(9)])
    m.item_titles = np.array([f"Title {i}" for i in range(9)])
    return m


@pytest.fixture(scope="module")
def saved(model, tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "m.npz"
    model.save(path)
    return path.read_bytes()


def assert_same_model(a: BPR, b: BPR):
    assert a.get_params() == b.get_params()
    for name in ("user_factors", "item_factors", "item_biases", "user_ids", "item_ids", "item_titles"):
        x, y = getattr(a, name), getattr(b, name)
        assert x.dtype == y.dtype and np.array_equal(x, y), name
    assert (a.user_items != b.user_items).nnz == 0
    assert a.history_ == b.history_ and a._epochs_done == b._epochs_done and a._seed == b._seed


def load_bytes(tmp_path: Path, raw: bytes, name: str = "m.npz") -> BPR:
    path = tmp_path / name
    path.write_bytes(raw)
    return BPR.load(path)


def assert_usable(m: BPR):
    """A loaded model is complete: every method works on it."""
    assert m.user_factors.flags.c_contiguous and m.item_factors.flags.c_contiguous
    m.score(0, np.arange(m.n_items))
    m.recommend(0, n=3, filter_liked=m.user_items is not None)
    if m.n_items > 1:
        m.similar_items(0, n=2)
    m.partial_fit(np.ones((m.n_users, m.n_items)), epochs=1)


@fuzz(300)
@given(st.data())
def test_model_files_fuzzed_truncations_are_refused(tmp_path_factory, saved, data):
    cut = data.draw(st.integers(0, len(saved) - 1))
    with pytest.raises(ValueError, match=REFUSED):
        load_bytes(tmp_path_factory.mktemp("t"), saved[:cut])


@fuzz(600)
@given(st.data())
def test_model_files_fuzzed_bit_flips_are_refused_or_harmless(tmp_path_factory, model, saved, data):
    raw = bytearray(saved)
    for _ in range(data.draw(st.integers(1, 3))):
        # Half the flips land in the zip and .npy headers and directories, where they hurt most.
        where = data.draw(st.sampled_from(["anywhere", "start", "end"]))
        if where == "start":
            pos = data.draw(st.integers(0, min(200, len(raw) - 1)))
        elif where == "end":
            pos = data.draw(st.integers(max(0, len(raw) - 600), len(raw) - 1))
        else:
            pos = data.draw(st.integers(0, len(raw) - 1))
        raw[pos] ^= 1 << data.draw(st.integers(0, 7))
    try:
        loaded = load_bytes(tmp_path_factory.mktemp("f"), bytes(raw))
    except ValueError as exc:
        assert "m.npz" in str(exc) and ("readable" in str(exc) or "valid" in str(exc)), str(exc)
        return
    assert_same_model(loaded, model)  # a flip in a byte nothing reads (a timestamp, the local CRC copy)


JSON = st.recursive(st.none() | st.booleans() | st.integers(-3, 2**64) | st.floats() | st.text(max_size=4),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
                    max_leaves=6)
META_FIELDS = ("params", "epochs_done", "seed", "history", "format_version", "format")
PARAM_FIELDS = ("factors", "learning_rate", "dtype", "loss", "random_state", "threads", "item_bias", "user_run")


@st.composite
def hostile_models(draw, arrays):
    """The arrays of a good model file with one part replaced by something else."""
    arrays = dict(arrays)
    meta = json.loads(arrays["meta"].tobytes())
    target = draw(st.sampled_from(["meta", "param", "history_entry", "array", "drop"]))
    if target == "meta":
        meta[draw(st.sampled_from(META_FIELDS))] = draw(JSON)
    elif target == "param":
        meta["params"][draw(st.sampled_from(PARAM_FIELDS))] = draw(JSON)
    elif target == "history_entry":
        entry = dict(meta["history"][0])
        entry[draw(st.sampled_from(sorted(entry)))] = draw(JSON)
        meta["history"][0] = entry
    elif target == "drop":
        del arrays[draw(st.sampled_from(sorted(arrays)))]
    else:
        name = draw(st.sampled_from(sorted(k for k in arrays if k != "meta")))
        old = arrays[name]
        kind = draw(st.sampled_from(["dtype", "shape", "values", "fortran", "empty"]))
        if kind == "dtype":
            try:
                arrays[name] = old.astype(draw(st.sampled_from(["float64", "float16", "int64", "int8", "bool", "U3"])))
            except ValueError:  # strings that are not numbers
                arrays[name] = old.astype("U3")
        elif kind == "shape":
            arrays[name] = np.resize(old, draw(st.sampled_from([(1,), (3, 2), (old.size + 1,), (1, 1, 1)])))
        elif kind == "values" and old.dtype.kind in "iuf":
            vals = old.copy()
            vals.flat[draw(st.integers(0, max(vals.size - 1, 0)))] = draw(
                st.sampled_from([-1, 10**6, 2**31 - 1, np.nan, np.inf] if old.dtype.kind == "f" else [-1, 10**6, 2**31 - 1]))
            arrays[name] = vals
        elif kind == "fortran":
            arrays[name] = np.asfortranarray(old.reshape(old.shape[0], -1) if old.ndim else old)
        else:
            arrays[name] = old[:0]
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
    return arrays


@fuzz(600)
@given(st.data())
def test_model_files_fuzzed_contents_are_refused_or_load_a_usable_model(tmp_path_factory, saved, data):
    with np.load(io.BytesIO(saved)) as z:
        good = {k: z[k] for k in z.files}
    arrays = data.draw(hostile_models(good))
    path = tmp_path_factory.mktemp("h") / "m.npz"
    np.savez(path, **arrays)
    try:
        loaded = BPR.load(path)
    except ValueError as exc:
        assert re.search(REFUSED, str(exc)) and "m.npz" in str(exc), str(exc)
        return
    assert_usable(loaded)


def _npy_header(shape, dtype="<f8") -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": dtype, "fortran_order": False, "shape": shape})
    return buf.getvalue()


def test_foreign_and_hostile_files_are_refused(tmp_path, model, saved):
    cases = {}
    cases["empty"] = b""
    cases["text"] = b"user,item\n1,2\n"
    npy = io.BytesIO()
    np.save(npy, np.arange(5))
    cases["plain .npy"] = npy.getvalue()
    buf = io.BytesIO()
    np.savez(buf, meta=np.array([{"format": "bpr_numpy.model"}], dtype=object))
    cases["pickled object array"] = buf.getvalue()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("meta.txt", "hello")
    cases["zip of text"] = buf.getvalue()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:  # a header that claims 8 TB of data it does not hold
        z.writestr("user_factors.npy", _npy_header((10**12,)) + b"\0" * 16)
    cases["huge declared shape"] = buf.getvalue()
    raw = bytearray(saved)  # the "encrypted" flag of the last member, in the central directory
    central = raw.rfind(b"PK\x01\x02")
    raw[central + 8] |= 1
    cases["encrypted flag"] = bytes(raw)
    raw = bytearray(saved)  # an unknown compression method
    raw[central + 10] = 99
    cases["unknown compression"] = bytes(raw)
    raw = bytearray(saved)  # "deflated" but stored
    raw[central + 10] = 8
    cases["wrong compression"] = bytes(raw)
    for label, content in cases.items():
        with pytest.raises(ValueError, match=REFUSED):
            load_bytes(tmp_path, content, f"{label.replace(' ', '_')}.npz")
    with pytest.raises(IsADirectoryError):
        BPR.load(tmp_path)
    with pytest.raises(FileNotFoundError):
        BPR.load(tmp_path / "missing.npz")


def test_compressed_and_fortran_ordered_files_load(tmp_path, model, saved):
    with np.load(io.BytesIO(saved)) as z:
        arrays = {k: z[k] for k in z.files}
    np.savez_compressed(tmp_path / "c.npz", **arrays)
    assert_same_model(BPR.load(tmp_path / "c.npz"), model)
    arrays.update(user_factors=np.asfortranarray(arrays["user_factors"]),
                  item_factors=np.asfortranarray(arrays["item_factors"]))
    np.savez(tmp_path / "f.npz", **arrays)
    loaded = BPR.load(tmp_path / "f.npz")
    assert_same_model(loaded, model)
    assert_usable(loaded)


# --------------------------------------------------------------------------- a save killed by SIGKILL

SAVER = textwrap.dedent("""
    import sys, numpy as np
    from bpr_numpy import BPR
    path = sys.argv[1]
    old, new = BPR.load(sys.argv[2]), BPR.load(sys.argv[3])
    print("ready", flush=True)
    while True:  # saves until killed, alternating the two models
        new.save(path)
        old.save(path)
""")


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs POSIX signals")
def test_a_save_killed_by_sigkill_leaves_the_old_or_the_new_file(tmp_path):
    rng = np.random.default_rng(1)
    X = sp.csr_matrix((rng.random((3000, 2000)) < 0.01).astype(np.float32))
    old = BPR(factors=32, epochs=1, threads=1, random_state=1).fit(X)  # a file of several MB
    new = BPR(factors=32, epochs=1, threads=1, random_state=2).fit(X)
    old.save(tmp_path / "old.npz")
    new.save(tmp_path / "new.npz")
    versions = {(tmp_path / "old.npz").read_bytes(), (tmp_path / "new.npz").read_bytes()}
    target = tmp_path / "out" / "model.npz"
    target.parent.mkdir()
    old.save(target)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    for delay in (0.0, 0.013, 0.05, 0.11, 0.2, 0.37):
        proc = subprocess.Popen([sys.executable, "-c", SAVER, str(target), str(tmp_path / "old.npz"),
                                 str(tmp_path / "new.npz")], stdout=subprocess.PIPE, env=env, cwd=str(REPO))
        try:
            assert proc.stdout.readline().strip() == b"ready"
            time.sleep(delay)
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=60)
            proc.stdout.close()
        assert target.read_bytes() in versions  # byte for byte one of the two, never a mix
        BPR.load(target)
        strays = sorted(p.name for p in target.parent.iterdir() if p.name != "model.npz")
        assert all(n.startswith(".bpr_numpy-") and n.endswith(".tmp") for n in strays), strays
        for name in strays:  # a killed save may leave its temporary file, never a partial model.npz
            (target.parent / name).unlink()


# --------------------------------------------------------------------------- data files

def assert_interactions(x: Interactions, adjacency: bool = False):
    m = x.matrix
    assert m.shape == (len(x.user_ids), len(x.item_ids))
    assert len(np.unique(x.user_ids)) == len(x.user_ids) and len(np.unique(x.item_ids)) == len(x.item_ids)
    assert m.has_sorted_indices and (m.indices >= 0).all() and (m.indices < m.shape[1]).all()
    s = x.summary
    assert s.rows_in == s.stored + s.duplicates_merged + s.below_min_rating + s.unknown_ids_dropped \
        + s.moved_to_other_split
    if not adjacency:  # one pair per line
        assert s.lines_read == s.rows_in + s.header_lines + s.blank_lines + s.malformed_lines


VALID = b"user,item,rating\n1,10,4.0\n2,10,3\n1,11,5\nalice,12,1\n"


@st.composite
def damaged_bytes(draw):
    """Random bytes, or a valid file with bytes inserted, deleted or replaced."""
    if draw(st.booleans()):
        return draw(st.binary(max_size=80))
    raw = bytearray(draw(st.sampled_from([VALID, b"1 10 11 12\n2 10\n3\n", b"u\ti\n1\t2\n3\t4\n"])))
    for _ in range(draw(st.integers(1, 4))):
        pos = draw(st.integers(0, len(raw)))
        op = draw(st.sampled_from(["insert", "delete", "replace"]))
        byte = draw(st.sampled_from([b",", b"\t", b" ", b"\n", b"\r", b"\0", b"\xff", b"\xc3", b"\xef\xbb\xbf",
                                     b"-", b".", b"e", b"9", b"x", b'"', b"nan", b"inf", b"1e999", b"::"]))
        if op == "insert":
            raw[pos:pos] = byte
        elif op == "delete":
            del raw[pos:pos + draw(st.integers(1, 3))]
        else:
            raw[pos:pos + len(byte)] = byte
    return bytes(raw)


@fuzz(500)
@given(damaged_bytes(), st.sampled_from(["delimited", "delimited-skip", "delimited-int", "adjacency"]))
def test_data_files_fuzzed_bytes_load_or_name_the_file(tmp_path_factory, raw, loader):
    path = tmp_path_factory.mktemp("d") / "data.txt"
    path.write_bytes(raw)
    try:
        if loader == "adjacency":
            x = load_adjacency_list(path)
        else:
            x = load_delimited(path, on_bad_line="skip" if loader == "delimited-skip" else "raise",
                               id_type="int" if loader == "delimited-int" else "auto")
    except ValueError as exc:
        assert str(exc).startswith(str(path)) or "data.txt" in str(exc), str(exc)
        return
    assert_interactions(x, adjacency=loader == "adjacency")


@st.composite
def malformed_files(draw):
    """A valid file with one malformation at a known line: (text bytes, line, message pattern)."""
    n = draw(st.integers(2, 8))
    header = draw(st.booleans())
    columns = draw(st.sampled_from([2, 3]))
    string_ids = draw(st.booleans())
    rows = []
    for r in range(n):
        user = f"u{r % 3}" if string_ids else str(r % 3)
        fields = [user, str(10 + r)] + ([f"{1 + r % 5}.0"] if columns == 3 else [])
        rows.append(",".join(fields))
    lines = (["user,item,rating"[: 9 if columns == 2 else None]] if header else []) + rows
    k = draw(st.integers(1, len(lines) - 1))  # the line to damage (never the first)
    kind = draw(st.sampled_from(["delimiter", "missing", "extra", "utf8", "header", "empty"]))
    line = lines[k].encode()
    if kind == "delimiter":
        line = line.replace(b",", draw(st.sampled_from([b";", b"\t", b"|"])))
        pattern = "expected \\d fields"
    elif kind == "missing":
        line = line.rsplit(b",", 1)[0]
        pattern = "expected \\d fields"
    elif kind == "extra":
        line = line + b",7"
        pattern = "expected \\d fields"
    elif kind == "utf8":
        line = b"\xff" + line
        pattern = "not valid utf-8"
    elif kind == "header":
        line = b"user,item,rating"[: 9 if columns == 2 else None]
        pattern = "header line in the middle"
    else:
        line = line.split(b",", 1)[1]
        line = b"," + line
        pattern = "field 1 \\(user\\) is empty"
    lines = [x.encode() for x in lines]
    lines[k] = line
    return b"\n".join(lines) + b"\n", k + 1, pattern


@fuzz(400)
@given(malformed_files())
def test_data_files_fuzzed_malformations_name_the_file_and_line(tmp_path_factory, case):
    raw, line, pattern = case
    path = tmp_path_factory.mktemp("m") / "ratings.csv"
    path.write_bytes(raw)
    with pytest.raises(ValueError, match=f"ratings.csv, line {line}: .*{pattern}"):
        load_delimited(path)
    if "utf-8" in pattern:
        return  # an encoding error is the file's, not a line's: it is never skipped
    skipped = load_delimited(path, on_bad_line="skip")  # or skip it, counted
    assert skipped.summary.malformed_lines == 1 and f"line {line}:" in skipped.summary.malformed_examples[0]
    assert_interactions(skipped)


def test_empty_and_blank_data_files(tmp_path):
    for raw in (b"", b"\n\n", b"\xef\xbb\xbf", b"   \r\n"):
        (tmp_path / "e.csv").write_bytes(raw)
        with pytest.raises(ValueError, match="e.csv.*empty"):
            load_delimited(tmp_path / "e.csv")
        with pytest.raises(ValueError, match="e.csv"):
            load_adjacency_list(tmp_path / "e.csv")


def test_an_optional_entry_hidden_by_a_damaged_directory_is_refused(tmp_path, model, saved):
    # A flipped comment length in the zip's central directory makes the entry after it vanish
    # (zipfile lists 8 of 9 entries): the metadata's own listing catches the loss.
    raw = bytearray(saved)
    with zipfile.ZipFile(io.BytesIO(bytes(raw))) as z:
        names = z.namelist()
    assert "item_titles.npy" in names
    start = raw.rfind(b"PK\x01\x02", 0, raw.rfind(b"item_ids.npy"))  # the directory entry before it
    raw[start + 33] ^= 0x40  # the high byte of its comment length: the comment swallows item_titles
    with pytest.raises(ValueError, match="m.npz"):
        load_bytes(tmp_path, bytes(raw))
