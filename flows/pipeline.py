"""The pipeline flow: six cached stage tasks in order. No logic beyond wiring."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow
from prefect.runtime import flow_run

from textrnn.config import Params, load_params, section_digest
from textrnn.dvc_sync import check_can_commit
from textrnn.freshness import outputs_fresh, stage_key
from textrnn.io import read_json
from textrnn.locking import LOCK_PATH, project_lock
from textrnn.pipeline import STAGE_SPECS
from textrnn_tasks.clean import clean
from textrnn_tasks.dvc import dvc_commit
from textrnn_tasks.evaluate import evaluate, publish_evaluation
from textrnn_tasks.export import export
from textrnn_tasks.ingest import ingest, source
from textrnn_tasks.train import train
from textrnn_tasks.vocab import vocab

STAGE_TASKS = {"ingest": ingest, "clean": clean, "vocab": vocab, "train": train, "evaluate": evaluate,
               "export": export}


def _flow_run_name() -> str:
    overrides = flow_run.parameters.get("overrides") or {}
    suffix = "-".join(f"{k}={v}" for k, v in sorted(overrides.items()))
    return f"textrnn-{suffix}" if suffix else "textrnn"


def run_stage_task(name: str, p: Params, root: Path) -> dict:
    """Run a stage's task (on the Dask cluster when one is configured) for the project at `root`; a cached
    result is used only while the stage's outputs are still intact."""
    task = STAGE_TASKS[name]
    if not outputs_fresh(name, p, stage_key(name, p, root), root):
        task = task.with_options(refresh_cache=True)
    arguments = {"paths": p.paths, "sections": {s: getattr(p, s) for s in STAGE_SPECS[name].sections},
                 "runner": p.runner, "project_dir": str(root)}
    if p.runner.dask_address:
        return task.submit(**arguments).result()  # runs on a Dask worker
    return task(**arguments)  # in the flow's own thread, where timeouts can interrupt the stage


def pipeline_for(p: Params):
    """The flow, on prefect-dask's DaskTaskRunner when `runner.dask_address` names a cluster. Its workers
    must see the project folder at the same path, and a Prefect server (PREFECT_API_URL)."""
    if not p.runner.dask_address:
        return pipeline
    from prefect_dask import DaskTaskRunner

    return pipeline.with_options(task_runner=DaskTaskRunner(address=p.runner.dask_address))


@flow(name="textrnn-pipeline", flow_run_name=_flow_run_name, log_prints=True)
def pipeline(params_file: str = "params.yaml", overrides: dict[str, Any] | None = None,
             profile: str | None = None) -> dict:
    """source, then ingest → clean → vocab → train → evaluate → export, each a content-cached task.
    `profile`: a file of values laid over `params_file` (textrnn.config.params_mapping)."""
    root = Path.cwd().absolute()  # the project: where the flow was started (a deployment's working directory)
    p = load_params(params_file, overrides, profile=profile)
    digest = section_digest(p)
    if p.dvc.commit:
        check_can_commit(root)  # before hours of stages, not after them
    with project_lock(root / LOCK_PATH):
        source(p.paths, p.ingest, str(root))
        results = {name: run_stage_task(name, p, root) for name in STAGE_TASKS}
        publish_evaluation(p.paths.resolved(root).evaluation)
        if p.dvc.commit:
            dvc_commit(["source", *STAGE_TASKS], do_push=p.dvc.push, project_dir=str(root))
    metrics = read_json(p.paths.resolved(root).metrics)
    return {"params_digest": digest, "metrics": metrics, "stages": {k: v["key"] for k, v in results.items()}}
