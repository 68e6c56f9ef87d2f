"""Compiled single-pass loops (numba) over a string array's UTF-8 bytes: the common rows' normalisation
and the cut into tokens.

Each pass of Arrow compute (and each numpy step) reads and writes the whole batch once, and normalising
and tokenising took a dozen such passes. These loops do the same work in one pass per row, with the
per-character decisions looked up in tables that `textrnn.text` builds from the same engines (utf8proc,
RE2, Arrow) that define the Arrow passes, so the results are the same (property tests compare them).
Compiled on first use (~10 s) and cached beside this file (numba's `cache=True`); a process's first call
loads them from that cache (~0.6 s, mostly numba starting up), which is why the stages load them before
forking workers. `nogil` lets threads run them side by side.
"""

from __future__ import annotations

import numpy as np
from numba import njit

_FULL_WIDTH_FIRST, _FULL_WIDTH_LAST, _FULL_WIDTH_SHIFT = 0xFF01, 0xFF5E, 0xFEE0
_IDEOGRAPHIC_SPACE = 0x3000
_PLACEHOLDER_WORD = np.frombuffer(b"xxnum", dtype=np.uint8).copy()
# Flags of `normalise_common`: which steps of the normalisation are on.
NFKC, LOWERCASE, STRIP_HTML, PLACEHOLDERS = 1, 2, 4, 8


@njit(cache=True, nogil=True, inline="always")
def _decode(data, i):
    """The code point starting at byte i of valid UTF-8, and its length in bytes."""
    b = np.int32(data[i])
    if b < 0x80:
        return b, 1
    if b < 0xE0:
        return ((b & 0x1F) << 6) | (np.int32(data[i + 1]) & 0x3F), 2
    if b < 0xF0:
        return ((b & 0x0F) << 12) | ((np.int32(data[i + 1]) & 0x3F) << 6) | (np.int32(data[i + 2]) & 0x3F), 3
    return (((b & 0x07) << 18) | ((np.int32(data[i + 1]) & 0x3F) << 12) | ((np.int32(data[i + 2]) & 0x3F) << 6)
            | (np.int32(data[i + 3]) & 0x3F)), 4


@njit(cache=True, nogil=True, inline="always")
def _encode(out, pos, cp):
    """Write code point cp as UTF-8 at out[pos]; returns the position after it."""
    if cp < 0x80:
        out[pos] = cp
        return pos + 1
    if cp < 0x800:
        out[pos] = 0xC0 | (cp >> 6)
        out[pos + 1] = 0x80 | (cp & 0x3F)
        return pos + 2
    if cp < 0x10000:
        out[pos] = 0xE0 | (cp >> 12)
        out[pos + 1] = 0x80 | ((cp >> 6) & 0x3F)
        out[pos + 2] = 0x80 | (cp & 0x3F)
        return pos + 3
    out[pos] = 0xF0 | (cp >> 18)
    out[pos + 1] = 0x80 | ((cp >> 12) & 0x3F)
    out[pos + 2] = 0x80 | ((cp >> 6) & 0x3F)
    out[pos + 3] = 0x80 | (cp & 0x3F)
    return pos + 4


@njit(cache=True, nogil=True, inline="always")
def _is_digit(cp):
    return 0x30 <= cp <= 0x39


@njit(cache=True, nogil=True, inline="always")
def _is_word(cp):
    """RE2's \\w, which decides its \\b: ASCII letters, digits and the underscore."""
    return _is_digit(cp) or 0x41 <= cp <= 0x5A or 0x61 <= cp <= 0x7A or cp == 0x5F


@njit(cache=True, nogil=True, inline="always")
def _full_width_as_ascii(cp):
    """Full-width forms and the ideographic space mapped as NFKC maps them; any other code point as is."""
    if _FULL_WIDTH_FIRST <= cp <= _FULL_WIDTH_LAST:
        return cp - _FULL_WIDTH_SHIFT
    return 0x20 if cp == _IDEOGRAPHIC_SPACE else cp


@njit(cache=True, nogil=True, inline="always")
def _mapped(data, i, nfkc):
    """The code point at byte i (full-width forms mapped if `nfkc`), and its length in bytes."""
    cp, size = _decode(data, i)
    return (_full_width_as_ascii(cp) if nfkc else cp), size


@njit(cache=True, nogil=True)
def _number_end(data, i, end, nfkc):
    """Where RE2's leftmost-first match of \\b[0-9]+(?:[.,][0-9]+)*\\b starting at digit i ends, or -1.

    Between two digits there is never a word boundary, so the candidate ends are the ends of the digit
    runs; the greedy match backtracks to the longest candidate followed by a non-word character."""
    best = -1
    while True:
        while i < end:  # a run of digits
            cp, size = _mapped(data, i, nfkc)
            if not _is_digit(cp):
                break
            i += size
        if i == end:
            return i
        cp, size = _mapped(data, i, nfkc)
        if not _is_word(cp):
            best = i
        if (cp != 0x2E and cp != 0x2C) or i + size >= end:
            return best
        after, _ = _mapped(data, i + size, nfkc)
        if not _is_digit(after):
            return best
        i += size


@njit(cache=True, nogil=True)
def _normalise_row(data, i, end, flags, needs_utf8proc, lower, collapsible, trimmed, out, pos):
    """Normalise one row into out[pos:]; returns the position after it, or -1 if the row holds HTML, a
    URL, an e-mail or a character needing utf8proc (left to the Arrow passes)."""
    nfkc, lowercase = (flags & NFKC) != 0, (flags & LOWERCASE) != 0
    strip_html, placeholders = (flags & STRIP_HTML) != 0, (flags & PLACEHOLDERS) != 0
    start = pos
    in_run = False
    prev_word = False  # whether the character before is one of RE2's word characters (for \b)
    ws = 0  # w or W characters just before: 'www.' is where a URL match can start
    while i < end:
        cp, size = _decode(data, i)
        if nfkc:
            if needs_utf8proc[cp]:  # never a full-width form: those are mapped here
                return -1
            cp = _full_width_as_ascii(cp)
        if strip_html and (cp == 0x3C or cp == 0x26):
            return -1
        if placeholders:
            if cp == 0x40 or (cp == 0x2E and ws >= 3):
                return -1
            if cp == 0x3A and i + size < end:
                slash, second = _mapped(data, i + size, nfkc)
                if slash == 0x2F and i + size + second < end and _mapped(data, i + size + second, nfkc)[0] == 0x2F:
                    return -1
            ws = ws + 1 if cp == 0x77 or cp == 0x57 else 0
            if _is_digit(cp) and not prev_word:
                number_end = _number_end(data, i, end, nfkc)
                if number_end >= 0:
                    # ' xxnum ': a space joins the run before it and is not written at the start of a row.
                    if not in_run and pos > start:
                        out[pos] = 0x20
                        pos += 1
                    for p in _PLACEHOLDER_WORD:
                        out[pos] = p
                        pos += 1
                    out[pos] = 0x20
                    pos += 1
                    i, in_run, prev_word, ws = number_end, True, True, 0
                    continue
        prev_word = _is_word(cp)
        if lowercase:
            cp = lower[cp]
        # Written by hand rather than through a helper returning two values: numba then runs 2x faster.
        if collapsible[cp]:  # a run of spaces and control characters becomes one space
            if not in_run and pos > start:
                out[pos] = 0x20
                pos += 1
            in_run = True
        elif pos > start or not trimmed[cp]:  # nothing trimmable at the start of a row
            pos = _encode(out, pos, cp)
            in_run = False
        i += size
    while pos > start:  # trim the end: step back over the last character while it is trimmable
        last = pos - 1
        while (out[last] & 0xC0) == 0x80:  # a continuation byte
            last -= 1
        cp, _ = _decode(out, last)
        if not trimmed[cp]:
            break
        pos = last
    return pos


# The longest a row can grow: a one-digit number becomes ' xxnum '.
_MAX_GROWTH = len(_PLACEHOLDER_WORD) + 2


@njit(cache=True, nogil=True)
def _normalise_rows(data, offsets, valid, flags, needs_utf8proc, lower, collapsible, trimmed, out, out_offsets,
                    uncommon, row, pos):
    """Normalise rows from `row` on while the next surely fits in `out`; returns (next row, position)."""
    n = len(offsets) - 1
    while row < n:
        start, end = offsets[row], offsets[row + 1]
        if pos + _MAX_GROWTH * (end - start) > len(out):
            break
        if valid[row]:
            written = _normalise_row(data, start, end, flags, needs_utf8proc, lower, collapsible, trimmed, out, pos)
            if written < 0:
                uncommon[row] = True
            else:
                pos = written
        out_offsets[row + 1] = pos
        row += 1
    return row, pos


@njit(cache=True, nogil=True)
def normalise_common(data, offsets, valid, flags, needs_utf8proc, lower, collapsible, trimmed):
    """Normalise every row that holds no HTML, URL, e-mail or character needing utf8proc.

    Returns (UTF-8 bytes, int64 offsets, uncommon): the rows flagged uncommon (and null rows) are left
    empty here, for the Arrow passes to normalise. The output buffer starts a quarter larger than the
    input (normalised text is rarely longer) and doubles when a row might not fit."""
    n = len(offsets) - 1
    out = np.empty(len(data) + len(data) // 4 + 64, np.uint8)
    out_offsets = np.zeros(n + 1, np.int64)
    uncommon = np.zeros(n, np.bool_)
    row, pos = 0, 0
    while True:
        row, pos = _normalise_rows(data, offsets, valid, flags, needs_utf8proc, lower, collapsible, trimmed, out,
                                   out_offsets, uncommon, row, pos)
        if row == n:
            return out[:pos], out_offsets, uncommon
        longest = _MAX_GROWTH * (offsets[row + 1] - offsets[row])
        bigger = np.empty(max(2 * len(out), pos + longest + 64), np.uint8)
        bigger[:pos] = out[:pos]
        out = bigger


@njit(cache=True, nogil=True)
def _scan_tokens(data, offsets, classes, separator, word, fill, every_span, row_tokens, first, long_index,
                 long_starts, long_ends, starts, ends):
    """The one loop over the tokens of every row, run twice by `token_spans`: first to count (`fill`
    false: only `row_tokens` is written), then to fill the arrays allocated at the counted sizes. Returns
    (tokens, tokens longer than one character)."""
    t = w = 0
    for r in range(len(offsets) - 1):
        i, end = offsets[r], offsets[r + 1]
        while i < end:
            cp, size = _decode(data, i)
            cls = classes[cp]
            start = i
            i += size
            if cls == separator:
                continue
            chars = 1
            if cls == word:
                while i < end:
                    nxt, size = _decode(data, i)
                    if classes[nxt] != word:
                        break
                    i += size
                    chars += 1
            if fill:
                first[t] = cp
                if chars > 1:
                    long_index[w], long_starts[w], long_ends[w] = t, start, i
                if every_span:
                    starts[t], ends[t] = start, i
            w += chars > 1
            t += 1
        row_tokens[r + 1] = t
    return t, w


@njit(cache=True, nogil=True)
def token_spans(data, offsets, classes, separator, word, every_span):
    """The tokens of every row: a run of `word`-class code points is one token, every other code point
    that is not a `separator` is a token of its own; rows never join.

    Returns (row offsets counted in tokens (int64), the first code point of every token (int64), the
    index of every token longer than one character, where each of those starts and ends in `data`, and
    where every token starts and ends if `every_span`, else empty arrays). Counted first, so every array
    is allocated at its size."""
    row_tokens = np.zeros(len(offsets), np.int64)
    none = np.empty(0, np.int64)
    tokens, longer = _scan_tokens(data, offsets, classes, separator, word, False, False, row_tokens, none, none,
                                  none, none, none, none)
    first, long_index = np.empty(tokens, np.int64), np.empty(longer, np.int64)
    long_starts, long_ends = np.empty(longer, np.int64), np.empty(longer, np.int64)
    spans = tokens if every_span else 0
    starts, ends = np.empty(spans, np.int64), np.empty(spans, np.int64)
    _scan_tokens(data, offsets, classes, separator, word, True, every_span, row_tokens, first, long_index,
                 long_starts, long_ends, starts, ends)
    return row_tokens, first, long_index, long_starts, long_ends, starts, ends


@njit(cache=True, nogil=True)
def gather_spans(data, starts, ends):
    """The bytes of the spans [starts[i], ends[i]) back to back, and their int64 offsets."""
    offsets = np.zeros(len(starts) + 1, np.int64)
    for i in range(len(starts)):
        offsets[i + 1] = offsets[i] + ends[i] - starts[i]
    out = np.empty(offsets[-1], np.uint8)
    for i in range(len(starts)):
        out[offsets[i]: offsets[i + 1]] = data[starts[i]: ends[i]]
    return out, offsets


@njit(cache=True, nogil=True)
def first_of_each_row(values, offsets, limit):
    """The first `limit` values of every row (row i is values[offsets[i]:offsets[i+1]]), and the new
    int64 offsets."""
    n = len(offsets) - 1
    new_offsets = np.zeros(n + 1, np.int64)
    for r in range(n):
        new_offsets[r + 1] = new_offsets[r] + min(offsets[r + 1] - offsets[r], limit)
    out = np.empty(new_offsets[-1], values.dtype)
    for r in range(n):
        out[new_offsets[r]: new_offsets[r + 1]] = values[offsets[r]: offsets[r] + new_offsets[r + 1] - new_offsets[r]]
    return out, new_offsets


@njit(cache=True, nogil=True)
def count_below(counts, codes, limit):
    """counts[c] += 1 for every code c below `limit` (one-character tokens; the rest are words)."""
    for c in codes:
        if c < limit:
            counts[c] += 1


@njit(cache=True, nogil=True)
def ids_of_codes(codes, point_ids, word_ids, word_base):
    """The id of every token code: a code below `word_base` is a code point (point_ids), the others
    index the batch's words (word_ids)."""
    ids = np.empty(len(codes), np.int32)
    for i in range(len(codes)):
        c = codes[i]
        ids[i] = point_ids[c] if c < word_base else word_ids[c - word_base]
    return ids
