"""Secrets in the environment never reach an artifact or a log.

Fake credentials are planted in the environment of real `textrnn stage` runs of all six stages (tiny
profile, torchscript export) and of `textrnn predict`; afterwards no file under the project (binary-safe,
and looking inside compressed Parquet pages and zip members) and no stdout or stderr holds any of them.
"""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from textrnn.config import params_mapping
from textrnn.io import write_table
from textrnn.pipeline import STAGE_SPECS

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
TINY = REPO / "tests" / "profiles" / "tiny.yaml"
PARAMS = REPO / "params.yaml"  # the tiny profile is laid over it
SECRETS = {
    "AWS_SECRET_ACCESS_KEY": "SECRET-PLANTED-1234",
    "AWS_ACCESS_KEY_ID": "AKIASECRETPLANTED999",
    "PREFECT_API_KEY": "pnu_SECRET-PLANTED-5678",
    "GITHUB_TOKEN": "ghp_SECRETPLANTED0000000000000000000000",
    "HF_TOKEN": "hf_SECRETPLANTEDxxxxxxxxxxxxxxxxxxxxxxxx",
    "DATABASE_URL": "postgresql://user:SECRET-PLANTED-PW@db.invalid/x",
}


def _leaks(data: bytes) -> list[str]:
    found = [value for value in SECRETS.values() if value.encode() in data]
    # also UTF-16 (Windows-style dumps) and the distinctive part alone (a value cut or re-quoted)
    found += [value for value in SECRETS.values() if value.encode("utf-16-le") in data]
    return found + (["SECRET-PLANTED / SECRETPLANTED"] if b"SECRETPLANTED" in data or b"SECRET-PLANTED" in data
                    else [])


def _views(path: Path) -> list[bytes]:
    """The file's bytes, plus what compression would hide: Parquet values and metadata, zip members."""
    data = path.read_bytes()
    views = [data]
    if data[:4] == b"PAR1":
        parquet = pq.ParquetFile(path)
        views.append(repr(parquet.metadata.metadata).encode())
        views.append(repr(parquet.read().to_pylist()).encode("utf-8", "surrogatepass"))
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            views += [archive.read(name) for name in archive.namelist()]
    return views


def _scan(root: Path) -> dict[str, list[str]]:
    leaks = {}
    for path in sorted(root.rglob("*")):
        if path.is_file():
            found = [leak for view in _views(path) for leak in _leaks(view)]
            if found:
                leaks[str(path.relative_to(root))] = sorted(set(found))
    return leaks


def test_the_scanner_finds_a_secret_inside_compressed_parquet_and_zip(tmp_path):
    """A leak check is only worth something if it would see the leak."""
    value = SECRETS["AWS_SECRET_ACCESS_KEY"]
    write_table(tmp_path / "part-00000.parquet", pa.table({"text": [value * 3] * 500}))
    with zipfile.ZipFile(tmp_path / "model.pt", "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("archive/data.pkl", ("x" * 1000 + value) * 10)
    (tmp_path / "clean.txt").write_text("nothing here")
    assert sorted(_scan(tmp_path)) == ["model.pt", "part-00000.parquet"]


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[bytes]]:
    """The six stages and a prediction run as CLI subprocesses with the secrets in their environment."""
    root = tmp_path_factory.mktemp("secrets")
    params = params_mapping(PARAMS, TINY)
    params["export"]["exporter"] = "torchscript"
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    env = {**os.environ, **SECRETS, "TEXTRNN_PLANTED": SECRETS["AWS_SECRET_ACCESS_KEY"]}
    streams = []
    commands = [["stage", name] for name in STAGE_SPECS]
    commands.append(["predict", "--model", params["paths"]["export"], "--output", "predictions.csv",
                     "这本书太好了", "质量太差"])
    for command in commands:
        result = subprocess.run([str(BIN / "textrnn"), *command], cwd=root, env=env, capture_output=True,
                                timeout=600)
        assert result.returncode == 0, result.stderr.decode(errors="replace")[-3000:]
        streams += [result.stdout, result.stderr]
    return root, streams


def test_no_artifact_holds_a_planted_secret(project):
    root, _ = project
    files = [p for p in root.rglob("*") if p.is_file()]
    assert (root / "models/export/model.onnx").exists() and (root / "predictions.csv").exists()
    assert len(files) > 30  # every stage's outputs are there to be scanned
    assert _scan(root) == {}


def test_no_stdout_or_stderr_holds_a_planted_secret(project):
    _, streams = project
    assert any(b"test_accuracy" in s for s in streams)  # the stage output JSON and logs were captured
    assert [leak for stream in streams for leak in _leaks(stream)] == []
