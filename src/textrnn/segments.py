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
from textrnn.lenient import valid_utf8
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
                # The block's whole characters are checked in a thread; a character cut at either edge is
                # checked with its other part (`carry`: the bytes after the block's last character start).
                first, cut = _first_char_start(data), _last_char_start(data)
                if first == len(data) < 4:  # a block inside one character (blocks of a few bytes)
                    carry += data
                    continue
                yield pool.submit(valid_utf8, carry + data[:first])
                if first < cut:
                    yield pool.submit(valid_utf8, memoryview(data)[first:cut])
                carry = data[max(first, cut):]
            yield pool.submit(valid_utf8, carry)

        if not all(in_order(checks(), window=2 * workers)):
            return None
    if offset and (not ends or ends[-1] < offset):
        ends.append(offset)  # the last record needs no line end: the end of the file ends it
    return ends


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
                                 parse_options=_parse_options(delimiter, [])).schema.names
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
    # The bytes are valid UTF-8 (record_segments checked them) and fields are cut at ASCII bytes, which
    # never fall inside a character: checking every field again would only cost time.
    convert = pcsv.ConvertOptions(include_columns=columns, check_utf8=False,
                                  column_types=dict.fromkeys(columns, pa.string()))
    try:
        table = pcsv.read_csv(pa.BufferReader(data), read_options=read,
                              parse_options=_parse_options(delimiter, bad_rows), convert_options=convert)
    except pa.ArrowInvalid as err:
        if "Empty CSV file" not in str(err):
            raise
        table = pa.table({c: pa.array([], pa.string()) for c in columns})
    return ParsedSegment(table, bad_rows)


def _parse_options(delimiter: str, bad_rows: list[str]) -> pcsv.ParseOptions:
    def keep_bad_row(row) -> str:
        bad_rows.append(row.text)
        return "skip"

    return pcsv.ParseOptions(delimiter=delimiter, newlines_in_values=True, invalid_row_handler=keep_bad_row)
