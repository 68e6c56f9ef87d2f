"""Killed mid-stage with SIGKILL, then rerun: the outputs are byte-identical to an uninterrupted run and
no temp file is left behind. Training killed after an epoch resumes from it instead of starting over."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from textrnn.config import load_params, params_mapping
from textrnn.io import TMP_MARK, content_hash
from textrnn.pipeline import STAGE_SPECS, run_stage
from textrnn.stages.train import read_live_log

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
TINY = REPO / "tests" / "profiles" / "tiny.yaml"
PARAMS = REPO / "params.yaml"  # the tiny profile is laid over it
OVERRIDES = {"export": {"exporter": "torchscript"}, "train": {"epochs": 3, "patience": 3}}


def _write_params(project: Path) -> None:
    params = params_mapping(PARAMS, TINY)
    for section, values in OVERRIDES.items():
        params[section].update(values)
    (project / "params.yaml").write_text(yaml.safe_dump(params))


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """All six stages uninterrupted, in-process."""
    project = tmp_path_factory.mktemp("reference")
    _write_params(project)
    cwd = Path.cwd()
    os.chdir(project)
    try:
        params = load_params("params.yaml")
        for name in STAGE_SPECS:
            run_stage(name, params)
    finally:
        os.chdir(cwd)
    return project


def _outputs(name: str) -> list[str]:
    params = load_params(PARAMS, profile=TINY)
    return [getattr(params.paths, key) for key in STAGE_SPECS[name].outs]


def _project_before(name: str, reference: Path, root: Path) -> Path:
    """A project holding the reference's outputs of every stage before `name`."""
    _write_params(root)
    for earlier in list(STAGE_SPECS)[: list(STAGE_SPECS).index(name)]:
        for out in _outputs(earlier):
            source, target = reference / out, root / out
            target.parent.mkdir(parents=True, exist_ok=True)
            (shutil.copytree if source.is_dir() else shutil.copyfile)(source, target)
    return root


def _first_bytes_appeared(root: Path, outputs: list[str]) -> bool:
    for out in outputs:
        target = root / out
        if target.exists() or any(target.parent.glob(f"{TMP_MARK}{target.name}.*")):
            return True
    return False


def _start_and_kill(root: Path, args: list[str], ready, env: dict | None = None) -> None:
    """Start `textrnn ARGS` in its own process group, SIGKILL the whole group as soon as `ready()` holds."""
    process = subprocess.Popen([str(BIN / "textrnn"), *args], cwd=root, env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 300
    while not ready() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    os.killpg(process.pid, signal.SIGKILL)  # with any child it started (a flow's temporary Prefect server)
    process.wait()


def _rerun(root: Path, name: str) -> str:
    result = subprocess.run([str(BIN / "textrnn"), "stage", name], cwd=root, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stderr


def _no_temps(root: Path) -> list[str]:
    return [str(p) for p in root.rglob(f"*{TMP_MARK}*")]


@pytest.mark.parametrize("name", ["ingest", "clean", "vocab", "evaluate", "export"])
def test_killed_stage_reruns_to_identical_outputs_without_temps(name, reference, tmp_path):
    root = _project_before(name, reference, tmp_path)
    _start_and_kill(root, ["stage", name], lambda: _first_bytes_appeared(root, _outputs(name)))
    _rerun(root, name)
    for out in _outputs(name):
        assert content_hash(root / out) == content_hash(reference / out), out
    assert _no_temps(root) == []


def test_training_killed_after_an_epoch_resumes_and_ends_with_the_same_weights(reference, tmp_path):
    root = _project_before("train", reference, tmp_path)
    state = load_params(PARAMS, profile=TINY).paths.train_state
    _start_and_kill(root, ["stage", "train"], (root / state).exists)  # the resumable state appears after epoch 1
    assert (root / state).exists()
    log = _rerun(root, "train")
    assert "resuming after epoch" in log
    checkpoint, train_log = _outputs("train")
    assert content_hash(root / checkpoint) == content_hash(reference / checkpoint)
    assert _without_timings(root / train_log) == _without_timings(reference / train_log)
    assert _no_temps(root) == []


def _without_timings(path: Path) -> list[dict]:
    """The epoch log's rows minus its measured columns (seconds, tokens/s), which no rerun repeats."""
    return [{k: v for k, v in row.items() if k not in ("seconds", "tokens_per_s")} for row in read_live_log(path)]


def test_killed_flow_reruns_to_the_same_outputs_without_temps(reference, tmp_path):
    """`textrnn run` SIGKILLed (with its temporary Prefect server) once the first stage starts writing;
    the next run completes and every output equals the uninterrupted in-process run's."""
    project = tmp_path / "project"
    project.mkdir()
    _write_params(project)
    env = {**os.environ, "PREFECT_HOME": str(project / ".prefect")}
    env.pop("PREFECT_API_URL", None)
    _start_and_kill(project, ["run"], lambda: _first_bytes_appeared(project, _outputs("ingest")), env)
    result = subprocess.run([str(BIN / "textrnn"), "run"], cwd=project, env=env, capture_output=True, text=True,
                            timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    for name in STAGE_SPECS:
        for out in _outputs(name):
            if out == load_params(PARAMS, profile=TINY).paths.train_log:  # the epoch log holds measured seconds
                assert _without_timings(project / out) == _without_timings(reference / out)
            else:
                assert content_hash(project / out) == content_hash(reference / out), out
    assert _no_temps(project) == []
