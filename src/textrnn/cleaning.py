"""Pure, vectorised helpers of the clean stage: row checks, text hashes, the split, the dedup index."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from textrnn import kernels
from textrnn.io import single_array
from textrnn.normalisation import Normalisation, normalise, truncate
from textrnn.parallel import make_executor
from textrnn.utf8 import utf8_buffers

SPLITS = ("train", "val", "test")
# Reason codes written to data/rejects (and counted in data/clean/stats.json).
REASONS = ("bad_utf8", "bad_field_count", "bad_field_type", "empty", "too_short", "too_long", "missing_label",
           "unknown_label", "duplicate", "label_conflict")
# In memory a row's reason is a small integer: KEPT, or 1 + its index in REASONS (`reason_names` spells it).
KEPT = 0
(BAD_UTF8, BAD_FIELD_COUNT, BAD_FIELD_TYPE, EMPTY, TOO_SHORT, TOO_LONG, MISSING_LABEL, UNKNOWN_LABEL, DUPLICATE,
 LABEL_CONFLICT) = range(1, len(REASONS) + 1)
_REASON_NAMES = np.array([None, *REASONS], dtype=object)
_HASH_KEY = "textrnn-dedup-01"  # SipHash key: fixed, so a text's hash never changes between runs


@dataclass(frozen=True)
class RowRules:
    normalisation: Normalisation
    min_chars: int
    too_long: str  # "truncate" or "drop"
    labels: tuple[str, ...]


def check_rows(batch: pa.RecordBatch, rules: RowRules) -> tuple[pa.Array, np.ndarray, np.ndarray]:
    """Normalise a raw batch and decide which rows are unusable.

    Returns (normalised text, label id per row (-1 where unusable), reason code per row (uint8, KEPT =
    usable)).
    """
    text = normalise(batch.column("text"), rules.normalisation)
    lengths = pc.fill_null(pc.utf8_length(text), 0).to_numpy(zero_copy_only=False)
    max_chars = rules.normalisation.max_chars
    if rules.too_long == "truncate" and lengths.max(initial=0) > max_chars:
        text = truncate(text, max_chars)
    label = batch.column("label")
    label_ids = pc.fill_null(pc.index_in(label, value_set=pa.array(rules.labels, pa.string())), -1)
    label_ids = label_ids.to_numpy(zero_copy_only=False).astype(np.int32)
    label_present = pc.fill_null(pc.greater(pc.utf8_length(label), 0), False).to_numpy(zero_copy_only=False)

    reason = np.zeros(len(batch), np.uint8)
    # Later checks must not overwrite earlier ones: assign from the least to the most fundamental.
    reason[label_ids < 0] = UNKNOWN_LABEL
    reason[~label_present] = MISSING_LABEL
    if rules.too_long == "drop":
        reason[lengths > max_chars] = TOO_LONG
    reason[(lengths < rules.min_chars) & (lengths > 0)] = TOO_SHORT
    reason[lengths == 0] = EMPTY
    _carry_reader_errors(batch.column("error"), reason)
    label_ids[reason != KEPT] = -1
    return text, label_ids, reason


def _carry_reader_errors(error: pa.Array, reason: np.ndarray) -> None:
    """The reader's verdict (bad_utf8, bad_field_count, bad_field_type) wins over every other reason."""
    if error.null_count == len(error):
        return
    codes = pc.index_in(error, value_set=pa.array(REASONS, pa.string()))
    unknown = pc.and_(pc.is_valid(error), pc.is_null(codes))
    if pc.any(unknown).as_py():
        first = pc.filter(error, unknown)[0]
        raise ValueError(f"raw shard: unknown reader error {first!r} (expected one of {REASONS})")
    has_error = pc.is_valid(codes).to_numpy(zero_copy_only=False)
    reason[has_error] = codes.to_numpy(zero_copy_only=False)[has_error] + 1


def reason_names(codes: np.ndarray) -> np.ndarray:
    """Reason codes spelt out (object array; None where kept)."""
    return _REASON_NAMES[codes]


def text_hashes(text: pa.Array) -> np.ndarray:
    """A 64-bit SipHash of each normalised text's UTF-8 bytes (null hashes like the empty string): pandas'
    `hash_array` of the texts (a test holds them equal), computed in one compiled pass over the buffer."""
    return kernels.hash_rows(*utf8_buffers(pc.fill_null(single_array(text).cast(pa.string()), "")), _HASH_KEY.encode())


def _mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser: spreads a seeded hash evenly over 64 bits."""
    x = x.astype(np.uint64, copy=True)
    with np.errstate(over="ignore"):
        x ^= x >> np.uint64(30)
        x *= np.uint64(0xBF58476D1CE4E5B9)
        x ^= x >> np.uint64(27)
        x *= np.uint64(0x94D049BB133111EB)
        x ^= x >> np.uint64(31)
    return x


def assign_split(hashes: np.ndarray, seed: int, val_fraction: float, test_fraction: float) -> np.ndarray:
    """Split index per row (0 train, 1 val, 2 test) from the text hash alone: the same text always lands
    in the same split, whatever else the corpus holds or in what order."""
    with np.errstate(over="ignore"):
        salted = hashes ^ _mix64(np.array([seed], dtype=np.uint64))[0]
    unit = (_mix64(salted) >> np.uint64(11)).astype(np.float64) / float(1 << 53)
    split = np.zeros(len(hashes), dtype=np.int8)
    split[unit < test_fraction + val_fraction] = 1
    split[unit < test_fraction] = 2
    return split


MIXED = -2  # the label of a text hash seen under two or more labels


def rows_by_hash(hashes: np.ndarray, usable: np.ndarray) -> np.ndarray:
    """The usable rows' numbers, in the order of their text hashes."""
    rows = np.flatnonzero(usable)
    return rows[np.argsort(hashes[rows])]


def distinct_keys(hashes: np.ndarray, label_ids: np.ndarray, by_hash: np.ndarray | None = None
                  ) -> tuple[np.ndarray, np.ndarray]:
    """The usable rows' distinct text hashes (sorted) and, per hash, its label id, or MIXED where the
    same text carries two labels. `by_hash`: `rows_by_hash` of the usable rows (label id >= 0), if known."""
    by_hash = rows_by_hash(hashes, label_ids >= 0) if by_hash is None else by_hash
    return _collapse_sorted(hashes[by_hash], label_ids[by_hash].astype(np.int32))


def _collapse_sorted(hashes: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct hashes of sorted `hashes` and one label each (MIXED where they disagree, or any one was
    MIXED). A hash's rows agree on a label when their lowest and highest labels are equal (MIXED is the
    lowest)."""
    if len(hashes) == 0:
        return np.empty(0, np.uint64), np.empty(0, np.int32)
    starts = np.flatnonzero(np.concatenate([[True], hashes[1:] != hashes[:-1]]))
    lowest, highest = np.minimum.reduceat(labels, starts), np.maximum.reduceat(labels, starts)
    return hashes[starts], np.where((lowest != highest) | (lowest == MIXED), MIXED, lowest).astype(np.int32)


def _partition_cuts(hashes: np.ndarray, bounds: np.ndarray) -> np.ndarray:
    """Where each partition of the hash range starts in one chunk's sorted hashes, and the end: partition
    p is hashes[cuts[p]:cuts[p + 1]]."""
    return np.concatenate([[0], np.searchsorted(hashes, bounds), [len(hashes)]]).astype(np.int64)


def save_keys(prefix: str | Path, keys: tuple[np.ndarray, np.ndarray]) -> None:
    """One chunk's distinct keys, spilled to disk so the index is built without holding every chunk's."""
    np.save(f"{prefix}.hashes.npy", keys[0])
    np.save(f"{prefix}.labels.npy", keys[1])


_INDEX_ARRAYS = ("hashes", "conflict", "first_chunk")


class _KeysInMemory:
    """One chunk's distinct keys (hashes, labels), held."""

    def __init__(self, hashes: np.ndarray, labels: np.ndarray):
        self._hashes, self._labels, self.length = hashes, labels, len(hashes)

    def hashes(self) -> np.ndarray:
        return self._hashes

    def slice(self, lo: int, hi: int) -> tuple[np.ndarray, np.ndarray]:
        return self._hashes[lo:hi], self._labels[lo:hi]


class _SpilledKeys:
    """One chunk's distinct keys as `save_keys` spilled them, read a slice at a time. Read, a slice takes
    just its own bytes of memory; memory-mapped, every page fault also mapped the pages around it, and
    the merge of one partition (a slice of every chunk) held enough file pages at 10x the benchmark's
    input to set the run's peak. The headers are read once (np.load parses each with `ast`)."""

    def __init__(self, prefix: str | Path):
        self._files = []  # (path, dtype, where the data starts) of the hashes, then of the labels
        for name in ("hashes", "labels"):
            mapped = np.load(f"{prefix}.{name}.npy", mmap_mode="r")  # (maps, reads nothing but the header)
            self._files.append((f"{prefix}.{name}.npy", mapped.dtype, mapped.offset))
            self.length = len(mapped)  # (the same for both)

    def hashes(self) -> np.ndarray:
        """All the hashes, memory-mapped: a binary search reads a few pages of them."""
        path, dtype, offset = self._files[0]
        return np.memmap(path, dtype, "r", offset, (self.length,)) if self.length else np.empty(0, dtype)

    def slice(self, lo: int, hi: int) -> tuple[np.ndarray, np.ndarray]:
        hashes, labels = (np.fromfile(path, dtype, hi - lo, offset=offset + lo * dtype.itemsize)
                          for path, dtype, offset in self._files)
        return hashes, labels


def _merge_runs(runs: list[tuple[np.ndarray, np.ndarray]], hashes: np.ndarray, conflict: np.ndarray,
                first_chunk: np.ndarray) -> int:
    """Runs of sorted, distinct (hashes, labels), in chunk order, merged into `hashes`, `conflict` and
    `first_chunk` (room for all): every hash once, in order, whether it is MIXED or labelled differently
    in two runs, and the first run that holds it. Returns how many distinct hashes were written."""
    lengths = [len(h) for h, _ in runs]
    if sum(lengths) == 0:
        return 0
    order = np.argsort(np.concatenate([h for h, _ in runs]), kind="stable")  # equal hashes: the earlier run first
    merged = np.concatenate([h for h, _ in runs])[order]
    labels = np.concatenate([lab for _, lab in runs]).astype(np.int32, copy=False)[order]
    run_of = np.repeat(np.arange(len(runs)), lengths)[order]
    distinct, label = _collapse_sorted(merged, labels)
    n = len(distinct)
    starts = np.flatnonzero(np.concatenate([[True], merged[1:] != merged[:-1]]))
    hashes[:n], conflict[:n], first_chunk[:n] = distinct, label == MIXED, run_of[starts]
    return n


class DedupIndex:
    """Every distinct text hash once, sorted, with a flag for texts seen under two or more labels and the
    first chunk that holds the text.

    Memory is 11 bytes per distinct text (hash, conflict flag, first chunk), whatever the corpus size:
    the chunks' keys are merged one slice of the hash range at a time. Knowing each text's first chunk,
    every chunk is decided on its own (in parallel, in any order): a text is kept in its first chunk, at
    its first row there.
    """

    def __init__(self, hashes: np.ndarray, conflict: np.ndarray, first_chunk: np.ndarray):
        self.hashes, self.conflict, self.first_chunk = hashes, conflict, first_chunk

    @classmethod
    def from_chunks(cls, chunks: Sequence[tuple[np.ndarray, np.ndarray]]) -> DedupIndex:
        """From in-memory `distinct_keys` results, in chunk order."""
        return cls._merge([_KeysInMemory(*chunk) for chunk in chunks])

    @classmethod
    def from_files(cls, prefixes: Sequence[str | Path], workers: int = 1) -> DedupIndex:
        """From `save_keys` spills, in chunk order; each is read one slice at a time, as it is merged."""
        return cls._merge([_SpilledKeys(prefix) for prefix in prefixes], workers)

    @classmethod
    def _merge(cls, chunks: Sequence[_KeysInMemory | _SpilledKeys], workers: int = 1,
               keys_per_partition: int = 1_000_000) -> DedupIndex:
        """The chunks' keys merged one slice of the hash range (a partition) at a time, `workers` partitions
        at once in threads (numpy's sort runs outside the GIL). Each partition is merged straight into its own
        stretch of the output, sized by its keys in every chunk; the stretches are then closed up."""
        capacity = sum(chunk.length for chunk in chunks)
        partitions = int(np.clip(max(capacity // keys_per_partition, workers), 1, 256))
        bounds = np.array([(i << 64) // partitions for i in range(1, partitions)], np.uint64)
        cuts = np.array([_partition_cuts(chunk.hashes(), bounds) for chunk in chunks], np.int64)
        cuts = cuts.reshape(len(chunks), partitions + 1)  # (chunk, partition start... end)
        starts = np.concatenate([[0], np.cumsum(np.diff(cuts, axis=1).sum(axis=0))])  # of each stretch
        chunk_type = np.min_scalar_type(max(len(chunks) - 1, 0))
        hashes, conflict = np.empty(capacity, np.uint64), np.empty(capacity, bool)
        first_chunk = np.empty(capacity, chunk_type)

        def merge_partition(part: int) -> int:
            slices = [chunk.slice(lo, hi) for chunk, lo, hi in zip(chunks, cuts[:, part], cuts[:, part + 1])]
            stretch = slice(starts[part], starts[part + 1])
            return _merge_runs(slices, hashes[stretch], conflict[stretch], first_chunk[stretch])

        with make_executor("thread", workers) as pool:
            merged = list(pool.map(merge_partition, range(partitions)))
        filled = 0
        for start, n in zip(starts.tolist(), merged):  # close up: each stretch's merged keys after the last's
            if start != filled:
                for array in (hashes, conflict, first_chunk):
                    array[filled:filled + n] = array[start:start + n]
            filled += n
        if filled < capacity * 3 // 4:  # many repeats across chunks: give the unused room back
            return cls(hashes[:filled].copy(), conflict[:filled].copy(), first_chunk[:filled].copy())
        return cls(hashes[:filled], conflict[:filled], first_chunk[:filled])

    def save(self, prefix: str | Path) -> None:
        for name in _INDEX_ARRAYS:
            np.save(f"{prefix}.{name}.npy", getattr(self, name))

    @classmethod
    def load(cls, prefix: str | Path) -> DedupIndex:
        """A saved index, memory-mapped: workers share its pages instead of each receiving a copy."""
        return cls(*(np.load(f"{prefix}.{name}.npy", mmap_mode="r") for name in _INDEX_ARRAYS))

    def __len__(self) -> int:
        return len(self.hashes)

    def decide(self, chunk: int, hashes: np.ndarray, usable: np.ndarray, by_hash: np.ndarray | None = None
               ) -> np.ndarray:
        """Reason code per usable row of chunk number `chunk`: KEPT (the first copy), DUPLICATE or
        LABEL_CONFLICT (KEPT for the rows not usable). `by_hash`: `rows_by_hash(hashes, usable)`, if known.

        The rows are looked up in hash order: the rows of one text come out next to each other."""
        reason = np.zeros(len(hashes), np.uint8)
        rows = rows_by_hash(hashes, usable) if by_hash is None else by_hash
        if len(rows) == 0:
            return reason
        slots = np.searchsorted(self.hashes, hashes[rows])
        runs = np.flatnonzero(np.concatenate([[True], slots[1:] != slots[:-1]]))  # one run per text
        first_rows, run_slots = np.minimum.reduceat(rows, runs), slots[runs]
        # Kept: the first row of each text in this chunk, if no earlier chunk holds the text.
        kept = first_rows[(self.first_chunk[run_slots] == chunk) & ~self.conflict[run_slots]]
        reason[rows] = DUPLICATE
        reason[rows[np.asarray(self.conflict[slots])]] = LABEL_CONFLICT
        reason[kept] = KEPT
        return reason
