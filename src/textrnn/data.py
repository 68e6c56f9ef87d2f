"""Encoded splits on disk (memory-mapped), length-bucketed batches, padded tensors-to-be (numpy)."""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from textrnn.io import read_json, start_writeback_of, write_json_into

_FILES = {"ids": np.int32, "offsets": np.int64, "labels": np.int64}  # ids: the default; meta.json says which
# Token ids are stored in the narrowest of these that holds the vocabulary (`narrowest_ids_dtype`).
IDS_DTYPES = (np.dtype(np.uint16), np.dtype(np.int32))


def narrowest_ids_dtype(highest_id: int) -> np.dtype:
    """The first of IDS_DTYPES that holds every id up to `highest_id`."""
    for dtype in IDS_DTYPES:
        if highest_id <= np.iinfo(dtype).max:
            return dtype
    raise ValueError(f"token id {highest_id} fits none of {[d.name for d in IDS_DTYPES]}")


# One chunk's encoding: token ids, row offsets into them (rows + 1, from 0), label ids, unknown-token count.
EncodedChunk = tuple[np.ndarray, np.ndarray, np.ndarray, int]


def write_encoded_split(folder: Path, chunks: Iterable[EncodedChunk], ids_dtype: np.dtype = np.int32) -> dict:
    """Stream encoded chunks into flat binary files, the ids as `ids_dtype` (one of IDS_DTYPES)."""
    with _SplitWriter(folder, ids_dtype) as writer:
        for ids, offsets, labels, n_unknown in chunks:
            writer.add(ids, offsets, labels, n_unknown)
    return writer.stats


@dataclass(frozen=True)
class EncodedPart:
    """One chunk's encoding in files beside `prefix` (ids, offsets without the leading 0, labels), written by
    a worker so that only this summary travels back to the process that joins the parts."""

    prefix: str
    rows: int
    tokens: int
    unknown: int
    length_counts: np.ndarray
    ids_dtype: np.dtype


def write_encoded_part(prefix: str, ids: np.ndarray, offsets: np.ndarray, labels: np.ndarray,
                       n_unknown: int) -> EncodedPart:
    """The ids are written as they are: `join_encoded_parts` must be given their dtype."""
    arrays = _typed(ids, offsets, labels, ids.dtype)
    for name, array in zip(_FILES, arrays):
        array.tofile(f"{prefix}.{name}.bin")
    return EncodedPart(prefix, len(labels), len(ids), n_unknown, np.bincount(np.diff(offsets)), arrays[0].dtype)


def join_encoded_parts(folder: Path, parts: Iterable[EncodedPart], ids_dtype: np.dtype = np.int32) -> dict:
    """The split from its parts in order: ids and labels are copied file to file by the kernel (no trip
    through this process), offsets are shifted by the tokens before them. `ids_dtype` is the parts' ids'."""
    with _SplitWriter(folder, ids_dtype) as writer:
        for part in parts:
            writer.add_part(part)
    return writer.stats


def _typed(ids: np.ndarray, offsets: np.ndarray, labels: np.ndarray,
           ids_dtype: np.dtype) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The arrays as written: ids as `ids_dtype`, int64 offsets without the leading 0, int64 labels (no
    copy where the dtype is already right)."""
    return (_ids_as(ids, np.dtype(ids_dtype)), np.ascontiguousarray(offsets[1:], np.int64),
            np.ascontiguousarray(labels, np.int64))


def _ids_as(ids: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Ids in a storage dtype; a value it cannot hold is an error, never wrapped around."""
    if dtype not in IDS_DTYPES:
        raise ValueError(f"token ids are stored as one of {[d.name for d in IDS_DTYPES]}, not {dtype.name}")
    if ids.dtype != dtype and len(ids) and (ids.min() < 0 or ids.max() > np.iinfo(dtype).max):
        raise ValueError(f"token ids {ids.min()}..{ids.max()} do not fit {dtype.name}")
    return np.ascontiguousarray(ids, dtype)


class _SplitWriter:
    """Appends chunks to a split's flat files and gathers its stats (rows per length: percentiles without
    keeping every row's length)."""

    def __init__(self, folder: Path, ids_dtype: np.dtype):
        self.folder, self.ids_dtype = folder, np.dtype(ids_dtype)
        self.rows = self.tokens = self.unknown = 0
        self.length_counts = np.zeros(1, np.int64)

    def __enter__(self) -> _SplitWriter:
        self.folder.mkdir(parents=True)
        self._open = contextlib.ExitStack()
        self.files = {name: self._open.enter_context(open(self.folder / f"{name}.bin", "wb", buffering=0))  # noqa: SIM115
                      for name in _FILES}
        _write_all(self.files["offsets"], np.zeros(1, np.int64))
        self._written = dict.fromkeys(_FILES, 0)
        return self

    def add(self, ids: np.ndarray, offsets: np.ndarray, labels: np.ndarray, n_unknown: int) -> None:
        ids, ends, labels = _typed(ids, offsets, labels, self.ids_dtype)
        _write_all(self.files["ids"], ids)
        _write_all(self.files["offsets"], ends + self.tokens)
        _write_all(self.files["labels"], labels)
        self._count(len(labels), len(ids), n_unknown, np.bincount(np.diff(offsets)))
        self._start_writeback()

    def add_part(self, part: EncodedPart) -> None:
        if part.ids_dtype != self.ids_dtype:
            raise ValueError(f"{part.prefix}: ids are {part.ids_dtype}, the split's are {self.ids_dtype}")
        _append_file(self.files["ids"], f"{part.prefix}.ids.bin")
        _write_all(self.files["offsets"], np.fromfile(f"{part.prefix}.offsets.bin", np.int64) + self.tokens)
        _append_file(self.files["labels"], f"{part.prefix}.labels.bin")
        self._count(part.rows, part.tokens, part.unknown, part.length_counts)
        self._start_writeback()

    def _start_writeback(self) -> None:
        """Start writing what the chunk added to disk (see io.start_writeback): chunk by chunk, the disk
        writes while the workers encode, rather than all at the split's end, with the workers waiting."""
        for name, handle in self.files.items():
            end = handle.tell()
            start_writeback_of(handle.fileno(), self._written[name], end - self._written[name])
            self._written[name] = end

    def _count(self, rows: int, tokens: int, unknown: int, length_counts: np.ndarray) -> None:
        self.length_counts = _add_counts(self.length_counts, length_counts)
        self.rows, self.tokens, self.unknown = self.rows + rows, self.tokens + tokens, self.unknown + unknown

    def __exit__(self, *exc) -> None:
        self._open.close()
        if exc[0] is not None:
            return
        rows, tokens = self.rows, self.tokens
        pct = percentiles_of_counts(self.length_counts, [50, 90, 99, 100]) if rows else [0, 0, 0, 0]
        self.stats = {"rows": rows, "tokens": tokens, "oov_rate": round(self.unknown / tokens, 6) if tokens else 0.0,
                      "length_p50": pct[0], "length_p90": pct[1], "length_p99": pct[2], "length_max": pct[3]}
        dtypes = {**{k: np.dtype(v).name for k, v in _FILES.items()}, "ids": self.ids_dtype.name}
        write_json_into(self.folder, "meta.json", {"rows": rows, "tokens": tokens, "dtypes": dtypes})


def _write_all(handle, array: np.ndarray) -> None:
    """An array's own buffer, written whole (an unbuffered file may take a write in several calls)."""
    view = memoryview(array).cast("B")
    while view:
        view = view[handle.write(view):]


def _append_file(handle, path: str) -> None:
    """The file at `path` appended to `handle`, copied inside the kernel where it can (copy_file_range)."""
    with open(path, "rb") as source:
        size = os.fstat(source.fileno()).st_size
        try:
            while size:
                copied = os.copy_file_range(source.fileno(), handle.fileno(), size)
                if copied == 0:
                    raise OSError("copy_file_range copied nothing")
                size -= copied
        except OSError:  # a file system or kernel without it: copy through this process
            shutil.copyfileobj(source, handle)


def _add_counts(total: np.ndarray, more: np.ndarray) -> np.ndarray:
    if len(more) > len(total):
        total, more = more.astype(np.int64), total
    total[: len(more)] += more
    return total


def percentiles_of_counts(counts: np.ndarray, q: list[float]) -> list[float]:
    """np.percentile's (linear) percentiles of the values 0..len(counts)-1, each repeated counts[v] times."""
    cumulative = np.cumsum(counts)
    rank = np.asarray(q, dtype=np.float64) / 100 * (cumulative[-1] - 1)
    below, above = (np.searchsorted(cumulative, np.floor(rank), side="right"),
                    np.searchsorted(cumulative, np.ceil(rank), side="right"))
    return (below + (above - below) * (rank - np.floor(rank))).tolist()


def _stored_ids_dtype(meta_path: Path, meta: dict) -> np.dtype:
    """The dtype the ids were written in, as meta.json records it."""
    name = meta.get("dtypes", {}).get("ids", "int32")
    if name not in {d.name for d in IDS_DTYPES}:
        raise ValueError(f"{meta_path}: ids stored as {name!r}, not one of {[d.name for d in IDS_DTYPES]}; "
                         "rerun the vocab stage")
    return np.dtype(name)


@dataclass
class EncodedSplit:
    """One split, memory-mapped: row i's ids are ids[offsets[i]:offsets[i+1]]."""

    ids: np.ndarray
    offsets: np.ndarray
    labels: np.ndarray

    @classmethod
    def load(cls, folder: str | Path) -> EncodedSplit:
        folder = Path(folder)
        meta = read_json(folder / "meta.json")
        shapes = {"ids": meta["tokens"], "offsets": meta["rows"] + 1, "labels": meta["rows"]}
        dtypes = {**_FILES, "ids": _stored_ids_dtype(folder / "meta.json", meta)}
        arrays = {}
        for name, dtype in dtypes.items():
            path = folder / f"{name}.bin"
            expected = shapes[name] * np.dtype(dtype).itemsize
            if not path.exists() or path.stat().st_size != expected:
                raise ValueError(f"{path}: missing or wrong size (expected {expected} bytes); rerun the vocab stage")
            arrays[name] = np.memmap(path, dtype=dtype, mode="r", shape=(shapes[name],)) if expected else \
                np.zeros(0, dtype)
        return cls(**arrays)

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def padded(self, rows: np.ndarray, pad_id: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Rows → (ids [B, T] int64, lengths [B] int64, labels [B] int64), right-padded with pad_id.

        Every row keeps at least one position (an empty text is one pad token) so RNNs never see length 0.
        """
        starts = self.offsets[rows]
        lengths = self.offsets[rows + 1] - starts
        width = max(int(lengths.max(initial=0)), 1)
        position = np.arange(width)[None, :]
        inside = position < lengths[:, None]
        gather = np.where(inside, starts[:, None] + position, 0)
        ids = np.where(inside, self.ids[gather] if len(self.ids) else 0, pad_id).astype(np.int64)
        return ids, np.maximum(lengths, 1).astype(np.int64), np.asarray(self.labels[rows], dtype=np.int64)


def bucketed_batches(lengths: np.ndarray, batch_size: int, rng: np.random.Generator,
                     bucket_size: int = 50) -> list[np.ndarray]:
    """Batches of row indices with little padding: shuffle rows, cut into buckets of `bucket_size` batches,
    sort each bucket by length, cut it into batches, then shuffle the batches."""
    order = rng.permutation(len(lengths))
    span = batch_size * bucket_size
    batches = []
    for start in range(0, len(order), span):
        bucket = order[start:start + span]
        bucket = bucket[np.argsort(lengths[bucket], kind="stable")]
        batches.extend(bucket[i:i + batch_size] for i in range(0, len(bucket), batch_size))
    return [batches[i] for i in rng.permutation(len(batches))]


def sequential_batches(lengths: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """Evaluation batches: rows sorted by length (little padding), each row exactly once."""
    order = np.argsort(lengths, kind="stable")
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


def padding_fraction(lengths: np.ndarray, batches: list[np.ndarray]) -> float:
    """Share of padded positions among all positions processed."""
    real = sum(int(np.maximum(lengths[b], 1).sum()) for b in batches)
    total = sum(len(b) * max(int(lengths[b].max(initial=0)), 1) for b in batches)
    return 1.0 - real / total if total else 0.0
