"""train task: one retry, which resumes from the last finished epoch's checkpoint."""

from textrnn_tasks._stage import stage_task

train = stage_task("train", retries=1, retry_delay_seconds=[5], timeout_seconds=24 * 3600)
