"""The evaluate stage's TF-IDF baseline in bounded memory, and rows of a split read by index.

The baseline (character n-grams + logistic regression, textrnn.metrics.baseline_pipeline) is fitted on a
seeded sample of the train split holding at most `max_chars` characters: every row when the whole split
fits (the default budget holds a few hundred thousand reviews), else rows drawn at random until the budget
is spent. Its fit holds the sample's texts and their n-gram matrix, so its memory is bounded by the
budget, not by the corpus. The sample keeps the split's row order, so when every row fits the fit is
exactly the whole-split fit. Val and test are predicted shard by shard, in batches of PREDICT_ROWS texts.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from textrnn.io import list_shards, read_shard
from textrnn.metrics import full_proba, train_baseline

log = logging.getLogger(__name__)

PREDICT_ROWS = 8192  # texts per predict_proba call: bounded memory, few calls


@dataclass(frozen=True)
class BaselineSample:
    """Which train rows the baseline saw: sorted row indices, and the split's size."""

    rows: np.ndarray
    total_rows: int
    chars: int
    total_chars: int


def text_lengths(folder: Path) -> np.ndarray:
    """Characters of each row's text, in row order, read one shard at a time."""
    parts = [pc.utf8_length(read_shard(shard, ["text"]).column("text")).to_numpy().astype(np.int64)
             for shard in list_shards(folder)]
    return np.concatenate(parts) if parts else np.zeros(0, np.int64)


def sample_within_chars(lengths: np.ndarray, max_chars: int, seed: int) -> BaselineSample:
    """A seeded random sample of rows whose texts add up to at most `max_chars` characters (every row when
    they all fit), as sorted indices."""
    total = int(lengths.sum())
    if total <= max_chars:
        rows = np.arange(len(lengths))
    else:
        order = np.random.default_rng(seed).permutation(len(lengths))
        kept = int(np.searchsorted(np.cumsum(lengths[order]), max_chars, side="right"))
        rows = np.sort(order[:max(kept, 1)])
    return BaselineSample(rows, len(lengths), int(lengths[rows].sum()), total)


def read_rows(folder: Path, columns: list[str], rows: np.ndarray) -> pa.Table:
    """The rows at indices `rows` (any order, repeats allowed) of a folder of shards, in that order. Only
    the shards holding some of them are read, one at a time; a shard's row count comes from its footer."""
    rows = np.asarray(rows, np.int64)
    wanted = np.unique(rows)
    pieces, start = [], 0
    shards = list_shards(folder)
    if not shards:
        raise ValueError(f"{folder}: holds no Parquet shards (rerun the clean stage)")
    for shard in shards:
        count = pq.read_metadata(shard).num_rows
        lo, hi = np.searchsorted(wanted, [start, start + count])
        if hi > lo:
            pieces.append(read_shard(shard, columns).take(pa.array(wanted[lo:hi] - start)))
        start += count
    if len(wanted) and (wanted[0] < 0 or wanted[-1] >= start):
        raise IndexError(f"{folder}: rows {wanted[0]}..{wanted[-1]} asked for, the split has {start} rows")
    if not pieces:
        return read_shard(shards[0], columns).slice(0, 0)
    return pa.concat_tables(pieces).take(pa.array(np.searchsorted(wanted, rows)))


def fit_baseline(train_folder: Path, max_chars: int, ngram_max: int, c: float, seed: int):
    """(the fitted baseline, the BaselineSample it was fitted on); `seed` draws the sample and seeds the
    logistic regression."""
    start = time.perf_counter()
    sample = sample_within_chars(text_lengths(train_folder), max_chars, seed)
    table = read_rows(train_folder, ["text", "label_id"], sample.rows)
    model = train_baseline(table.column("text").to_pylist(), table.column("label_id").to_numpy(), ngram_max, c,
                           seed)
    log.info("baseline: fitted on %d of %d train rows (%d of %d characters) in %.1f s", len(sample.rows),
             sample.total_rows, sample.chars, sample.total_chars, time.perf_counter() - start)
    return model, sample


def predict_folder(model, folder: Path, num_classes: int, batch_rows: int = PREDICT_ROWS) -> np.ndarray:
    """Class probabilities [rows, classes] of every row of a folder of shards, in row order."""
    parts = []
    for shard in list_shards(folder):
        texts = read_shard(shard, ["text"]).column("text")
        for start in range(0, len(texts), batch_rows):
            parts.append(full_proba(model, texts.slice(start, batch_rows).to_pylist(), num_classes))
    return np.concatenate(parts) if parts else np.zeros((0, num_classes))
