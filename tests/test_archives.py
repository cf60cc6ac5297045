"""Crafted zip archives, for the data readers (``bpr_numpy.datasets``) and the model reader (``BPR.load``).

A zip's directory declares each member's name and sizes, and anyone can write
them: a bomb declares gigabytes inflated from a few MB, a lying header
declares another size than its data inflates to, two members share a name,
a name holds a NUL character (zipfile cuts it there) or a ``..`` part. Every
data loader takes zip members through ``datasets._sources._Source`` and the
model reader through ``_archives.read_npz``; both refuse each of these
with a ValueError naming the archive and the member, and never hold more
than a member's declared size (checked against memory first) while reading.

The archives are written byte by byte (``craft_zip``), so that every field
can lie; an honest crafted archive loads like one written by zipfile.
"""

from __future__ import annotations

import bz2
import io
import os
import re
import struct
import subprocess
import sys
import textwrap
import zipfile
import zlib
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
from _budget import examples
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bpr_numpy import BPR
from bpr_numpy.datasets import load_delimited, load_movielens

try:
    import resource
except ImportError:  # Windows: no address-space limit to read a bomb under
    resource = None

REPO = Path(__file__).resolve().parents[1]
SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                                     HealthCheck.data_too_large])
STORED, DEFLATED, BZIP2 = zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2


def fuzz(n: int):
    return settings(max_examples=examples(n), **SETTINGS)


# --------------------------------------------------------------------------- writing zips byte by byte

@dataclass(frozen=True)
class Entry:
    """One member as its headers declare it: any field may lie about ``data``."""

    name: bytes
    data: bytes  # what is stored: compressed for DEFLATED
    method: int
    crc: int
    size: int  # the declared uncompressed size


def deflate(raw: bytes) -> bytes:
    c = zlib.compressobj(9, zlib.DEFLATED, -15)  # raw deflate, as zip members hold it
    return c.compress(raw) + c.flush()


def entry(name: str | bytes, raw: bytes, method: int = DEFLATED) -> Entry:
    """An honest member holding ``raw``."""
    data = {STORED: lambda b: b, DEFLATED: deflate, BZIP2: lambda b: bz2.compress(b)}[method](raw)
    name = name.encode("utf-8") if isinstance(name, str) else name
    return Entry(name, data, method, zlib.crc32(raw), len(raw))


UTF8 = 0x800  # the flag saying names are UTF-8 (else zipfile decodes them as cp437)


def local_header(e: Entry) -> bytes:
    # signature, version, flags, method, time, date (1980-01-01), crc, sizes, name and extra lengths
    return struct.pack("<4s5H3L2H", b"PK\x03\x04", 20, UTF8, e.method, 0, 0x21, e.crc, len(e.data), e.size,
                       len(e.name), 0) + e.name


def craft_zip(entries: list[Entry], aliases: list[tuple[Entry, int]] = ()) -> bytes:
    """A zip archive of ``entries``, in order; ``aliases`` are directory entries (entry, header offset)
    with no data of their own, pointing at a local header written elsewhere (inside another member)."""
    out, listed = bytearray(), []
    for e in entries:
        listed.append((e, len(out)))
        out += local_header(e) + e.data
    central = bytearray()
    for e, offset in [*listed, *aliases]:
        central += struct.pack("<4s6H3L5H2L", b"PK\x01\x02", 20, 20, UTF8, e.method, 0, 0x21, e.crc, len(e.data),
                               e.size, len(e.name), 0, 0, 0, 0, 0, offset) + e.name
    n = len(listed) + len(aliases)
    return bytes(out + central + struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, n, n, len(central), len(out), 0))


def zero_bomb(prefix: bytes, mib: int) -> tuple[bytes, int]:
    """A real deflate stream of ``prefix`` and ``mib`` MiB of zeros (built in milliseconds: after a
    full flush every MiB of zeros compresses to the same bytes) and its inflated size."""
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    head = c.compress(prefix) + c.flush(zlib.Z_FULL_FLUSH)
    block = c.compress(bytes(1 << 20)) + c.flush(zlib.Z_FULL_FLUSH)
    return head + block * mib + c.flush(), len(prefix) + (mib << 20)


# --------------------------------------------------------------------------- the two readers

CSV_HEADER = b"userId,movieId,rating,timestamp\n"


def ratings_csv(rows) -> bytes:
    return CSV_HEADER + b"".join(b"%d,%d,%.1f,%d\n" % row for row in rows)


RATINGS = st.lists(st.tuples(st.integers(1, 40), st.integers(1, 60), st.sampled_from([1.0, 2.5, 4.0, 5.0]),
                             st.integers(9 * 10**8, 10**9)), min_size=1, max_size=25)
ROWS = [(1, 10, 4.0, 964982703), (1, 20, 5.0, 964981247), (2, 10, 4.5, 964982224)]  # three positives

# How each data reader is reached: load_movielens is what ``bpr-numpy train --data X.zip`` calls for a
# zip holding ratings.csv; load_delimited takes any member.
DATA_READERS = {
    "load_movielens": lambda path: load_movielens(path),
    "load_delimited": lambda path: load_delimited(path, member="ratings.csv"),
}


def write(tmp_path_factory, raw: bytes, name: str) -> Path:
    path = tmp_path_factory.mktemp("z") / name
    path.write_bytes(raw)
    return path


@pytest.fixture(scope="module")
def model():
    rng = np.random.default_rng(0)
    X = sp.csr_matrix((rng.random((12, 9)) < 0.3).astype(np.float32))
    return BPR(factors=3, epochs=2, threads=1, random_state=0).fit(X)


@pytest.fixture(scope="module")
def model_members(model, tmp_path_factory) -> dict[str, bytes]:
    """The members of a saved model file: name -> inflated bytes."""
    path = tmp_path_factory.mktemp("model") / "m.npz"
    model.save(path)
    with zipfile.ZipFile(path) as z:
        return {name: z.read(name) for name in z.namelist()}


def assert_same_model(a: BPR, b: BPR):
    for name in ("user_factors", "item_factors", "item_biases"):
        assert np.array_equal(getattr(a, name), getattr(b, name)), name


def refused(call, *where: str, match: str = "") -> str:
    """Run ``call``; it must raise ValueError naming every one of ``where`` (and matching ``match``)."""
    with pytest.raises(ValueError) as info:
        call()
    message = str(info.value)
    for part in where:
        assert part in message, message
    if match:
        assert re.search(match, message), message
    return message


def test_honest_crafted_archives_load(tmp_path_factory, model, model_members):
    # The writer is sound: what the tests below refuse is the lie, not the writing.
    for method in (STORED, DEFLATED):
        path = write(tmp_path_factory, craft_zip([entry("ratings.csv", ratings_csv(ROWS), method)]), "r.zip")
        for read in DATA_READERS.values():
            assert read(path).nnz == 3
        raw = craft_zip([entry(name, data, method) for name, data in model_members.items()])
        assert_same_model(BPR.load(write(tmp_path_factory, raw, "m.npz")), model)


# --------------------------------------------------------------------------- compression ratio

def beyond_deflate(data, e: Entry) -> Entry:
    """``e`` declaring more than deflate can inflate from its compressed size (within 32 bits: no zip64)."""
    return replace(e, size=data.draw(st.integers(1032 * len(e.data) + 1, 2**32 - 1), label="declared size"))


@fuzz(40)
@given(rows=RATINGS, reader=st.sampled_from(sorted(DATA_READERS)), data=st.data())
def test_data_member_beyond_deflates_ratio_is_refused(tmp_path_factory, rows, reader, data):
    bomb = beyond_deflate(data, entry("ratings.csv", ratings_csv(rows)))
    path = write(tmp_path_factory, craft_zip([bomb]), "bomb.zip")
    refused(lambda: DATA_READERS[reader](path), "bomb.zip:ratings.csv", str(bomb.size), str(len(bomb.data)),
            match="1032:1")


@fuzz(25)
@given(data=st.data())
def test_model_member_beyond_deflates_ratio_is_refused(tmp_path_factory, model_members, data):
    victim = data.draw(st.sampled_from(sorted(model_members)))
    entries = [entry(name, raw) for name, raw in model_members.items()]
    entries = [beyond_deflate(data, e) if e.name == victim.encode() else e for e in entries]
    path = write(tmp_path_factory, craft_zip(entries), "bomb.npz")
    refused(lambda: BPR.load(path), "bomb.npz", victim, match="1032:1")


def test_a_member_declaring_more_than_memory_is_refused(tmp_path_factory, model_members, monkeypatch):
    # Honest archives, but more than the machine holds: refused before anything is allocated.
    real = os.sysconf

    def tiny_machine(name):  # 256 bytes of physical memory
        return {"SC_PHYS_PAGES": 1, "SC_PAGE_SIZE": 256}.get(name) or real(name)

    monkeypatch.setattr(os, "sysconf", tiny_machine)
    raw = ratings_csv(ROWS * 10)
    path = write(tmp_path_factory, craft_zip([entry("ratings.csv", raw)]), "big.zip")
    for read in DATA_READERS.values():
        refused(lambda: read(path), "big.zip:ratings.csv", f"declares {len(raw)} bytes",
                match="would need that much memory, more than the 256 bytes this process can have")
    path = write(tmp_path_factory, craft_zip([entry(n, raw) for n, raw in model_members.items()]), "big.npz")
    refused(lambda: BPR.load(path), "big.npz", f"its members declare {sum(map(len, model_members.values()))} bytes",
            match="more than the 256 bytes this process can have")


# --------------------------------------------------------------------------- lying sizes

@fuzz(60)
@given(rows=RATINGS, method=st.sampled_from([STORED, DEFLATED]), reader=st.sampled_from(sorted(DATA_READERS)),
       data=st.data())
def test_data_member_inflating_to_another_size_than_declared_is_refused(tmp_path_factory, rows, method, reader,
                                                                        data):
    raw = ratings_csv(rows)
    honest = entry("ratings.csv", raw, method)
    size = data.draw(st.integers(0, 2 * len(raw)).filter(lambda n: n != len(raw)), label="declared size")
    # The CRC of what the declared size covers: zipfile alone stops at the declared size and checks
    # the CRC of that, so a cut (or a short stream) passed as the whole file.
    crc = data.draw(st.sampled_from([honest.crc, zlib.crc32(raw[:size]), zlib.crc32(raw[:size + 1])]), label="crc")
    path = write(tmp_path_factory, craft_zip([replace(honest, size=size, crc=crc)]), "lie.zip")
    refused(lambda: DATA_READERS[reader](path), "lie.zip:ratings.csv",
            match="zip directory declares|yet its zip directory|Bad CRC")


def test_lying_sizes_are_named_precisely(tmp_path_factory):
    raw = ratings_csv(ROWS)
    honest = entry("ratings.csv", raw)
    short = replace(honest, size=len(raw) + 10)
    long = replace(honest, size=len(raw) - 10, crc=zlib.crc32(raw[:len(raw) - 9]))
    for lie, words in ((short, f"inflates to {len(raw)} bytes, fewer than the {len(raw) + 10}"),
                       (long, f"inflates to more than the {len(raw) - 10} bytes")):
        path = write(tmp_path_factory, craft_zip([lie]), "lie.zip")
        refused(lambda: load_delimited(path), "lie.zip:ratings.csv", words)


@fuzz(40)
@given(data=st.data(), method=st.sampled_from([STORED, DEFLATED]))
def test_model_member_inflating_to_another_size_than_declared_is_refused(tmp_path_factory, model_members, data,
                                                                         method):
    victim = data.draw(st.sampled_from(sorted(model_members)))
    raw = model_members[victim]
    size = data.draw(st.integers(0, 2 * len(raw)).filter(lambda n: n != len(raw)), label="declared size")
    crc = data.draw(st.sampled_from([zlib.crc32(raw), zlib.crc32(raw[:size]), zlib.crc32(raw[:size + 1])]))
    entries = [entry(name, content, method) for name, content in model_members.items()]
    entries = [replace(e, size=size, crc=crc) if e.name == victim.encode() else e for e in entries]
    path = write(tmp_path_factory, craft_zip(entries), "lie.npz")
    refused(lambda: BPR.load(path), "lie.npz", victim)


# --------------------------------------------------------------------------- duplicated members

@fuzz(40)
@given(first=RATINGS, second=RATINGS, folder=st.sampled_from(["", "ml-latest-small/"]),
       others=st.integers(0, 2), reader=st.sampled_from(sorted(DATA_READERS)))
def test_data_archive_with_a_duplicated_member_is_refused(tmp_path_factory, first, second, folder, others, reader):
    name = folder + "ratings.csv"
    entries = [entry(name, ratings_csv(first))]
    entries += [entry(f"{folder}notes{k}.txt", b"notes\n") for k in range(others)]
    entries += [entry(name, ratings_csv(second))]  # zipfile would read this one, silently
    path = write(tmp_path_factory, craft_zip(entries), "dup.zip")
    refused(lambda: DATA_READERS[reader](path), f"dup.zip:{name}", match="two members .* have this name")


@fuzz(30)
@given(data=st.data())
def test_model_file_with_a_duplicated_member_is_refused(tmp_path_factory, model_members, data):
    victim = data.draw(st.sampled_from(sorted(model_members)))
    names = list(model_members)
    copy = entry(victim, model_members[victim])
    if victim.endswith("factors.npy") and data.draw(st.booleans(), label="other values"):
        arr = np.load(io.BytesIO(model_members[victim]))
        buf = io.BytesIO()
        np.save(buf, np.zeros_like(arr))
        copy = entry(victim, buf.getvalue())  # the copy zipfile would load, silently
    entries = [entry(name, model_members[name]) for name in names]
    entries.insert(data.draw(st.integers(0, len(entries)), label="position"), copy)
    path = write(tmp_path_factory, craft_zip(entries), "dup.npz")
    refused(lambda: BPR.load(path), "dup.npz", repr(victim), match="two members .* have this name")


# --------------------------------------------------------------------------- names a filesystem cannot hold

SUFFIX = st.text(st.characters(blacklist_characters="\0/", blacklist_categories=("Cs",)), max_size=8)


@fuzz(40)
@given(suffix=SUFFIX, rows=RATINGS, reader=st.sampled_from(sorted(DATA_READERS)))
def test_data_member_with_a_nul_in_its_name_is_refused(tmp_path_factory, suffix, rows, reader):
    # zipfile cuts the name at the NUL: "ratings.csv\0.exe" would be read as ratings.csv.
    name = "ratings.csv\0" + suffix
    path = write(tmp_path_factory, craft_zip([entry(name, ratings_csv(rows))]), "nul.zip")
    refused(lambda: DATA_READERS[reader](path), "nul.zip:ratings.csv", repr(name), match="NUL")


@fuzz(30)
@given(data=st.data(), suffix=SUFFIX)
def test_model_member_with_a_nul_in_its_name_is_refused(tmp_path_factory, model_members, data, suffix):
    victim = data.draw(st.sampled_from(sorted(model_members)))
    entries = [entry(name + ("\0" + suffix if name == victim else ""), raw) for name, raw in model_members.items()]
    path = write(tmp_path_factory, craft_zip(entries), "nul.npz")
    refused(lambda: BPR.load(path), "nul.npz", repr(victim + "\0" + suffix), match="NUL")


OUTSIDE = st.sampled_from(["/", "../", "/data/", "data/../", "../../"])


@fuzz(20)
@given(prefix=OUTSIDE, reader=st.sampled_from(sorted(DATA_READERS)))
def test_data_member_named_outside_the_archive_is_refused(tmp_path_factory, prefix, reader):
    # "/ratings.csv" and "../ratings.csv" were taken for a ratings.csv one folder down.
    name = prefix + "ratings.csv"
    path = write(tmp_path_factory, craft_zip([entry(name, ratings_csv(ROWS))]), "abs.zip")
    refused(lambda: DATA_READERS[reader](path), f"abs.zip:{name}", match=r"absolute name or one with a '\.\.' part")


@fuzz(20)
@given(prefix=OUTSIDE, data=st.data())
def test_model_member_named_outside_the_archive_is_refused(tmp_path_factory, model_members, prefix, data):
    victim = data.draw(st.sampled_from(sorted(model_members)))
    entries = [entry((prefix if name == victim else "") + name, raw) for name, raw in model_members.items()]
    path = write(tmp_path_factory, craft_zip(entries), "abs.npz")
    refused(lambda: BPR.load(path), "abs.npz", repr(prefix + victim), match=r"absolute name or one with a '\.\.'")


# --------------------------------------------------------------------------- overlapping members, other methods

def test_overlapping_members_are_refused(tmp_path_factory, model_members):
    # One member's stored data holds another member's local header and data: the directory lists both,
    # so their data is inflated twice (nested, this multiplies a bomb past deflate's ratio).
    def overlapping(outer_name: str, inner: Entry) -> bytes:
        outer = entry(outer_name, local_header(inner) + inner.data, STORED)
        return craft_zip([outer], aliases=[(inner, len(local_header(outer)))])

    raw = overlapping("notes.txt", entry("ratings.csv", ratings_csv(ROWS)))
    path = write(tmp_path_factory, raw, "overlap.zip")
    for read in DATA_READERS.values():
        refused(lambda: read(path), "overlap.zip:ratings.csv", "'notes.txt'", match="overlapping members")
    # A model file: the stored member's bytes are a .npy array of bytes, the inner one user_factors.
    inner = entry("user_factors.npy", model_members["user_factors.npy"])
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "|u1", "fortran_order": False,
                                                  "shape": (len(local_header(inner)) + len(inner.data),)})
    outer_data = header.getvalue() + local_header(inner) + inner.data
    outer = entry("meta.npy", outer_data, STORED)
    rest = [entry(n, r, STORED) for n, r in model_members.items() if n not in ("meta.npy", "user_factors.npy")]
    raw = craft_zip([outer, *rest], aliases=[(inner, len(local_header(outer)) + len(header.getvalue()))])
    refused(lambda: BPR.load(write(tmp_path_factory, raw, "overlap.npz")), "overlap.npz", "overlapping members")


def test_bzip2_members_are_refused(tmp_path_factory, model_members):
    # zipfile inflates a bzip2 member a whole read of compressed bytes at a time, whatever it holds
    # (4 KB of bzip2 can hold GBs of zeros): only stored and deflated members are read.
    path = write(tmp_path_factory, craft_zip([entry("ratings.csv", ratings_csv(ROWS), BZIP2)]), "bz.zip")
    for read in DATA_READERS.values():
        refused(lambda: read(path), "bz.zip:ratings.csv", match="zip method 12.*only stored and deflated")
    raw = craft_zip([entry(n, r, BZIP2 if n == "item_bias.npy" else DEFLATED) for n, r in model_members.items()])
    refused(lambda: BPR.load(write(tmp_path_factory, raw, "bz.npz")), "bz.npz", "item_bias.npy", "zip method 12")


def test_a_downloaded_archive_with_a_crafted_directory_is_not_kept(tmp_path, monkeypatch):
    # An unpinned archive's digest is trusted from its first download: a crafted one is refused
    # before it is kept and its digest recorded.
    import bpr_numpy.datasets._download as dl

    raw = craft_zip([entry("ml-latest-small/ratings.csv", ratings_csv(ROWS))] * 2)

    class Response(io.BytesIO):
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.close()

    monkeypatch.setattr(dl, "_urlopen", lambda url, timeout: Response(raw))
    monkeypatch.delenv("BPR_NUMPY_OFFLINE", raising=False)
    refused(lambda: dl.fetch_movielens("ml-latest-small", tmp_path), "ml-latest-small.zip:ml-latest-small/ratings.csv",
            "not keeping it", match="two members")
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- memory: a real bomb under a cap

#: The address-space cap of the bomb-reading subprocesses, and what their bombs inflate to.
CAP = 3 << 29  # 1.5 GiB
BOMB_MIB = 3584  # 3.5 GiB of zeros, 3.7 MB compressed (1011:1, an honest deflate ratio)
CAPPED = pytest.mark.skipif(resource is None or not hasattr(resource, "RLIMIT_AS"), reason="needs RLIMIT_AS")

READ_BOMB = textwrap.dedent("""
    import resource, sys
    resource.setrlimit(resource.RLIMIT_AS, ({cap}, {cap}))
    kind, path = sys.argv[1:]
    try:
        if kind == "model":
            from bpr_numpy import BPR
            BPR.load(path)
        elif kind == "cli":
            from bpr_numpy.cli import main
            sys.exit(main(["train", "--data", path, "--epochs", "1"]))
        else:
            from bpr_numpy.datasets import load_movielens
            load_movielens(path)
    except ValueError as exc:
        print("refused:", exc)
""")


def read_bomb(kind: str, path: Path) -> subprocess.CompletedProcess:
    """Run READ_BOMB on ``path`` in a fresh interpreter capped at CAP (one BLAS/numba thread: each
    thread's stack and buffers take address space)."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
               OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", NUMBA_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-c", READ_BOMB.format(cap=CAP), kind, str(path)],
                          capture_output=True, text=True, timeout=600, env=env, cwd=str(REPO))


@pytest.fixture(scope="module")
def bombs(tmp_path_factory) -> dict[str, tuple[Path, int]]:
    """kind -> (a real bomb, its declared size). The CRCs are left 0: nothing may inflate a bomb
    far enough to check one."""
    folder = tmp_path_factory.mktemp("bombs")
    data, size = zero_bomb(CSV_HEADER, BOMB_MIB)
    (folder / "bomb.zip").write_bytes(craft_zip([Entry(b"ratings.csv", data, DEFLATED, 0, size)]))
    header = io.BytesIO()  # a .npy header declaring exactly the zeros that follow it
    np.lib.format.write_array_header_1_0(header, {"descr": "<f8", "fortran_order": False,
                                                  "shape": ((BOMB_MIB << 20) // 8,)})
    npy, npy_size = zero_bomb(header.getvalue(), BOMB_MIB)
    (folder / "bomb.npz").write_bytes(craft_zip([Entry(b"user_factors.npy", npy, DEFLATED, 0, npy_size)]))
    return {"data": (folder / "bomb.zip", size), "cli": (folder / "bomb.zip", size),
            "model": (folder / "bomb.npz", npy_size)}


@CAPPED
@pytest.mark.parametrize("kind", ["data", "cli", "model"])
def test_a_real_bomb_read_under_a_memory_cap_is_refused_by_name(bombs, kind):
    path, size = bombs[kind]
    proc = read_bomb(kind, path)
    out = proc.stdout + proc.stderr
    assert "MemoryError" not in out and "Traceback" not in out, out
    assert ("bomb.npz" if kind == "model" else "bomb.zip:ratings.csv") in out, out
    assert f"declare{'' if kind == 'model' else 's'} {size} bytes (3.5 GiB)" in out, out
    assert "more than the 1.5 GiB this process can have" in out, out
    assert (proc.returncode, "error:" in proc.stderr) == ((1, True) if kind == "cli" else (0, False)), out


@CAPPED
def test_a_bomb_just_under_the_cap_is_refused_by_name_too(tmp_path):
    # 1.4 GiB passes the check against the cap, but the process cannot also hold it: the buffer's
    # allocation fails (or, in a smaller process, the CRC does), and that is named as well.
    data, size = zero_bomb(CSV_HEADER, 1400)
    path = tmp_path / "bomb.zip"
    path.write_bytes(craft_zip([Entry(b"ratings.csv", data, DEFLATED, 0, size)]))
    proc = read_bomb("data", path)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0 and "MemoryError" not in out and "Traceback" not in out, out
    assert re.search(r"refused: .*bomb\.zip:ratings\.csv: .*(this process can (allocate|have)|CRC)", out), out
