"""Normalisation and tokenisation over Arrow string arrays: compiled passes (`textrnn.kernels`) over the
UTF-8 buffer, Arrow compute for the rare rows those leave, numpy around them.

The same functions run in `clean`, `vocab` and torch-free inference, so a text is tokenised exactly as
it was in training.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import os
import unicodedata
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from textrnn import kernels
from textrnn.io import single_array

# Placeholders are plain letter runs, so the tokeniser keeps each one whole as a word.
URL_TOKEN, EMAIL_TOKEN, NUM_TOKEN = "xxurl", "xxemail", "xxnum"

_HTML_TAG = r"<[^<>]{0,200}>"
_HTML_ENTITIES = {"&nbsp;": " ", "&lt;": "<", "&gt;": ">", "&quot;": '"', "&#39;": "'", "&apos;": "'",
                  "&amp;": "&"}
_NUMERIC_ENTITY = r"&#x?[0-9a-fA-F]{1,6};"
_URL = r"(?i)\b(?:https?://|ftp://|www\.)[^\s<>\"]+"
_EMAIL = r"(?i)\b[a-z0-9._%+-]+@[a-z0-9.-]+\.[a-z]{2,}\b"
# RE2's \d is [0-9] too, but spelt as a class the pattern runs 4x faster (same matches: a property test).
_NUMBER = r"\b[0-9]+(?:[.,][0-9]+)*\b"
_SPACE_OR_CONTROL_RUN = r"[ \p{Cc}\p{Cf}\p{Co}\p{Cs}]+"
_SPACE_RUN_OR_CONTROL = r"  |[\p{Cc}\p{Cf}\p{Co}\p{Cs}]"  # what the pass above changes
# Each CJK ideograph and each symbol is a token of its own; letters/digits in other scripts form words.
_SPLIT_CJK_AND_SYMBOLS = r"(\p{Han}|[^\p{L}\p{N}\p{M}\s])"
_SPLIT_SYMBOLS = r"([^\p{L}\p{N}\p{M}\s])"  # with jieba, its words stay whole


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
    out = _from_row_0(out)
    common, status = _normalise_compiled(out, s)
    left = np.flatnonzero(status != kernels.DONE)
    if len(left) == 0:
        return common
    return replace_rows(common, left, _normalise_rows_left(out, status, s))


def replace_rows(texts: pa.StringArray, rows: np.ndarray, replacement: pa.Array) -> pa.StringArray:
    """`texts` with its rows `rows` (ascending) replaced by the rows of `replacement`, in order."""
    mask = np.zeros(len(texts), bool)
    mask[rows] = True
    return pc.replace_with_mask(texts, pa.array(mask), replacement.cast(texts.type))


def _from_row_0(texts: pa.StringArray) -> pa.StringArray:
    """The array with buffers that start at its row 0 (a copy only if it is a slice): the compiled passes
    build their output beside its buffers and reuse its validity bitmap, which must line up row for row."""
    return pa.concat_arrays([texts]) if texts.offset else texts


def _normalise_compiled(texts: pa.StringArray, s: Normalisation) -> tuple[pa.StringArray, np.ndarray]:
    """The compiled pass over a (row 0 based) string array: the rows it normalised, the others empty, and
    what it did with each row (kernels.DONE, LEFT_TO_ARROW or NFKC_FIRST)."""
    flags = ((kernels.NFKC if s.nfkc else 0) | (kernels.LOWERCASE if s.lowercase else 0)
             | (kernels.STRIP_HTML if s.strip_html else 0) | (kernels.PLACEHOLDERS if s.placeholders else 0))
    valid = np.ones(len(texts), bool) if texts.null_count == 0 else pc.is_valid(texts).to_numpy(zero_copy_only=False)
    data, offsets, status = kernels.normalise_common(*utf8_buffers(texts), valid, flags, *_normalisation_tables())
    return _string_array(len(texts), offsets, data, texts.buffers()[0], texts.null_count), status


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


def _string_array(length: int, offsets: np.ndarray, data: np.ndarray, validity: pa.Buffer | None,
                  null_count: int) -> pa.StringArray:
    """A string array on numpy buffers (int64 offsets, cast down; Arrow reports an overflow past 2 GiB)."""
    if offsets[-1] <= np.iinfo(np.int32).max:
        return pa.StringArray.from_buffers(length, pa.py_buffer(offsets.astype(np.int32)), pa.py_buffer(data),
                                           validity, null_count)
    large = pa.LargeStringArray.from_buffers(length, pa.py_buffer(offsets), pa.py_buffer(data), validity, null_count)
    return large.cast(pa.string())


_TABLES_DIR = Path(__file__).with_name("__pycache__")


def _remembered(build):
    """`build`'s tables, asked of the engines once per installation rather than once per process (0.1-0.2 s
    each, in every stage process): saved beside this module in __pycache__, as bytecode is, under a key of
    all they depend on (this file, the compiled kernels' source, the pyarrow and numpy versions, Python's
    Unicode database). A file that cannot be read is built again; where the folder cannot be written, the
    tables are built each time."""

    @functools.cache
    @functools.wraps(build)
    def remembered():
        path = _TABLES_DIR / f"textrnn{build.__name__}-{_tables_key()}.npz"
        try:
            with np.load(path, allow_pickle=False) as saved:
                arrays = [saved[f"arr_{i}"] for i in range(len(saved.files) - 1)]
                return tuple(arrays) if saved["is_tuple"] else arrays[0]
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
            pass
        built = build()
        _save_tables(path, built if isinstance(built, tuple) else (built,), isinstance(built, tuple))
        return built

    return remembered


@functools.cache
def _tables_key() -> str:
    source = hashlib.md5(Path(__file__).read_bytes()).hexdigest()
    parts = (source, kernels.SOURCE_MD5, pa.__version__, np.__version__, unicodedata.unidata_version)
    return hashlib.md5(repr(parts).encode()).hexdigest()[:16]


def _save_tables(path: Path, arrays: tuple[np.ndarray, ...], is_tuple: bool) -> None:
    """Written under a name of its own, then renamed: a reader sees the whole file or none."""
    temp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(exist_ok=True)
        with open(temp, "wb") as handle:
            np.savez(handle, *arrays, is_tuple=np.array(is_tuple))
        os.replace(temp, path)
        for stale in path.parent.glob(f"{path.name.rsplit('-', 1)[0]}-*.npz"):  # older keys: never read again
            if stale != path:
                stale.unlink(missing_ok=True)
    except OSError:  # a read-only installation: the tables are built each time
        temp.unlink(missing_ok=True)


@_remembered
def _normalisation_tables() -> tuple[np.ndarray, np.ndarray]:
    """Per code point, what the normalisation does to it, asked once of the engines that define each pass:
    whether NFKC needs utf8proc (see `_nfkc_allowed_points`), whether it is a space or control character
    of the space pass (RE2), whether Arrow's trim removes it, and whether lower-casing changes it, as bits
    of one table (kernels.NEEDS_UTF8PROC...); and its lower case (Arrow's utf8_lower maps code point by
    code point)."""
    points = _every_code_point()
    one_char = strings_of_code_points(points)
    needs_utf8proc = np.ones(len(points), bool)
    needs_utf8proc[_nfkc_allowed_points()] = False
    lowered = pc.utf8_lower(one_char)
    if not pc.all(pc.equal(pc.utf8_length(lowered), 1)).as_py():
        raise RuntimeError("utf8_lower maps a code point onto several: the compiled pass cannot mirror it")
    lower = _code_points(lowered).astype(np.int32)
    collapsible = pc.match_substring_regex(one_char, f"^{_SPACE_OR_CONTROL_RUN[:-1]}$").to_numpy(zero_copy_only=False)
    trimmed = pc.equal(pc.utf8_trim_whitespace(one_char), "").to_numpy(zero_copy_only=False)
    traits = (needs_utf8proc * kernels.NEEDS_UTF8PROC + collapsible * kernels.COLLAPSIBLE
              + trimmed * kernels.TRIMMED + (lower != points) * kernels.LOWER_DIFFERS).astype(np.uint8)
    return traits, lower


def _every_code_point() -> np.ndarray:
    """0 to U+10FFFF as uint32, surrogates (which never occur in valid UTF-8) as spaces."""
    points = np.arange(0x110000, dtype=np.uint32)
    points[(points >= 0xD800) & (points < 0xE000)] = ord(" ")
    return points


def nfkc(texts: pa.Array) -> pa.Array:
    """Unicode NFKC, exactly as Arrow's `utf8_normalize` (utf8proc) gives it, 2-3x faster on typical text.

    Chinese text is full of full-width punctuation (，！？), which NFKC maps one to one onto ASCII, as it
    does the ideographic space. Rows with no other character that NFKC could change are mapped byte-wise
    with numpy; the other rows (about 1% of the reviews) go through utf8proc."""
    if not pa.types.is_string(texts.type):
        return pc.utf8_normalize(texts, "NFKC")
    texts = _from_row_0(texts)
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
    data = _utf8_bytes(texts)
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
    offsets = _row_offsets(texts)
    offsets = offsets - 2 * np.searchsorted(at, offsets)
    return pa.StringArray.from_buffers(len(texts), pa.py_buffer(offsets.astype(np.int32)), pa.py_buffer(out),
                                       texts.buffers()[0], texts.null_count)


_HANGUL_JAMO = ((0x1100, 0x11FF), (0xA960, 0xA97F), (0xD7B0, 0xD7FF))


@functools.cache
def _nfkc_needs_utf8proc() -> str:
    """A regex for the characters that send a row through utf8proc: all but `_nfkc_allowed_points`."""
    allowed = _nfkc_allowed_points()
    breaks = np.flatnonzero(np.diff(allowed) != 1)
    ranges = zip(np.r_[allowed[0], allowed[breaks + 1]].tolist(), np.r_[allowed[breaks], allowed[-1]].tolist())
    return "[^" + "".join(f"\\x{{{a:x}}}-\\x{{{b:x}}}" for a, b in ranges) + "]"


@_remembered
def _nfkc_allowed_points() -> np.ndarray:
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


def _replacing(pattern: str, replacement: str):
    return lambda texts: pc.replace_substring_regex(texts, pattern, replacement)


# ASCII bytes that every match of a pass holds ('&' in an entity, '<' in a tag, ':' or 'w' in a URL, '@', a
# digit), as inclusive ranges. An ASCII byte never occurs inside a multi-byte UTF-8 character.
_ENTITY_BYTES, _TAG_BYTES = ((0x26, 0x26),), ((0x3C, 0x3C),)
_HTML_BYTES, _URL_BYTES = _ENTITY_BYTES + _TAG_BYTES, ((0x3A, 0x3A), (0x57, 0x57), (0x77, 0x77))
_EMAIL_BYTES, _DIGIT_BYTES = ((0x40, 0x40),), ((0x30, 0x39),)


def _rows_holding(texts: pa.StringArray, byte_ranges: tuple[tuple[int, int], ...]) -> np.ndarray:
    """Per row, whether it holds a byte in one of the ranges: a few numpy passes over the UTF-8 buffer,
    about 3x faster than Arrow's substring search, which goes row by row."""
    data, offsets = _utf8_bytes(texts), _row_offsets(texts)
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

    The tag pattern costs ~2 ms to compile (RE2 unrolls its {0,200}), on every call: it runs only on the
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


def tokenise(texts: pa.Array, use_jieba: bool = False) -> pa.ListArray:
    """Normalised texts → a list array of tokens (one list per text, null for null).

    Each CJK ideograph and each symbol is a token of its own, a run of letters/digits/marks in any other
    script is one word, whitespace separates. With jieba, Chinese words stay whole instead.
    """
    if use_jieba:
        return _jieba_tokens(texts)
    texts, spans = _token_spans(texts, every_span=True)
    tokens = _gathered(_utf8_bytes(texts), spans.starts, spans.ends)
    mask = pc.is_null(texts) if texts.null_count else None
    return pa.ListArray.from_arrays(pa.array(spans.row_tokens.astype(np.int32)), tokens, mask=mask)


WORD_CODE_BASE = 0x110000  # token codes below are code points (one-character tokens), the rest index words


@dataclass(frozen=True)
class TokenCodes:
    """The tokens of a batch as integers, without a string per token: a one-character token is its code
    point; a longer one is WORD_CODE_BASE + its index in `words`, the batch's distinct longer tokens."""

    codes: np.ndarray  # int32 (int64 from jieba's lists), one per token
    row_offsets: np.ndarray  # int64, rows + 1: row i's tokens are codes[row_offsets[i]:row_offsets[i+1]]
    words: pa.StringArray


def token_codes(texts: pa.Array, use_jieba: bool = False) -> TokenCodes:
    """`tokenise` as integer codes: the tokens are the same, only strings longer than one character are
    ever built (most Chinese tokens are one character)."""
    if use_jieba:
        return _codes_of_token_lists(_jieba_tokens(texts))
    texts, spans = _token_spans(texts)
    words = pc.dictionary_encode(_gathered(_utf8_bytes(texts), spans.long_starts, spans.long_ends))
    codes = spans.first_points
    codes[spans.long_index] = WORD_CODE_BASE + words.indices.to_numpy(zero_copy_only=False)
    return TokenCodes(codes=codes, row_offsets=spans.row_tokens, words=words.dictionary)



@dataclass(frozen=True)
class WordTable:
    """Words (tokens longer than one character) to look up by their bytes in `token_ids`: their UTF-8
    bytes back to back, where each starts (+ the end), the id of each, and `kernels.word_table`'s slots."""

    data: np.ndarray
    offsets: np.ndarray
    ids: np.ndarray
    slots: np.ndarray


def word_table(words: list[str], ids: np.ndarray) -> WordTable:
    """The table of `words` (distinct) and their ids."""
    array = pa.array(words, pa.string())
    data, offsets = utf8_buffers(array)
    return WordTable(data, offsets, np.ascontiguousarray(ids, np.int32), kernels.word_table(data, offsets))


def token_ids(texts: pa.Array, point_ids: np.ndarray, words: WordTable, max_len: int, unknown: int,
              dtype: np.dtype) -> tuple[np.ndarray, np.ndarray, int]:
    """The ids of `tokenise`'s tokens (without jieba), the first `max_len` of each row, in one compiled
    pass with no code or string per token between: a one-character token's id is point_ids[code point],
    a longer one's its id in `words`, else `unknown`. Returns the ids (as `dtype`), the row offsets into
    them (int64, rows + 1) and how many ids are `unknown`."""
    texts = single_array(texts)
    data, offsets = utf8_buffers(texts.cast(pa.string()))
    ids = np.empty(int(np.minimum(np.diff(offsets), max_len).sum()), dtype)  # a token has a byte at least
    row_offsets, unknowns = kernels.encode_rows(data, offsets, _character_classes(), _SEPARATOR, _WORD, point_ids,
                                                words.data, words.offsets, words.ids, words.slots, max_len,
                                                unknown, ids)
    return ids[:row_offsets[-1]], row_offsets, int(unknowns)


def count_tokens(texts: pa.Array, point_counts: np.ndarray) -> tuple[pa.StringArray, np.ndarray]:
    """Count the tokens of `tokenise` (without jieba) as they are cut, in one compiled pass: each
    one-character token is added to `point_counts` (int64, indexed by code point, WORD_CODE_BASE long);
    returns the distinct longer tokens and how often each occurs (int64). No code or string per token is
    written (see `token_codes`)."""
    words, offsets, counts = kernels.count_rows(*utf8_buffers(single_array(texts).cast(pa.string())),
                                                _character_classes(), _SEPARATOR, _WORD, point_counts)
    return _string_array(len(counts), offsets, words, None, 0), counts


@dataclass(frozen=True)
class _Spans:
    """Row i's tokens are [row_tokens[i], row_tokens[i + 1]); per token its first code point; the tokens
    longer than one character by index, and where each starts and ends in the UTF-8 bytes; where every
    token starts and ends (only when asked for)."""

    row_tokens: np.ndarray
    first_points: np.ndarray
    long_index: np.ndarray
    long_starts: np.ndarray
    long_ends: np.ndarray
    starts: np.ndarray
    ends: np.ndarray


def _token_spans(texts: pa.Array, every_span: bool = False) -> tuple[pa.StringArray, _Spans]:
    """The tokens of a batch, found by one compiled pass that classifies code points through the table of
    `_character_classes` (nulls have none). Returns the texts as a string array with the spans."""
    texts = single_array(texts).cast(pa.string())
    spans = kernels.token_spans(*utf8_buffers(texts), _character_classes(), _SEPARATOR, _WORD, every_span)
    return texts, _Spans(*spans)


def _gathered(data: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> pa.StringArray:
    """The byte spans of a UTF-8 buffer that start and end at character boundaries, as strings."""
    out, offsets = kernels.gather_spans(data, starts, ends)
    return _string_array(len(starts), offsets, out, None, 0)


def save_token_codes(folder: Path, tokens: TokenCodes) -> None:
    """A scratch copy of a batch's tokens as raw arrays, read back by `load_token_codes`. Written with
    Python's file writes, which report a full disk or a size limit as such (numpy's `tofile` does not)."""
    folder.mkdir()
    words = tokens.words.cast(pa.string())
    # Codes are below WORD_CODE_BASE + the number of words, which is at most the number of tokens.
    small = len(tokens.codes) < np.iinfo(np.int32).max - WORD_CODE_BASE
    arrays = {"codes32" if small else "codes64": tokens.codes.astype(np.int32 if small else np.int64),
              "row_offsets": tokens.row_offsets.astype(np.int64), "word_offsets": _row_offsets(words).astype(np.int32),
              "word_bytes": _utf8_bytes(words)}
    for name, array in arrays.items():
        with open(folder / f"{name}.bin", "wb") as handle:
            handle.write(memoryview(np.ascontiguousarray(array)).cast("B"))


def load_token_codes(folder: Path) -> TokenCodes:
    def saved(name: str, dtype) -> np.ndarray:
        return np.fromfile(folder / f"{name}.bin", dtype=dtype)

    codes = saved("codes32", np.int32) if (folder / "codes32.bin").exists() else saved("codes64", np.int64)
    word_offsets, word_bytes = saved("word_offsets", np.int32), saved("word_bytes", np.uint8)
    words = pa.StringArray.from_buffers(len(word_offsets) - 1, pa.py_buffer(word_offsets), pa.py_buffer(word_bytes))
    return TokenCodes(codes=codes, row_offsets=saved("row_offsets", np.int64), words=words)


def _codes_of_token_lists(token_lists: pa.ListArray) -> TokenCodes:
    """Codes of an already split list array (no empty tokens), every token as a word."""
    words = pc.dictionary_encode(pc.list_flatten(token_lists))
    codes = WORD_CODE_BASE + words.indices.to_numpy(zero_copy_only=False).astype(np.int64)
    row_offsets = token_lists.offsets.to_numpy().astype(np.int64)
    return TokenCodes(codes=codes, row_offsets=row_offsets - row_offsets[0], words=words.dictionary)


def _jieba_tokens(texts: pa.Array) -> pa.ListArray:
    spaced = pc.replace_substring_regex(_jieba_segment(texts), _SPLIT_SYMBOLS, r" \1 ")
    return _without_empty_tokens(pc.utf8_split_whitespace(pc.utf8_trim_whitespace(spaced)))


def _without_empty_tokens(token_lists: pa.ListArray) -> pa.ListArray:
    """pyarrow's whitespace split leaves one empty token for an empty (or all-space) text."""
    flat = pc.list_flatten(token_lists)
    lengths = np.diff(token_lists.offsets.to_numpy().astype(np.int64))
    real = pc.not_equal(flat, "").to_numpy(zero_copy_only=False)
    rows = np.repeat(np.arange(len(lengths)), lengths)
    offsets = np.zeros(len(lengths) + 1, np.int32)
    np.cumsum(np.bincount(rows[real], minlength=len(lengths)), out=offsets[1:])
    return pa.ListArray.from_arrays(pa.array(offsets), flat.filter(pa.array(real)), mask=pc.is_null(token_lists))


def prepare_normaliser() -> None:
    """Load the normalisation's code-point tables now (from __pycache__, or asked of utf8proc, RE2 and
    Arrow the first time: see `_remembered`), e.g. before forking workers, which then share them."""
    normalise(pa.array(["A 1"], pa.string()), Normalisation())


def prepare_tokeniser() -> None:
    """The same for the tokeniser's code-point table."""
    token_codes(pa.array(["ab c"], pa.string()))


@_remembered
def _character_classes() -> np.ndarray:
    """Token class of every code point (uint8, indexed by code point): separator, word or single.

    Decided once by the same engines that defined the classes (RE2's Unicode tables, Arrow's whitespace),
    so a code point tokenises the same here as in a regex pass, without running a regex over the corpus.
    """
    one_char = strings_of_code_points(_every_code_point())
    space = pc.utf8_is_space(one_char).to_numpy(zero_copy_only=False)
    single = pc.match_substring_regex(one_char, f"^{_SPLIT_CJK_AND_SYMBOLS}$").to_numpy(zero_copy_only=False)
    return np.where(space, _SEPARATOR, np.where(single, _SINGLE, _WORD)).astype(np.uint8)


_SEPARATOR, _WORD, _SINGLE = 0, 1, 2


def strings_of_code_points(points: np.ndarray) -> pa.StringArray:
    """A string array with one single-character string per code point."""
    offsets, data = _utf8_of_points(np.asarray(points, dtype=np.uint32))
    return pa.StringArray.from_buffers(len(points), pa.py_buffer(offsets.astype(np.int32)), pa.py_buffer(data))


def _utf8_of_points(points: np.ndarray) -> tuple[np.ndarray, bytes]:
    """The UTF-8 encoding of a uint32 array of code points, and where each one starts in it (+ the end)."""
    widths = 1 + (points >= 0x80).view(np.uint8) + (points >= 0x800) + (points >= 0x10000)
    offsets = np.zeros(len(points) + 1, np.int64)
    np.cumsum(widths, out=offsets[1:])
    return offsets, points.astype("<u4").tobytes().decode("utf-32-le").encode("utf-8")


def _code_points(texts: pa.StringArray) -> np.ndarray:
    """The code points of all rows back to back (uint32)."""
    return np.frombuffer(_utf8_bytes(texts).tobytes().decode("utf-8").encode("utf-32-le"), dtype="<u4")


def utf8_buffers(texts: pa.StringArray) -> tuple[np.ndarray, np.ndarray]:
    """A string array's UTF-8 bytes back to back (no copy) and where each row starts in them (+ the end)."""
    return _utf8_bytes(texts), _row_offsets(texts)


def _utf8_bytes(texts: pa.StringArray) -> np.ndarray:
    """The UTF-8 bytes of all rows of a (possibly sliced) string array, back to back."""
    if len(texts) == 0 or texts.buffers()[2] is None:
        return np.zeros(0, np.uint8)
    offsets = _raw_offsets(texts)
    return np.frombuffer(texts.buffers()[2], dtype=np.uint8)[offsets[0]: offsets[-1]]


def _row_offsets(texts: pa.StringArray) -> np.ndarray:
    """Where each row starts in `_utf8_bytes(texts)` (int64), and its end: len(texts) + 1 entries."""
    offsets = _raw_offsets(texts).astype(np.int64)
    return offsets - offsets[0]


def _raw_offsets(texts: pa.StringArray) -> np.ndarray:
    if len(texts) == 0:
        return np.zeros(1, np.int32)
    return np.frombuffer(texts.buffers()[1], dtype=np.int32)[texts.offset: texts.offset + len(texts) + 1]


def _jieba_segment(texts: pa.Array) -> pa.Array:
    """Word segmentation for Chinese: jieba is a Python library, so this path runs per text."""
    import jieba

    jieba.setLogLevel(60)
    return pa.array([None if t is None else " ".join(jieba.cut(t)) for t in texts.to_pylist()], pa.string())
