"""Keep DVC in step with a flow run: record the stages' outputs in dvc.lock and the DVC cache.

DVC allows one process per repository at a time, so the flow calls these once, in order, at its end.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import sys
from pathlib import Path

log = logging.getLogger(__name__)


def dvc_executable() -> str:
    """The dvc beside this Python (the project's venv), else the one on PATH."""
    local = Path(sys.executable).parent / "dvc"
    return str(local) if local.exists() else (shutil.which("dvc") or "dvc")


def is_dvc_project(root: Path) -> bool:
    return (root / ".dvc").is_dir() and (root / "dvc.yaml").is_file()


def _dvc(args: list[str], root: Path) -> str:
    result = subprocess.run([dvc_executable(), *args], cwd=root, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"dvc {' '.join(args)} failed in {root}:\n{result.stdout}{result.stderr}")
    return result.stdout


def commit_stages(stages: list[str], root: Path) -> None:
    """`dvc commit -f`: write the current outputs' hashes to dvc.lock and copy them into the DVC cache,
    so `dvc status` agrees with what the flow just produced."""
    _dvc(["commit", "--force", "--quiet", *stages], root)
    log.info("dvc.lock updated for %s", ", ".join(stages))


def push(root: Path) -> None:
    _dvc(["push", "--quiet"], root)
    log.info("dvc push done")
