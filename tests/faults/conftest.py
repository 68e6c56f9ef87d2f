"""Fixtures shared by the fault tests."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from textrnn.config import Params, params_mapping

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / "tests" / "profiles" / "tiny.yaml"
PARAMS = REPO / "params.yaml"  # the tiny profile is laid over it


@pytest.fixture
def project(built: Params, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the session's built tiny project as the working folder (relative paths resolve in it),
    with the params it was built with (torchscript export)."""
    root = tmp_path / "project"
    shutil.copytree(Path(built.paths.raw).parents[1], root)
    tiny = params_mapping(PARAMS, TINY)
    tiny["export"]["exporter"] = "torchscript"
    (root / "params.yaml").write_text(yaml.safe_dump(tiny))
    monkeypatch.chdir(root)
    return root
