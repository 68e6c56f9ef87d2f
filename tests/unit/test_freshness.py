"""Content-addressed stage keys: what changes a key, and when a cached result may be reused."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from textrnn.config import load_params
from textrnn.freshness import outputs_fresh, record_outputs, stage_key
from textrnn.source_record import record_source

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / "tests" / "profiles" / "tiny.yaml"
PARAMS = REPO / "params.yaml"  # the tiny profile is laid over it


def _csv_params(tmp_path: Path):
    source = tmp_path / "reviews.csv"
    source.write_text("text,label\n很好,pos\n太差,neg\n", encoding="utf-8")
    params = load_params(PARAMS, profile=TINY)
    return dataclasses.replace(params, ingest=dataclasses.replace(params.ingest, source=str(source))), source


def test_editing_the_raw_data_changes_the_ingest_key(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    params, source = _csv_params(tmp_path)
    record = Path(params.paths.source)
    record_source(record, params.ingest)  # what the flow's `source` task and dvc.yaml's `source` step do
    before = stage_key("ingest", params)
    assert stage_key("ingest", params) == before  # stable while nothing changes
    source.write_text("text,label\n很好,pos\n太差了,neg\n", encoding="utf-8")
    record_source(record, params.ingest)
    assert stage_key("ingest", params) != before


def test_keys_depend_on_content_not_on_path_strings(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    params, _ = _csv_params(tmp_path)
    for folder in ("a", "b"):
        (tmp_path / folder / "raw").mkdir(parents=True)
        (tmp_path / folder / "raw" / "part-00000.parquet").write_bytes(b"same bytes")
    in_a = dataclasses.replace(params, paths=dataclasses.replace(params.paths, raw="a/raw", clean="x/clean"))
    in_b = dataclasses.replace(params, paths=dataclasses.replace(params.paths, raw="b/raw", clean="x/clean"))
    assert stage_key("clean", in_a) == stage_key("clean", in_b)
    (tmp_path / "b" / "raw" / "part-00000.parquet").write_bytes(b"other bytes")
    assert stage_key("clean", in_a) != stage_key("clean", in_b)


def test_a_param_of_another_section_does_not_change_the_key(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    params, _ = _csv_params(tmp_path)
    other = dataclasses.replace(params, train=dataclasses.replace(params.train, lr=0.5))
    assert stage_key("ingest", other) == stage_key("ingest", params)
    assert stage_key("train", other) != stage_key("train", params)


def test_outputs_are_fresh_only_while_unchanged_and_for_the_same_key(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    params, _ = _csv_params(tmp_path)
    raw = Path(params.paths.raw)
    raw.mkdir(parents=True)
    (raw / "part-00000.parquet").write_bytes(b"output")
    key = stage_key("ingest", params)
    assert not outputs_fresh("ingest", params, key)  # never recorded
    record_outputs("ingest", params, key, {"rows": 2})
    assert outputs_fresh("ingest", params, key)
    assert not outputs_fresh("ingest", params, "another key")
    (raw / "part-00000.parquet").write_bytes(b"altered")
    assert not outputs_fresh("ingest", params, key)
    (raw / "part-00000.parquet").unlink()
    assert not outputs_fresh("ingest", params, key)
