"""Zip archives read safely: model files (``.npz``) and data archives, their directories checked first.

A zip's directory declares each member's name and sizes: numbers anyone can write. They are
checked against what is possible before a member is read, and the inflation itself is held to
them while it runs. NumPy only (no scipy), so the data readers can use it without the sparse stack.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import numpy as np

from ._parameters import memory_limit

__all__ = ["check_zip_directory", "read_npz", "read_zip_member"]


#: Deflate's ceiling: a length/distance pair coded in 2 bits stands for at most 258 bytes, so an
#: honest deflate stream never inflates to more than 1032 times its compressed size.
_DEFLATE_MAX_RATIO = 1032
#: zip compression methods read. zipfile inflates stored and deflated data one bounded piece
#: at a time; bzip2 and LZMA data it inflates a whole read of compressed bytes at once,
#: whatever that holds (a few KB of bzip2 make GBs), so those are refused.
_ZIP_METHODS = {0: "stored", 8: "deflated"}
#: Bytes inflated per read: a member is never held beyond its declared size plus this.
_ZIP_CHUNK = 1 << 20


def _amount(n: int) -> str:
    """``n`` bytes for a reader: ``3.5 GiB``, ``12.0 MiB``, ``4.0 KiB``, ``512 bytes``."""
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n >= 1 << shift:
            return f"{n / (1 << shift):.1f} {unit}"
    return f"{n} bytes"


def _check_fits_in_memory(size: int, what: str) -> None:
    """``ValueError`` when ``size`` bytes could not be held; ``what`` names them in the message."""
    limit = memory_limit()
    if limit is not None and size > limit:
        raise ValueError(
            f"{what} {size} bytes ({_amount(size)}) uncompressed: reading them would need that much "
            f"memory, more than the {_amount(limit)} this process can have"
        )


def _check_member_sizes(info, archive_size: int, label: Callable[[str], str]) -> None:
    """Refuse a member whose declared sizes no honest archive holds (``label(name)`` names it)."""
    where = label(info.filename)
    method = _ZIP_METHODS.get(info.compress_type)
    if method is None:
        raise ValueError(
            f"{where}: compressed with zip method {info.compress_type}; only stored and deflated "
            "members are read (re-zip it with deflate, as zip tools do by default)"
        )
    if info.header_offset + info.compress_size > archive_size:
        raise ValueError(
            f"{where}: its {info.compress_size} compressed bytes at offset {info.header_offset} "
            f"run past the end of the {archive_size}-byte archive (truncated?)"
        )
    if method == "stored" and info.compress_size != info.file_size:
        raise ValueError(
            f"{where}: stored uncompressed, yet its zip directory declares {info.file_size} bytes "
            f"held in {info.compress_size}"
        )
    if info.file_size > _DEFLATE_MAX_RATIO * info.compress_size:
        raise ValueError(
            f"{where}: declares {info.file_size} bytes inflated from {info.compress_size} compressed, "
            f"more than deflate's {_DEFLATE_MAX_RATIO}:1 ceiling (a zip bomb or a corrupt directory)"
        )


def check_zip_directory(archive, label: Callable[[str], str]) -> None:
    """Refuse a zip archive whose directory would be misread or holds impossible sizes.

    Parameters
    ----------
    archive : zipfile.ZipFile
        Opened from a path.
    label : callable
        ``label(member_name)`` is how messages name a member (``"data.zip:ratings.csv"``).

    Raises
    ------
    ValueError
        A member name that does not denote one file inside the archive's
        folder: with a NUL character (zipfile cuts the name there, so
        ``ratings.csv\\0.exe`` would be read as ``ratings.csv``), absolute or
        with a ``..`` part; two members of one name (which is meant is
        ambiguous: zipfile silently takes the last); members whose
        compressed data overlap or run past the end of the file; an
        unsupported compression method; a member declaring more than
        deflate can inflate from its compressed size.
    """
    archive_size = os.path.getsize(archive.filename)
    seen = set()
    for info in archive.infolist():
        name = info.filename
        if "\0" in info.orig_filename:
            raise ValueError(
                f"{label(name)}: the zip directory names this member {info.orig_filename!r}, with a "
                "NUL character (zipfile cuts the name there); refusing a name that would be misread"
            )
        if name.startswith("/") or ".." in name.split("/"):
            raise ValueError(
                f"{label(name)}: an absolute name or one with a '..' part, which no file inside the "
                "archive has (a crafted archive)"
            )
        if name in seen:
            raise ValueError(
                f"{label(name)}: two members of the archive have this name; which one is meant is ambiguous"
            )
        seen.add(name)
        _check_member_sizes(info, archive_size, label)
    # Members sharing compressed data (an overlap bomb: one deflated stream listed a thousand
    # times) would make the whole archive inflate to far more than 1032 times its size.
    previous = None
    for info in sorted(archive.infolist(), key=lambda info: info.header_offset):
        if previous is not None and info.header_offset < previous.header_offset + previous.compress_size:
            raise ValueError(
                f"{label(info.filename)}: starts inside the compressed data of member "
                f"{previous.filename!r} (overlapping members: a crafted archive)"
            )
        previous = info


def read_zip_member(archive, info, label: Callable[[str], str]) -> bytearray:
    """The bytes of one zip member, inflated into a buffer of exactly its declared size.

    The declared size is checked against deflate's ceiling and the memory
    this process can have before anything is allocated, and never trusted
    after: the member is inflated a chunk at a time, allowed one byte
    beyond its declared size, and refused if it yields more or fewer bytes
    (zipfile alone stops at the declared size, so a crafted checksum of the
    cut would pass). At most the declared size plus one chunk is held.

    Parameters
    ----------
    archive : zipfile.ZipFile
        Opened from a path.
    info : zipfile.ZipInfo
        A member of ``archive``.
    label : callable
        ``label(member_name)`` is how messages name the member.

    Returns
    -------
    bytearray
        The member's bytes (filled in place, never copied).

    Raises
    ------
    ValueError
        Everything :func:`check_zip_directory` refuses for this member, a
        declared size beyond the memory this process can have, a member
        that inflates to another size than declared, a checksum mismatch,
        an encrypted or unreadable member.
    """
    import copy
    import zipfile
    import zlib

    where = label(info.filename)
    _check_member_sizes(info, os.path.getsize(archive.filename), label)
    size = info.file_size
    _check_fits_in_memory(size, f"{where}: declares")
    try:
        buffer = bytearray(size)
    except MemoryError:
        raise ValueError(
            f"{where}: declares {size} bytes ({_amount(size)}) uncompressed, more memory than this process can allocate"
        ) from None
    window = copy.copy(info)
    window.file_size = size + 1  # how much zipfile will inflate: one byte more shows a stream that goes on
    try:
        with archive.open(window) as fh, memoryview(buffer) as view:
            filled = 0
            while filled < size:
                got = fh.readinto(view[filled : filled + _ZIP_CHUNK])
                if not got:
                    raise ValueError(
                        f"{where}: inflates to {filled} bytes, fewer than the {size} its zip directory declares"
                    )
                filled += got
            if fh.read(1):
                raise ValueError(f"{where}: inflates to more than the {size} bytes its zip directory declares")
    except (zipfile.BadZipFile, EOFError, zlib.error, OSError, RuntimeError, NotImplementedError) as exc:
        # BadZipFile: a CRC mismatch (the data, or a lying size, differs from the directory);
        # RuntimeError: an encrypted member; NotImplementedError: an unsupported feature.
        raise ValueError(f"{where}: cannot read this zip member ({exc})") from None
    return buffer


#: The most header bytes a .npy array is read with (numpy itself refuses headers over 10,000 bytes).
_NPY_HEADER_MAX = 1 << 16


def _npy_array(raw: bytearray, name: str) -> np.ndarray:
    """The array a ``.npy`` member's bytes hold, sharing them; ValueError unless its header accounts for all."""
    import io

    from numpy.lib import format as npy

    head = io.BytesIO(raw[:_NPY_HEADER_MAX])
    version = npy.read_magic(head)
    if version == (1, 0):
        shape, fortran, dtype = npy.read_array_header_1_0(head)
    elif version == (2, 0):
        shape, fortran, dtype = npy.read_array_header_2_0(head)
    else:
        raise ValueError(f"member {name!r} has unsupported .npy version {version}")
    if dtype.hasobject:
        raise ValueError(f"member {name!r} holds Python objects (pickles are not loaded)")
    count = 1
    for n in shape:
        count *= int(n)
    header = head.tell()
    if header + count * dtype.itemsize != len(raw):
        raise ValueError(
            f"member {name!r} declares {shape} {dtype} ({count * dtype.itemsize} bytes) but holds {len(raw) - header}"
        )
    flat = np.frombuffer(raw, dtype, count, offset=header) if count and dtype.itemsize else np.empty(count, dtype)
    return flat.reshape(shape, order="F" if fortran else "C")


def read_npz(path: str) -> dict[str, np.ndarray]:
    """Every array of an ``.npz`` file, each checked against its declared size before it is read.

    ``numpy.load`` trusts the archive and each array's header: a crafted
    directory or a corrupt header that declares a huge size would allocate
    that much memory before failing, and a name listed twice would load the
    last copy silently. Here the archive's directory passes
    :func:`check_zip_directory`, the members together must fit in memory,
    each member is inflated by :func:`read_zip_member` (never past its
    declared size, its CRC checked) and must be a ``.npy`` array (no
    pickled objects) whose header accounts for exactly its bytes.

    Raises
    ------
    FileNotFoundError, IsADirectoryError, PermissionError
        As ``open`` does.
    ValueError
        Anything that is not such a file (with the reason), including zip
        errors, truncation, checksum mismatches, duplicated or misleading
        member names and zip bombs.
    """
    import struct
    import zipfile
    import zlib

    def member(name: str) -> str:
        return f"member {name!r}"

    try:
        arrays = {}
        with zipfile.ZipFile(path) as archive:
            check_zip_directory(archive, member)
            infos = archive.infolist()
            _check_fits_in_memory(sum(info.file_size for info in infos), "its members declare")
            for info in infos:
                name = info.filename
                if not name.endswith(".npy"):
                    raise ValueError(f"member {name!r} is not a .npy array")
                arrays[name[:-4]] = _npy_array(read_zip_member(archive, info, member), name)
        return arrays
    except (FileNotFoundError, IsADirectoryError, PermissionError):
        raise
    except (
        zipfile.BadZipFile,
        zipfile.LargeZipFile,
        zlib.error,
        struct.error,
        NotImplementedError,
        RuntimeError,
        EOFError,
        OSError,
        KeyError,
        OverflowError,
        SyntaxError,
        ValueError,
    ) as exc:
        # RuntimeError: an encrypted member; NotImplementedError: an unknown compression;
        # SyntaxError/ValueError: an unreadable .npy header.
        raise ValueError(f"{type(exc).__name__}: {exc}") from None
