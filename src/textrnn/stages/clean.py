"""clean: normalise, drop unusable rows and duplicates, split train/val/test by a hash of the text.

Two streaming passes over the raw shards, each bounded by one shard's size:
1. map (in parallel through an Executor): normalise and check each shard, write it to a staging folder and
   return its distinct (text hash, label) pairs;
2. reduce (in parallel too): decide duplicates and label conflicts against the global index, which knows
   the first shard of every text, and write kept rows per split and everything else to the rejects. The
   decisions do not depend on the order shards are decided in, so the output is the same for any executor.
"""

from __future__ import annotations

import logging
import shutil
from collections import Counter
from concurrent.futures import Executor
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pyarrow as pa

from textrnn.cleaning import (
    BAD_FIELD_COUNT,
    BAD_UTF8,
    EMPTY,
    KEPT,
    REASONS,
    SPLITS,
    DedupIndex,
    RowRules,
    assign_split,
    check_rows,
    distinct_keys,
    reason_names,
    rows_by_hash,
    save_keys,
    text_hashes,
)
from textrnn.config import CleanParams
from textrnn.io import atomic_dir, list_shards, read_json, read_shard, shard_name, write_json_into, write_table
from textrnn.normalisation import Normalisation, prepare_normaliser
from textrnn.parallel import given_or_new, in_order, runs_in_this_process

log = logging.getLogger(__name__)

CLEAN_SCHEMA = pa.schema([("text", pa.string()), ("label", pa.string()), ("label_id", pa.int32()),
                          ("source", pa.string()), ("row", pa.int64())])
REJECT_SCHEMA = pa.schema([("text", pa.string()), ("label", pa.string()), ("source", pa.string()),
                           ("row", pa.int64()), ("reason", pa.string()), ("split", pa.string())])
# What the reduce step needs of a shard that the raw shard does not hold. The rest is read back from the
# raw shard: the source and row number of the kept rows (the source dictionary-encoded, as Parquet holds
# it), and for the rejects their raw text and label. A kept row's label is the one its id names. Staged,
# those columns were ~a fifth of the scratch bytes written, each page of them new to the run.
_STAGED = pa.schema([("text", pa.string()), ("label_id", pa.int32()), ("hash", pa.uint64()), ("reason", pa.uint8())])


def rules_from(p: CleanParams, labels: tuple[str, ...]) -> RowRules:
    norm = Normalisation(nfkc=p.nfkc, lowercase=p.lowercase, strip_html=p.strip_html,
                         placeholders=p.placeholders, max_chars=p.max_chars)
    return RowRules(normalisation=norm, min_chars=p.min_chars, too_long=p.too_long, labels=labels)


def run(raw: Path, out: Path, rejects: Path, p: CleanParams, executor: Executor | None = None) -> dict:
    """Clean `raw` shards into `out/{train,val,test}/`, `out/labels.json`, `out/stats.json`; rejects into
    `rejects/`."""
    labels = p.labels or tuple(read_json(Path(raw) / "stats.json")["labels_seen"])
    rules = rules_from(p, labels)
    shards = list_shards(raw)
    with atomic_dir(out) as tmp_out, atomic_dir(rejects) as tmp_rejects:
        staging = tmp_out / ".staging"
        staging.mkdir()
        # Absolute paths: the workers of a Dask cluster do not share this process's working directory.
        staged = [(staging / shard_name(i)).with_suffix(".arrow").resolve() for i in range(len(shards))]
        index_prefix = (staging / "index").resolve()
        prepare_normaliser()  # before the workers fork: they share the tables
        with given_or_new(executor, p.workers, p.executor) as pool:
            index = DedupIndex.from_files(_map_shards(pool, shards, staged, rules), p.workers)
            distinct = len(index)
            handed = _handed_over(index, pool, index_prefix)
            del index  # threads hold it through `handed`; worker processes map the saved copy, not this one
            stats = _reduce_shards(pool, shards, staged, handed, p, labels, tmp_out, tmp_rejects)
        shutil.rmtree(staging)
        check_splits(stats, raw, p)  # raised here, nothing is written: no stage after this sees an empty split
        stats.update(labels=list(labels), distinct_texts=distinct)
        write_json_into(tmp_out, "labels.json", list(labels))
        write_json_into(tmp_out, "normalisation.json", asdict(rules.normalisation))
        write_json_into(tmp_out, "stats.json", stats)
    log.info("clean: %d rows in, %d kept, %d rejected %s", stats["rows_in"], stats["rows_kept"],
             stats["rows_rejected"], stats["rejected_by_reason"])
    return stats


class EmptySplitError(ValueError):
    """A split that clean would leave without a row (a tiny corpus, or one of almost all duplicates)."""


def check_splits(stats: dict, raw: Path, p: CleanParams) -> None:
    """Every split needs rows (`p.min_split_rows`): evaluate cannot score an empty test split, nor train stop
    early on an empty val split. Say so here, where the splits are made, with the counts that explain it."""
    short = [s for s in SPLITS if stats["kept_by_split"][s] < p.min_split_rows]
    if not short:
        return
    source = read_json(Path(raw) / "stats.json").get("source", "?")
    kept = ", ".join(f"{s} {n}" for s, n in stats["kept_by_split"].items())
    reasons = sorted(stats["rejected_by_reason"].items(), key=lambda kv: -kv[1])[:3]
    top = ", ".join(f"{reason} {n}" for reason, n in reasons) or "none"
    raise EmptySplitError(
        f"clean: the {' and '.join(short)} split{'s hold' if len(short) > 1 else ' holds'} fewer than "
        f"clean.min_split_rows = {p.min_split_rows} rows for ingest.source {source} (raw shards in {raw}): "
        f"{stats['rows_in']} rows in, {stats['rows_kept']} kept ({kept}), {stats['rows_rejected']} "
        f"rejected (most: {top}). Add rows to the source, or raise clean.val_fraction / "
        f"clean.test_fraction (now {p.val_fraction} / {p.test_fraction}).")


def _map_shards(pool: Executor, shards: list[Path], staged: list[Path], rules: RowRules) -> list[str]:
    """Stage every shard; returns the files of their distinct keys, in shard order."""
    jobs = [pool.submit(stage_shard, str(shard.resolve()), str(out), rules) for shard, out in zip(shards, staged)]
    return [job.result() for job in jobs]


def stage_shard(shard: str, staged: str, rules: RowRules) -> str:
    """Map step for one raw shard (runs in a worker): writes the staged rows, their usable rows in hash
    order (the reduce step looks them up in that order) and, beside them, the shard's distinct (hash,
    label) keys; returns where the keys are."""
    keys_prefix = f"{staged}.keys"
    table = read_shard(shard, columns=["text", "label", "error"])
    if table.num_rows:
        batch = table.combine_chunks().to_batches()[0]
        text, label_ids, reason = check_rows(batch, rules)
        hashes = text_hashes(text)
        columns = [text, pa.array(label_ids, pa.int32()), pa.array(hashes, pa.uint64()), pa.array(reason, pa.uint8())]
        staged_table = pa.Table.from_arrays(columns, schema=_STAGED)
    else:
        staged_table, hashes, label_ids = _STAGED.empty_table(), np.empty(0, np.uint64), np.empty(0, np.int32)
    by_hash = rows_by_hash(hashes, label_ids >= 0)
    np.save(_by_hash_file(staged), by_hash.astype(np.int32))
    # A scratch file, read once by the reduce step: Arrow's own format, written as it is in memory and
    # memory-mapped when read back (Parquet's encoding cost more than the rest of the reduce step).
    with pa.OSFile(staged, "wb") as sink, pa.ipc.new_file(sink, staged_table.schema) as writer:
        writer.write_table(staged_table)
    save_keys(keys_prefix, distinct_keys(hashes, label_ids, by_hash))
    return keys_prefix


def _by_hash_file(staged: str | Path) -> str:
    return f"{staged}.by_hash.npy"


def _handed_over(index: DedupIndex, pool: Executor, prefix: Path) -> DedupIndex | str:
    """The index as the reduce step's workers take it: as it is to threads (or this thread), which share
    this process's memory; else saved, for worker processes to map. Saving it was serial work between the
    two parallel passes (into pages new to the run)."""
    if runs_in_this_process(pool):
        return index
    index.save(prefix)
    return str(prefix)


def _reduce_shards(pool: Executor, shards: list[Path], staged: list[Path], index: DedupIndex | str, p: CleanParams,
                   labels: tuple[str, ...], out: Path, rejects: Path) -> dict:
    """Decide and write every shard in the pool; the index says which shard holds each text first, so the
    shards need no order among themselves, and results are taken in shard order."""
    for split in SPLITS:
        (out / split).mkdir()
    writes = (pool.submit(write_shard, str(raw.resolve()), str(path), i, index, p, labels, str(out.resolve()),
                          str(rejects.resolve()))
              for i, (raw, path) in enumerate(zip(shards, staged, strict=True)))
    kept, rejected, rows_in = Counter(), Counter(), 0
    for done, (shard_kept, shard_rejected, shard_rows) in zip(staged, in_order(writes, window=2 * p.workers)):
        # Deleted here, once its result is in (a worker deleting it would leave nothing to read for a task
        # that Dask reruns): its page cache is freed while this stage still writes, and the writes reuse
        # it. Fresh pages cost more than reused ones, most of all on a VM whose host backs each page again
        # once the guest has reported it free.
        done.unlink()
        Path(_by_hash_file(done)).unlink()
        kept.update(shard_kept)
        rejected.update(shard_rejected)
        rows_in += shard_rows
    return _stats(rows_in, kept, rejected)


def _final_reasons(staged_table: pa.Table, hashes: np.ndarray, by_hash: np.ndarray, shard: int,
                   index: DedupIndex) -> np.ndarray:
    """The final reason code of every row of a staged shard (KEPT or why not): its own, else the index's."""
    reason = staged_table.column("reason").to_numpy().copy()  # (the staged file is mapped read-only)
    usable = reason == KEPT
    reason[usable] = index.decide(shard, hashes, usable, by_hash)[usable]
    return reason


# A rejected text that was never normalised into anything has no split.
_WITHOUT_TEXT = (BAD_UTF8, BAD_FIELD_COUNT, EMPTY)
_NO_SPLIT = len(SPLITS)


def write_shard(raw: str, staged: str, shard: int, index: DedupIndex | str, p: CleanParams,
                labels: tuple[str, ...], out: str, rejects: str) -> tuple[Counter, Counter, int]:
    """Decide one staged shard and write its kept rows per split and its rejects (runs in a worker);
    returns (kept per split, rejected per reason/split, rows). `index` is the dedup index, or where it
    was saved."""
    with pa.memory_map(staged) as source:  # (in this thread, as `read_shard` reads)
        staged_table = pa.ipc.open_file(source, options=pa.ipc.IpcReadOptions(use_threads=False)).read_all()
    hashes = staged_table.column("hash").to_numpy()
    if isinstance(index, str):
        index = DedupIndex.load(index)
    reason = _final_reasons(staged_table, hashes, np.load(_by_hash_file(staged)), shard, index)
    split = assign_split(hashes, p.split_seed, p.val_fraction, p.test_fraction)
    keep = reason == KEPT
    rows = np.flatnonzero(~keep)
    raw_table = read_shard(raw, columns=["source", "row", *(("text", "label") if len(rows) else ())],
                           dictionaries=["source"])
    kept, rejected = Counter(), Counter()
    staged_kept, raw_kept = staged_table.select(["text", "label_id"]), raw_table.select(["source", "row"])
    for s, name in enumerate(SPLITS):
        in_split = np.flatnonzero(keep & (split == s))
        if len(in_split):
            _write_kept(Path(out) / name / shard_name(shard), staged_kept.take(in_split), raw_kept.take(in_split),
                        labels)
        kept[name] += len(in_split)
    if len(rows):
        row_reason = reason[rows]
        row_split = np.where(np.isin(row_reason, _WITHOUT_TEXT), _NO_SPLIT, split[rows])
        _write_rejects(Path(rejects) / shard_name(shard), raw_table.take(rows), row_reason, row_split)
        rejected.update(_count_by_reason_and_split(row_reason, row_split))
    return kept, rejected, staged_table.num_rows


def _count_by_reason_and_split(reason: np.ndarray, split: np.ndarray) -> dict[str, int]:
    """{'reason/split': rows} ('none' for the rows without a split), counted as integer pairs."""
    width = _NO_SPLIT + 1
    pairs, counts = np.unique(reason.astype(np.int64) * width + split, return_counts=True)
    split_names = (*SPLITS, "none")
    return {f"{REASONS[pair // width - 1]}/{split_names[pair % width]}": n
            for pair, n in zip(pairs.tolist(), counts.tolist())}


def _write_kept(path: Path, staged: pa.Table, raw: pa.Table, labels: tuple[str, ...]) -> None:
    """Kept rows: their normalised text and label id as staged, the label the id names, and their source
    and row number from the raw shard."""
    label_ids = staged.column("label_id")
    columns = [staged.column("text"), pa.array(labels, pa.string()).take(label_ids), label_ids,
               raw.column("source").cast(pa.string()), raw.column("row")]
    write_table(path, pa.Table.from_arrays(columns, schema=CLEAN_SCHEMA))


def _write_rejects(path: Path, raw: pa.Table, reason: np.ndarray, split: np.ndarray) -> None:
    split_names = np.array([*SPLITS, None], dtype=object)[split]
    columns = [raw.column("text"), raw.column("label"), raw.column("source").cast(pa.string()), raw.column("row"),
               pa.array(reason_names(reason), pa.string()), pa.array(split_names, pa.string())]
    write_table(path, pa.Table.from_arrays(columns, schema=REJECT_SCHEMA))


def _stats(rows_in: int, kept: Counter, rejected: Counter) -> dict:
    by_reason, by_split = Counter(), Counter()
    for key, n in rejected.items():
        reason, split = key.split("/")
        by_reason[reason] += n
        by_split[split] += n
    total_rejected = sum(rejected.values())
    return {
        "rows_in": rows_in,
        "rows_kept": sum(kept.values()),
        "rows_rejected": total_rejected,
        "kept_by_split": {s: kept[s] for s in SPLITS},
        "rejected_by_reason": dict(sorted(by_reason.items())),
        "rejected_by_split": dict(sorted(by_split.items())),
        "rejected_by_reason_and_split": dict(sorted(rejected.items())),
        "accounting_ok": rows_in == sum(kept.values()) + total_rejected,
    }
