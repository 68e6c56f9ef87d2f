"""A UTF-8 CSV/TSV file cut into segments of whole records, which Arrow parses in parallel threads.

Arrow's streaming CSV reader parses its blocks one after another: with values that may hold newlines, a
block's first record is only known once the block before it is parsed. A record ends at a line end
outside quotes, though, and whether a byte is inside quotes follows from a far simpler pass than parsing:
`kernels.csv_record_ends` follows Arrow's parser states (field start, unquoted, quoted, a quote inside
quotes) over the bytes, at ~0.5 ns a byte, where parsing and converting take ~1.5 ns.

1. `record_segments` reads the file once: the compiled pass cuts it after the last record of each block
   (serial, since each block starts in the state the one before ended in), while `workers` threads check
   that the bytes are UTF-8 (each checked piece starts at a character's first byte; a character cut by a
   block's end is checked with its rest).
2. `iter_segments` reads the segments again, in order, and Arrow parses `workers` of them at a time, each
   as a whole file of its own (the first with the header; the others are given the header's names).
Cutting at the parser's own record ends, the records and their order are what one serial parse gives; a
property test holds the parsed segments equal to Arrow's parse of the whole file.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.csv as pcsv

from textrnn import kernels
from textrnn.lenient import utf8_pieces, valid_utf8
from textrnn.parallel import in_order, make_executor


def record_segments(fs, path: str, delimiter: str, workers: int, block: int) -> list[int] | None:
    """Where the file's segments end: each holds whole records, about `block` bytes of them (a record
    longer than a block makes its segment longer), and the last ends at the end of the file. None if the
    file is not valid UTF-8."""
    ends: list[int] = []
    state, offset, carry = kernels.CSV_START, 0, b""
    with make_executor("thread", workers) as pool, fs.open(path, "rb") as handle:
        def checks() -> Iterator:
            nonlocal state, offset, carry
            while data := handle.read(block):
                last, state = kernels.csv_record_ends(np.frombuffer(data, np.uint8), state, ord(delimiter), ord('"'))
                if last >= 0:
                    ends.append(offset + last)
                offset += len(data)
                pieces, carry = utf8_pieces(data, carry)
                yield from (pool.submit(valid_utf8, piece) for piece in pieces)
            yield pool.submit(valid_utf8, carry)

        if not all(in_order(checks(), window=2 * workers)):
            return None
    if offset and (not ends or ends[-1] < offset):
        ends.append(offset)  # the last record needs no line end: the end of the file ends it
    return ends


_UTF8_BOM = b"\xef\xbb\xbf"


@dataclass(frozen=True)
class ParsedSegment:
    """One segment's records: the table of the wanted columns, and the text of each record that had the
    wrong number of fields (Arrow's parser skips them; the caller keeps them as errors)."""
    table: pa.Table
    bad_rows: list[str]


def iter_segments(fs, path: str, ends: list[int], delimiter: str, columns: list[str], workers: int,
                  check_header: Callable[[list[str]], None]) -> Iterator[ParsedSegment]:
    """Parse every segment, `workers` at a time in threads, and yield them in file order.
    `check_header(names)` sees the header's names first, and may raise."""
    if not ends:
        return
    with make_executor("thread", workers) as pool, fs.open(path, "rb") as handle:
        first = handle.read(ends[0])
        names = header_names(first, delimiter)
        if not names:  # nothing but blank lines
            return
        check_header(names)

        def parses() -> Iterator:
            pending, pending_names = first, None
            for start, end in zip(ends, ends[1:]):
                data = handle.read(end - start)
                if data.startswith(_UTF8_BOM):  # Arrow drops a BOM that starts its input: keep this one inside
                    pending += data
                    continue
                yield pool.submit(parse_segment, pending, delimiter, columns, pending_names)
                pending, pending_names = data, names
            yield pool.submit(parse_segment, pending, delimiter, columns, pending_names)

        yield from in_order(parses(), window=2 * workers)


def header_names(data: bytes, delimiter: str) -> list[str]:
    """The column names in the header record at the start of `data` (none for data without records)."""
    size = 1 << 16
    while True:
        read = pcsv.ReadOptions(block_size=min(size, max(len(data), 1)), use_threads=False)
        try:
            return pcsv.open_csv(pa.BufferReader(data), read_options=read,
                                 parse_options=csv_parse_options(delimiter, [])).schema.names
        except pa.ArrowInvalid as err:
            if "Empty CSV file" in str(err):
                return []
            if size >= len(data) or "straddl" not in str(err):  # a header longer than the block: more
                raise
            size *= 16


def parse_segment(data: bytes, delimiter: str, columns: list[str], names: list[str] | None) -> ParsedSegment:
    """The `columns` of one segment's records, as strings. With `names`, the segment has no header and
    its fields are named so; without, its first record is the header."""
    bad_rows: list[str] = []
    # One block for the whole segment: it holds whole records, so Arrow need not look for where to cut.
    read = pcsv.ReadOptions(block_size=max(1, min(len(data) + 1, 1 << 30)), use_threads=False,
                            column_names=names or [])
    try:
        # The bytes are valid UTF-8: record_segments checked them.
        table = pcsv.read_csv(pa.BufferReader(data), read_options=read,
                              parse_options=csv_parse_options(delimiter, bad_rows),
                              convert_options=string_columns(columns))
    except pa.ArrowInvalid as err:
        if "Empty CSV file" not in str(err):
            raise
        table = pa.table({c: pa.array([], pa.string()) for c in columns})
    return ParsedSegment(table, bad_rows)


def csv_parse_options(delimiter: str, bad_rows: list[str]) -> pcsv.ParseOptions:
    """Arrow's CSV parsing as ingest reads: values may hold newlines, and each record with the wrong
    number of fields is skipped into `bad_rows` (its text), for the caller to keep as an error."""
    def keep_bad_row(row) -> str:
        bad_rows.append(row.text)
        return "skip"

    return pcsv.ParseOptions(delimiter=delimiter, newlines_in_values=True, invalid_row_handler=keep_bad_row)


def string_columns(columns: list[str]) -> pcsv.ConvertOptions:
    """Only `columns`, as strings, from bytes already known to be UTF-8 (checked beforehand, or transcoded
    by Arrow): fields are cut at ASCII bytes, which never fall inside a character, so checking every field
    again would only cost time."""
    return pcsv.ConvertOptions(include_columns=columns, check_utf8=False,
                               column_types=dict.fromkeys(columns, pa.string()))
