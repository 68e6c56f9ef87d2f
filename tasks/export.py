"""export task."""

from textrnn_tasks._stage import stage_task

export = stage_task("export", timeout_seconds=3600)
