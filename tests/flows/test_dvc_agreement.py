"""Never stale: `dvc repro` and the Prefect flow rerun exactly what a change of the user's source, of a
module a stage imports, or of a param touches — and `dvc exp run --temp` records the code it ran. Real git,
real DVC, real Prefect, in a temporary project whose corpus is a CSV file of its own."""

from __future__ import annotations

import csv
import json
import re
import shutil
from pathlib import Path

import pytest
import yaml

from tests.flows.test_pipeline_e2e import BIN, PARAMS, REPO, TINY, _run, _task_states
from textrnn.config import params_mapping
from textrnn.io import content_hash

STAGES = ("ingest", "clean", "vocab", "train", "evaluate", "export")


def _write_corpus(path: Path, flip: bool = False, per_label: int = 200) -> int:
    """Reviews of the built-in corpus as a user's CSV (`per_label` lines of each file); `flip` swaps every
    label. Returns the number of rows."""
    from textrnn.readers import builtin_corpus_dir

    rows = []
    for name, label in (("neg.txt", "neg"), ("pos.txt", "pos")):
        lines = (builtin_corpus_dir() / name).read_text(encoding="utf-8").splitlines()[:per_label]
        other = "pos" if label == "neg" else "neg"
        rows += [(line, other if flip else label) for line in lines if line.strip()]
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "label"])
        writer.writerows(rows)
    return len(rows)


def _make_committed_project(root: Path) -> Path:
    """A git + DVC project as a user has it: code, dvc.yaml, .gitignore (so no build is committed), params
    reading `corpus.csv`, all committed."""
    root.mkdir()
    shutil.copytree(REPO / "src", root / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("dvc.yaml", ".gitignore", ".dvcignore"):
        shutil.copyfile(REPO / name, root / name)
    params = params_mapping(PARAMS, TINY)
    params["ingest"].update(source="corpus.csv", max_rows_per_file=0)
    params["export"]["exporter"] = "torchscript"  # the faster exporter: this module is about bookkeeping
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")
    _write_corpus(root / "corpus.csv")
    _run(["git", "init", "-q"], root)
    _run([str(BIN / "dvc"), "init", "-q"], root)
    _commit(root, "project")
    return root


def _commit(root: Path, message: str) -> None:
    _run(["git", "add", "-A"], root)
    _run(["git", "-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-qm", message], root)


def _ran(output: str) -> list[str]:
    return re.findall(r"Running stage '(\w+)'", output)


def _dvc(args: list[str], root: Path) -> str:
    result = _run([str(BIN / "dvc"), *args], root)
    return result.stdout + result.stderr


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = _make_committed_project(tmp_path_factory.mktemp("agree") / "project")
    assert _ran(_dvc(["repro"], root)) == ["source", *STAGES]
    return root


def test_a_changed_source_reruns_ingest_under_dvc_and_the_flow_then_agrees(project):
    before = content_hash(project / "data/raw")
    _write_corpus(project / "corpus.csv", flip=True)
    assert set(json.loads(_dvc(["status", "--json"], project))) == {"source"}  # DVC cannot tell before source runs
    output = _dvc(["repro"], project)
    assert _ran(output) == ["source", *STAGES], output  # before the fix: "Stage 'ingest' didn't change"
    assert content_hash(project / "data/raw") != before
    assert json.loads((project / "data/source.json").read_text())["files"]["corpus.csv"]
    flow = _run([str(BIN / "textrnn"), "run"], project)
    output = flow.stdout + flow.stderr
    for stage in STAGES:  # the flow finds what DVC just built and redoes nothing
        assert f"{stage}: outputs of this exact key are intact; reused" in output, stage


def test_without_dvc_lock_a_changed_source_is_not_restored_from_the_run_cache(project):
    (project / "dvc.lock").unlink()
    rows = _write_corpus(project / "corpus.csv", per_label=150)  # content no earlier run has seen
    output = _dvc(["repro", "ingest"], project)
    assert "Running stage 'ingest'" in output and "'ingest' is cached" not in output, output
    assert json.loads((project / "data/raw/stats.json").read_text())["rows"] == rows
    record = json.loads((project / "data/source.json").read_text())
    assert record["files"] == {"corpus.csv": content_hash(project / "corpus.csv")}


def test_a_source_change_seen_by_the_flow_leaves_dvc_up_to_date(project):
    _dvc(["repro"], project)
    _write_corpus(project / "corpus.csv", flip=True)
    flow = _run([str(BIN / "textrnn"), "run"], project)
    states = _task_states(flow.stdout + flow.stderr)
    assert states["ingest"] == "Completed", states
    assert json.loads(_dvc(["status", "--json"], project)) == {"source": ["always changed"]}
    assert _ran(_dvc(["repro"], project)) == ["source"]


def test_editing_a_module_only_some_stages_import_reruns_exactly_those(project):
    vocab_module = project / "src/textrnn/vocab.py"
    vocab_module.write_text(vocab_module.read_text(encoding="utf-8") + "\n# edited\n", encoding="utf-8")
    changed = set(json.loads(_dvc(["status", "--json"], project))) - {"source"}
    assert changed == {"vocab", "train", "evaluate", "export"}  # not ingest or clean, which never import it
    flow = _run([str(BIN / "textrnn"), "run"], project)
    states = _task_states(flow.stdout + flow.stderr)
    assert [states[s] for s in ("ingest", "clean")] == ["Cached", "Cached"]
    # vocab reruns (its code changed) to byte-identical outputs, so by content the stages after it hold.
    assert states["vocab"] == "Completed"
    assert json.loads(_dvc(["status", "--json"], project)) == {"source": ["always changed"]}


def test_dvc_exp_run_temp_runs_and_records_the_copys_code(project):
    _commit(project, "state before the experiment")
    output = _dvc(["exp", "run", "--temp", "-S", "train.lr=0.003"], project)
    assert "Running stage 'train'" in output, output
    shown = json.loads(_dvc(["exp", "show", "--json"], project))
    experiments = [exp for rev in shown for exp in (rev.get("experiments") or [])]
    assert experiments, shown
    run = experiments[0]["revs"][0]["data"]
    assert run["params"]["params.yaml"]["data"]["train"]["lr"] == 0.003
    metrics = run["metrics"]["metrics/metrics.json"]["data"]
    assert 0.0 <= metrics["test_accuracy"] <= 1.0
    assert "step" in run["metrics"]["metrics/train/metrics.json"]["data"]  # the per-epoch log's summary
