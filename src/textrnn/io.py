"""Atomic writes, Parquet shard I/O and content hashing.

Every artifact is written beside its target (a temp file or folder), fsynced, then moved into place with
`os.replace`, so a killed run never leaves a half-written artifact that DVC or Prefect could mistake for a
finished one.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import hashlib
import json
import os
import shutil
import sys
import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

TMP_MARK = ".tmp-"


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _load_sync_file_range():
    """libc's sync_file_range (Linux only; Python's os module lacks it), or None."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        call = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):
        return None
    call.argtypes, call.restype = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint], ctypes.c_int
    return call


_SYNC_FILE_RANGE = _load_sync_file_range()
_SYNC_FILE_RANGE_WRITE = 2


def start_writeback(path: str | Path) -> None:
    """Have the kernel start writing a finished file to disk now, and make it durable in the background:
    the fsync before its folder is moved into place then finds little left to wait for, while the stage
    went on working. Only an early start; the fsync at the end stays what makes the file durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        start_writeback_of(fd)
    finally:
        os.close(fd)


def start_writeback_of(fd: int, offset: int = 0, nbytes: int = 0) -> None:
    """`start_writeback` for bytes [offset, offset + nbytes) of an open file (nbytes 0: to its end). The
    kernel starts writing them at once (`sync_file_range`, on Linux); a background thread then fsyncs the
    file. That fsync is what costs here: it commits the journal and has the disk flush its cache, which on
    a virtual disk waits for the host to store everything written since the last flush. Done once at a
    stage's end, it would wait with the workers idle; in the background it overlaps the stage's work."""
    if _SYNC_FILE_RANGE is not None:
        _SYNC_FILE_RANGE(fd, offset, nbytes, _SYNC_FILE_RANGE_WRITE)
    _background_syncer().submit(_fsync_and_close, os.dup(fd))


def _fsync_and_close(fd: int) -> None:
    try:
        os.fsync(fd)
    except OSError:  # e.g. a file system without fsync: the fsync at the end reports what matters
        pass
    finally:
        os.close(fd)


_SYNCER: ThreadPoolExecutor | None = None  # one thread, made on first use in each process
_SYNCER_LOCK = threading.Lock()


def _background_syncer() -> ThreadPoolExecutor:
    global _SYNCER
    with _SYNCER_LOCK:
        if _SYNCER is None:
            _SYNCER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="textrnn-fsync")
        return _SYNCER


def wait_for_background_syncs() -> None:
    """Block until every background fsync asked for so far has run (the syncer has one thread)."""
    _background_syncer().submit(lambda: None).result()


def _forget_syncer_after_fork() -> None:
    # A forked worker process has none of the parent's threads, and may have copied the lock held.
    global _SYNCER, _SYNCER_LOCK
    _SYNCER, _SYNCER_LOCK = None, threading.Lock()


os.register_at_fork(after_in_child=_forget_syncer_after_fork)


def _fsync_tree(root: Path) -> None:
    for path in sorted(root.rglob("*")):
        if path.is_file():
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())
    _fsync_dir(root)


def _remove_stale_temps(target: Path) -> None:
    """Delete temps that a killed earlier run left beside `target` (runs on one project are serialised
    by textrnn.locking, so no live run owns them)."""
    for stale in target.parent.glob(f"{TMP_MARK}{target.name}.*"):
        if stale.is_dir():
            shutil.rmtree(stale, ignore_errors=True)
        else:
            stale.unlink(missing_ok=True)


def _temp_sibling(target: Path) -> Path:
    return target.with_name(f"{TMP_MARK}{target.name}.{uuid.uuid4().hex[:8]}")


@contextlib.contextmanager
def atomic_file(target: str | Path) -> Iterator[Path]:
    """Yield a temp path beside `target`; on success it replaces `target` in one rename."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temps(target)
    tmp = _temp_sibling(target)
    try:
        with _naming(target):
            yield tmp
            with open(tmp, "rb") as handle:
                os.fsync(handle.fileno())
            os.replace(tmp, target)
            _fsync_dir(target.parent)
    finally:
        with contextlib.suppress(OSError):  # e.g. a read-only folder: keep the original error visible
            tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_dir(target: str | Path) -> Iterator[Path]:
    """Yield a temp folder beside `target`; on success it takes the place of `target`.

    The old folder is moved aside first and deleted after, so at no moment does `target` hold a mix of old
    and new files.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temps(target)
    tmp = _temp_sibling(target)
    tmp.mkdir()
    old = None
    try:
        with _naming(target):
            yield tmp
            _fsync_tree(tmp)
            if target.exists():
                old = _temp_sibling(target)
                os.replace(target, old)
            os.replace(tmp, target)
            _fsync_dir(target.parent)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


_STORAGE_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG}


@contextlib.contextmanager
def _naming(target: Path) -> Iterator[None]:
    """A full or read-only disk while writing `target` is reported with that path (the libraries that write
    the bytes raise a bare '[Errno 28] No space left on device')."""
    try:
        yield
    except OSError as err:
        if err.errno in _STORAGE_ERRORS and str(target) not in str(err):
            raise OSError(err.errno, f"{os.strerror(err.errno)} while writing {target}") from err
        raise


def write_json(path: str | Path, payload: Any) -> None:
    """Deterministic JSON: sorted keys, UTF-8, trailing newline."""
    with atomic_file(path) as tmp:
        tmp.write_text(json_text(payload), encoding="utf-8")


def write_json_into(folder: Path, name: str, payload: Any) -> Path:
    """Write JSON inside a folder that is itself being written atomically."""
    path = folder / name
    path.write_text(json_text(payload), encoding="utf-8")
    return path


def json_text(payload: Any) -> str:
    """The one JSON formatting of every artifact, so equal payloads are equal bytes."""
    return json.dumps(payload, sort_keys=True, indent=2, ensure_ascii=False) + "\n"


def read_json(path: str | Path) -> Any:
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: missing (run the stage that writes it first)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: not valid JSON ({err}); the stage that writes it must run again") from err


def write_table(path: Path, table: pa.Table) -> None:
    """Parquet with settings fixed so that the same table always gives the same bytes. Free text is not
    dictionary-encoded and has no statistics: nearly every value is distinct, so they only slow writing
    and reading down. Not compressed: Chinese text barely compresses with a fast codec, and without one
    the shard is written and read several times faster. Row numbers ascend within a shard: delta-encoded,
    they take a few KB instead of about a MB as a dictionary, and are written faster. One row group per
    shard (a shard is at most `ingest.chunk_rows` rows, already held in memory): read back, each column is
    one contiguous array, which the stages use without first copying the pieces of several row groups
    together."""
    small = [name for name in table.column_names if name not in _FREE_TEXT_COLUMNS]
    delta = {name: "DELTA_BINARY_PACKED" for name in table.column_names if name in _ASCENDING_INT_COLUMNS}
    pq.write_table(table, path, compression="none", use_dictionary=[name for name in small if name not in delta],
                   write_statistics=small, column_encoding=delta or None, row_group_size=max(table.num_rows, 1),
                   store_schema=True)
    start_writeback(path)


_FREE_TEXT_COLUMNS = ("text",)
_ASCENDING_INT_COLUMNS = ("row",)


def shard_name(index: int) -> str:
    return f"part-{index:05d}.parquet"


def list_shards(folder: str | Path) -> list[Path]:
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: missing folder of Parquet shards (run the stage that writes it)")
    return sorted(folder.glob("part-*.parquet"))


def read_shard(shard: str | Path, columns: list[str] | None = None, dictionaries: list[str] | None = None) -> pa.Table:
    """One whole Parquet shard (a shard is `ingest.chunk_rows` rows at most), read in the calling thread;
    the `dictionaries` columns as dictionary arrays, as Parquet encoded them (no string per row built).

    The stages' workers are the parallelism: Arrow's own thread pools (decoding columns, reading ahead)
    only handed each read to other threads and back, and at two workers the worker waited for them
    while a core idled (~6% of the run, measured)."""
    try:
        return pq.ParquetFile(shard, memory_map=True, pre_buffer=False, read_dictionary=dictionaries).read(
            columns=columns, use_threads=False)
    except (pa.ArrowInvalid, OSError) as err:
        raise ValueError(f"{shard}: unreadable Parquet shard ({err}); rerun the stage that wrote it") from err


def single_array(column: pa.Array | pa.ChunkedArray) -> pa.Array:
    """A column as one array: a chunked column's only chunk as it is (`ChunkedArray.combine_chunks`
    copies even a single chunk: in vocab, 340 MB of text per 200 MB corpus), else its chunks combined."""
    if isinstance(column, pa.ChunkedArray):
        return column.chunk(0) if column.num_chunks == 1 else column.combine_chunks()
    return column


def read_folder(folder: str | Path, columns: list[str] | None = None) -> pa.Table:
    """A whole folder of shards as one table (for splits small enough to hold, e.g. test)."""
    shards = list_shards(folder)
    tables = [read_shard(shard, columns=columns) for shard in shards]
    if not tables:
        raise ValueError(f"{folder}: holds no Parquet shards")
    return pa.concat_tables(tables)


_MD5_MEMO: dict[tuple, str] = {}


def file_md5(path: str | Path, block: int = 1 << 20) -> str:
    """md5 of a file, remembered for this process while its size, mtime and inode stay the same."""
    stat = os.stat(path)
    memo_key = (str(path), stat.st_size, stat.st_mtime_ns, stat.st_ino)
    if memo_key not in _MD5_MEMO:
        _MD5_MEMO[memo_key] = _md5_of(path, block)
    return _MD5_MEMO[memo_key]


def _md5_of(path: str | Path, block: int) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as handle:
        while chunk := handle.read(block):
            digest.update(chunk)
    return digest.hexdigest()


def content_hash(path: str | Path) -> str:
    """md5 of a file, or of a folder's sorted (relative path, md5) listing. Temp files are ignored."""
    path = Path(path)
    if path.is_file():
        return file_md5(path)
    if not path.is_dir():
        return "missing"
    listing = [
        {"md5": file_md5(item), "relpath": item.relative_to(path).as_posix()}
        for item in sorted(path.rglob("*"))
        if item.is_file() and TMP_MARK not in item.as_posix()
    ]
    return hashlib.md5(json.dumps(listing, sort_keys=True).encode()).hexdigest() + ".dir"
