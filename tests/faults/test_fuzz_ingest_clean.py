"""Property tests over ingest + clean on hostile CSV and JSONL files.

For every generated file, ingest followed by clean either succeeds with every record accounted for
(rows_in = rows_kept + rows_rejected, rows_in = the number of records the file holds, every reject with a
reason, a source and a row), or raises a SourceError/ValueError that names the file. Nothing else.

Generated inputs: arbitrary Unicode with control characters and NUL, invalid UTF-8 byte sequences, mixed
newline styles (\\n, \\r\\n, \\r), quote storms, labels that are empty, numeric-looking or differ only in
case or surrounding blanks. The fixed tests at the end of this file pin the bugs these properties found,
each with its reproducer.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from textrnn.cleaning import REASONS, SPLITS
from textrnn.config import CleanParams, IngestParams
from textrnn.readers import SourceError
from textrnn.stages import clean, ingest

FUZZ = settings(max_examples=40, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
CHUNK_ROWS = 5  # several shards even for small files: exercises the shard seams and the global dedup

LABELS = ["pos", "neg", "Pos", "POS", " pos", "pos ", "\tneg\t", "", "  ", "0", "1", "01", "1.0", "-1",
          "1e3", "NaN", "null", "true", "中性"]
BAD_UTF8 = [b"\xff", b"\xfe\xff", b"\xc3", b"\xc3(", b"\xe2\x82", b"\xed\xa0\x80",  # encoded lone surrogate
            b"\xf4\x90\x80\x80", b"\xc0\xaf", b"\x80\x80"]
unicode_text = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=30)
control_text = st.lists(st.sampled_from(["\x00", "\x01", "\x1b", "\x7f", "\u200b", "\u2028", "\ufeff", "\t",
                                         "\n", "\r", "\r\n", " ", "a", "中", "😀"]), max_size=12).map("".join)
quote_storm = st.integers(1, 40).map(lambda n: '"' * n)
text_piece = st.one_of(unicode_text.map(str.encode), control_text.map(str.encode), quote_storm.map(str.encode),
                       st.sampled_from(BAD_UTF8), st.sampled_from([b",", b"a,b", b"<b>x</b>", b"http://x.y"]))
# A few texts that normalise alike, so duplicates and label conflicts turn up across shards.
same_text = st.sampled_from([b"same text", b"Same  TEXT ", b"same\ttext", b"<i>same</i> text"])
text_bytes = st.one_of(st.lists(text_piece, max_size=4).map(b"".join), same_text)
label_bytes = st.one_of(st.sampled_from(LABELS).map(str.encode), st.sampled_from([b"\xff", b"p\xc3s"]))
newline = st.sampled_from([b"\n", b"\r\n", b"\r"])


@contextmanager
def _workdir() -> Iterator[Path]:
    """A fresh folder per example (hypothesis reruns the body; a function-scoped tmp_path would be shared)."""
    folder = Path(tempfile.mkdtemp(prefix="textrnn-fuzz-"))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _ingest_and_clean(source: Path, out: Path, chunk_rows: int = CHUNK_ROWS) -> tuple[dict, dict] | Exception:
    """Both stages; a SourceError/ValueError naming the file is returned, anything else propagates."""
    try:
        raw = ingest.run(out / "raw", IngestParams(source=str(source), chunk_rows=chunk_rows, max_rows_per_file=0))
        # min_split_rows=0: any input, however small, must be accounted for row by row.
        stats = clean.run(out / "raw", out / "clean", out / "rejects", CleanParams(min_split_rows=0))
    except (SourceError, ValueError) as err:
        assert str(source) in str(err), f"error does not name the file: {err!r}"
        return err
    return raw, stats


def _read(folder: Path) -> pa.Table | None:
    shards = sorted(folder.glob("part-*.parquet"))
    return pa.concat_tables([pq.read_table(s) for s in shards]) if shards else None


def _check_accounting(out: Path, source: Path, raw: dict, stats: dict, expected_rows: int) -> dict[int, dict]:
    """The shared invariant; returns {row: kept or rejected record} for per-row checks."""
    assert stats["accounting_ok"]
    assert stats["rows_in"] == stats["rows_kept"] + stats["rows_rejected"] == raw["rows"] == expected_rows
    assert all(label and label == label.strip() for label in raw["labels_seen"])
    labels = json.loads((out / "clean" / "labels.json").read_text(encoding="utf-8"))
    by_row: dict[int, dict] = {}
    for split in SPLITS:
        kept = _read(out / "clean" / split)
        for record in [] if kept is None else kept.to_pylist():
            assert record["text"] and record["label"] in labels
            assert labels[record["label_id"]] == record["label"]
            by_row.setdefault(record["row"], []).append(record)
    rejects = _read(out / "rejects")
    for record in [] if rejects is None else rejects.to_pylist():
        assert record["reason"] in REASONS
        assert record["source"] == str(source) and record["row"] >= 1
        by_row.setdefault(record["row"], []).append(record)
    assert sum(len(v) for v in by_row.values()) == expected_rows
    return by_row


def _quote(field: bytes) -> bytes:
    return b'"' + field.replace(b'"', b'""') + b'"'


def _valid(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


# --- CSV with every field quoted: the record count is unambiguous ------------------------------------------

@FUZZ
@given(records=st.lists(st.tuples(text_bytes, label_bytes, newline), max_size=25), header_newline=newline)
def test_quoted_csv_every_record_is_kept_or_rejected_once(records, header_newline):
    with _workdir() as work:
        source = work / "in.csv"
        data = b"text,label" + header_newline + b"".join(_quote(t) + b"," + _quote(lb) + nl
                                                         for t, lb, nl in records)
        source.write_bytes(data)
        # Python's csv module agrees on the number of records
        assert len(list(csv.reader(io.StringIO(data.decode("utf-8", "surrogateescape"), newline="")))) == \
            len(records) + 1
        result = _ingest_and_clean(source, work / "out")
        assert not isinstance(result, Exception), result  # every field quoted: nothing here is unreadable
        by_row = _check_accounting(work / "out", source, *result, expected_rows=len(records))
        event(f"reasons: {sorted(result[1]['rejected_by_reason'])}")
        assert sorted(by_row) == list(range(1, len(records) + 1))  # each record exactly once, by its row
        for row, (found,) in by_row.items():
            text, label, _ = records[row - 1]
            expected_label = label.decode("utf-8").strip(" \t") if _valid(label) else None
            if "reason" not in found:  # kept: the label is the record's own, trimmed
                assert found["label"] == expected_label
            elif found["reason"] == "bad_utf8":  # the text or the label could not be decoded
                assert not _valid(text) or not _valid(label)
            if not _valid(text):
                assert found.get("reason") == "bad_utf8"
            if not expected_label:
                assert "reason" in found  # no usable label: never kept


# --- CSV of arbitrary (valid UTF-8) bytes: counts as pyarrow reads the same file ----------------------------

csv_soup = st.lists(st.sampled_from([b'"', b",", b"\n", b"\r", b"\r\n", b"\x00", b"a", b"pos", b" ", b"\t",
                                     "é".encode(), "中".encode(), b'""']), max_size=60).map(b"".join)


def _pyarrow_record_count(path: Path) -> int:
    invalid = []
    parse = pcsv.ParseOptions(newlines_in_values=True, invalid_row_handler=lambda row: invalid.append(1) or "skip")
    convert = pcsv.ConvertOptions(column_types={"text": pa.binary(), "label": pa.binary()})
    table = pcsv.read_csv(path, parse_options=parse, convert_options=convert)
    return table.num_rows + len(invalid)


@FUZZ
@given(body=csv_soup)
def test_csv_byte_soup_is_accounted_for_or_refused_naming_the_file(body):
    with _workdir() as work:
        source = work / "soup.csv"
        source.write_bytes(b"text,label\n" + body)
        result = _ingest_and_clean(source, work / "out")
        event(f"refused: {type(result).__name__}" if isinstance(result, Exception) else "read")
        if isinstance(result, Exception):
            return  # refused, naming the file (checked in _ingest_and_clean)
        by_row = _check_accounting(work / "out", source, *result, expected_rows=_pyarrow_record_count(source))
        event(f"rejected some: {result[1]['rows_rejected'] > 0}")
        for records in by_row.values():
            for found in records:
                if found.get("reason") == "bad_field_count":
                    assert found["label"] is None and found["split"] is None


# --- JSON lines ----------------------------------------------------------------------------------------------

json_text = st.one_of(unicode_text, control_text, quote_storm, st.none(), same_text.map(bytes.decode))
json_label = st.one_of(st.sampled_from(LABELS), st.none())
json_int_label = st.one_of(st.integers(-3, 3), st.none())


@st.composite
def jsonl_files(draw) -> tuple[bytes, int]:
    mixed = st.one_of(json_label, json_int_label)  # strings and numbers in one column: refused
    labels = draw(st.sampled_from([json_label, json_label, json_int_label, mixed]))
    rows = draw(st.lists(st.tuples(json_text, labels, st.sampled_from(["\n", "\r\n"]), st.booleans()),
                         max_size=20))
    if rows and draw(st.sampled_from([False] * 7 + [True])):  # a lone surrogate escape: JSON, but not text
        rows[0] = ("a\ud800b", *rows[0][1:])
    # A lone surrogate can only be written as a \\u escape: raw, it would be invalid UTF-8 (tested below).
    lines = [json.dumps({"label": lb, "text": t} if flip else {"text": t, "label": lb},
                        ensure_ascii=flip or (t is not None and "\ud800" in t)) + nl
             for t, lb, nl, flip in rows]
    return "".join(lines).encode("utf-8"), len(rows)


@FUZZ
@given(file=jsonl_files())
def test_jsonl_every_record_is_accounted_for_or_refused_naming_the_file(file):
    data, n = file
    with _workdir() as work:
        source = work / "in.jsonl"
        source.write_bytes(data)
        result = _ingest_and_clean(source, work / "out")
        event(f"refused: {type(result).__name__}" if isinstance(result, Exception) else "read")
        if isinstance(result, Exception) and n == 0:
            return  # refused, naming the file: see test_empty_jsonl_is_zero_rows_like_an_empty_csv
        if isinstance(result, Exception):
            # refused only for what JSON lines cannot hold: a label column of mixed types, a lone surrogate
            assert isinstance(result, SourceError)
            assert "changed from" in str(result) or "surrogate" in str(result)
            return
        by_row = _check_accounting(work / "out", source, *result, expected_rows=n)
        assert sorted(by_row) == list(range(1, n + 1))


# --- enormous lines ------------------------------------------------------------------------------------------

def test_a_3_mb_csv_field_is_truncated_and_kept(tmp_path):
    source = tmp_path / "long.csv"
    source.write_bytes(b'text,label\n"' + "好".encode() * (1 << 20) + b'",pos\nshort,neg\n')
    raw, stats = _ingest_and_clean(source, tmp_path / "out")
    _check_accounting(tmp_path / "out", source, raw, stats, expected_rows=2)
    assert stats["rows_kept"] == 2
    kept = pa.concat_tables([t for s in SPLITS if (t := _read(tmp_path / "out" / "clean" / s)) is not None])
    lengths = sorted(len(text) for text in kept.column("text").to_pylist())
    assert lengths[-1] == CleanParams().max_chars


@pytest.mark.parametrize("suffix", ["csv", "jsonl"])
def test_a_record_longer_than_a_reader_block_after_other_rows_loses_nothing(tmp_path, suffix):
    """Arrow's readers parse bounded blocks. A longer record makes its CSV segment longer; in a JSON lines
    file it sends the rest of the file to the per-row reader, which carries on after the rows handed on."""
    source = tmp_path / f"long.{suffix}"
    rows = [(f"row {i} " + "好" * (i % 50), "pos" if i % 3 else "neg") for i in range(200_000)]
    rows.insert(150_000, ("x" * (20 << 20), "pos"))
    rows.append(("last", "neg"))
    with open(source, "w", encoding="utf-8", newline="") as handle:
        if suffix == "csv":
            writer = csv.writer(handle)
            writer.writerow(["text", "label"])
            writer.writerows(rows)
        else:
            handle.writelines(json.dumps({"text": t, "label": lab}, ensure_ascii=False) + "\n" for t, lab in rows)
    raw, stats = _ingest_and_clean(source, tmp_path / "out", chunk_rows=50_000)
    by_row = _check_accounting(tmp_path / "out", source, raw, stats, expected_rows=len(rows))
    assert sorted(by_row) == list(range(1, len(rows) + 1))
    shards = sorted((tmp_path / "out" / "raw").glob("part-*.parquet"))
    texts = pa.concat_tables(pq.read_table(f, columns=["text", "row"]) for f in shards)
    by_number = dict(zip(texts.column("row").to_pylist(), texts.column("text").to_pylist()))
    assert [by_number[n] for n in (1, 150_000, 150_002, len(rows))] == [
        rows[0][0], rows[149_999][0], rows[150_001][0], "last"]
    assert len(by_number[150_001]) == 20 << 20


def test_a_10_mb_jsonl_record_is_read_or_refused_naming_the_file(tmp_path):
    source = tmp_path / "long.jsonl"
    source.write_text(json.dumps({"text": "x" * (10 << 20), "label": "pos"}) + "\n"
                      + json.dumps({"text": "short", "label": "neg"}) + "\n", encoding="utf-8")
    result = _ingest_and_clean(source, tmp_path / "out")  # a ValueError must name the file
    if isinstance(result, Exception):
        assert isinstance(result, SourceError)
        assert not (tmp_path / "out" / "raw").exists()  # nothing half-written
    else:
        _check_accounting(tmp_path / "out", source, *result, expected_rows=2)


def test_a_10_mb_csv_field_is_read_or_refused_naming_the_file(tmp_path):
    source = tmp_path / "huge.csv"
    source.write_bytes(b'text,label\nshort,neg\n"' + b"x" * (10 << 20) + b'",pos\nafter,neg\n')
    result = _ingest_and_clean(source, tmp_path / "out")
    if not isinstance(result, Exception):
        _check_accounting(tmp_path / "out", source, *result, expected_rows=3)


# --- bugs these properties found (fixed), pinned ---

def test_bad_field_count_row_with_invalid_utf8_is_rejected_alone(tmp_path):
    source = tmp_path / "in.csv"
    source.write_bytes(b"text,label\ngood one,pos\n\xff\xfe,neg,extra\nanother,neg\n")
    result = _ingest_and_clean(source, tmp_path / "out")
    assert not isinstance(result, Exception), result
    _, stats = result
    assert stats["rows_in"] == 3 and stats["rows_kept"] == 2
    assert stats["rejected_by_reason"] == {"bad_field_count": 1}


def test_bad_field_count_row_with_invalid_utf8_late_in_a_big_file_names_the_file(tmp_path):
    source = tmp_path / "in.csv"
    source.write_bytes(b"text,label\n" + b"hello there friend,pos\n" * 250_000 + b"\xff,neg,extra\n")
    _ingest_and_clean(source, tmp_path / "out", chunk_rows=100_000)  # must name the file; any other error fails


def test_csv_header_with_invalid_utf8_is_refused_naming_the_file(tmp_path):
    source = tmp_path / "in.csv"
    source.write_bytes(b"te\xffxt,label\nhello,pos\n")
    error = _ingest_and_clean(source, tmp_path / "out")
    assert isinstance(error, SourceError)


def test_jsonl_with_invalid_utf8_in_a_text_is_a_bad_utf8_reject(tmp_path):
    source = tmp_path / "in.jsonl"
    source.write_bytes(b'{"text": "ok", "label": "pos"}\n{"text": "bad \xff byte", "label": "neg"}\n')
    result = _ingest_and_clean(source, tmp_path / "out")
    assert not isinstance(result, Exception), result
    assert result[1]["rejected_by_reason"] == {"bad_utf8": 1}


@pytest.mark.parametrize("line", ['{"text": ["a", "b"], "label": "pos"}', '{"text": {"a": 1}, "label": "pos"}',
                                  '{"text": "fine", "label": {"x": 1}}'])
def test_jsonl_with_a_nested_text_or_label_is_refused_naming_the_file(line, tmp_path):
    source = tmp_path / "in.jsonl"
    source.write_text(line + "\n", encoding="utf-8")
    _ingest_and_clean(source, tmp_path / "out")  # must name the file; any other error fails


def test_jsonl_type_change_late_in_a_big_file_names_the_file(tmp_path):
    source = tmp_path / "in.jsonl"
    line = json.dumps({"text": "hello world " + "y" * 60, "label": "pos"}) + "\n"
    source.write_text(line * 60_000 + json.dumps({"text": "z", "label": 5}) + "\n", encoding="utf-8")
    _ingest_and_clean(source, tmp_path / "out", chunk_rows=100_000)  # must name the file; any other error fails


def test_empty_jsonl_is_zero_rows_like_an_empty_csv(tmp_path):
    (tmp_path / "empty.csv").write_bytes(b"")
    raw_csv, _ = _ingest_and_clean(tmp_path / "empty.csv", tmp_path / "csv")
    assert raw_csv["rows"] == 0
    (tmp_path / "empty.jsonl").write_bytes(b"")
    result = _ingest_and_clean(tmp_path / "empty.jsonl", tmp_path / "jsonl")
    assert not isinstance(result, Exception), result
    assert result[0]["rows"] == 0
