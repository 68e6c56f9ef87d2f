"""ingest task: retried with backoff, since remote sources (s3://, https://) fail transiently."""

from tasks._stage import stage_task

ingest = stage_task("ingest", retries=3, retry_delay_seconds=[10, 30, 90], timeout_seconds=6 * 3600)
