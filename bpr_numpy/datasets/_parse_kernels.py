"""numba kernels that parse delimited text straight from a byte buffer.

Why not ``np.loadtxt``/``np.fromstring``: on the machines this library is
benchmarked on they parse about 30 MB/s (20M MovieLens ratings: ~20 s);
these kernels run at several hundred MB/s, know the line number of every
row, and report the first bad field precisely instead of a generic error.

Imported lazily by :mod:`._parsing`; compiled code is cached on disk.
"""

from __future__ import annotations

import numpy as np
from numba import njit

__all__: list[str] = []

# Column kinds.
K_INT = 0
K_FLOAT = 1
K_STR = 2
K_SKIP = 3

# Error codes (mirrored in _parsing._ERROR_TEXT).
E_OK = 0
E_NFIELDS = 1
E_INT = 2
E_FLOAT = 3
E_EMPTY = 4
E_RANGE = 5

_POW10 = np.array([10.0**k for k in range(23)])  # exact in float64 up to 1e22

_INT_LIMIT = 10**17  # below 2**63 / 10: v * 10 + 9 cannot overflow


@njit(cache=True, nogil=True, inline="always")
def _is_blank(b):  # pragma: no cover - compiled
    return b == 32 or b == 9


@njit(cache=True, nogil=True, inline="always")
def _line_bounds(buf, pos, n):  # pragma: no cover - compiled
    """The line starting at ``pos``: ``(newline index, end without CR, first non-blank index)``."""
    e = pos
    while e < n and buf[e] != 10:
        e += 1
    le = e
    if le > pos and buf[le - 1] == 13:
        le -= 1
    q = pos
    while q < le and _is_blank(buf[q]):
        q += 1
    return e, le, q


@njit(cache=True, nogil=True, inline="always")
def _next_data_line(buf, pos, n, line, nblank):  # pragma: no cover - compiled
    """Skip blank lines from ``pos``: ``(pos, line, nblank, e, le, q)`` of the next non-blank line.

    The one line loop both scanners share: ``line`` counts every line passed
    (blank ones too, so numbers in messages match an editor's), ``nblank``
    the blank ones; ``e, le, q`` are :func:`_line_bounds` of the line found.
    ``pos >= n`` means no line is left (``e, le, q`` are then meaningless).
    """
    while pos < n:
        e, le, q = _line_bounds(buf, pos, n)
        line += 1
        if q < le:
            return pos, line, nblank, e, le, q
        nblank += 1
        pos = e + 1
    return pos, line, nblank, n, n, n


@njit(cache=True, nogil=True, inline="always")
def _strip_blanks(buf, s, e):  # pragma: no cover - compiled
    """``(s, e)`` moved inwards past leading and trailing blanks of ``buf[s:e]`` (equal when all blank)."""
    while s < e and _is_blank(buf[s]):
        s += 1
    while e > s and _is_blank(buf[e - 1]):
        e -= 1
    return s, e


@njit(cache=True, nogil=True, inline="always")
def _read_sign(buf, p):  # pragma: no cover - compiled
    """An optional ``-``/``+`` at ``buf[p]`` (``p`` must be in the field): ``(negative, index after it)``."""
    if buf[p] == 45:  # '-'
        return True, p + 1
    if buf[p] == 43:  # '+'
        return False, p + 1
    return False, p


@njit(cache=True, nogil=True)
def _parse_int(buf, s, e):  # pragma: no cover - compiled
    """Parse ``buf[s:e]`` (surrounding blanks allowed) as a decimal integer."""
    s, e = _strip_blanks(buf, s, e)
    if s == e:
        return 0, E_EMPTY
    neg, s = _read_sign(buf, s)
    if s == e:
        return 0, E_INT
    v = 0
    for p in range(s, e):
        d = np.int64(buf[p]) - 48
        if d < 0 or d > 9:
            return 0, E_INT
        if v >= _INT_LIMIT:
            return 0, E_RANGE
        v = v * 10 + d
    if neg:
        v = -v
    return v, E_OK


@njit(cache=True, nogil=True)
def _parse_float(buf, s, e, pow10):  # pragma: no cover - compiled
    """Parse ``buf[s:e]`` as a decimal number (``12``, ``-3.5``, ``.5``, ``1e9``).

    Up to 18 significant digits are accumulated in an integer and scaled by
    an exact power of ten, so short decimals such as MovieLens' ``3.5`` come
    out exactly as the correctly rounded float. ``nan``/``inf`` are refused.
    """
    s, e = _strip_blanks(buf, s, e)
    if s == e:
        return 0.0, E_EMPTY
    neg, p = _read_sign(buf, s)
    # The integer-part and fraction digit loops stay written out: one shared
    # inline digit reader (tried three ways) made this function ~1.7x slower.
    mant = 0
    ndig = 0
    exp10 = 0
    seen = False
    while p < e:
        d = np.int64(buf[p]) - 48
        if d < 0 or d > 9:
            break
        seen = True
        if ndig < 18:
            mant = mant * 10 + d
            if mant > 0:
                ndig += 1
        else:
            exp10 += 1
        p += 1
    if p < e and buf[p] == 46:  # '.'
        p += 1
        while p < e:
            d = np.int64(buf[p]) - 48
            if d < 0 or d > 9:
                break
            seen = True
            if ndig < 18:
                mant = mant * 10 + d
                if mant > 0:
                    ndig += 1
                exp10 -= 1
            p += 1
    if not seen:
        return 0.0, E_FLOAT
    if p < e and (buf[p] == 101 or buf[p] == 69):  # 'e' / 'E'
        p += 1
        eneg = False
        if p < e and (buf[p] == 45 or buf[p] == 43):
            eneg = buf[p] == 45
            p += 1
        if p == e:
            return 0.0, E_FLOAT
        ev = 0
        while p < e:
            d = np.int64(buf[p]) - 48
            if d < 0 or d > 9:
                return 0.0, E_FLOAT
            if ev < 100000:
                ev = ev * 10 + d
            p += 1
        exp10 += -ev if eneg else ev
    if p != e:
        return 0.0, E_FLOAT
    v = float(mant)
    if exp10 > 0:
        if exp10 <= 22:
            v = v * pow10[exp10]
        else:
            v = v * 10.0**exp10
    elif exp10 < 0:
        if exp10 >= -22:
            v = v / pow10[-exp10]
        else:
            v = v * 10.0**exp10
    if neg:
        v = -v
    if not np.isfinite(v):
        return 0.0, E_RANGE
    return v, E_OK


@njit(cache=True, nogil=True)
def _split_sep(buf, s, le, sep, starts, ends):  # pragma: no cover - compiled
    """Field boundaries of the line ``buf[s:le]`` split on ``sep``.

    Records the first ``starts.size`` fields and returns the total number.
    """
    cap = starts.size
    m = sep.size
    s0 = sep[0]
    nf = 0
    fs = s
    p = s
    while p < le:
        if buf[p] == s0:
            ok = True
            if m > 1:
                if p + m > le:
                    ok = False
                else:
                    for t in range(1, m):
                        if buf[p + t] != sep[t]:
                            ok = False
                            break
            if ok:
                if nf < cap:
                    starts[nf] = fs
                    ends[nf] = p
                nf += 1
                p += m
                fs = p
                continue
        p += 1
    if nf < cap:
        starts[nf] = fs
        ends[nf] = le
    return nf + 1


@njit(cache=True, nogil=True)
def _split_ws(buf, s, le, starts, ends):  # pragma: no cover - compiled
    """Field boundaries of ``buf[s:le]`` split on runs of blanks (leading/trailing ignored)."""
    cap = starts.size
    nf = 0
    p = s
    while p < le:
        while p < le and _is_blank(buf[p]):
            p += 1
        if p >= le:
            break
        fs = p
        while p < le and not _is_blank(buf[p]):
            p += 1
        if nf < cap:
            starts[nf] = fs
            ends[nf] = p
        nf += 1
    return nf


@njit(cache=True, nogil=True)
def scan_table(
    buf,
    start,
    line0,
    sep,
    ws,
    kinds,
    slots,
    skip_bad,
    out_int,
    out_float,
    out_sstart,
    out_slen,
    out_line,
    bad_line,
    bad_code,
    bad_field,
    bad_nfields,
):  # pragma: no cover - compiled
    """Parse a delimited table from ``buf[start:]``.

    Parameters
    ----------
    buf : uint8[:]
        The file's bytes.
    start : int
        Offset where data lines begin (after a header).
    line0 : int
        Number of the line before ``start`` (lines are numbered from 1).
    sep : uint8[:]
        Field separator (one or more bytes); ignored when ``ws``.
    ws : bool
        Fields are separated by runs of spaces/tabs; leading and trailing
        blanks are ignored.
    kinds, slots : int64[:]
        Per column: K_INT/K_FLOAT/K_STR/K_SKIP, and the output column it
        fills in the array of its kind.
    skip_bad : bool
        Skip (and record) malformed lines instead of stopping at the first.
    out_* : arrays with one row per possible data line.
    bad_* : arrays recording the first malformed lines (their size is the cap).

    Returns
    -------
    tuple of int64
        (rows, blank lines, bad lines, last line number, error code, error
        line, error field, fields found on the error line, error line start,
        error line end); the error fields are for the first malformed line.
    """
    n = buf.size
    ncols = kinds.size
    starts = np.empty(ncols, dtype=np.int64)
    ends = np.empty(ncols, dtype=np.int64)
    pos = start
    line = line0
    row = 0
    nblank = 0
    nbad = 0
    cap = bad_line.size
    err_code = 0
    err_line = 0
    err_field = 0
    err_nf = 0
    err_ls = 0
    err_le = 0
    while True:
        pos, line, nblank, e, le, q = _next_data_line(buf, pos, n, line, nblank)
        if pos >= n:
            break
        if ws:
            nf = _split_ws(buf, q, le, starts, ends)
        else:
            nf = _split_sep(buf, pos, le, sep, starts, ends)
        code = E_OK
        fi = 0
        if nf != ncols:
            code = E_NFIELDS
        else:
            while fi < ncols:
                k = kinds[fi]
                if k == K_INT:
                    v, c = _parse_int(buf, starts[fi], ends[fi])
                    if c != E_OK:
                        code = c
                        break
                    out_int[row, slots[fi]] = v
                elif k == K_FLOAT:
                    fv, c = _parse_float(buf, starts[fi], ends[fi], _POW10)
                    if c != E_OK:
                        code = c
                        break
                    out_float[row, slots[fi]] = fv
                elif k == K_STR:
                    a, b = _strip_blanks(buf, starts[fi], ends[fi])
                    if a == b:
                        code = E_EMPTY
                        break
                    out_sstart[row, slots[fi]] = a
                    out_slen[row, slots[fi]] = b - a
                fi += 1
        if code != E_OK:
            if nbad < cap:
                bad_line[nbad] = line
                bad_code[nbad] = code
                bad_field[nbad] = fi
                bad_nfields[nbad] = nf
            if nbad == 0:
                err_code = code
                err_line = line
                err_field = fi
                err_nf = nf
                err_ls = pos
                err_le = le
            nbad += 1
            if not skip_bad:
                return row, nblank, nbad, line, err_code, err_line, err_field, err_nf, err_ls, err_le
            pos = e + 1
            continue
        out_line[row] = line
        row += 1
        pos = e + 1
    return row, nblank, nbad, line, err_code, err_line, err_field, err_nf, err_ls, err_le


@njit(cache=True, nogil=True)
def scan_adjacency(buf, start, line0, out_user, out_uline, out_item, out_owner):  # pragma: no cover
    """Parse ``user item item ...`` lines (the LightGCN/NGCF format).

    Returns
    -------
    tuple of int64
        (lines with a user, pairs, blank lines, last line number, error code,
        error line, error token index (0 = the user), error line start,
        error line end).
    """
    n = buf.size
    pos = start
    line = line0
    nl = 0
    npairs = 0
    nblank = 0
    while True:
        pos, line, nblank, e, le, p = _next_data_line(buf, pos, n, line, nblank)
        if pos >= n:
            break
        tok = 0
        while p < le:
            q = p
            while q < le and not _is_blank(buf[q]):
                q += 1
            v, c = _parse_int(buf, p, q)
            if c != E_OK or v < 0:
                if c == E_OK:
                    c = E_RANGE
                return nl, npairs, nblank, line, c, line, tok, pos, le
            if tok == 0:
                out_user[nl] = v
                out_uline[nl] = line
            else:
                out_item[npairs] = v
                out_owner[npairs] = nl
                npairs += 1
            tok += 1
            p = q
            while p < le and _is_blank(buf[p]):
                p += 1
        nl += 1
        pos = e + 1
    return nl, npairs, nblank, line, 0, 0, 0, 0, 0


@njit(cache=True, nogil=True)
def tokens_to_ints(buf, starts, lens):  # pragma: no cover - compiled
    """Parse tokens as non-negative canonical decimal integers.

    Returns ``(values, ok)``; ``ok`` is False as soon as one token is not
    canonical (sign, leading zero, non-digit, more than 18 digits): such ids
    stay strings, so ``"007"`` and ``"7"`` remain different users.
    """
    n = starts.size
    out = np.empty(n, dtype=np.int64)
    for k in range(n):
        s = starts[k]
        m = lens[k]
        if m > 18 or (m > 1 and buf[s] == 48):
            return out, False
        v = 0
        for p in range(s, s + m):
            d = np.int64(buf[p]) - 48
            if d < 0 or d > 9:
                return out, False
            v = v * 10 + d
        out[k] = v
    return out, True


@njit(cache=True, nogil=True)
def gather_tokens(buf, starts, lens, width):  # pragma: no cover - compiled
    """Copy tokens into a zero-padded ``(n, width)`` byte matrix (viewed as ``S{width}``)."""
    n = starts.size
    out = np.zeros((n, width), dtype=np.uint8)
    for k in range(n):
        s = starts[k]
        for t in range(lens[k]):
            out[k, t] = buf[s + t]
    return out
