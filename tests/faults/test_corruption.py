"""Corrupted artifacts on disk: a truncated Parquet shard, a checkpoint with flipped bytes, a vocabulary
JSON cut in half, a manifest cut in half.

Each must be (a) refused by the stage that reads it, with an error naming the file, (b) seen as stale by
`textrnn.freshness.outputs_fresh`, so the Prefect flow rebuilds the owning stage instead of trusting its
cache, and (c) repaired by rerunning the owning stage, which writes byte-identical outputs again.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from textrnn.config import Params, load_params
from textrnn.freshness import manifest_path, outputs_fresh, record_outputs, stage_key
from textrnn.io import TMP_MARK, content_hash
from textrnn.pipeline import STAGE_SPECS, run_stage, stage_paths

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
TINY = REPO / "tests" / "profiles" / "tiny.yaml"
PARAMS = REPO / "params.yaml"  # the tiny profile is laid over it
OVERRIDES = {"export.exporter": "torchscript"}


def _truncate_half(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _flip_middle(path: Path, count: int = 64) -> None:
    """XOR `count` bytes in the middle of the file: same size, same inode, other content."""
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    for i in range(middle, middle + count):
        data[i] ^= 0xFF
    with open(path, "r+b") as handle:  # in place, as a bad disk sector or a stray write would do it
        handle.write(data)


# (file to corrupt, how, the stage that owns it, a stage that reads it)
CASES = {
    "raw-shard-truncated": ("data/raw/part-00000.parquet", _truncate_half, "ingest", "clean"),
    "clean-shard-truncated": ("data/clean/train/part-00000.parquet", _truncate_half, "clean", "vocab"),
    "checkpoint-bytes-flipped": ("models/checkpoint.pt", _flip_middle, "train", "evaluate"),
    "vocab-json-cut-in-half": ("data/vocab/vocab.json", _truncate_half, "vocab", "train"),
}


def _params() -> Params:
    """The tiny profile with relative paths: manifests and artifacts resolve against the project folder."""
    return load_params(PARAMS, OVERRIDES, profile=TINY)


@pytest.fixture
def project(project: Path) -> Path:
    """The shared built project (tests/faults/conftest.py), every stage's manifest recorded as the Prefect
    tasks do after a good run."""
    params = _params()
    for name in STAGE_SPECS:
        record_outputs(name, params, stage_key(name, params))
        assert outputs_fresh(name, params, stage_key(name, params))
    return project


def _outputs_hashes(name: str, params: Params) -> dict[str, str]:
    return {str(p): content_hash(p) for p in stage_paths(name, params, "outs")}


@pytest.mark.parametrize("case", list(CASES))
def test_corruption_is_refused_seen_as_stale_and_repaired_by_the_owner(case, project):
    target, corrupt, owner, reader = CASES[case]
    params = _params()
    key = stage_key(owner, params)
    before = _outputs_hashes(owner, params)
    reader_outputs = _outputs_hashes(reader, params)
    good = content_hash(target)

    corrupt(Path(target))
    assert content_hash(target) != good

    # (a) the reading stage refuses it, naming the file, and leaves its own earlier outputs alone
    with pytest.raises(ValueError, match=target.replace(".", r"\.")):
        run_stage(reader, params)
    assert _outputs_hashes(reader, params) == reader_outputs
    assert list(project.rglob(f"*{TMP_MARK}*")) == []

    # (b) the owner's cache entry no longer counts as a hit
    assert not outputs_fresh(owner, params, key)

    # (c) rerunning the owner restores exactly the recorded bytes, and the manifest agrees again
    run_stage(owner, params)
    assert _outputs_hashes(owner, params) == before
    assert outputs_fresh(owner, params, stage_key(owner, params))
    run_stage(reader, params)
    assert _outputs_hashes(reader, params) == reader_outputs


@pytest.mark.parametrize("case", ["raw-shard-truncated", "vocab-json-cut-in-half"])
def test_cli_stage_on_a_corrupt_input_exits_non_zero_naming_the_file(case, project):
    target, corrupt, _, reader = CASES[case]
    corrupt(Path(target))
    result = subprocess.run([str(BIN / "textrnn"), "stage", reader], cwd=project, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode != 0
    assert target in result.stderr
    assert result.stdout == ""  # no result JSON for a failed stage


def test_a_manifest_cut_in_half_means_not_fresh_rather_than_a_crash(project):
    params = _params()
    path = manifest_path("vocab")
    _truncate_half(path)
    assert not outputs_fresh("vocab", params, stage_key("vocab", params))
    # recording again (what the task does after rerunning) makes it fresh again
    record_outputs("vocab", params, stage_key("vocab", params))
    assert outputs_fresh("vocab", params, stage_key("vocab", params))


def test_an_output_replaced_by_another_runs_output_is_not_fresh(project):
    """Same file names, other bytes (e.g. copied from a run with other params): still a miss."""
    params = _params()
    key = stage_key("clean", params)
    shards = sorted(Path("data/clean/train").glob("part-*.parquet"))
    assert len(shards) >= 2
    first, second = shards[0], shards[1]
    first_bytes = first.read_bytes()
    first.write_bytes(second.read_bytes())
    second.write_bytes(first_bytes)
    assert not outputs_fresh("clean", params, key)
