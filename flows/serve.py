"""Serve the pipeline as a deployment with the cron schedule from params.yaml (`textrnn serve`).

`flow.serve` registers the deployment, creates its upcoming scheduled runs and polls for them until
SIGTERM. For a work pool instead, `prefect deploy` reads prefect.yaml (same flow, same schedule).
"""

from __future__ import annotations

from prefect.schedules import Cron

from textrnn.config import Params
from textrnn_flows.pipeline import pipeline

DEPLOYMENT_NAME = "textrnn-scheduled"


def serve(params: Params, params_file: str = "params.yaml", profile: str | None = None) -> None:
    pipeline.serve(
        name=DEPLOYMENT_NAME,
        schedules=[Cron(params.schedule.cron, timezone=params.schedule.timezone)],
        parameters={"params_file": params_file, **({"profile": profile} if profile else {})},
        tags=["textrnn", "scheduled"],
        description="textrnn: ingest → clean → vocab → train → evaluate → export on a schedule",
        limit=1,  # one pipeline run at a time on this runner (they share the project's outputs)
    )
