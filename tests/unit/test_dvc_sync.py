"""A failed DVC step says why (DVC's own text) and what to do; a project DVC cannot record fails first."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from textrnn.dvc_sync import DvcError, check_can_commit, commit_stages, dvc_executable

REPO = Path(__file__).resolve().parents[2]


def _dvc_project_without_git(root: Path) -> Path:
    """What a downloaded archive of the project is: .dvc/ and dvc.yaml, but no .git."""
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    subprocess.run([dvc_executable(), "init", "-q"], cwd=root, check=True)
    shutil.rmtree(root / ".git")
    shutil.copyfile(REPO / "dvc.yaml", root / "dvc.yaml")
    shutil.copyfile(REPO / "params.yaml", root / "params.yaml")
    return root


def test_dvc_commit_failure_carries_dvcs_own_message_and_a_hint(tmp_path):
    root = _dvc_project_without_git(tmp_path)
    with pytest.raises(DvcError) as caught:
        commit_stages(["ingest"], root)
    message = str(caught.value)
    assert "not a git repository" in message.lower()  # DVC's own words, no longer swallowed by --quiet
    assert "git init" in message and "dvc.commit=false" in message


def test_check_can_commit_fails_before_any_stage_and_allows_no_scm(tmp_path):
    root = _dvc_project_without_git(tmp_path)
    with pytest.raises(DvcError, match="git init"):
        check_can_commit(root)
    subprocess.run([dvc_executable(), "config", "core.no_scm", "true"], cwd=root, check=True)
    check_can_commit(root)  # DVC without git is a choice the user made: nothing to warn about


def test_textrnn_run_in_an_archive_says_what_to_do_without_starting_anything(tmp_path):
    root = _dvc_project_without_git(tmp_path)
    result = subprocess.run([sys.executable, "-m", "textrnn", "run"], cwd=root, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 2
    assert "not a git repository" in result.stderr.lower() and "git init" in result.stderr
    assert not (root / "data").exists()  # failed before the first stage
