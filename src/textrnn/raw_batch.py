"""The one schema every reader yields, RAW_SCHEMA: the text and label as found, the source file, the
record's row number in that file (1-based, header not counted), and an error code for a record that could
not be read (the clean stage rejects it with that reason, so nothing is lost silently); how such batches
are built from Arrow arrays, and cut."""

from __future__ import annotations

import functools
from collections.abc import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

RAW_SCHEMA = pa.schema([
    ("text", pa.string()),
    ("label", pa.string()),
    ("source", pa.string()),
    ("row", pa.int64()),
    ("error", pa.string()),
])


def make_batch(text: pa.Array, label: pa.Array, source: str, first_row: int,
                error: pa.Array | None = None) -> pa.RecordBatch:
    n = len(text)
    # On the numpy buffer: pa.array() would import pandas (a slow import), which ingest needs nowhere else.
    numbers = np.arange(first_row, first_row + n, dtype=np.int64)
    rows = pa.Array.from_buffers(pa.int64(), n, [None, pa.py_buffer(numbers)])
    if error is None:
        error = pa.nulls(n, pa.string())
    return pa.RecordBatch.from_arrays([text, label, repeated(source, n), rows, error], schema=RAW_SCHEMA)


def repeated(value: str, n: int) -> pa.StringArray:
    """`value` n times: a slice of a run of it built once for batches of up to the next power of two rows
    (every batch of a file repeats its path; building the run holds the GIL, which ingest's parsing threads
    wait for)."""
    return _run_of(value, 1 << max(n - 1, 0).bit_length()).slice(0, n)


@functools.lru_cache(maxsize=4)
def _run_of(value: str, n: int) -> pa.StringArray:
    """`value` n times, built from numpy buffers: a Python list of n references, or a one-word dictionary
    array cast to strings, costs time in proportion to the rows, which this does not."""
    data = value.encode("utf-8")
    offsets = pa.py_buffer(np.arange(n + 1, dtype=np.int64) * len(data))
    return pa.Array.from_buffers(pa.large_string(), n, [None, offsets, pa.py_buffer(data * n)]).cast(pa.string())


def decode_utf8(raw: pa.Array) -> tuple[pa.Array, pa.Array]:
    """Binary → string. Rows that are not valid UTF-8 become null text with error `bad_utf8`.

    The whole array is validated in one cast; only when that fails are the rows checked one by one, so the
    per-row path runs on broken input alone.
    """
    raw = raw.cast(pa.binary())
    try:
        return raw.cast(pa.string()), pa.nulls(len(raw), pa.string())
    except pa.ArrowInvalid:
        texts, errors = [], []
        for value in raw.to_pylist():
            try:
                texts.append(None if value is None else value.decode("utf-8"))
                errors.append(None)
            except UnicodeDecodeError:
                texts.append(None)
                errors.append("bad_utf8")
        return pa.array(texts, pa.string()), pa.array(errors, pa.string())


def labels_as_strings(label: pa.Array) -> pa.Array:
    """Integer or string labels, trimmed, as strings (so 1 and "1" are the same class)."""
    if pa.types.is_binary(label.type) or pa.types.is_large_binary(label.type):
        label, _ = decode_utf8(label)
    return pc.utf8_trim_whitespace(label.cast(pa.string()))


def bad_rows_batch(bad_rows: list[str], path: str, first: int) -> pa.RecordBatch:
    """Rows with the wrong number of fields: kept whole in `text` so the reject shows what was there.

    Their row numbers follow the good rows of the same block, since Arrow's streaming reader does not say
    where in the block a bad row stood.
    """
    n = len(bad_rows)
    return make_batch(pa.array(bad_rows, pa.string()), pa.nulls(n, pa.string()), path, first,
                       repeated("bad_field_count", n))


def limit_rows(batches: Iterator[pa.RecordBatch], limit: int) -> Iterator[pa.RecordBatch]:
    left = limit
    for batch in batches:
        if left <= 0:
            return
        yield batch.slice(0, left)
        left -= batch.num_rows


def rechunk(reader, chunk_rows: int) -> Iterator[pa.RecordBatch]:
    for batch in reader:
        for start in range(0, batch.num_rows, chunk_rows):
            yield batch.slice(start, chunk_rows)
