"""Unicode NFKC exactly as Arrow's `utf8_normalize` (utf8proc) gives it, faster on Chinese text: the
full-width forms mapped byte-wise with numpy, utf8proc only for the rows holding another character that
NFKC could change."""

from __future__ import annotations

import functools
import unicodedata

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from textrnn.code_point_tables import once_per_installation
from textrnn.utf8 import from_row_0, replace_rows, strings_of_code_points, utf8_bytes, utf8_row_offsets


def nfkc(texts: pa.Array) -> pa.Array:
    """Unicode NFKC, exactly as Arrow's `utf8_normalize` (utf8proc) gives it, faster on typical text.

    Chinese text is full of full-width punctuation (，！？), which NFKC maps one to one onto ASCII, as it
    does the ideographic space. Rows with no other character that NFKC could change are mapped byte-wise
    with numpy; the other rows (about 1% of the reviews) go through utf8proc."""
    if not pa.types.is_string(texts.type):
        return pc.utf8_normalize(texts, "NFKC")
    texts = from_row_0(texts)
    full = pc.fill_null(pc.match_substring_regex(texts, _nfkc_needs_utf8proc()), False)
    mapped = _full_width_to_ascii(texts)
    if not pc.any(full).as_py():
        return mapped
    return replace_rows(mapped, np.flatnonzero(full.to_numpy(zero_copy_only=False)),
                        pc.utf8_normalize(pc.filter(texts, full), "NFKC"))


# NFKC maps U+FF01-U+FF5E onto U+0021-U+007E (UTF-8 EF BC 81-BF, EF BD 80-9E) and U+3000 onto a space.
_FULL_WIDTH = ((0xEF, 0xBC, 0x81, 0xBF, 0x60), (0xEF, 0xBD, 0x80, 0x9E, 0x20), (0xE3, 0x80, 0x80, 0x80, 0x60))


def _full_width_to_ascii(texts: pa.StringArray) -> pa.StringArray:
    """Every full-width ASCII form and ideographic space of a (row 0 based) string array, as ASCII."""
    data = utf8_bytes(texts)
    lead = np.flatnonzero((data[:-2] == 0xEF) | (data[:-2] == 0xE3)) if len(data) > 2 else np.zeros(0, np.int64)
    first, second, third = data[lead], data[lead + 1], data[lead + 2]
    ascii_byte = np.zeros(len(lead), np.uint8)
    for lead_byte, mid, low, high, shift in _FULL_WIDTH:
        hit = (first == lead_byte) & (second == mid) & (third >= low) & (third <= high)
        ascii_byte[hit] = third[hit] - shift
    found = ascii_byte > 0
    at = lead[found]
    if len(at) == 0:
        return texts
    keep = np.ones(len(data), bool)
    keep[at + 1] = keep[at + 2] = False
    out = data[keep]
    out[at - 2 * np.arange(len(at))] = ascii_byte[found]
    offsets = utf8_row_offsets(texts)
    offsets = offsets - 2 * np.searchsorted(at, offsets)
    return pa.StringArray.from_buffers(len(texts), pa.py_buffer(offsets.astype(np.int32)), pa.py_buffer(out),
                                       texts.buffers()[0], texts.null_count)


_HANGUL_JAMO = ((0x1100, 0x11FF), (0xA960, 0xA97F), (0xD7B0, 0xD7FF))


@functools.cache
def _nfkc_needs_utf8proc() -> str:
    """A regex for the characters that send a row through utf8proc: all but `nfkc_allowed_points`."""
    allowed = nfkc_allowed_points()
    breaks = np.flatnonzero(np.diff(allowed) != 1)
    ranges = zip(np.r_[allowed[0], allowed[breaks + 1]].tolist(), np.r_[allowed[breaks], allowed[-1]].tolist())
    return "[^" + "".join(f"\\x{{{a:x}}}-\\x{{{b:x}}}" for a, b in ranges) + "]"


@once_per_installation
def nfkc_allowed_points() -> np.ndarray:
    """The code points that NFKC leaves alone whatever surrounds them, and the full-width forms mapped
    above (sorted int64).

    A character is left alone when NFKC maps it onto itself (asked of utf8proc) and it cannot join the
    character before it: it is assigned, not a mark, of combining class 0 (asked of Python's Unicode
    database; these properties never change once assigned), and not a Hangul jamo. Only the BMP and the
    emoji blocks are looked at; any other character takes the utf8proc path."""
    points = np.r_[0:0xD800, 0xE000:0x10000, 0x1F000:0x1FB00].astype(np.uint32)
    one_char = strings_of_code_points(points)
    unchanged = pc.equal(pc.utf8_normalize(one_char, "NFKC"), one_char).to_numpy(zero_copy_only=False)
    for low, high in _HANGUL_JAMO:
        unchanged &= (points < low) | (points > high)
    candidates = points[unchanged]
    alone = np.array([_stands_alone(chr(p)) for p in candidates.tolist()], dtype=bool)
    return np.union1d(candidates[alone], np.r_[0x3000, 0xFF01:0xFF5F]).astype(np.int64)


def _stands_alone(char: str) -> bool:
    category = unicodedata.category(char)
    return category[0] != "M" and category != "Cn" and unicodedata.combining(char) == 0
