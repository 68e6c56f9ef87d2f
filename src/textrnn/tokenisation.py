"""Tokenisation over Arrow string arrays: each CJK ideograph and each symbol a token, a run of letters /
digits / marks in another script one word (or jieba's words), as token lists, integer codes or vocabulary
ids, cut by compiled passes (`textrnn.kernels`) that classify code points through one table.

The same functions run in `vocab` and in torch-free inference, so a text is tokenised exactly as it was
in training."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from textrnn import kernels
from textrnn.code_point_tables import once_per_installation
from textrnn.io import single_array
from textrnn.utf8 import (
    every_code_point,
    string_array,
    strings_of_code_points,
    utf8_buffers,
    utf8_bytes,
    utf8_row_offsets,
)

# Each CJK ideograph and each symbol is a token of its own; letters/digits in other scripts form words.
_SPLIT_CJK_AND_SYMBOLS = r"(\p{Han}|[^\p{L}\p{N}\p{M}\s])"
_SPLIT_SYMBOLS = r"([^\p{L}\p{N}\p{M}\s])"  # with jieba, its words stay whole


def tokenise(texts: pa.Array, use_jieba: bool = False) -> pa.ListArray:
    """Normalised texts → a list array of tokens (one list per text, null for null).

    Each CJK ideograph and each symbol is a token of its own, a run of letters/digits/marks in any other
    script is one word, whitespace separates. With jieba, Chinese words stay whole instead.
    """
    if use_jieba:
        return _jieba_tokens(texts)
    texts, spans = _token_spans(texts, every_span=True)
    tokens = _gathered(utf8_bytes(texts), spans.starts, spans.ends)
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
    words = pc.dictionary_encode(_gathered(utf8_bytes(texts), spans.long_starts, spans.long_ends))
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
    return string_array(len(counts), offsets, words, None, 0), counts


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
    return string_array(len(starts), offsets, out, None, 0)


def save_token_codes(folder: Path, tokens: TokenCodes) -> None:
    """A scratch copy of a batch's tokens as raw arrays, read back by `load_token_codes`. Written with
    Python's file writes, which report a full disk or a size limit as such (numpy's `tofile` does not)."""
    folder.mkdir()
    words = tokens.words.cast(pa.string())
    # Codes are below WORD_CODE_BASE + the number of words, which is at most the number of tokens.
    small = len(tokens.codes) < np.iinfo(np.int32).max - WORD_CODE_BASE
    arrays = {"codes32" if small else "codes64": tokens.codes.astype(np.int32 if small else np.int64),
              "row_offsets": tokens.row_offsets.astype(np.int64),
              "word_offsets": utf8_row_offsets(words).astype(np.int32), "word_bytes": utf8_bytes(words)}
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


def prepare_tokeniser() -> None:
    """The same for the tokeniser's code-point table."""
    token_codes(pa.array(["ab c"], pa.string()))


@once_per_installation
def _character_classes() -> np.ndarray:
    """Token class of every code point (uint8, indexed by code point): separator, word or single.

    Decided once by the same engines that defined the classes (RE2's Unicode tables, Arrow's whitespace),
    so a code point tokenises the same here as in a regex pass, without running a regex over the corpus.
    """
    one_char = strings_of_code_points(every_code_point())
    space = pc.utf8_is_space(one_char).to_numpy(zero_copy_only=False)
    single = pc.match_substring_regex(one_char, f"^{_SPLIT_CJK_AND_SYMBOLS}$").to_numpy(zero_copy_only=False)
    return np.where(space, _SEPARATOR, np.where(single, _SINGLE, _WORD)).astype(np.uint8)


_SEPARATOR, _WORD, _SINGLE = 0, 1, 2


def _jieba_segment(texts: pa.Array) -> pa.Array:
    """Word segmentation for Chinese: jieba is a Python library, so this path runs per text."""
    import jieba

    jieba.setLogLevel(60)
    return pa.array([None if t is None else " ".join(jieba.cut(t)) for t in texts.to_pylist()], pa.string())
