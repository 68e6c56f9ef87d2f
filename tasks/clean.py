"""clean task."""

from textrnn_tasks._stage import stage_task

clean = stage_task("clean", timeout_seconds=6 * 3600)
