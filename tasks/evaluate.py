"""evaluate task, plus the report and per-class table as Prefect UI artifacts."""

from __future__ import annotations

import csv
from pathlib import Path

from prefect import task
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from textrnn_tasks._stage import stage_task

REPORT_KEY = "textrnn-evaluation-report"
PER_CLASS_KEY = "textrnn-per-class-metrics"

evaluate = stage_task("evaluate", timeout_seconds=3 * 3600)


@task(name="publish-evaluation")
def publish_evaluation(evaluation_dir: str) -> None:
    """Markdown report under a stable key, and the per-class table, for this flow run."""
    folder = Path(evaluation_dir)
    create_markdown_artifact(key=REPORT_KEY, markdown=(folder / "report.md").read_text(encoding="utf-8"),
                             description="textrnn evaluation: RNN vs TF-IDF baseline")
    with open(folder / "per_class.csv", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    create_table_artifact(key=PER_CLASS_KEY, table=rows, description="per-class precision / recall / F1")
