"""ingest: read the configured corpus into Parquet shards (text, label, source, row, error)."""

from __future__ import annotations

import logging
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from textrnn.config import IngestParams
from textrnn.io import atomic_dir, shard_name, write_json_into, write_table
from textrnn.parallel import in_order, make_executor
from textrnn.raw_batch import RAW_SCHEMA
from textrnn.sources import iter_source

log = logging.getLogger(__name__)


def run(out: Path, p: IngestParams, root: Path = Path(".")) -> dict:
    """Stream the source into `out/part-*.parquet` (one shard per `p.chunk_rows` rows) and `out/stats.json`.
    A relative `p.source` is read from the project folder `root`."""
    rows, shards, labels = 0, 0, set()
    with atomic_dir(out) as tmp, make_executor("thread", p.workers) as pool:
        # One pool for the readers' parsing and the shards' writing: threads for the cores, not for each
        # task (two pools had twice the threads taking turns on the GIL and the cores: a quarter more CPU time).
        batches = enumerate(_regroup(iter_source(p, pool, root), p.chunk_rows))
        writes = (pool.submit(_write_shard, tmp / shard_name(i), batch) for i, batch in batches)
        for shard_rows, shard_labels in in_order(writes, window=p.workers + 1):  # (one queued: as the parses)
            labels.update(shard_labels)
            rows += shard_rows
            shards += 1
        stats = {"rows": rows, "shards": shards, "source": p.source, "labels_seen": sorted(labels)}
        write_json_into(tmp, "stats.json", stats)
    log.info("ingest: %d rows in %d shards from %s", rows, shards, p.source)
    return stats


def _write_shard(path: Path, table: pa.Table) -> tuple[int, list[str]]:
    """One raw shard; returns its row count and the labels in it. Written as one chunk: Parquet's pages
    follow the chunks written, and the chunks follow how the reader happened to block its input (a short
    read of a remote file moves them), while the bytes must follow the data alone."""
    write_table(path, table.combine_chunks())
    return table.num_rows, [v for v in pc.unique(table.column("label")).to_pylist() if v]


def _regroup(batches, chunk_rows: int):
    """Cut the stream into tables of exactly `chunk_rows` rows (the last may be shorter), so shard
    boundaries depend on the data and params alone, not on how a reader happened to block its input.
    The tables are slices of the batches read, not copies: the writers combine them, in parallel."""
    pending: list[pa.RecordBatch] = []
    size = 0
    for batch in batches:
        pending.append(batch)
        size += batch.num_rows
        while size >= chunk_rows:
            table = pa.Table.from_batches(pending, RAW_SCHEMA)
            yield table.slice(0, chunk_rows)
            rest = table.slice(chunk_rows)
            pending, size = rest.to_batches(), rest.num_rows
    if size:
        yield pa.Table.from_batches(pending, RAW_SCHEMA)
