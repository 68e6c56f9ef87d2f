"""Shared fixtures: the tiny params profile rooted in a temp folder, and one tiny pipeline built once."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from textrnn.config import Params, load_params

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "tests" / "profiles" / "tiny.yaml"
PARAMS = REPO / "params.yaml"  # the tiny profile is laid over it

# Offline and inside the project, whatever the caller's environment says.
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")


@pytest.fixture
def tiny_params(tmp_path: Path) -> Params:
    """The tiny profile (a few hundred rows of the default corpus, tiny model) writing under tmp_path."""
    return load_params(PARAMS, profile=TINY).resolved(tmp_path)


@pytest.fixture(scope="session")
def built(tmp_path_factory: pytest.TempPathFactory) -> Params:
    """All six stages run once on the tiny profile; tests read (never modify) its outputs."""
    from textrnn.pipeline import STAGE_SPECS, run_stage

    params = load_params(PARAMS, {"export.exporter": "torchscript"}, profile=TINY)
    params = params.resolved(tmp_path_factory.mktemp("built"))
    for name in STAGE_SPECS:
        run_stage(name, params)
    return params
