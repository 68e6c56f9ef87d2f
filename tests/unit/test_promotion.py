"""The promotion gate (`textrnn compare`): improved, equal, within tolerance, regressed, missing metrics."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from textrnn.config import PromoteParams
from textrnn.promotion import EQUAL, IMPROVED, NO_BASE, REGRESSED, WITHIN, MetricsError, compare

P = PromoteParams(metric="test_macro_f1", tolerance=0.01)
REPO = Path(__file__).resolve().parents[2]


def _metrics(f1: float, baseline: float = 0.85) -> dict:
    return {"test_macro_f1": f1, "baseline_test_macro_f1": baseline, "test_accuracy": f1}


@pytest.mark.parametrize(("new", "status", "passed"), [
    (0.90, IMPROVED, True), (0.86, EQUAL, True), (0.855, WITHIN, True), (0.8499, REGRESSED, False)])
def test_statuses_against_main(new, status, passed):
    verdict = compare(_metrics(new), _metrics(0.86), P)
    assert (verdict.status, verdict.passed) == (status, passed)
    assert verdict.base == 0.86 and verdict.new_baseline == 0.85
    assert f"{new:.4f}" in verdict.markdown() and "TF-IDF baseline" in verdict.markdown()


def test_no_metrics_on_main_passes_and_says_so():
    verdict = compare(_metrics(0.5), None, P)
    assert verdict.status == NO_BASE and verdict.passed


@pytest.mark.parametrize(("new", "base", "message"), [
    ({"test_accuracy": 0.9}, _metrics(0.8), "new metrics: no 'test_macro_f1'"),
    (_metrics(0.8), {"test_accuracy": 0.9}, "main's metrics: no 'test_macro_f1'"),
    ({"test_macro_f1": "high"}, _metrics(0.8), "is 'high', not a number"),
])
def test_missing_or_malformed_metrics_are_named(new, base, message):
    with pytest.raises(MetricsError, match=message):
        compare(new, base, P)


def _textrnn(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "textrnn", *args], cwd=cwd, capture_output=True, text=True)


def _git(args: list[str], cwd: Path) -> None:
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True)


def test_cli_exit_codes_and_summary_against_a_git_revision(tmp_path):
    (tmp_path / "metrics").mkdir()
    (tmp_path / "params.yaml").write_text((REPO / "params.yaml").read_text(encoding="utf-8"), encoding="utf-8")
    metrics = tmp_path / "metrics" / "metrics.json"
    _git(["init", "-q"], tmp_path)
    first = _textrnn(["compare", "--base-rev", "HEAD"], tmp_path)
    assert first.returncode == 2 and "git show HEAD:metrics/metrics.json" in first.stderr  # no commit yet
    metrics.write_text(json.dumps(_metrics(0.86)))
    _git(["add", "metrics/metrics.json"], tmp_path)
    _git(["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "main"], tmp_path)
    metrics.write_text(json.dumps(_metrics(0.80)))
    summary = tmp_path / "summary.md"
    regressed = _textrnn(["compare", "--base-rev", "HEAD", "--summary", str(summary)], tmp_path)
    assert regressed.returncode == 1 and "**regressed**" in regressed.stdout
    assert "**regressed**" in summary.read_text()
    metrics.write_text(json.dumps(_metrics(0.87)))
    assert _textrnn(["compare", "--base-rev", "HEAD"], tmp_path).returncode == 0
    (tmp_path / "old.json").write_text(json.dumps({"accuracy": 1}))
    missing = _textrnn(["compare", "--base", str(tmp_path / "old.json")], tmp_path)
    assert missing.returncode == 2 and "no 'test_macro_f1'" in missing.stderr
