"""Python side of the text parsers: encodings, headers, error messages.

Every error raised here is a ``ValueError`` whose message starts with
``"<file>, line <N>: "`` (lines numbered from 1, as editors do) and says
what was wrong and shows the line.
"""

from __future__ import annotations

import codecs
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

__all__: list[str] = []

K_INT, K_FLOAT, K_STR, K_SKIP = 0, 1, 2, 3
_KIND_CODES = {"int": K_INT, "float": K_FLOAT, "str": K_STR, "skip": K_SKIP}
_UTF8_BOM = b"\xef\xbb\xbf"
_MAX_EXAMPLES = 20
_VALIDATE_CHUNK = 1 << 24


@dataclass
class _Table:
    """Parsed columns of a delimited file (views into arrays sized to the file)."""

    label: str
    buf: np.ndarray | None  # None once only numeric columns are needed (the loaders drop the bytes)
    ints: dict[str, np.ndarray] = field(default_factory=dict)
    floats: dict[str, np.ndarray] = field(default_factory=dict)
    strs: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    lines: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    n_lines: int = 0
    n_header: int = 0
    n_blank: int = 0
    n_bad: int = 0
    bad_examples: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()

    @property
    def n_rows(self) -> int:
        return int(self.lines.size)

    def file_bytes(self) -> np.ndarray:
        """``buf``, which the string columns point into (present until a loader drops it)."""
        assert self.buf is not None, "the file's bytes were dropped"
        return self.buf

    def summary_fields(self, notes=()) -> dict:
        """The load-summary counts of this table, with ``notes`` as given."""
        return dict(
            lines_read=self.n_lines,
            header_lines=self.n_header,
            blank_lines=self.n_blank,
            malformed_lines=self.n_bad,
            malformed_examples=self.bad_examples,
            notes=tuple(notes),
        )

    def where(self, k: int) -> str:
        """Name row ``k`` for error messages."""
        return f"{self.label}, line {int(self.lines[k])}"


def _is_ascii_compatible(encoding: str) -> bool:
    try:
        return "a,1\t\n".encode(encoding) == b"a,1\t\n" and codecs.lookup(encoding).name not in ("utf-16", "utf-32")
    except LookupError:
        raise ValueError(f"unknown encoding {encoding!r}") from None


def _line_of_offset(data: bytes | bytearray, offset: int) -> int:
    return data.count(b"\n", 0, offset) + 1


def _prepare_bytes(
    data: bytes | bytearray, label: str, encoding: str
) -> tuple[bytes | bytearray, int, tuple[str, ...]]:
    """Check the encoding and return (bytes to parse, start offset, notes).

    ASCII-compatible encodings are parsed byte-wise (only ids need decoding);
    others (UTF-16/32) are transcoded to UTF-8 first.
    """
    notes: tuple[str, ...] = ()
    if not _is_ascii_compatible(encoding):
        try:
            text = data.decode(encoding)
        except UnicodeDecodeError as exc:
            ln = data[: exc.start].decode(encoding, errors="replace").count("\n") + 1
            raise ValueError(f"{label}, line {ln}: bytes that are not valid {encoding} ({exc.reason})") from None
        return text.lstrip("\ufeff").encode("utf-8"), 0, (f"transcoded from {encoding}",)
    start = 0
    if data.startswith(_UTF8_BOM):
        start = 3
        notes = ("skipped a UTF-8 byte-order mark",)
    if not data.isascii() and codecs.lookup(encoding).name in ("utf-8", "ascii"):
        # Validate in slices cut at line ends: no multi-byte character spans a
        # cut, and a 500 MB file never becomes a 500 MB-2 GB str at once.
        view = memoryview(data)
        pos = start
        while pos < len(data):
            end = data.find(b"\n", min(pos + _VALIDATE_CHUNK, len(data)))
            end = len(data) if end < 0 else end + 1
            try:
                str(view[pos:end], encoding)
            except UnicodeDecodeError as exc:
                off = pos + exc.start
                ln = _line_of_offset(data, off)
                hint = " (if the file is Latin-1/Windows-1252, pass encoding='latin-1')" if encoding != "ascii" else ""
                raise ValueError(
                    f"{label}, line {ln}: byte {bytes(data[off : off + 1])!r} is not valid {encoding} "
                    f"({exc.reason}){hint}"
                ) from None
            pos = end
    nul = data.find(b"\0", start)
    if nul >= 0:  # never text: NUL would also vanish from ids (numpy strips it), merging distinct ids
        raise ValueError(
            f"{label}, line {_line_of_offset(data, nul)}: a NUL byte (a binary file, or an encoding "
            "such as UTF-16 given without encoding=...)"
        )
    return data, start, notes


def _first_line(data: bytes | bytearray, start: int) -> tuple[str | None, int, int, int]:
    """First non-blank line: (text or None, offset after it, its line number, blank lines before it)."""
    pos, line, blanks = start, 0, 0
    n = len(data)
    while pos < n:
        e = data.find(b"\n", pos)
        e = n if e < 0 else e
        line += 1
        text = data[pos:e].rstrip(b"\r")
        if text.strip(b" \t"):
            return text.decode("utf-8", errors="replace"), min(e + 1, n), line, blanks
        blanks += 1
        pos = e + 1
    return None, n, line, blanks


def _split_line(text: str, sep: bytes | None) -> list[str]:
    if sep is None:
        return text.split()
    return [t.strip(" \t") for t in text.split(sep.decode("utf-8"))]


def _looks_numeric(token: str) -> bool:
    try:
        float(token)
    except ValueError:
        return False
    return token.strip().lower() not in ("nan", "inf", "-inf", "+inf", "infinity")


_ERROR_TEXT = {
    2: "is not an integer",
    3: "is not a number",
    4: "is empty",
    5: "is out of range",
}


def _describe_error(
    data: bytes | bytearray,
    code: int,
    line: int,
    field_: int,
    nfields: int,
    ls: int,
    le: int,
    names: Sequence[str],
    sep: bytes | None,
    encoding: str,
    header_tokens: Sequence[str] | None,
) -> tuple[str, str]:
    """(what went wrong, the line's text) for a parse error."""
    text = data[ls:le].decode(encoding if _is_ascii_compatible(encoding) else "utf-8", errors="replace")
    if code == 1:
        sep_desc = "runs of blanks" if sep is None else repr(sep.decode("utf-8", errors="replace"))
        what = f"expected {len(names)} fields separated by {sep_desc}, found {nfields}"
    else:
        tokens = _split_line(text, sep)
        token = tokens[field_] if field_ < len(tokens) else ""
        name = names[field_] if field_ < len(names) else "?"
        what = f"field {field_ + 1} ({name}) {_ERROR_TEXT.get(code, 'is malformed')}"
        if code != 4:
            what += f": {token!r}"
            if any(ord(ch) > 127 for ch in token):
                what += " (holds non-ASCII characters; wrong encoding?)"
    tokens = _split_line(text, sep)
    lowered = [t.lower() for t in tokens]
    if (header_tokens is not None and [t.lower() for t in header_tokens] == lowered) or (
        tokens and not any(_looks_numeric(t) for t in tokens) and any(t in _HEADER_WORDS for t in lowered)
    ):
        what += "; this looks like a header line in the middle of the file (were files concatenated?)"
    return what, text


# Lower-cased column names understood in headers, by role.
_ALIASES: dict[str, frozenset[str]] = {
    "user": frozenset(
        "user users userid user_id user-id uid customer customerid customer_id visitorid visitor_id "
        "member memberid member_id reviewerid reviewer_id".split()
    ),
    "item": frozenset(
        "item items itemid item_id item-id iid movie movieid movie_id product productid product_id asin "
        "track trackid track_id song songid song_id book bookid book_id isbn artist artistid artist_id "
        "business_id businessid".split()
    ),
    "rating": frozenset("rating ratings score value weight count plays playcount play_count stars".split()),
    "timestamp": frozenset("timestamp time ts date datetime unixtime unix_time unixreviewtime".split()),
}
_HEADER_WORDS = frozenset().union(*_ALIASES.values())


def _role_of(name: str) -> str | None:
    key = name.strip().strip('"').strip("'").lower()
    for role, names in _ALIASES.items():
        if key in names:
            return role
    return None


def _read_table(
    data: bytes | bytearray,
    label: str,
    *,
    sep: bytes | None,
    columns: Sequence[tuple[str, str]],
    skip_header: bool,
    encoding: str = "utf-8",
    on_bad_line: str = "raise",
    prepared: tuple[bytes | bytearray, int, tuple[str, ...]] | None = None,
) -> _Table:
    """Parse a delimited file into typed columns.

    Parameters
    ----------
    data : bytes
        File contents.
    label : str
        File name for messages.
    sep : bytes or None
        Separator; ``None`` for runs of blanks.
    columns : sequence of (name, kind)
        One entry per field on a line; kind is "int", "float", "str" or "skip".
    skip_header : bool
        The first non-blank line is a header.
    encoding : str
        Text encoding (validated for UTF-8/ASCII).
    on_bad_line : {"raise", "skip"}
        Malformed lines raise ``ValueError`` or are skipped and counted.
    prepared : tuple, optional
        Result of :func:`_prepare_bytes` when the caller already ran it.
    """
    from . import _parse_kernels as pk

    if on_bad_line not in ("raise", "skip"):
        raise ValueError(f"on_bad_line must be 'raise' or 'skip', got {on_bad_line!r}")
    data, start, notes = prepared if prepared is not None else _prepare_bytes(data, label, encoding)
    first, after_first, first_no, blanks_before = _first_line(data, start)
    if first is None:
        raise ValueError(f"{label}: the file is empty (no data lines)")
    header_tokens = _split_line(first, sep) if skip_header else None
    if skip_header:
        begin, line0, n_header = after_first, first_no, 1
    else:
        begin, line0, n_header = start, 0, 0

    names = [c[0] for c in columns]
    kinds = np.array([_KIND_CODES[c[1]] for c in columns], dtype=np.int64)
    slots = np.zeros(kinds.size, dtype=np.int64)
    counts = dict.fromkeys((K_INT, K_FLOAT, K_STR, K_SKIP), 0)
    for j, k in enumerate(kinds):
        slots[j] = counts[int(k)]
        counts[int(k)] += 1
    n_max = data.count(b"\n", begin) + 1
    out_int = np.empty((n_max, counts[K_INT]), dtype=np.int64)
    out_float = np.empty((n_max, counts[K_FLOAT]), dtype=np.float64)
    out_sstart = np.empty((n_max, counts[K_STR]), dtype=np.int64)
    out_slen = np.empty((n_max, counts[K_STR]), dtype=np.int64)
    out_line = np.empty(n_max, dtype=np.int64)
    cap = _MAX_EXAMPLES
    bad = [np.zeros(cap, dtype=np.int64) for _ in range(4)]
    buf = np.frombuffer(data, dtype=np.uint8)
    sep_arr = np.frombuffer(sep if sep else b" ", dtype=np.uint8)
    res = pk.scan_table(
        buf,
        begin,
        line0,
        sep_arr,
        sep is None,
        kinds,
        slots,
        on_bad_line == "skip",
        out_int,
        out_float,
        out_sstart,
        out_slen,
        out_line,
        *bad,
    )
    rows, nblank, nbad, last_line, code, eline, efield, enf, els, ele = (int(x) for x in res)
    if code and on_bad_line == "raise":
        what, text = _describe_error(data, code, eline, efield, enf, els, ele, names, sep, encoding, header_tokens)
        raise ValueError(f"{label}, line {eline}: {what} (line: {text!r})")
    examples = []
    for t in range(min(nbad, cap)):
        c, ln, fi, nf = int(bad[1][t]), int(bad[0][t]), int(bad[2][t]), int(bad[3][t])
        if c == 1:
            examples.append(f"line {ln}: expected {len(names)} fields, found {nf}")
        else:
            nm = names[fi] if fi < len(names) else "?"
            examples.append(f"line {ln}: field {fi + 1} ({nm}) {_ERROR_TEXT.get(c, 'is malformed')}")
    if rows == 0:
        if nbad:
            raise ValueError(f"{label}: no line could be parsed ({nbad} malformed lines; first: {examples[0]})")
        raise ValueError(f"{label}: no data lines (only a header and/or blank lines)")
    table = _Table(
        label=label,
        buf=buf,
        lines=out_line[:rows],
        n_lines=last_line,
        n_header=n_header,
        n_blank=nblank + (blanks_before if skip_header else 0),
        n_bad=nbad,
        bad_examples=tuple(examples),
        notes=notes,
    )
    for j, (name, kind) in enumerate(columns):
        s = int(slots[j])
        if kind == "int":
            table.ints[name] = out_int[:rows, s]
        elif kind == "float":
            table.floats[name] = out_float[:rows, s]
        elif kind == "str":
            table.strs[name] = (out_sstart[:rows, s], out_slen[:rows, s])
    _drop_header_rows(table, on_bad_line == "raise")
    return table


def _header_like_rows(table: _Table) -> np.ndarray:
    """Rows whose user and item fields are both column names, such as ``user,item``.

    With string ids such a line parses as an ordinary row (user ``"user"``,
    item ``"item"``): it is a header in the middle of the file (files
    concatenated), never data. Vectorised: tokens are compared a block of
    rows at a time, and only those starting with a letter or a quote.
    """
    hit: np.ndarray | None = None
    for role in ("user", "item"):
        forms = sorted({(q + w + q).encode() for w in _ALIASES[role] for q in ("", '"', "'")})
        width = max(len(f) for f in forms)
        keys_of_words = np.array(forms, dtype=f"S{width}")
        starts, lens = table.strs[role]
        if hit is None:  # candidates: a token starting with a letter or a quote
            buf = table.file_bytes()
            first = buf[np.minimum(starts, len(buf) - 1)] | 0x20  # ASCII lower case
            hit = np.flatnonzero(
                (lens > 0) & (lens <= width) & (((first >= 0x61) & (first <= 0x7A)) | (first == 0x22) | (first == 0x27))
            )
        found = []
        offsets = np.arange(width)
        for a in range(0, len(hit), 1 << 16):
            rows = hit[a : a + (1 << 16)]
            rows = rows[(lens[rows] > 0) & (lens[rows] <= width)]
            buf = table.file_bytes()
            pos = np.minimum(starts[rows][:, None] + offsets, len(buf) - 1)
            chars = np.where(offsets < lens[rows][:, None], buf[pos], 0).astype(np.uint8)
            chars = np.where((chars >= 65) & (chars <= 90), chars + 32, chars).astype(np.uint8)
            keys = np.ascontiguousarray(chars).view(f"S{width}").ravel()
            found.append(rows[np.isin(keys, keys_of_words)])
        hit = np.concatenate(found) if found else np.zeros(0, np.int64)
        if not len(hit):
            break
    assert hit is not None  # set for the first role
    return hit


def _drop_header_rows(table: _Table, raise_: bool) -> None:
    """Refuse (or, skipping bad lines, drop and count) header lines found among the rows."""
    if "user" not in table.strs or "item" not in table.strs or not table.n_rows:
        return
    heads = _header_like_rows(table)
    if not len(heads):
        return

    def token(role: str, k: int) -> str:
        s, ln = table.strs[role]
        return bytes(table.file_bytes()[s[k] : s[k] + ln[k]]).decode("utf-8", errors="replace")

    k = int(heads[0])
    what = (
        f"the user and item fields {token('user', k)!r} and {token('item', k)!r} are column names: this looks "
        "like a header line in the middle of the file (were files concatenated?)"
    )
    if raise_:
        raise ValueError(f"{table.where(k)}: {what}")
    keep = np.ones(table.n_rows, dtype=bool)
    keep[heads] = False
    examples = [f"line {int(table.lines[h])}: {what}" for h in heads[:_MAX_EXAMPLES]]
    table.bad_examples = tuple(
        sorted(table.bad_examples + tuple(examples), key=lambda e: int(e.split(":")[0].split()[1]))
    )[:_MAX_EXAMPLES]
    table.n_bad += len(heads)
    table.lines = table.lines[keep]
    for columns in (table.ints, table.floats):
        for name in columns:
            columns[name] = columns[name][keep]
    for name, (s, ln) in table.strs.items():
        table.strs[name] = (s[keep], ln[keep])
    if not table.n_rows:
        raise ValueError(
            f"{table.label}: no line could be parsed ({table.n_bad} malformed lines; first: {table.bad_examples[0]})"
        )


def _tokens_to_ids(table: _Table, name: str, encoding: str, id_type: str) -> tuple[np.ndarray, np.ndarray]:
    """Distinct ids of a string column and each row's code: (ids, codes).

    ``id_type="auto"`` gives integer ids when every token is a canonical
    non-negative decimal integer, else strings; ``"str"`` always strings.
    Tokens are de-duplicated as raw bytes and only the distinct ones are
    decoded, which keeps this fast for tens of millions of rows.
    """
    from . import _parse_kernels as pk
    from ._ids import _factorize

    starts, lens = table.strs[name]
    starts = np.ascontiguousarray(starts)
    lens = np.ascontiguousarray(lens)
    if id_type == "auto" and starts.size:
        values, ok = pk.tokens_to_ints(table.file_bytes(), starts, lens)
        if ok:
            return _factorize(values)
    width = int(lens.max()) if lens.size else 1
    mat = pk.gather_tokens(table.file_bytes(), starts, lens, width)
    raw = mat.view(f"S{width}").reshape(-1)
    uniq, codes = np.unique(raw, return_inverse=True)
    decoded = []
    for k, b in enumerate(uniq.tolist()):
        try:
            decoded.append(b.decode(encoding))
        except UnicodeDecodeError as exc:
            row = int(np.argmax(codes.reshape(-1) == k))
            raise ValueError(f"{table.where(row)}: {name} id {b!r} is not valid {encoding} ({exc.reason})") from None
    ids = np.array(decoded, dtype=str)
    codes = codes.reshape(-1).astype(np.int64)
    # Decoding can map different byte strings to one string only for
    # non-injective codecs; re-factorise to keep ids unique and sorted.
    ids2, remap = np.unique(ids, return_inverse=True)
    if ids2.size != ids.size or not np.array_equal(ids2, ids):
        return ids2, remap.reshape(-1)[codes]
    return ids, codes


def _read_adjacency(data: bytes | bytearray, label: str, encoding: str = "utf-8"):
    """Parse a ``user item item ...`` file.

    Returns
    -------
    users : int64 array, one per non-blank line (a user may have no items)
    user_lines : int64 array, line number of each of those lines
    items : int64 array, one per pair
    owner : int64 array, index into ``users`` of each pair
    n_lines, n_blank : int
    """
    from . import _parse_kernels as pk

    data, start, _ = _prepare_bytes(data, label, encoding)
    first, _, _, _ = _first_line(data, start)
    if first is None:
        raise ValueError(f"{label}: the file is empty (no data lines)")
    n_lines_max = data.count(b"\n", start) + 1
    n_tok_max = data.count(b" ", start) + data.count(b"\t", start) + n_lines_max
    buf = np.frombuffer(data, dtype=np.uint8)
    users = np.empty(n_lines_max, dtype=np.int64)
    ulines = np.empty(n_lines_max, dtype=np.int64)
    items = np.empty(n_tok_max, dtype=np.int64)
    owner = np.empty(n_tok_max, dtype=np.int64)
    res = pk.scan_adjacency(buf, start, 0, users, ulines, items, owner)
    nl, npairs, nblank, last_line, code, eline, etok, els, ele = (int(x) for x in res)
    if code:
        text = data[els:ele].decode("utf-8", errors="replace")
        toks = text.split()
        tok = toks[etok] if etok < len(toks) else ""
        role = "user id" if etok == 0 else f"item id {etok}"
        what = "is negative" if code == 5 and tok.startswith("-") else _ERROR_TEXT.get(code, "is malformed")
        raise ValueError(
            f"{label}, line {eline}: token {etok + 1} ({role}) {what}: {tok!r}; expected lines of "
            f"non-negative integers 'user item item ...' (line: {text[:200]!r})"
        )
    return users[:nl], ulines[:nl], items[:npairs], owner[:npairs], last_line, nblank
