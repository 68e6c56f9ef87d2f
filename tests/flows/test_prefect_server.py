"""Against a real `prefect server start` on 127.0.0.1 (started and stopped by the test): run the flow on
the tiny profile, read the run back from the API, and register the served deployment with its cron."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml

from textrnn.config import params_mapping

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
TINY = REPO / "tests" / "profiles" / "tiny.yaml"
PARAMS = REPO / "params.yaml"  # the tiny profile is laid over it
STAGES = ("ingest", "clean", "vocab", "train", "evaluate", "export")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_until(check, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = check()
            if value:
                return value
        except httpx.HTTPError:
            pass
        time.sleep(1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    home = tmp_path_factory.mktemp("prefect-home")
    port = _free_port()
    env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "PREFECT_UI_ENABLED": "false"}
    env.pop("PREFECT_API_URL", None)
    process = subprocess.Popen([str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                               env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    api = f"http://127.0.0.1:{port}/api"
    try:
        _wait_until(lambda: httpx.get(f"{api}/health", timeout=2).status_code == 200, 180, "prefect server")
        yield api, env
    finally:
        os.killpg(process.pid, signal.SIGTERM)  # stop it by its PID (and its children)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)


def _client_env(api: str, env: dict, project: Path) -> dict:
    return {**env, "PREFECT_API_URL": api, "PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}",
            "DVC_NO_ANALYTICS": "1", "OMP_WAIT_POLICY": "PASSIVE"}


def test_flow_run_is_recorded_in_the_server(server, tmp_path):
    api, env = server
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params_mapping(PARAMS, TINY)))
    result = subprocess.run([str(BIN / "textrnn"), "run"], cwd=tmp_path, env=_client_env(api, env, tmp_path),
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-4000:]
    flow_runs = httpx.post(f"{api}/flow_runs/filter", json={}, timeout=10).json()
    assert [r["state_type"] for r in flow_runs] == ["COMPLETED"]
    task_runs = httpx.post(f"{api}/task_runs/filter", json={}, timeout=10).json()
    stage_runs = [r for r in task_runs if r["name"].split("-")[0] in STAGES]
    assert sorted(r["name"].split("-")[0] for r in stage_runs) == sorted(STAGES)
    assert all(r["state_type"] == "COMPLETED" for r in stage_runs)
    report = httpx.get(f"{api}/artifacts/textrnn-evaluation-report/latest", timeout=10)
    assert report.status_code == 200 and "Evaluation report" in report.json()["data"]
    table = httpx.get(f"{api}/artifacts/textrnn-per-class-metrics/latest", timeout=10)
    assert table.status_code == 200


def test_serve_registers_the_deployment_with_the_cron_schedule(server, tmp_path):
    api, env = server
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params_mapping(PARAMS, TINY)))
    process = subprocess.Popen([str(BIN / "textrnn"), "serve", "--set", "schedule.cron=15 2 * * *"],
                               cwd=tmp_path, env=_client_env(api, env, tmp_path), stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        url = f"{api}/deployments/name/textrnn-pipeline/textrnn-scheduled"
        deployment = _wait_until(lambda: httpx.get(url, timeout=5).json() if httpx.get(url, timeout=5).status_code
                                 == 200 else None, 120, "the served deployment")
        schedules = [s["schedule"] for s in deployment["schedules"]]
        assert {"cron": "15 2 * * *", "timezone": "UTC"}.items() <= schedules[0].items()
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=60)


def test_flow_on_a_dask_cluster_matches_the_local_run(server, tmp_path, monkeypatch):
    """runner.dask_address: the flow's tasks run on prefect-dask's DaskTaskRunner (a LocalCluster with 2
    worker processes that report to the same server), and the outputs equal a local run's."""
    from distributed import LocalCluster

    from textrnn.io import content_hash

    api, env = server
    monkeypatch.setenv("PREFECT_API_URL", api)  # the workers inherit it: they report to the real server
    monkeypatch.setenv("PREFECT_HOME", env["PREFECT_HOME"])
    local, remote = tmp_path / "local", tmp_path / "dask"
    for project in (local, remote):
        project.mkdir()
        (project / "params.yaml").write_text(yaml.safe_dump(params_mapping(PARAMS, TINY)))
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        for project, extra in ((local, []), (remote, ["--set", f"runner.dask_address={cluster.scheduler_address}"])):
            result = subprocess.run([str(BIN / "textrnn"), "run", *extra], cwd=project,
                                    env=_client_env(api, env, project), capture_output=True, text=True, timeout=900)
            assert result.returncode == 0, result.stderr[-4000:]
            if extra:
                assert f"Connecting to an existing Dask cluster at {cluster.scheduler_address}" in result.stderr
    for artifact in ("data/clean", "data/vocab", "models/checkpoint.pt", "metrics/metrics.json"):
        assert content_hash(remote / artifact) == content_hash(local / artifact), artifact
    runs = httpx.post(f"{api}/flow_runs/filter", json={}, timeout=10).json()
    ad_hoc = [r for r in runs if r["deployment_id"] is None]  # not the served deployment's scheduled runs
    assert len(ad_hoc) >= 3 and all(r["state_type"] == "COMPLETED" for r in ad_hoc)
