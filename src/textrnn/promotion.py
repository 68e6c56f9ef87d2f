"""The promotion gate: is a retrained model at least as good as the one on main?

`textrnn compare` reads the new metrics.json and main's (a file, or `git show REV:path`), and fails when the
gated metric dropped by more than `promote.tolerance`. The side-by-side baseline's figure is reported beside
it, so a reviewer sees whether the RNN still earns its place.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path

from textrnn.config import PromoteParams

IMPROVED, EQUAL, WITHIN, REGRESSED = "improved", "equal", "within tolerance", "regressed"
NO_BASE = "no metrics on main"


class MetricsError(ValueError):
    """Metrics that cannot be compared (missing file, missing key, not a number)."""


@dataclass(frozen=True)
class Verdict:
    status: str
    metric: str
    new: float
    base: float | None
    new_baseline: float | None  # the side-by-side TF-IDF baseline's figure in the new run
    tolerance: float

    @property
    def passed(self) -> bool:
        return self.status != REGRESSED

    def markdown(self) -> str:
        base = "—" if self.base is None else f"{self.base:.4f}"
        delta = "—" if self.base is None else f"{self.new - self.base:+.4f}"
        lines = ["## Promotion gate", "",
                 f"**{self.status}**: {self.metric} {self.new:.4f} against main's {base} "
                 f"(a drop of more than {self.tolerance:.4f} fails)", "",
                 "| | main | this run | change |", "|---|---|---|---|",
                 f"| RNN {self.metric} | {base} | {self.new:.4f} | {delta} |"]
        if self.new_baseline is not None:
            lines.append(f"| TF-IDF baseline {self.metric} | | {self.new_baseline:.4f} | "
                         f"RNN {self.new - self.new_baseline:+.4f} |")
        return "\n".join(lines) + "\n"


def metric_of(metrics: dict, key: str, where: str) -> float:
    if key not in metrics:
        raise MetricsError(f"{where}: no {key!r} (keys: {sorted(metrics)}); run evaluate first, or set "
                           "promote.metric to one of them")
    value = metrics[key]
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise MetricsError(f"{where}: {key!r} is {value!r}, not a number")
    return float(value)


def compare(new: dict, base: dict | None, p: PromoteParams, new_where: str = "new metrics",
            base_where: str = "main's metrics") -> Verdict:
    value = metric_of(new, p.metric, new_where)
    baseline_key = f"baseline_{p.metric}"
    side_by_side = metric_of(new, baseline_key, new_where) if baseline_key in new else None
    if base is None:
        return Verdict(NO_BASE, p.metric, value, None, side_by_side, p.tolerance)
    old = metric_of(base, p.metric, base_where)
    if value < old - p.tolerance:
        status = REGRESSED
    elif value > old:
        status = IMPROVED
    elif value == old:
        status = EQUAL
    else:
        status = WITHIN
    return Verdict(status, p.metric, value, old, side_by_side, p.tolerance)


def read_metrics(path: Path) -> dict:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError as err:
        raise MetricsError(f"{path}: no such metrics file; run the pipeline (`textrnn run` or `dvc repro`)") from err
    except json.JSONDecodeError as err:
        raise MetricsError(f"{path}: not JSON ({err})") from err


def metrics_at_revision(rev: str, path: str, repo: Path = Path(".")) -> dict | None:
    """metrics.json as committed at `rev`, or None when that revision has none yet (the first retrain)."""
    result = subprocess.run(["git", "show", f"{rev}:{path}"], cwd=repo, capture_output=True, text=True)
    if result.returncode != 0:
        if "does not exist" in result.stderr or "exists on disk, but not in" in result.stderr:
            return None
        raise MetricsError(f"`git show {rev}:{path}` failed: {result.stderr.strip()}; fetch that revision first "
                           f"(`git fetch origin main`)")
    try:
        return json.loads(result.stdout)
    except json.JSONDecodeError as err:
        raise MetricsError(f"{path} at {rev}: not JSON ({err})") from err
