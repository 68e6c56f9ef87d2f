"""Per-row readers for the files Arrow's fast readers refuse: invalid UTF-8 anywhere (CSV/TSV/JSONL), or
JSON values of mixed or nested types. They run only on such files, so the fast path stays vectorised,
and they keep every record: what cannot be read becomes a row with an error code, never a crash.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import sys
from collections.abc import Iterator
from concurrent.futures import Executor

import numpy as np
import pyarrow as pa

from textrnn import kernels
from textrnn.parallel import given_or_new, in_order

BLOCK = 1 << 24
csv.field_size_limit(sys.maxsize)  # a legitimate review may be megabytes long


def is_valid_utf8(fs, path: str, workers: int = 1, pool: Executor | None = None) -> bool:
    """Validate the file piece by piece (`valid_utf8`): nothing decoded is kept. With more workers, pieces
    are validated `workers` at a time, in `pool` (the caller's) or in threads of its own (both checks
    release the GIL), at most two per worker read ahead."""
    with given_or_new(pool, workers) as pool:
        checks = (pool.submit(valid_utf8, piece) for piece in _utf8_pieces_of_file(fs, path))
        return all(in_order(checks, window=2 * workers))


def _utf8_pieces_of_file(fs, path: str) -> Iterator[bytes | memoryview]:
    carry = b""
    with fs.open(path, "rb") as handle:
        while data := handle.read(BLOCK):
            pieces, carry = _utf8_pieces(data, carry)
            yield from pieces
    yield carry


def _utf8_pieces(data: bytes, carry: bytes) -> tuple[list[bytes | memoryview], bytes]:
    """The next block of a file as pieces to check for UTF-8 one by one, and the bytes to carry into the
    next block's pieces (the last piece of a file is the carry left at its end). Each piece starts at a
    character's first byte; a character cut by the block's end is checked with its rest. The block's bulk
    is a view, not a copy."""
    first, cut = _first_char_start(data), _last_char_start(data)
    if first == len(data) < 4:  # a block inside one character (blocks of a few bytes)
        return [], carry + data
    pieces: list[bytes | memoryview] = [carry + data[:first]]
    if first < cut:
        pieces.append(memoryview(data)[first:cut])
    return pieces, data[max(first, cut):]


def _first_char_start(data: bytes) -> int:
    """The offset of the first byte that starts a character (not a UTF-8 continuation byte) among the
    first four; 4 (or the length, if shorter) if none is: four never are, in valid UTF-8."""
    for i, byte in enumerate(data[:4]):
        if byte & 0xC0 != 0x80:
            return i
    return min(4, len(data))


def _last_char_start(data: bytes) -> int:
    """The offset of the last byte that starts a character, looking at the last four bytes only: the
    character starting there may be cut off by the block's end. len(data) - 4 if none is (invalid)."""
    for i in range(len(data) - 1, max(len(data) - 5, -1), -1):
        if data[i] & 0xC0 != 0x80:
            return i
    return max(len(data) - 4, 0)


def valid_utf8(data: bytes | memoryview) -> bool:
    """Whether the bytes are UTF-8: by the compiled check 32 bytes at a time where the CPU has AVX2
    (`kernels.utf8_valid`, several times faster than Arrow's check, which runs serially in ingest at one
    worker), else by Arrow (faster than bytes.decode)."""
    if kernels.FAST_UTF8_CHECK:
        return kernels.utf8_valid(np.frombuffer(data, np.uint8))
    return arrow_valid_utf8(data)


def arrow_valid_utf8(data: bytes | memoryview) -> bool:
    """`valid_utf8` by Arrow's check (where the compiled one cannot run)."""
    offsets = pa.py_buffer(np.array([0, len(data)], np.int64))
    as_binary = pa.Array.from_buffers(pa.large_binary(), 1, [None, offsets, pa.py_buffer(data)])  # no copy
    try:
        as_binary.cast(pa.large_string())
    except pa.ArrowInvalid:
        return False
    return True


def clean_str(value: str | None) -> tuple[str | None, str | None]:
    """(text, error): a field decoded with surrogateescape holds surrogates where the bytes were bad."""
    if value is None:
        return None, None
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return None, "bad_utf8"
    return value, None


def iter_delimited_rows(fs, path: str, delimiter: str, text_column: str, label_column: str,
                        chunk_rows: int) -> Iterator[tuple[list, list, list]]:
    """(texts, labels, errors) chunks of a CSV/TSV, in file order; yields nothing for an empty file.

    Raises KeyError(column, header) when a column is missing."""
    with fs.open(path, "rb") as raw:
        reader = csv.reader(io.TextIOWrapper(raw, encoding="utf-8", errors="surrogateescape", newline=""),
                            delimiter=delimiter)
        header = next(reader, None)
        if header is None:
            return
        for column in (text_column, label_column):
            if column not in header:
                raise KeyError(column, [clean_str(h)[0] or repr(h) for h in header])
        text_at, label_at = header.index(text_column), header.index(label_column)
        while rows := list(itertools.islice(reader, chunk_rows)):
            texts, labels, errors = [], [], []
            for row in rows:
                if len(row) != len(header):  # the shape is the first problem, whatever the bytes
                    texts.append(clean_str(delimiter.join(row))[0])
                    labels.append(None)
                    errors.append("bad_field_count")
                    continue
                text, error = clean_str(row[text_at])
                label, label_error = clean_str(row[label_at])
                texts.append(text)
                labels.append(label.strip() if label is not None else None)
                errors.append(error or label_error)
            yield texts, labels, errors


def iter_json_rows(fs, path: str, text_column: str, label_column: str,
                   chunk_rows: int) -> Iterator[tuple[list, list, list]]:
    """(texts, labels, errors) chunks of a JSON-lines file, one record per non-blank line."""
    with fs.open(path, "rb") as handle:
        lines = (line for line in handle if line.strip())
        while chunk := list(itertools.islice(lines, chunk_rows)):
            texts, labels, errors = [], [], []
            for line in chunk:
                text, label, error = _json_record(line, text_column, label_column)
                texts.append(text)
                labels.append(label)
                errors.append(error)
            yield texts, labels, errors


def _json_record(line: bytes, text_column: str, label_column: str) -> tuple[str | None, str | None, str | None]:
    try:
        record = json.loads(line.decode("utf-8"))
    except UnicodeDecodeError:
        return None, None, "bad_utf8"
    except json.JSONDecodeError:
        return clean_str(line.decode("utf-8", "replace").strip())[0], None, "bad_json"
    if not isinstance(record, dict):
        return None, None, "bad_json"
    text, label = record.get(text_column), record.get(label_column)
    scalar = (str, int, float)
    if text is not None and not isinstance(text, str) or label is not None and not isinstance(label, scalar):
        return None, None, "bad_field_type"
    if isinstance(label, bool):
        return text, None, "bad_field_type"
    # JSON escapes can spell lone surrogates ("\ud800"), which no UTF-8 text can hold.
    text, text_error = clean_str(text)
    label, label_error = clean_str(None if label is None else str(label).strip())
    return text, label, text_error or label_error


def to_arrays(texts: list, labels: list, errors: list) -> tuple[pa.Array, pa.Array, pa.Array]:
    return pa.array(texts, pa.string()), pa.array(labels, pa.string()), pa.array(errors, pa.string())
