"""The whole pipeline on the tiny profile: as a Prefect flow (real ephemeral Prefect API) and through
`dvc repro` in a real git + DVC repo, each in a temporary copy of the project."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from textrnn.config import params_mapping
from textrnn.io import content_hash

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
TINY = REPO / "tests" / "profiles" / "tiny.yaml"
PARAMS = REPO / "params.yaml"  # the tiny profile is laid over it
UP_TO_DATE = {"source": ["always changed"]}  # every other stage up to date
ARTIFACTS = ["data/raw", "data/clean", "data/rejects", "data/vocab", "models/checkpoint.pt",
             "metrics/metrics.json", "metrics/evaluation", "models/export/vocab.json"]


def _env(project: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}", PREFECT_HOME=str(project / ".prefect"),
               PREFECT_SERVER_ANALYTICS_ENABLED="false", DVC_NO_ANALYTICS="1", OMP_WAIT_POLICY="PASSIVE")
    env["PYTHONPATH"] = str(project / "src")  # the project's own copy of the code runs (textrnn checks it)
    env.pop("PREFECT_API_URL", None)  # ephemeral mode: the flow starts its own temporary server
    return env


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    result = subprocess.run(args, cwd=cwd, env=_env(cwd), capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, f"{args} failed:\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
    return result


def _task_states(output: str) -> dict[str, str]:
    """{stage: final state} from Prefect's run log ('Task run 'train-ab12' - Finished in state Cached(...)')."""
    states = {}
    for name, state in re.findall(r"Task run '([a-z]+)-[^']*' - Finished in state (\w+)", output):
        states[name] = state
    return states


def _make_project(root: Path) -> Path:
    """A git + DVC project holding what dvc.yaml names: the code it hashes, dvc.yaml, the tiny params."""
    root.mkdir(exist_ok=True)
    shutil.copytree(REPO / "src", root / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    shutil.copyfile(REPO / "dvc.yaml", root / "dvc.yaml")
    (root / "params.yaml").write_text(yaml.safe_dump(params_mapping(PARAMS, TINY)))
    _run(["git", "init", "-q"], root)
    _run([str(BIN / "dvc"), "init", "-q"], root)
    return root


@pytest.fixture(scope="module")
def flow_project(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    project = _make_project(tmp_path_factory.mktemp("flow") / "project")
    result = _run([str(BIN / "textrnn"), "run"], project)
    return project, result.stdout + result.stderr


def test_flow_runs_all_six_stages_and_reports_accuracy(flow_project):
    project, output = flow_project
    states = _task_states(output)
    assert {k: states.get(k) for k in ("ingest", "clean", "vocab", "train", "evaluate", "export")} == \
        dict.fromkeys(("ingest", "clean", "vocab", "train", "evaluate", "export"), "Completed")
    assert re.search(r"test accuracy: 0\.\d{4}", output)
    for artifact in ARTIFACTS:
        assert (project / artifact).exists(), artifact
    assert (project / "models/export/model.onnx").stat().st_size > 0


def test_second_flow_run_is_fully_cached_and_a_deleted_output_is_rebuilt(flow_project):
    project, _ = flow_project
    second = _run([str(BIN / "textrnn"), "run"], project)
    assert set(_task_states(second.stdout + second.stderr).values()) == {"Cached", "Completed"}
    assert all(_task_states(second.stdout + second.stderr)[s] == "Cached"
               for s in ("ingest", "clean", "vocab", "train", "evaluate", "export"))
    before = content_hash(project / "models/export")
    (project / "models/export/model.onnx").unlink()
    third = _run([str(BIN / "textrnn"), "run"], project)
    states = _task_states(third.stdout + third.stderr)
    assert states["export"] == "Completed" and states["train"] == "Cached"
    assert content_hash(project / "models/export") == before  # rebuilt, and deterministic


def dvc_changes(project: Path) -> dict:
    """`dvc status`, as {stage: changes}; `source` is always listed (it records the source on every repro)."""
    return json.loads(_run([str(BIN / "dvc"), "status", "--json"], project).stdout or "{}")


def test_after_a_flow_run_dvc_is_up_to_date(flow_project):
    project, _ = flow_project
    assert (project / "dvc.lock").is_file()
    assert dvc_changes(project) == UP_TO_DATE
    repro = _run([str(BIN / "dvc"), "repro"], project)
    assert "didn't change, skipping" in repro.stdout
    assert re.findall(r"Running stage '(\w+)'", repro.stdout) == ["source"]


def test_dvc_repro_runs_the_same_stages_and_produces_the_same_artifacts(flow_project, tmp_path):
    flow_dir, _ = flow_project
    repo = _make_project(tmp_path / "repo")
    _run([str(BIN / "dvc"), "repro"], repo)
    assert (repo / "dvc.lock").is_file()
    assert dvc_changes(repo) == UP_TO_DATE
    for artifact in ARTIFACTS:
        assert content_hash(repo / artifact) == content_hash(flow_dir / artifact), artifact
    # After `dvc repro`, a flow run redoes no stage: each finds its outputs intact for its key.
    flow = _run([str(BIN / "textrnn"), "run"], repo)
    output = flow.stdout + flow.stderr
    for stage in ("ingest", "clean", "vocab", "train", "evaluate", "export"):
        assert f"{stage}: outputs of this exact key are intact; reused" in output, stage
    assert dvc_changes(repo) == UP_TO_DATE


# These change the flow project's params: they run last, after the tests comparing it with DVC.
def test_a_train_param_reruns_train_evaluate_export_only(flow_project):
    project, _ = flow_project
    result = _run([str(BIN / "textrnn"), "run", "--set", "train.lr=0.003"], project)
    states = _task_states(result.stdout + result.stderr)
    assert [states[s] for s in ("ingest", "clean", "vocab")] == ["Cached"] * 3
    assert [states[s] for s in ("train", "evaluate", "export")] == ["Completed"] * 3


def test_a_clean_param_reruns_clean_and_everything_after_it(flow_project):
    project, _ = flow_project
    # A clean param that changes its output (a clean param leaving the output byte-identical would, by
    # content addressing, rerun clean alone).
    result = _run([str(BIN / "textrnn"), "run", "--set", "clean.split_seed=7"], project)
    states = _task_states(result.stdout + result.stderr)
    assert states["ingest"] == "Cached"
    assert [states[s] for s in ("clean", "vocab", "train", "evaluate", "export")] == ["Completed"] * 5
