"""ingest task, and the `source` step before it: both retried with backoff, since remote sources (s3://,
https://) fail transiently."""

from __future__ import annotations

from pathlib import Path

from prefect import task

from textrnn.config import IngestParams, PathsParams
from textrnn.source_record import record_source
from textrnn_tasks._stage import stage_task

ingest = stage_task("ingest", retries=3, retry_delay_seconds=[10, 30, 90], timeout_seconds=6 * 3600)


@task(name="source", retries=3, retry_delay_seconds=[10, 30, 90], tags=["textrnn", "stage:source"])
def source(paths: PathsParams, ingest_params: IngestParams, project_dir: str = ".") -> dict:
    """Record ingest's input files and their hashes. Never cached: this is how a changed source is noticed
    (ingest's cache key is the record's content). Relative paths are those of the project at `project_dir`."""
    root = Path(project_dir)
    return record_source(Path(paths.resolved(root).source), ingest_params, root)
