"""A UTF-8 CSV/TSV file cut into segments of whole records, which Arrow parses in parallel threads.

Arrow's streaming CSV reader parses its blocks one after another: with values that may hold newlines, a
block's first record is only known once the block before it is parsed. A record ends at a line end
outside quotes, though, and whether a byte is inside quotes follows from a far simpler pass than parsing:
`kernels.csv_record_ends` follows Arrow's parser states (field start, unquoted, quoted, a quote inside
quotes) over the bytes, in a fraction of the time that parsing and converting them take.

The file is read once. `cut_records` cuts each block read after its last record (serial, since each block
starts in the state the one before ended in; the rest of the block starts the next segment), and
`iter_segments` hands the segments to `workers` threads, which check that a segment is UTF-8 and parse it
as a whole file of its own (the first with the header; the others are given the header's names). A
segment starts after a line end, so at a character's first byte: checking the segments one by one checks
the file. Cutting at the parser's own record ends, the records and their order are what one serial parse
gives; a property test holds the parsed segments equal to Arrow's parse of the whole file.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Iterator
from concurrent.futures import Executor
from dataclasses import dataclass
from itertools import chain

import numpy as np
import pyarrow as pa
import pyarrow.csv as pcsv

from textrnn import kernels
from textrnn.lenient import valid_utf8
from textrnn.parallel import given_or_new, in_order

_UTF8_BOM = b"\xef\xbb\xbf"


class NotUTF8(ValueError):
    """A segment of the file is not valid UTF-8; the segments before it were yielded."""


@dataclass(frozen=True)
class ParsedSegment:
    """One segment's records: the table of the wanted columns, and the text of each record that had the
    wrong number of fields (Arrow's parser skips them; the caller keeps them as errors)."""
    table: pa.Table
    bad_rows: list[str]


def cut_records(handle, delimiter: str, block: int) -> Iterator[bytes | memoryview]:
    """The file's bytes as segments of whole records, in order: each is what is left of the block before
    and the records of the next block read (`block` bytes, the first few smaller; a record longer than a
    block makes its segment longer); the last ends at the end of the file. A segment starting with a BOM
    joins the one before (Arrow would drop a BOM that starts its input; mid-file it is text)."""
    pending = None
    for segment in _record_cuts(handle, delimiter, block):
        if pending is not None and bytes(segment[:3]) != _UTF8_BOM:
            yield pending
            pending = segment
        else:
            pending = segment if pending is None else bytes(pending) + bytes(segment)
    if pending is not None:
        yield pending


def _record_cuts(handle, delimiter: str, block: int) -> Iterator[bytes | memoryview]:
    """Each block is read behind the unended record left from the one before, into a buffer of its own,
    and cut after its last record end: the segment is a view of that buffer, not a copy. The first blocks
    are smaller (from 1/16 of `block`, doubling): the parsing threads start on the first segment while
    the next is read, instead of waiting for a whole block to be read, cut and checked."""
    state, rest, longer = kernels.CSV_START, b"", []  # `longer`: a record that no block has ended yet
    size = max(block >> 4, 1)
    buffers = _ReusedBuffers(block + block // 4)
    while True:
        buffer = memoryview(buffers.get(len(rest) + size))
        size = min(size * 2, block)
        buffer[:len(rest)] = rest
        read = handle.readinto(buffer[len(rest):])
        if not read:
            break
        filled = len(rest) + read
        last, state = kernels.csv_record_ends(np.frombuffer(buffer, np.uint8, read, len(rest)), state, ord(delimiter),
                                              ord('"'))
        if last < 0:
            longer.append(buffer[:filled])
            rest = b""
            continue
        cut = len(rest) + last  # (where the last record ends: the byte after its line end)
        segment = buffer[:cut]
        yield b"".join([*longer, segment]) if longer else segment
        longer, rest = [], bytes(buffer[cut:filled])
    if longer or rest:  # the last record needs no line end: the end of the file ends it
        yield b"".join([*longer, rest])


class _ReusedBuffers:
    """Read buffers, each handed out again once nothing refers to it any more.

    A new buffer costs a page fault per page the read fills (the kernel zeroes each page first: at two
    workers a quarter of ingest's CPU time was the kernel's), and reading the file through new buffers
    faults in its whole size. A buffer is handed out as a view of it; when the last thing that refers to
    that view is gone (the segments cut from it, the parse that read them: Arrow's parse copies the
    values out), a finaliser puts the buffer back, from whichever thread dropped it. So a buffer is never
    reused while anything can still read it, and as many exist as segments are in flight at once.
    Not zero-filled: the read fills them (`bytearray(n)` wrote n zeros holding the GIL)."""

    def __init__(self, size: int):
        self._size = size
        self._free: list[np.ndarray] = []
        self._lock = threading.RLock()  # (a view collected while `get` holds it puts its buffer back)

    def get(self, n: int) -> np.ndarray:
        """A buffer of n bytes, uninitialised."""
        with self._lock:
            fits = next((i for i, base in enumerate(self._free) if len(base) >= n), None)
            base = self._free.pop(fits) if fits is not None else np.empty(max(n, self._size), np.uint8)
        view = base[:n]
        weakref.finalize(view, self._put_back, base)
        return view

    def _put_back(self, base: np.ndarray) -> None:
        with self._lock:
            self._free.append(base)


def iter_segments(fs, path: str, delimiter: str, columns: list[str], workers: int, block: int,
                  check_header: Callable[[list[str]], None], pool: Executor | None = None) -> Iterator[ParsedSegment]:
    """Parse every segment, `workers` at a time, in `pool` (the caller's) or in threads of its own, and
    yield them in file order. `check_header(names)` sees the header's names first, and may raise. Raises
    NotUTF8 where a segment is not UTF-8, after yielding the segments before it."""
    with given_or_new(pool, workers) as pool, fs.open(path, "rb") as handle:
        segments = cut_records(handle, delimiter, block)
        first = next(segments, None)
        if first is None:
            return
        _check_utf8(first, path)  # before its header is read
        names = header_names(first, delimiter)
        if not names:  # nothing but blank lines
            return
        check_header(names)
        first_parse = pool.submit(parse_segment, first, delimiter, columns, None)
        del first  # (so that its read buffer can be read into again once the parse is done with it)
        # A segment for each worker and one queued: each one more in flight holds a read buffer and a
        # parsed table, memory the kernel must first zero (twice the workers in flight held more memory
        # and cost more than it gained).
        parses = chain([first_parse],
                       (pool.submit(_checked_parse, segment, delimiter, columns, names, path) for segment in segments))
        yield from in_order(parses, window=workers + 1)


def _checked_parse(data, delimiter: str, columns: list[str], names: list[str], path: str) -> ParsedSegment:
    """A segment after the first (which iter_segments checks itself): its UTF-8 checked, then parsed."""
    _check_utf8(data, path)
    return parse_segment(data, delimiter, columns, names)


def _check_utf8(data, path: str) -> None:
    if not valid_utf8(data):
        raise NotUTF8(f"{path}: not valid UTF-8")


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
        # The bytes are valid UTF-8: iter_segments checked them. Arrow's streaming reader, not read_csv:
        # read_csv starts a read-ahead thread of its own for each call and joins it at the end (the parsing
        # threads waited for that join on every segment, and each new thread's stack and heap were new
        # memory to fault in); the streaming reader runs on Arrow's lasting thread pools.
        table = pcsv.open_csv(pa.BufferReader(data), read_options=read,
                              parse_options=csv_parse_options(delimiter, bad_rows),
                              convert_options=string_columns(columns)).read_all()
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
