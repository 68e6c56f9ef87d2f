"""Text normalisation over Arrow string arrays: NFKC, HTML stripped, URLs / e-mails / numbers as
placeholders, lower case, runs of spaces and control characters as one space. One compiled pass
(`textrnn.kernels`) normalises the common rows; Arrow compute passes, each run only on the rows that can
hold a match, take the rest.

The same function runs in `clean` and in torch-free inference, so a text is normalised exactly as it was
in training."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from textrnn import kernels
from textrnn.code_point_tables import once_per_installation
from textrnn.nfkc import nfkc, nfkc_allowed_points
from textrnn.utf8 import (
    code_points,
    every_code_point,
    from_row_0,
    replace_rows,
    string_array,
    strings_of_code_points,
    utf8_buffers,
    utf8_bytes,
    utf8_row_offsets,
)

# Placeholders are plain letter runs, so the tokeniser keeps each one whole as a word.
URL_TOKEN, EMAIL_TOKEN, NUM_TOKEN = "xxurl", "xxemail", "xxnum"
_HTML_TAG = r"<[^<>]{0,200}>"
_HTML_ENTITIES = {"&nbsp;": " ", "&lt;": "<", "&gt;": ">", "&quot;": '"', "&#39;": "'", "&apos;": "'",
                  "&amp;": "&"}
_NUMERIC_ENTITY = r"&#x?[0-9a-fA-F]{1,6};"
_URL = r"(?i)\b(?:https?://|ftp://|www\.)[^\s<>\"]+"
_EMAIL = r"(?i)\b[a-z0-9._%+-]+@[a-z0-9.-]+\.[a-z]{2,}\b"
# RE2's \d is [0-9] too, but spelt as a class the pattern runs several times faster (same matches: a property test).
_NUMBER = r"\b[0-9]+(?:[.,][0-9]+)*\b"
_SPACE_OR_CONTROL_RUN = r"[ \p{Cc}\p{Cf}\p{Co}\p{Cs}]+"
_SPACE_RUN_OR_CONTROL = r"  |[\p{Cc}\p{Cf}\p{Co}\p{Cs}]"  # what the pass above changes


@dataclass(frozen=True)
class Normalisation:
    """The normalisation settings, saved with the vocabulary so inference applies the same ones."""

    nfkc: bool = True
    lowercase: bool = True
    strip_html: bool = True
    placeholders: bool = True
    max_chars: int = 1000


def normalise(texts: pa.Array, s: Normalisation) -> pa.Array:
    """Normalise a string array; null stays null. Never truncates (callers decide what too long means).

    Most rows hold no HTML, URL, e-mail or character that needs utf8proc's NFKC: one compiled pass
    normalises those (`kernels.normalise_common`), and `_normalise_rows_left` the others."""
    out = texts if pa.types.is_string(texts.type) else texts.cast(pa.string())
    if len(out) == 0:
        return _normalise_with_arrow(out, s)
    out = from_row_0(out)
    common, status = _normalise_compiled(out, s)
    left = np.flatnonzero(status != kernels.DONE)
    if len(left) == 0:
        return common
    return replace_rows(common, left, _normalise_rows_left(out, status, s))


def _normalise_compiled(texts: pa.StringArray, s: Normalisation) -> tuple[pa.StringArray, np.ndarray]:
    """The compiled pass over a (row 0 based) string array: the rows it normalised, the others empty, and
    what it did with each row (kernels.DONE, LEFT_TO_ARROW or NFKC_FIRST)."""
    flags = ((kernels.NFKC if s.nfkc else 0) | (kernels.LOWERCASE if s.lowercase else 0)
             | (kernels.STRIP_HTML if s.strip_html else 0) | (kernels.PLACEHOLDERS if s.placeholders else 0))
    valid = np.ones(len(texts), bool) if texts.null_count == 0 else pc.is_valid(texts).to_numpy(zero_copy_only=False)
    data, offsets, status = kernels.normalise_common(*utf8_buffers(texts), valid, flags, *_normalisation_tables())
    return string_array(len(texts), offsets, data, texts.buffers()[0], texts.null_count), status


def _normalise_rows_left(texts: pa.StringArray, status: np.ndarray, s: Normalisation) -> pa.Array:
    """The rows the compiled pass left, normalised, in row order. A row stopped by a character that needs
    utf8proc's NFKC (an ellipsis '…' is three dots) takes utf8proc's NFKC, then the compiled pass again
    with NFKC off: NFKC is the first step, so the rest on its result is the whole normalisation. Rows with
    HTML, a URL or an e-mail (first, or after that NFKC) take the Arrow passes, all in one go: their cost
    is mostly per call (RE2 compiles each pattern on every call)."""
    to_arrow = np.flatnonzero(status == kernels.LEFT_TO_ARROW)
    nfkc_first = np.flatnonzero(status == kernels.NFKC_FIRST)
    for_arrow, parts, rows = [texts.take(to_arrow)], [], []
    if len(nfkc_first):
        nfkc_done = pc.utf8_normalize(texts.take(nfkc_first), "NFKC")
        common, again = _normalise_compiled(nfkc_done, dataclasses.replace(s, nfkc=False))
        done = again == kernels.DONE
        parts.append(common.filter(pa.array(done)))
        rows.append(nfkc_first[done])
        # NFKC is idempotent: the Arrow passes' NFKC leaves these rows as they are.
        for_arrow.append(nfkc_done.filter(pa.array(~done)))
        to_arrow = np.concatenate([to_arrow, nfkc_first[~done]])
    if len(to_arrow):
        parts.append(_normalise_with_arrow(pa.concat_arrays(for_arrow), s))
        rows.append(to_arrow)
    order = np.argsort(np.concatenate(rows), kind="stable")
    return pa.concat_arrays(parts).take(order)


def _normalise_with_arrow(texts: pa.StringArray, s: Normalisation) -> pa.Array:
    """`normalise` as Arrow passes, each run only on the rows that can hold a match."""
    out = texts
    if s.nfkc:
        out = nfkc(out)
    if s.strip_html:
        out = _where(out, _rows_holding(out, _HTML_BYTES), _strip_html)
    if s.placeholders:
        out = _where(out, _rows_holding(out, _URL_BYTES), _replacing(_URL, f" {URL_TOKEN} "), r"(?i)://|www\.")
        out = _where(out, _rows_holding(out, _EMAIL_BYTES), _replacing(_EMAIL, f" {EMAIL_TOKEN} "))
        out = _where(out, _rows_holding(out, _DIGIT_BYTES), _replacing(_NUMBER, f" {NUM_TOKEN} "))
    if s.lowercase:
        out = pc.utf8_lower(out)
    # RE2's \s is [\t\n\f\r ], all control characters but the space: one pass turns every run of
    # spaces and control characters into one space, on the rows that hold such a run.
    out = _where(out, _rows_matching(out, _SPACE_RUN_OR_CONTROL), _replacing(_SPACE_OR_CONTROL_RUN, " "))
    return pc.utf8_trim_whitespace(out)


@once_per_installation
def _normalisation_tables() -> tuple[np.ndarray, np.ndarray]:
    """Per code point, what the normalisation does to it, asked once of the engines that define each pass:
    whether NFKC needs utf8proc (see `nfkc_allowed_points`), whether it is a space or control character
    of the space pass (RE2), whether Arrow's trim removes it, and whether lower-casing changes it, as bits
    of one table (kernels.NEEDS_UTF8PROC...); and its lower case (Arrow's utf8_lower maps code point by
    code point)."""
    points = every_code_point()
    one_char = strings_of_code_points(points)
    needs_utf8proc = np.ones(len(points), bool)
    needs_utf8proc[nfkc_allowed_points()] = False
    lowered = pc.utf8_lower(one_char)
    if not pc.all(pc.equal(pc.utf8_length(lowered), 1)).as_py():
        raise RuntimeError("utf8_lower maps a code point onto several: the compiled pass cannot mirror it")
    lower = code_points(lowered).astype(np.int32)
    collapsible = pc.match_substring_regex(one_char, f"^{_SPACE_OR_CONTROL_RUN[:-1]}$").to_numpy(zero_copy_only=False)
    trimmed = pc.equal(pc.utf8_trim_whitespace(one_char), "").to_numpy(zero_copy_only=False)
    traits = (needs_utf8proc * kernels.NEEDS_UTF8PROC + collapsible * kernels.COLLAPSIBLE
              + trimmed * kernels.TRIMMED + (lower != points) * kernels.LOWER_DIFFERS).astype(np.uint8)
    return traits, lower


def _replacing(pattern: str, replacement: str):
    return lambda texts: pc.replace_substring_regex(texts, pattern, replacement)


# ASCII bytes that every match of a pass holds ('&' in an entity, '<' in a tag, ':' or 'w' in a URL, '@', a
# digit), as inclusive ranges. An ASCII byte never occurs inside a multi-byte UTF-8 character.
_ENTITY_BYTES, _TAG_BYTES = ((0x26, 0x26),), ((0x3C, 0x3C),)
_HTML_BYTES, _URL_BYTES = _ENTITY_BYTES + _TAG_BYTES, ((0x3A, 0x3A), (0x57, 0x57), (0x77, 0x77))
_EMAIL_BYTES, _DIGIT_BYTES = ((0x40, 0x40),), ((0x30, 0x39),)


def _rows_holding(texts: pa.StringArray, byte_ranges: tuple[tuple[int, int], ...]) -> np.ndarray:
    """Per row, whether it holds a byte in one of the ranges: a few numpy passes over the UTF-8 buffer,
    faster than Arrow's substring search, which goes row by row."""
    data, offsets = utf8_bytes(texts), utf8_row_offsets(texts)
    hit = np.zeros(len(data), bool)
    for low, high in byte_ranges:
        hit |= (data == low) if low == high else ((data >= low) & (data <= high))
    starts = offsets[:-1]
    filled = offsets[1:] > starts
    found = np.zeros(len(texts), bool)
    if filled.any():
        found[filled] = np.logical_or.reduceat(hit, starts[filled])
    return found


def _rows_matching(texts: pa.Array, pattern: str) -> np.ndarray:
    return pc.fill_null(pc.match_substring_regex(texts, pattern), False).to_numpy(zero_copy_only=False)


def _where(texts: pa.Array, found: np.ndarray, transform, trigger: str | None = None) -> pa.Array:
    """`transform` applied only to the rows `found`, which hold something every match of the transform
    holds (narrowed down by the regex `trigger` where there is one): most texts hold no HTML, URL or
    e-mail, and finding what a match needs is much cheaper than the replacement it spares."""
    rows = np.flatnonzero(found)
    if trigger is not None and len(rows):
        rows = rows[_rows_matching(texts.take(rows), trigger)]
    if len(rows) == 0:
        return texts
    if len(rows) == len(texts):
        return transform(texts)
    return replace_rows(texts, rows, transform(texts.take(rows)))


def _strip_html(texts: pa.Array, max_passes: int = 8) -> pa.Array:
    """Remove tags and decode entities until nothing changes: one pass can uncover new ones
    ('&amp;lt;b&amp;gt;' → '&lt;b&gt;' → '<b>' → ''), and normalising twice must change nothing.

    The tag pattern is costly to compile (RE2 unrolls its {0,200}), on every call: it runs only on the
    rows where the unbounded `_TAG_TRIGGER` finds something, which after the first pass are seldom any."""
    for _ in range(max_passes):
        stripped = _where(texts, _rows_holding(texts, _TAG_BYTES), _replacing(_HTML_TAG, " "), _TAG_TRIGGER)
        stripped = _where(stripped, _rows_holding(stripped, _ENTITY_BYTES), _decode_entities)
        if stripped.equals(texts):
            break
        texts = stripped
    return texts


_TAG_TRIGGER = r"<[^<>]*>"  # every match of _HTML_TAG is a match of this


def _decode_entities(texts: pa.Array) -> pa.Array:
    out = pc.replace_substring_regex(texts, _NUMERIC_ENTITY, " ")
    for entity, char in _HTML_ENTITIES.items():
        out = pc.replace_substring(out, entity, char)
    return out


def truncate(texts: pa.Array, max_chars: int) -> pa.Array:
    return pc.utf8_slice_codeunits(texts, 0, max_chars)


def prepare_normaliser() -> None:
    """Load the normalisation's code-point tables now (from __pycache__, or asked of utf8proc, RE2 and
    Arrow the first time: see `once_per_installation`), e.g. before forking workers, which then share them."""
    normalise(pa.array(["A 1"], pa.string()), Normalisation())
