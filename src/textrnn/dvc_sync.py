"""Keep DVC in step with a flow run: record the stages' outputs in dvc.lock and the DVC cache.

DVC allows one process per repository at a time, so the flow calls these once, in order, at its end. A DVC
command that fails raises with DVC's own error text and what to do about it.
"""

from __future__ import annotations

import configparser
import logging
import shutil
import subprocess
import sys
from pathlib import Path

log = logging.getLogger(__name__)
WITHOUT_DVC = "or run without DVC bookkeeping: `textrnn run --set dvc.commit=false` (dvc.commit: false in params.yaml)"


class DvcError(RuntimeError):
    """A DVC command failed; the message holds DVC's output and a hint."""


def dvc_executable() -> str:
    """The dvc beside this Python (the project's venv), else the one on PATH."""
    local = Path(sys.executable).parent / "dvc"
    return str(local) if local.exists() else (shutil.which("dvc") or "dvc")


def is_dvc_project(root: Path) -> bool:
    return (root / ".dvc").is_dir() and (root / "dvc.yaml").is_file()


def _hint(output: str, root: Path) -> str:
    if "not a git repository" in output.lower() or "scmerror" in output.lower():
        return (f"DVC keeps dvc.lock beside git, and {root} is not a git repository: run `git init` there "
                f"(a downloaded archive has no .git), or `dvc config core.no_scm true`, {WITHOUT_DVC}")
    if "unable to acquire lock" in output.lower():
        return "another DVC command holds this repository's lock: wait for it to finish, then run again"
    return f"fix what DVC reports above, {WITHOUT_DVC}"


def _dvc(args: list[str], root: Path) -> str:
    command = [dvc_executable(), *args]
    try:
        result = subprocess.run(command, cwd=root, capture_output=True, text=True)
    except FileNotFoundError as err:
        raise DvcError(f"cannot run {command[0]} ({err}): install dvc (`make setup`), {WITHOUT_DVC}") from err
    if result.returncode != 0:
        output = (result.stderr.strip() or result.stdout.strip()) or f"(no output; exit code {result.returncode})"
        raise DvcError(f"`dvc {' '.join(args)}` failed in {root} (exit code {result.returncode}):\n{output}\n"
                       f"What to do: {_hint(output, root)}")
    return result.stdout


def check_can_commit(root: Path) -> None:
    """Fail before any stage runs when DVC would refuse to record them at the end (no git repository)."""
    if not is_dvc_project(root) or _no_scm(root):
        return
    found = subprocess.run(["git", "rev-parse", "--is-inside-work-tree"], cwd=root, capture_output=True, text=True)
    if found.returncode != 0:
        output = found.stderr.strip() or "not a git repository"
        raise DvcError(f"{root} holds a DVC project (.dvc/) but git says: {output}\nWhat to do: {_hint(output, root)}")


def _no_scm(root: Path) -> bool:
    config = configparser.ConfigParser()
    config.read(root / ".dvc" / "config")
    return config.get("core", "no_scm", fallback="false").strip().lower() in ("true", "1", "yes")


def commit_stages(stages: list[str], root: Path) -> None:
    """`dvc commit -f`: write the current outputs' hashes to dvc.lock and link or copy them into the DVC
    cache, so `dvc status` agrees with what the flow just produced."""
    _dvc(["commit", "--force", *stages], root)
    log.info("dvc.lock updated for %s", ", ".join(stages))


def push(root: Path) -> None:
    _dvc(["push"], root)
    log.info("dvc push done")
