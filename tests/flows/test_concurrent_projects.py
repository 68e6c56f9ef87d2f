"""Stage tasks resolve the project's paths instead of changing the process's working directory, so two of
them can run at once in one process (Prefect's thread pool, a Dask worker's threads), from any directory.

Two tiny projects with different params run their data stages at the same time from an unrelated working
directory; each writes only into its own folder, exactly the bytes and cache keys that a serial run of the
same params gives in a third folder.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from textrnn.config import Params, load_params
from textrnn.freshness import manifest_path, run_recorded, stage_key
from textrnn.io import content_hash, read_json
from textrnn.pipeline import STAGE_SPECS, stage_paths
from textrnn.source_record import record_source

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / "tests" / "profiles" / "tiny.yaml"
PARAMS = REPO / "params.yaml"  # the tiny profile is laid over it
DATA_STAGES = ("ingest", "clean", "vocab")
# Other params per project, so that their keys and outputs differ (and a mix-up would show).
OVERRIDES = {"a": {}, "b": {"ingest.max_rows_per_file": 200, "vocab.min_freq": 2}}


def _params(project: str) -> Params:
    return load_params(PARAMS, OVERRIDES[project], profile=TINY)  # paths relative, as params.yaml writes them


def _serial_reference(root: Path, p: Params) -> dict[str, str]:
    """What `textrnn stage source|ingest|clean|vocab` gives in `root`, run one after the other: the stage
    keys, and each output's content hash."""
    record_source(Path(p.paths.resolved(root).source), p.ingest, root)
    keys = {name: run_recorded(name, p, reuse_fresh=False, root=root)["key"] for name in DATA_STAGES}
    return {**keys, **_output_hashes(root, p)}


def _output_hashes(root: Path, p: Params) -> dict[str, str]:
    resolved = p.resolved(root)
    outputs = [Path(resolved.paths.source)]
    outputs += [path for name in DATA_STAGES for path in stage_paths(name, resolved, "outs")]
    return {str(path): content_hash(path) for path in outputs}


def _relative(hashes: dict[str, str], root: Path) -> dict[str, str]:
    return {(Path(k).relative_to(root).as_posix() if k.startswith("/") else k): v for k, v in hashes.items()}


def test_two_projects_stage_tasks_run_at_once_from_another_directory(tmp_path, monkeypatch):
    from textrnn_flows.pipeline import STAGE_TASKS
    from textrnn_tasks.ingest import source

    expected = {name: _relative(_serial_reference(tmp_path / "reference" / name, _params(name)),
                                tmp_path / "reference" / name) for name in OVERRIDES}
    assert expected["a"]["data/vocab"] != expected["b"]["data/vocab"]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # neither project's folder
    start_together = threading.Barrier(len(OVERRIDES))

    def build(name: str) -> dict[str, str]:
        root, p = tmp_path / name, _params(name)
        start_together.wait()
        source.fn(p.paths, p.ingest, str(root))  # the task bodies, in threads of one process
        keys = {}
        for stage in DATA_STAGES:
            sections = {s: getattr(p, s) for s in STAGE_SPECS[stage].sections}
            keys[stage] = STAGE_TASKS[stage].fn(p.paths, sections, p.runner, str(root))["key"]
        return _relative({**keys, **_output_hashes(root, p)}, root)

    with ThreadPoolExecutor(len(OVERRIDES)) as pool:
        built = dict(zip(OVERRIDES, pool.map(build, OVERRIDES)))

    assert built == expected  # same bytes and keys as the serial runs elsewhere: keys ignore the location
    assert list(elsewhere.iterdir()) == []  # nothing landed in the working directory
    for name in OVERRIDES:
        manifest = read_json(manifest_path("vocab", tmp_path / name))
        assert manifest["key"] == stage_key("vocab", _params(name), tmp_path / name)
        assert set(manifest["outputs"]) == {"data/vocab"}  # named as params.yaml writes it


FLOW = """
import sys
from prefect import flow
from textrnn_flows.pipeline import STAGE_TASKS
from textrnn_tasks.ingest import source
from textrnn.config import load_params
from textrnn.pipeline import STAGE_SPECS


@flow
def two_projects(roots: list[str], overrides: list[dict]) -> list[dict]:
    ends = []
    for root, extra in zip(roots, overrides):
        p = load_params(sys.argv[1], extra, profile=sys.argv[2])
        previous = source.submit(p.paths, p.ingest, root)
        for stage in ("ingest", "clean", "vocab"):
            sections = {s: getattr(p, s) for s in STAGE_SPECS[stage].sections}
            previous = STAGE_TASKS[stage].with_options(refresh_cache=True).submit(
                p.paths, sections, p.runner, root, wait_for=[previous])
        ends.append(previous)
    return [end.result() for end in ends]


two_projects(sys.argv[3:], [{}, {"ingest.max_rows_per_file": 200, "vocab.min_freq": 2}])
"""


@pytest.mark.slow  # starts its own ephemeral Prefect server
def test_two_projects_in_one_prefect_flow_on_its_thread_pool(tmp_path):
    """The same under real Prefect (ephemeral API): the flow submits both projects' chains to its default
    thread pool, where they interleave."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    script = tmp_path / "two_projects.py"
    script.write_text(FLOW, encoding="utf-8")
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / ".prefect"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    env.pop("PREFECT_API_URL", None)
    roots = [tmp_path / name for name in OVERRIDES]
    command = [sys.executable, str(script), str(PARAMS), str(TINY), *map(str, roots)]
    result = subprocess.run(command, cwd=elsewhere, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-5000:]
    for name, root in zip(OVERRIDES, roots):
        reference = tmp_path / "reference" / name
        expected = _relative(_serial_reference(reference, _params(name)), reference)
        assert _relative(_output_hashes(root, _params(name)), root) == {
            k: v for k, v in expected.items() if k not in DATA_STAGES}
    assert [p.name for p in elsewhere.iterdir()] == []
