"""What every stage task shares: a content-addressed cache key, JSON results, readable run names."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from prefect import task
from prefect.context import TaskRunContext
from prefect.runtime import task_run

from textrnn.config import Params, PathsParams, RunnerParams, section_digest
from textrnn.freshness import run_recorded, stage_key


def params_for(paths: PathsParams, sections: dict[str, Any], runner: RunnerParams | None = None) -> Params:
    """A full Params from the pieces a task was given (other sections keep their defaults, unused)."""
    return dataclasses.replace(Params(), paths=paths, runner=runner or RunnerParams(), **sections)


def _cache_key(context: TaskRunContext, arguments: dict[str, Any]) -> str:
    params = params_for(arguments["paths"], arguments["sections"])
    return stage_key(context.task.name, params, Path(arguments.get("project_dir", ".")))


def _run_name() -> str:
    """`<stage>-<digest of its params sections>`, so runs with other params are told apart in the UI."""
    sections = task_run.parameters.get("sections", {})
    digest = "-".join(section_digest(s)[:6] for _, s in sorted(sections.items()))
    return f"{task_run.task_name}-{digest}"


def stage_task(name: str, *, retries: int = 0, retry_delay_seconds: list[int] | None = None,
               timeout_seconds: int = 6 * 3600):
    """A Prefect task running stage `name`, cached by content (see textrnn.freshness)."""

    def body(paths: PathsParams, sections: dict[str, Any], runner: RunnerParams | None = None,
             project_dir: str = ".") -> dict:
        # Relative paths are the project's, resolved against `project_dir` (a Dask worker's process starts
        # elsewhere), never by changing the process's directory, which other tasks share. Outputs that
        # `dvc repro` (or an earlier run) produced for this key are reused, not redone.
        return run_recorded(name, params_for(paths, sections, runner), reuse_fresh=True, root=Path(project_dir))

    body.__name__ = f"{name}_stage"
    body.__qualname__ = body.__name__
    return task(
        body,
        name=name,
        task_run_name=_run_name,
        cache_key_fn=_cache_key,
        persist_result=True,
        result_serializer="json",
        retries=retries,
        retry_delay_seconds=retry_delay_seconds or 0,
        timeout_seconds=timeout_seconds,
        tags=["textrnn", f"stage:{name}"],
    )
