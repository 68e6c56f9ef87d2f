"""numpy/Arrow stand-ins for the compiled kernels that inference needs, for an installation without them.

`textrnn.kernels` falls back to this module when the extension is not built (an installation on a platform
with no C compiler, or a wheel without it) or when TEXTRNN_PURE=1. It covers exactly the tokeniser's path:
normalisation (left whole to the Arrow passes, which define it: `normalisation._normalise_with_arrow`), and
the cut of texts into tokens and token ids. `gather_spans` here is the only version (a compiled one saved
too little to keep). Each function takes and returns what its compiled namesake does, and gives the same
ids (property tests compare them); the loops are numpy passes over the whole batch, never a Python loop
per token. The training stages' kernels (hashing, counting, CSV scanning) are not here: they raise, naming
the install that has them.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

# The same values as the compiled module's (see _kernels.pyx): the callers build flags and tables from them.
NFKC, LOWERCASE, STRIP_HTML, PLACEHOLDERS = 1, 2, 4, 8
DONE, LEFT_TO_ARROW, NFKC_FIRST = 0, 1, 2
NEEDS_UTF8PROC, COLLAPSIBLE, TRIMMED, LOWER_DIFFERS = 1, 2, 4, 8
CSV_START = 0
FAST_UTF8_CHECK = False  # textrnn.lenient then validates UTF-8 with Arrow
SOURCE_MD5 = "pure"  # keys the code-point tables saved on disk apart from the compiled build's


def normalise_common(data, offsets, valid, flags, traits, lower):
    """Leaves every row to the Arrow passes (status LEFT_TO_ARROW, rows empty): `normalisation.normalise`
    then normalises them all as `_normalise_with_arrow` does, which is the definition the compiled pass follows."""
    rows = len(offsets) - 1
    return np.zeros(0, np.uint8), np.zeros(rows + 1, np.int64), np.full(rows, LEFT_TO_ARROW, np.uint8)


def encode_rows(data, offsets, classes, separator, word, point_ids, words, word_offsets, word_ids, table,
                max_len, unknown, ids):
    """The token ids of every row into `ids`, the first `max_len` of each row: a token is a run of
    `word`-class code points or any other code point that is not a `separator` (as the compiled loop
    cuts); a one-character token's id is point_ids[code point], a longer one's its id among `words`, else
    `unknown`. Returns the row offsets (int64, rows + 1) and how many ids are `unknown`."""
    tokens = _tokens(np.asarray(data, np.uint8), np.asarray(offsets, np.int64), np.asarray(classes), separator, word)
    keep = tokens.rank < max_len
    token_ids = np.asarray(point_ids)[tokens.first_point].astype(np.int64)
    long = tokens.chars > 1
    token_ids[long] = _word_ids(data, tokens.start_byte[long], tokens.end_byte[long], words, word_offsets,
                                word_ids, unknown)
    token_ids = token_ids[keep]
    ids[:len(token_ids)] = token_ids
    row_offsets = np.zeros(len(offsets), np.int64)
    np.cumsum(np.bincount(tokens.row[keep], minlength=len(offsets) - 1), out=row_offsets[1:])
    return row_offsets, int(np.count_nonzero(token_ids == unknown))


def token_spans(data, offsets, classes, separator, word, every_span):
    """The tokens of every row as the compiled `token_spans` returns them: row offsets counted in tokens,
    each token's first code point, the index, start and end of those longer than one character, and the
    start and end of every token if `every_span` (else empty arrays)."""
    tokens = _tokens(np.asarray(data, np.uint8), np.asarray(offsets, np.int64), np.asarray(classes), separator, word)
    row_tokens = np.zeros(len(offsets), np.int64)
    np.cumsum(np.bincount(tokens.row, minlength=len(offsets) - 1), out=row_tokens[1:])
    long = np.flatnonzero(tokens.chars > 1)
    spans = (tokens.start_byte, tokens.end_byte) if every_span else (np.zeros(0, np.int64),) * 2
    return (row_tokens, tokens.first_point.astype(np.int32), long, tokens.start_byte[long], tokens.end_byte[long],
            *spans)


def gather_spans(data, starts, ends):
    """The bytes of the spans [starts[i], ends[i]) back to back, and their int64 offsets."""
    starts, ends = np.asarray(starts, np.int64), np.asarray(ends, np.int64)
    offsets = np.zeros(len(starts) + 1, np.int64)
    np.cumsum(ends - starts, out=offsets[1:])
    return _gather(np.asarray(data, np.uint8), starts, ends - starts), offsets


def word_table(data, offsets):
    """No hash table here: `encode_rows` looks words up with Arrow's `index_in`."""
    return np.zeros(0, np.int64)


def ids_of_codes(codes, point_ids, word_ids, word_base, ids):
    """The id of every token code into `ids`: a code below `word_base` is a code point, the others
    index the batch's words."""
    codes = np.asarray(codes, np.int64)
    if len(ids) != len(codes):
        raise ValueError(f"ids_of_codes: room for {len(ids)} ids, {len(codes)} codes")
    is_point = codes < word_base
    ids[is_point] = np.asarray(point_ids)[codes[is_point]]
    ids[~is_point] = np.asarray(word_ids)[codes[~is_point] - word_base]


def first_of_each_row(values, offsets, limit):
    """The first `limit` values of every row, and the new int64 offsets."""
    offsets = np.asarray(offsets, np.int64)
    kept = np.minimum(np.diff(offsets), limit)
    new_offsets = np.zeros(len(offsets), np.int64)
    np.cumsum(kept, out=new_offsets[1:])
    return np.asarray(values)[_positions(offsets[:-1], kept)], new_offsets


class _Tokens:
    """Per token of a batch: its row, its rank in the row, its first code point, its length in
    characters, and where its UTF-8 bytes start and end."""

    def __init__(self, row, rank, first_point, chars, start_byte, end_byte):
        self.row, self.rank, self.first_point, self.chars = row, rank, first_point, chars
        self.start_byte, self.end_byte = start_byte, end_byte


def _tokens(data: np.ndarray, offsets: np.ndarray, classes: np.ndarray, separator: int, word: int) -> _Tokens:
    """The tokens of every row, cut as the compiled loop cuts them, by numpy passes over the characters
    (byte positions are into `data`, as the compiled loop gives them)."""
    base = int(offsets[0])
    data = data[base:offsets[-1]]
    offsets = offsets - base
    char_start = np.flatnonzero((data & 0xC0) != 0x80)  # the first byte of each character
    points = np.frombuffer(data.tobytes().decode("utf-8").encode("utf-32-le"), "<u4")
    char_row = np.searchsorted(offsets, char_start, side="right") - 1
    kind = classes[points]
    is_word = kind == word
    continues = np.zeros(len(points), bool)  # a word character right after one in the same row
    continues[1:] = is_word[1:] & is_word[:-1] & (char_row[1:] == char_row[:-1])
    in_token = kind != separator
    starts = np.flatnonzero(in_token & ~continues)  # [tokens]: each token's first character
    token_chars = np.flatnonzero(in_token)  # the characters of all tokens, in order
    token_of_char = np.cumsum(in_token & ~continues)[token_chars] - 1
    chars = np.bincount(token_of_char, minlength=len(starts))
    after_last = token_chars[np.cumsum(chars) - 1] + 1 if len(starts) else starts
    byte_of_char = np.append(char_start, len(data))
    row = char_row[starts]
    row_first = np.searchsorted(row, np.arange(len(offsets) - 1))  # each row's first token
    return _Tokens(row, np.arange(len(starts)) - row_first[row], points[starts].astype(np.int64), chars,
                   base + char_start[starts], base + byte_of_char[after_last])


def _word_ids(data, starts: np.ndarray, ends: np.ndarray, words, word_offsets, word_ids, unknown: int) -> np.ndarray:
    """The ids of the words at byte spans of `data` among `words` (UTF-8 bytes, offsets, ids), else `unknown`."""
    if len(starts) == 0:
        return np.zeros(0, np.int64)
    found = _strings(np.asarray(data, np.uint8), starts, ends)
    vocabulary = _strings(np.asarray(words, np.uint8), np.asarray(word_offsets[:-1], np.int64),
                          np.asarray(word_offsets[1:], np.int64))
    index = pc.index_in(found, value_set=vocabulary).to_numpy(zero_copy_only=False)
    known = ~np.isnan(index) if index.dtype.kind == "f" else np.ones(len(index), bool)
    out = np.full(len(starts), unknown, np.int64)
    out[known] = np.asarray(word_ids)[index[known].astype(np.int64)]
    return out


def _strings(data: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> pa.StringArray:
    lengths = ends - starts
    offsets = np.zeros(len(starts) + 1, np.int64)
    np.cumsum(lengths, out=offsets[1:])
    return pa.LargeStringArray.from_buffers(len(starts), pa.py_buffer(offsets),
                                            pa.py_buffer(_gather(data, starts, lengths))).cast(pa.string())


def _positions(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """start, start + 1, ..., start + length - 1 for each (start, length), back to back."""
    lengths = np.asarray(lengths, np.int64)
    total = int(lengths.sum())
    if total == 0:
        return np.zeros(0, np.int64)
    row_begin = np.cumsum(lengths) - lengths
    return np.repeat(np.asarray(starts, np.int64) - row_begin, lengths) + np.arange(total)


def _gather(data: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    return data[_positions(starts, lengths)]


def _missing(name: str):
    def unavailable(*args, **kwargs):
        raise RuntimeError(f"textrnn.kernels.{name} needs the compiled kernels, which this installation lacks: "
                           "install textrnn with its training extra on a machine with a C compiler "
                           "(pip install -e '.[train]'); prediction and serving do not need them")

    unavailable.__name__ = name
    return unavailable


# The training stages' kernels: not needed to predict.
(count_codes, count_rows, csv_record_ends, hash_rows, utf8_valid) = (
    _missing(name) for name in ("count_codes", "count_rows", "csv_record_ends", "hash_rows", "utf8_valid"))
