"""DVC bookkeeping at the end of a flow run: dvc.lock + cache, and an optional push."""

from __future__ import annotations

from pathlib import Path

from prefect import task

from textrnn.dvc_sync import commit_stages, is_dvc_project, push


@task(name="dvc-commit", tags=["textrnn", "dvc"])
def dvc_commit(stages: list[str], do_push: bool, project_dir: str = ".") -> bool:
    """Record the stages in dvc.lock (and push) when the flow's project at `project_dir` is a DVC project."""
    root = Path(project_dir).absolute()
    if not is_dvc_project(root):
        return False
    commit_stages(stages, root)
    if do_push:
        push(root)
    return True
