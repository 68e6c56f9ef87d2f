"""A second run on a project that is already running fails at once with a clear message, and leaves the
first run's outputs alone."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from textrnn.config import params_mapping
from textrnn.locking import LOCK_PATH, ProjectBusyError, project_lock

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
TINY = REPO / "tests" / "profiles" / "tiny.yaml"
PARAMS = REPO / "params.yaml"  # the tiny profile is laid over it


def test_lock_is_exclusive_and_released(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with project_lock(), pytest.raises(ProjectBusyError, match=f"pid {os.getpid()}"), project_lock():
        pass
    with project_lock():  # released after the first one ended
        assert (tmp_path / LOCK_PATH).exists()


@pytest.mark.parametrize("command", [["stage", "ingest"], ["run"]])
def test_second_run_fails_at_once_while_the_project_is_busy(tmp_path, monkeypatch, command):
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params_mapping(PARAMS, TINY)))
    monkeypatch.chdir(tmp_path)
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / ".prefect")}
    env.pop("PREFECT_API_URL", None)
    with project_lock():  # another run holds the project
        result = subprocess.run([str(BIN / "textrnn"), *command], cwd=tmp_path, env=env, capture_output=True,
                                text=True, timeout=300)
    assert result.returncode != 0
    assert "another textrnn run" in result.stderr
    assert not (tmp_path / "data").exists()  # nothing was written
