"""vocab task."""

from textrnn_tasks._stage import stage_task

vocab = stage_task("vocab", timeout_seconds=3 * 3600)
