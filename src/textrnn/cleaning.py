"""Pure, vectorised helpers of the clean stage: row checks, text hashes, the split, the dedup index."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from textrnn.text import Normalisation, normalise, truncate

SPLITS = ("train", "val", "test")
# Reason codes written to data/rejects (and counted in data/clean/stats.json).
REASONS = ("bad_utf8", "bad_field_count", "empty", "too_short", "too_long", "missing_label",
           "unknown_label", "duplicate", "label_conflict")
_HASH_KEY = "textrnn-dedup-01"  # SipHash key: fixed, so a text's hash never changes between runs


@dataclass(frozen=True)
class RowRules:
    normalisation: Normalisation
    min_chars: int
    too_long: str  # "truncate" or "drop"
    labels: tuple[str, ...]


def check_rows(batch: pa.RecordBatch, rules: RowRules) -> tuple[pa.Array, np.ndarray, np.ndarray]:
    """Normalise a raw batch and decide which rows are unusable.

    Returns (normalised text, label id per row (-1 where unusable), reason per row (None = usable)).
    """
    text = normalise(batch.column("text"), rules.normalisation)
    lengths = pc.fill_null(pc.utf8_length(text), 0).to_numpy(zero_copy_only=False)
    max_chars = rules.normalisation.max_chars
    if rules.too_long == "truncate":
        text = truncate(text, max_chars)
    label = batch.column("label")
    label_ids = pc.fill_null(pc.index_in(label, value_set=pa.array(rules.labels, pa.string())), -1)
    label_ids = label_ids.to_numpy(zero_copy_only=False).astype(np.int32)
    label_present = pc.fill_null(pc.greater(pc.utf8_length(label), 0), False).to_numpy(zero_copy_only=False)

    reason = np.full(len(batch), None, dtype=object)
    # Later checks must not overwrite earlier ones: assign from the least to the most fundamental.
    reason[label_ids < 0] = "unknown_label"
    reason[~label_present] = "missing_label"
    if rules.too_long == "drop":
        reason[lengths > max_chars] = "too_long"
    reason[(lengths < rules.min_chars) & (lengths > 0)] = "too_short"
    reason[lengths == 0] = "empty"
    error = batch.column("error")
    has_error = pc.is_valid(error).to_numpy(zero_copy_only=False)
    reason[has_error] = error.to_numpy(zero_copy_only=False)[has_error]
    label_ids[reason != None] = -1  # noqa: E711 (element-wise comparison)
    return text, label_ids, reason


def text_hashes(text: pa.Array) -> np.ndarray:
    """A 64-bit SipHash of each normalised text (null hashes like the empty string)."""
    values = pc.fill_null(text, "").to_numpy(zero_copy_only=False).astype(object)
    return pd.util.hash_array(values, hash_key=_HASH_KEY, categorize=False).astype(np.uint64)


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


def distinct_pairs(hashes: np.ndarray, label_ids: np.ndarray) -> np.ndarray:
    """The distinct (hash, label) pairs among usable rows, as a structured array."""
    keep = label_ids >= 0
    pairs = np.empty(int(keep.sum()), dtype=[("hash", np.uint64), ("label", np.int32)])
    pairs["hash"], pairs["label"] = hashes[keep], label_ids[keep]
    return np.unique(pairs)


class DedupIndex:
    """Every distinct text hash once, sorted, with a flag for texts seen under two or more labels.

    Memory is a few bytes per distinct text, whatever the corpus size; `claim` marks a text as written so
    later copies in any chunk are duplicates.
    """

    def __init__(self, pair_chunks: Sequence[np.ndarray]):
        pairs = np.unique(np.concatenate(pair_chunks)) if pair_chunks else np.empty(0, [("hash", np.uint64)])
        self.hashes, counts = np.unique(pairs["hash"], return_counts=True)
        self.conflict = counts > 1
        self.claimed = np.zeros(len(self.hashes), dtype=bool)

    def __len__(self) -> int:
        return len(self.hashes)

    def decide(self, hashes: np.ndarray, usable: np.ndarray) -> np.ndarray:
        """Reason per usable row: None (keep: first copy), 'duplicate' or 'label_conflict'."""
        reason = np.full(len(hashes), None, dtype=object)
        rows = np.flatnonzero(usable)
        slots = np.searchsorted(self.hashes, hashes[rows])
        conflict = self.conflict[slots]
        reason[rows[conflict]] = "label_conflict"
        rows, slots = rows[~conflict], slots[~conflict]
        # The first row of each not-yet-claimed hash in this chunk is kept; every other row is a duplicate.
        _, first = np.unique(slots, return_index=True)
        is_first = np.zeros(len(rows), dtype=bool)
        is_first[first] = True
        keep = is_first & ~self.claimed[slots]
        reason[rows[~keep]] = "duplicate"
        self.claimed[slots[keep]] = True
        return reason
