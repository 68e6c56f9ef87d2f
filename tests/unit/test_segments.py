"""textrnn.segments: a UTF-8 CSV cut after the records the compiled pass finds, parsed segment by segment,
gives what Arrow's parse of the whole file gives, wherever the blocks end; and the UTF-8 check finds a bad
byte in any segment, whole characters split across blocks passing."""

from __future__ import annotations

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.csv as pcsv
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from textrnn import kernels
from textrnn.segments import NotUTF8, cut_records, iter_segments

FS = fsspec.filesystem("file")
COLUMNS = ["text", "label"]
# Byte soup for the body of a CSV: quotes alone, doubled and around fields, every line end, delimiters of
# both kinds, multi-byte characters and a BOM, so cuts land next to and inside everything the parser minds.
pieces = st.sampled_from([b'"', b'""', b",", b"\t", b"\n", b"\r", b"\r\n", b"a", b"pos", b" ", "中".encode(),
                          "é".encode(), "😀".encode(), b'"x,\ny"', b"\xef\xbb\xbf"])
bodies = st.lists(pieces, max_size=80).map(b"".join)


def whole_file_parse(path, delimiter: str) -> tuple[list[dict], list[str]]:
    bad: list[str] = []
    parse = pcsv.ParseOptions(delimiter=delimiter, newlines_in_values=True,
                              invalid_row_handler=lambda row: bad.append(row.text) or "skip")
    convert = pcsv.ConvertOptions(include_columns=COLUMNS, column_types=dict.fromkeys(COLUMNS, pa.string()))
    try:
        table = pcsv.read_csv(path, parse_options=parse, convert_options=convert)
    except pa.ArrowInvalid as err:
        assert "Empty CSV file" in str(err)
        return [], []
    return table.to_pylist(), bad


def segmented_parse(path, delimiter: str, block: int, workers: int) -> tuple[list[dict], list[str]]:
    with open(path, "rb") as handle:
        assert b"".join(bytes(segment) for segment in cut_records(handle, delimiter, block)) == path.read_bytes()
    rows, bad = [], []
    for segment in iter_segments(FS, str(path), delimiter, COLUMNS, workers, block, check_header=lambda names: None):
        rows += segment.table.to_pylist()
        bad += segment.bad_rows
    return rows, bad


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=bodies, block=st.integers(1, 40), delimiter=st.sampled_from([",", "\t"]), workers=st.sampled_from([1, 2]))
def test_segments_parse_to_what_arrow_parses_from_the_whole_file(tmp_path, body, block, delimiter, workers):
    path = tmp_path / "soup.csv"
    path.write_bytes(f"text{delimiter}label\n".encode() + body)
    try:
        expected = whole_file_parse(path, delimiter)
    except pa.ArrowInvalid:
        return  # a file Arrow refuses outright (the reader's caller handles that); nothing to compare
    assert segmented_parse(path, delimiter, block, workers) == expected


def test_record_ends_follow_quotes_doubled_quotes_and_every_line_end():
    def ends(data: bytes, state=kernels.CSV_START):
        return kernels.csv_record_ends(np.frombuffer(data, np.uint8), state, ord(","), ord('"'))

    assert ends(b'a,"b\n""c",d\r\ne') == (13, 1)  # the quoted newline and doubled quote are inside the field
    assert ends(b'x"y\nz') == (4, 1)  # a quote inside an unquoted field is an ordinary byte
    assert ends(b"a\rb\r") == (2, 0)  # a final \r may be the start of \r\n: not reported yet
    assert ends(b'\n"', 0) == (1, 2)
    assert ends(b'"\n', 2) == (2, 0)  # a block starting inside quotes: the quote closes them


def parse_all(path, workers: int, block: int) -> int:
    return sum(segment.table.num_rows for segment in iter_segments(FS, str(path), ",", ["a", "b"], workers, block,
                                                                  check_header=lambda names: None))


@pytest.mark.parametrize("workers", [1, 2])
def test_segments_find_a_bad_byte_in_any_segment_and_pass_characters_split_across_blocks(workers, tmp_path):
    lines = [f"{i},好评很多的评论😀\n".encode() for i in range(60)]
    good = tmp_path / "good.csv"
    good.write_bytes(b"a,b\n" + b"".join(lines))
    for block in (1, 2, 3, 5, 50, 1 << 20):  # read boundaries inside every kind of character
        assert parse_all(good, workers, block) == 60
    for at in (0, 30, 59):
        bad = tmp_path / f"bad{at}.csv"
        bad.write_bytes(b"a,b\n" + b"".join(lines[:at] + [b"\xe5\xa5,pos\n"] + lines[at + 1:]))  # cut short
        with pytest.raises(NotUTF8, match="bad"):
            parse_all(bad, workers, 50)
    cut_at_end = tmp_path / "cut_at_end.csv"
    cut_at_end.write_bytes(b"a,b\nok,pos\n\xe5\xa5")
    with pytest.raises(NotUTF8):
        parse_all(cut_at_end, workers, 7)


def test_segments_start_small_then_are_about_a_block_long_and_hold_whole_records(tmp_path):
    """The first blocks read are 1/16 of a block, doubling: the parsing threads start on a small first
    segment rather than waiting for a whole block to be read."""
    path = tmp_path / "in.csv"
    path.write_bytes(b"text,label\n" + b"".join(b'"row %d, with a\nnewline",pos\n' % i for i in range(1000)))
    with open(path, "rb") as handle:
        segments = [bytes(segment) for segment in cut_records(handle, ",", 1000)]
    assert 20 <= len(segments) <= 40 and b"".join(segments) == path.read_bytes()
    assert all(segment.endswith(b",pos\n") for segment in segments)
    lengths = [len(segment) for segment in segments]
    assert lengths[0] < 1000 // 16 + 40
    assert lengths[:5] == sorted(lengths[:5]) and max(lengths) > 1000 - 40
    assert all(length < 1000 + 40 for length in lengths)


def test_a_record_longer_than_many_blocks_is_one_segment(tmp_path):
    path = tmp_path / "long.csv"
    long_text = "很长的评论，".join(str(i) for i in range(2000))
    path.write_text(f'text,label\n"{long_text}\n",pos\nshort,neg', encoding="utf-8")
    with open(path, "rb") as handle:
        segments = [bytes(segment) for segment in cut_records(handle, ",", 64)]
    assert b"".join(segments) == path.read_bytes() and len(segments) == 3
    assert segmented_parse(path, ",", 64, 2) == whole_file_parse(path, ",")


def test_an_empty_file_has_no_segments_and_a_file_of_blank_lines_no_records(tmp_path):
    empty, blank = tmp_path / "empty.csv", tmp_path / "blank.csv"
    empty.write_bytes(b"")
    blank.write_bytes(b"\n\r\n\n")
    with open(empty, "rb") as handle:
        assert list(cut_records(handle, ",", 16)) == []
    assert segmented_parse(empty, ",", 16, 1) == ([], [])
    assert segmented_parse(blank, ",", 2, 1) == ([], [])


def buffer_of(segment: memoryview) -> int:
    """The read buffer a segment was cut from (segments are views of views of it)."""
    return id(segment.obj.base)


def test_read_buffers_are_reused_once_nothing_refers_to_their_segments_and_never_before(tmp_path):
    path = tmp_path / "in.csv"
    path.write_bytes(b"text,label\n" + b"".join(b'"row %d, with a\nnewline",pos\n' % i for i in range(2000)))
    with open(path, "rb") as handle:  # each segment dropped at once: its buffer reads the next but one
        dropped = {buffer_of(segment) for segment in cut_records(handle, ",", 1000)}
    with open(path, "rb") as handle:  # every segment held: none of their buffers may be read into again
        held = list(cut_records(handle, ",", 1000))
    assert len(dropped) <= 3 and len(held) > 40
    assert len({buffer_of(segment) for segment in held}) == len(held)
    assert b"".join(bytes(segment) for segment in held) == path.read_bytes()
